"""
Equalization's passes over 2-D weights, compiled with numba, each one parallel pass reading float16 weights as
they are stored (numpy takes several, through float32 copies):

- `scale_float16_rows_columns`: a float16 weight times its equalization factors, rounded back to float16, with
  the same float32 products in the same order and the same rounding as numpy (to nearest, ties to even);
- `weighted_abs_sums`: the sums of |W| along one axis weighted by factors on that axis, the statistic of
  power scales.
"""

from nncf_hqq._numba import FASTMATH as _FASTMATH  # isort: skip (numba's settings first)
import numba
import numpy as np

from nncf_hqq._float16 import FLOAT16_TABLE
from nncf_hqq._float16 import float16_bits
from nncf_hqq._float16 import load_float32

# rows per parallel task of `weighted_abs_sums` down the columns (each task keeps its own column sums)
_ROWS = 128


@numba.njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def scale_float16_rows_columns(bits, row_factors, column_factors, rows_first):
    """
    `bits` (float16 bit patterns, uint16 [rows, columns]) times `row_factors` [rows] and `column_factors`
    [columns] (either may be empty: no factor on that axis), in float32, in the order `rows_first` says, rounded to
    float16: the bit patterns of the result, uint16 [rows, columns].
    """
    rows, columns = bits.shape
    out = np.empty((rows, columns), np.uint16)
    by_row, by_column = row_factors.shape[0] > 0, column_factors.shape[0] > 0
    for i in numba.prange(rows):
        scaled = np.empty(columns, np.float32)
        for j in range(columns):
            scaled[j] = FLOAT16_TABLE[bits[i, j]]
        if by_row and rows_first:
            for j in range(columns):
                scaled[j] = scaled[j] * row_factors[i]
        if by_column:
            for j in range(columns):
                scaled[j] = scaled[j] * column_factors[j]
        if by_row and not rows_first:
            for j in range(columns):
                scaled[j] = scaled[j] * row_factors[i]
        for j in range(columns):
            out[i, j] = float16_bits(scaled[j])
    return out


@numba.njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def weighted_abs_sums(values, factors, down_columns):
    """
    For `values` [rows, columns] (float32, or float16 bit patterns as uint16), float64:
    with `down_columns`, s_j = sum_i |v_ij| f_i, [columns]; otherwise s_i = sum_j |v_ij| f_j, [rows]. `factors`
    may be empty (all 1). The sums are accumulated in a fixed order, whatever the number of threads.
    """
    rows, columns = values.shape
    weighted = factors.shape[0] > 0
    if not down_columns:
        sums = np.zeros(rows, np.float64)
        for i in numba.prange(rows):
            row = np.empty(columns, np.float32)
            load_float32(values[i], row)
            total = 0.0
            for j in range(columns):
                total += abs(row[j]) * factors[j] if weighted else abs(row[j])
            sums[i] = total
        return sums
    num_tasks = (rows + _ROWS - 1) // _ROWS
    partial = np.zeros((num_tasks, columns), np.float64)
    for task in numba.prange(num_tasks):
        row = np.empty(columns, np.float32)
        for i in range(task * _ROWS, min((task + 1) * _ROWS, rows)):
            load_float32(values[i], row)
            factor = factors[i] if weighted else np.float32(1.0)
            for j in range(columns):
                partial[task, j] += abs(row[j]) * factor
    sums = np.zeros(columns, np.float64)
    for task in range(num_tasks):
        for j in range(columns):
            sums[j] += partial[task, j]
    return sums
