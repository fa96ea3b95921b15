"""
The codes of a precomputed integer weight, stored as they are: NNCF would quantize the weight again from the
given scale and zero point, which can round differently from the solver that chose them.
"""

import dataclasses
from typing import Any

import openvino as ov
from nncf.tensor import Tensor

from nncf_hqq.openvino_graph import four_bit_tensor


def carries_codes(compressed: Any, is_integer: bool) -> bool:
    """Whether a precomputed weight (NNCF's `CompressedWeight` or None) of an integer config has its codes."""
    return is_integer and compressed is not None and compressed.tensor is not None


def with_codes_as_constant_data(compressed: Any, codes_type: ov.Type) -> Any:
    """
    The weight with its integer codes (uint8 or int8 values) as NNCF's OpenVINO quantization returns them: codes of
    `codes_type` u4 or i4 as a packed OpenVINO tensor of that type, which a constant shares; others, and codes the
    solver wrote packed into such a tensor already, as they are.
    """
    data = compressed.tensor.data
    if codes_type not in (ov.Type.u4, ov.Type.i4) or (
        isinstance(data, ov.Tensor) and data.get_element_type() == codes_type
    ):
        return compressed
    codes = compressed.tensor.as_numpy_tensor().data
    tensor = four_bit_tensor(codes, tuple(compressed.tensor.shape), codes_type)
    return dataclasses.replace(compressed, tensor=Tensor(tensor))
