"""
Storage of float zero points, which NNCF's u4/u8 zero point constant would truncate: as an f16 constant
(`Constant(f16) -> Subtract`), or as NNCF's integer zero point plus a per-group offset.

For a group with scale s and float zero point z, s (q - z) = s (q - z_int) + d with d = s (z_int - z). For a MatMul
whose weight W is grouped along the contraction axis in groups of g,

    x W^T = x W_int^T + groupsum(x) D^T,    groupsum(x)_j = sum of x over the j-th group of g input features,

where W_int is NNCF's standard compressed weight (integer zero point: the fast INT4 kernels apply) and D holds
the offsets d, [out, in / g], a MatMul g times smaller.
"""

from typing import Any

import numpy as np
import openvino as ov
from openvino import opset13 as opset

from nncf_hqq._nncf import zero_point_constant_name
from nncf_hqq._nncf import zero_point_subtract_name
from nncf_hqq.graph_journal import GraphJournal
from nncf_hqq.openvino_graph import replace_zero_point


def zero_point_offset_name(weight_constant_name: str) -> str:
    """The constant of a weight's per-group zero point offsets."""
    return f"{weight_constant_name}/zero_point_offset"


def split_zero_point(scale: np.ndarray, zero_point: np.ndarray, num_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """
    (z_int, d): the integer zero point nearest z on the unsigned `num_bits` grid and the f16 offsets
    d = s (z_int - z), computed with the scale as the model stores it (f16).
    """
    integer_zero_point = np.clip(np.round(zero_point), 0, 2**num_bits - 1)
    stored_scale = np.asarray(scale).astype(np.float16).astype(np.float32)
    offset = stored_scale * (integer_zero_point - np.asarray(zero_point, dtype=np.float32))
    return integer_zero_point.astype(np.uint8), offset.astype(np.float16)


def add_zero_point_offset(matmul: ov.Node, offset: np.ndarray, name: str, groupsums: dict | None = None) -> ov.Node:
    """
    Adds per-group weight offsets D to a MatMul y = x W^T (or x W) whose weight is grouped along the contraction
    axis in groups of g:  y + groupsum(x) D^T (or groupsum(x) D), groupsum(x) summing each g consecutive
    features of x. D is stored as an f16 Constant `name`, [out, in / g] (or [in / g, out]). `groupsums` caches
    groupsum(x) per (activation, g), so MatMuls sharing an input share it. Returns the Add.
    """
    transpose_b = matmul.get_attributes()["transpose_b"]
    activation = matmul.input_value(0)
    in_features = activation.get_partial_shape()[-1].get_length()
    out_features = matmul.input_value(1).get_partial_shape()[0 if transpose_b else 1].get_length()
    num_groups = offset.size // out_features
    offset = offset.reshape((out_features, num_groups) if transpose_b else (num_groups, out_features))
    group_size = in_features // num_groups
    key = (activation.get_node().get_friendly_name(), activation.get_index(), group_size)
    groupsums = {} if groupsums is None else groupsums
    if key not in groupsums:
        rank = activation.get_partial_shape().rank.get_length()
        grouped_shape = opset.constant([0] * (rank - 1) + [num_groups, group_size], dtype=ov.Type.i64)
        grouped = opset.reshape(activation, grouped_shape, special_zero=True)
        groupsums[key] = opset.reduce_sum(grouped, opset.constant(-1, ov.Type.i64), keep_dims=False)
    offset_const = opset.constant(offset, dtype=ov.Type.f16, name=name)
    offset_weight = opset.convert(offset_const, activation.get_element_type())
    correction = opset.matmul(groupsums[key], offset_weight, False, transpose_b, name=f"{name}/matmul")
    targets = matmul.output(0).get_target_inputs()
    add = opset.add(matmul, correction, name=f"{name}/add")
    for target in targets:
        target.replace_source_output(add.output(0))
    return add


class FloatZeroPoints:
    """
    Stores the float zero points of the weights NNCF has just compressed (`store`, per weight), and with `offsets`
    adds the per-group offsets to their MatMuls once NNCF's transform is done (`add_offsets`).
    """

    def __init__(self, offsets: bool, journal: GraphJournal):
        self.offsets = offsets
        self._journal = journal
        self._pending: dict[str, np.ndarray] = {}  # weight constant name -> f16 offsets, in the scale's layout

    def store(self, mul: ov.Node, const_name: str, compressed: Any, num_bits: int, zero_point_type: ov.Type) -> None:
        """
        Re-wires the zero point of NNCF's compression subgraph `mul` of the weight `const_name` when NNCF's
        `compressed` weight has one that is float and not integer-valued (scale estimation's integer-valued ones
        stay NNCF's `zero_point_type` constant).
        """
        zero_point = compressed.zero_point
        if zero_point is None or not zero_point.dtype.is_float():
            return
        zero_point = zero_point.as_numpy_tensor().data.astype(np.float32)
        if np.array_equal(zero_point, np.round(zero_point)):
            return
        name, subtract = zero_point_constant_name(const_name), zero_point_subtract_name(const_name)
        if not self.offsets:
            replace_zero_point(mul, subtract, opset.constant(zero_point, dtype=ov.Type.f16, name=name))
            return
        scale = compressed.scale.as_numpy_tensor().data
        integer_zero_point, self._pending[const_name] = split_zero_point(scale, zero_point, num_bits)
        integer_const = opset.constant(integer_zero_point, dtype=zero_point_type, name=name)
        replace_zero_point(mul, subtract, opset.convert(integer_const, ov.Type.f16))

    def add_offsets(self, matmuls: dict[str, ov.Node]) -> None:
        """Adds the offsets stored so far to the MatMuls of their weights (by weight constant name), journaled."""
        groupsums: dict = {}
        for const_name, offset in self._pending.items():
            matmul = matmuls[const_name]
            self._journal.record_consumers(matmul.output(0))
            add_zero_point_offset(matmul, offset, zero_point_offset_name(const_name), groupsums)
        self._pending = {}

    def clear(self) -> None:
        self._pending = {}
