"""
Equalization's passes over 2-D weights, compiled with numba, each one parallel pass reading float16 weights as
they are stored (numpy takes several, through float32 copies):

- `scale_float16_rows_columns`: a float16 weight times its equalization factors, rounded back to float16, with
  the same float32 products in the same order and the same rounding as numpy (to nearest, ties to even);
- `weighted_abs_sums`: the sums of |W| along one axis weighted by factors on that axis, the statistic of
  power scales;
- `rtn_output_errors`: a weight's round-to-nearest error under candidate scale vectors, weighted per input channel
  (the per-group choice's criterion; this one reads float32 weights).
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


@numba.njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def rtn_output_errors(weight, channel_map, candidates, column_weights, group_size, symmetric):
    """
    For each candidate c (a row of `candidates`, float32 [C, channels]), float64 [C]:

        err(c) = sum_ij a_j (W_ij - c_k Q(W_ij / c_k))^2,   k = channel_map[j], a = `column_weights`,

    Q being NNCF's 4-bit round-to-nearest per group of `group_size` columns: asymmetric (the range with 0 in it
    over 15 steps, an integer zero point) or, with `symmetric`, the signed scale that maps the group's largest
    magnitude to -8, codes in [-8, 7]. `weight` float32 [rows, in] (input channels last), `channel_map` int64 [in],
    `column_weights` float32 [in] (the second moments of the input column j reads). Summed per row, then over rows
    in a fixed order.
    """
    rows, columns = weight.shape
    num_candidates = candidates.shape[0]
    groups = columns // group_size
    totals = np.zeros((rows, num_candidates), np.float64)
    for i in numba.prange(rows):
        u = np.empty(group_size, np.float32)
        for candidate in range(num_candidates):
            total = 0.0
            for g in range(groups):
                low, high, extreme = np.float32(0.0), np.float32(0.0), np.float32(0.0)
                for t in range(group_size):
                    j = g * group_size + t
                    u[t] = weight[i, j] / candidates[candidate, channel_map[j]]
                    low = min(low, u[t])
                    high = max(high, u[t])
                    if abs(u[t]) > abs(extreme):
                        extreme = u[t]
                if symmetric:
                    step = extreme / np.float32(-8.0)
                    zero_point = np.float32(0.0)
                    lowest, highest = np.float32(-8.0), np.float32(7.0)
                else:
                    step = (high - low) / np.float32(15.0)
                    lowest, highest = np.float32(0.0), np.float32(15.0)
                    zero_point = min(max(-np.rint(low / step), lowest), highest) if step != 0 else np.float32(0.0)
                if step == 0:
                    continue  # an all-zero group quantizes exactly
                for t in range(group_size):
                    j = g * group_size + t
                    code = min(max(np.rint(u[t] / step + zero_point), lowest), highest)
                    error = (u[t] - (code - zero_point) * step) * candidates[candidate, channel_map[j]]
                    total += column_weights[j] * error * error
            totals[i, candidate] = total
    result = np.zeros(num_candidates, np.float64)
    for i in range(rows):
        for candidate in range(num_candidates):
            result[candidate] += totals[i, candidate]
    return result
