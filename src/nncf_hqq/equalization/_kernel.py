"""
A 2-D float16 weight times its equalization factors, rounded back to float16, compiled with numba: numpy takes
three passes (to float32, the product, back to float16) with slow float16 conversions; this takes one, in
parallel, with the same float32 products in the same order and the same rounding (to nearest, ties to even).
"""

from nncf_hqq._numba import FASTMATH as _FASTMATH  # isort: skip (numba's settings first)
import numba
import numpy as np

from nncf_hqq.solver._kernel import FLOAT16_TABLE
from nncf_hqq.solver._kernel import _float_bits


@numba.njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _float16_bits(x):
    """The bit pattern of the float16 nearest the float32 x (ties to even; NaN: the quiet NaN), as numpy rounds."""
    bits = _float_bits(x)
    sign = np.int32(np.int32(bits >> np.int32(16)) & np.int32(0x8000))
    magnitude = np.int32(bits & np.int32(0x7FFFFFFF))
    if magnitude > np.int32(0x7F800000):
        return np.uint16(sign | np.int32(0x7E00))
    if magnitude >= np.int32(0x477FF000):  # 65520 and above round to infinity
        return np.uint16(sign | np.int32(0x7C00))
    if magnitude < np.int32(0x38800000):  # below 2^-14: multiples of 2^-24 (1024 of them is the smallest normal)
        return np.uint16(sign | np.int32(np.rint(abs(x) * np.float32(2.0**24))))
    # drop 13 of the 23 mantissa bits rounding to nearest even (a carry moves into the exponent), rebias 127 -> 15
    rounded = np.int32(magnitude + np.int32(0xFFF) + np.int32(np.int32(magnitude >> np.int32(13)) & np.int32(1)))
    return np.uint16(sign | np.int32(np.int32(rounded >> np.int32(13)) - np.int32(112 << 10)))


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
            out[i, j] = _float16_bits(scaled[j])
    return out
