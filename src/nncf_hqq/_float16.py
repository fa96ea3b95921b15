"""
float16 in numba's compiled kernels, which have no float16 arithmetic on the CPU: weights stored as float16 are
read as their uint16 bit patterns and converted with a table, and float32 results rounded to float16 bit patterns
as numpy rounds (to nearest, ties to even). Shared by the HQQ solver and the equalization kernels.
"""

from nncf_hqq._numba import FASTMATH as _FASTMATH  # isort: skip (numba's settings first)
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from numba.extending import overload

# float16 bit patterns -> float32 values
FLOAT16_TABLE = np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float32)


def load_float32(values, out):
    """out[:] = values as float32; uint16 values are float16 bit patterns."""


@overload(load_float32)
def _load_float32_overload(values, out):
    if values.dtype == types.uint16:

        def load_float16(values, out):
            for j in range(values.shape[0]):
                out[j] = FLOAT16_TABLE[values[j]]

        return load_float16

    def load(values, out):
        for j in range(values.shape[0]):
            out[j] = values[j]

    return load


@intrinsic
def float_bits(typingctx, x):
    """The bits of a float32 as an int32 (a bit cast, which LLVM vectorises; numba's scalar `view` does not)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def bits_float(typingctx, x):
    """The float32 whose bits are the given int32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@numba.njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def float16_bits(x):
    """The bit pattern of the float16 nearest the float32 x (ties to even; NaN: the quiet NaN), as numpy rounds."""
    bits = float_bits(x)
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


def kernel_values(values: np.ndarray) -> np.ndarray:
    """
    Weights as the compiled kernels read them, C-contiguous: float16 as its uint16 bit patterns (the kernels
    convert them), any other type as float32.
    """
    if values.dtype == np.float16:
        return np.ascontiguousarray(values).view(np.uint16)
    return np.ascontiguousarray(values, dtype=np.float32)
