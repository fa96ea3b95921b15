"""
What a compressed OpenVINO model holds: per-layer precision and weight reconstruction error, computed one layer
and one block of rows at a time, from the constants as OpenVINO maps them (memory: a block, not a model).
"""

import numpy as np
import openvino as ov

from nncf_hqq._nncf import codes_constant_name
from nncf_hqq._nncf import scale_constant_name
from nncf_hqq._nncf import zero_point_constant_name
from nncf_hqq.equalization import EqualizationPlan
from nncf_hqq.zero_point_storage import zero_point_offset_name

LOW_BIT_TYPES = (ov.Type.u4, ov.Type.i4)
INTEGER_WEIGHT_TYPES = (ov.Type.u4, ov.Type.i4, ov.Type.u8, ov.Type.i8)
BLOCK_ELEMENTS = 2**20  # weights per block of rows of the error computation (1M: 8 MiB in float64)


def constant_value(op: ov.Node) -> np.ndarray:
    """The value of a Constant: u4/i4 unpacked to one uint8/int8 per element, real types as float32."""
    return _rows(op, 0, int(op.get_output_shape(0)[0]) if op.get_output_shape(0) else 1)


def _rows(op: ov.Node, start: int, stop: int) -> np.ndarray:
    """
    Rows `start:stop` of a Constant's value (the whole value for a scalar): u4/i4 unpacked to one uint8/int8 per
    element, real types as float32; read from OpenVINO's memory (a file mapping for a model read from disk).
    """
    element_type = op.get_element_type()
    shape = tuple(op.get_output_shape(0))
    if not shape:
        value = op.get_data()
        return value.astype(np.float32) if element_type.is_real() else value.copy()
    row = int(np.prod(shape[1:]))
    if element_type in LOW_BIT_TYPES:
        first, last = start * row, stop * row
        packed = op.get_tensor_view().data.view(np.uint8).reshape(-1)[first // 2 : (last + 1) // 2]
        nibbles = np.stack([packed & 15, packed >> 4], axis=-1).reshape(-1)[first % 2 : first % 2 + last - first]
        if element_type == ov.Type.i4:
            nibbles = np.where(nibbles > 7, nibbles.astype(np.int16) - 16, nibbles).astype(np.int8)
        return nibbles.reshape((stop - start, *shape[1:]))
    if element_type.is_real():
        return _real_rows(op, start, stop)
    return op.get_data()[start:stop].copy()


def _real_rows(op: ov.Node, start: int, stop: int) -> np.ndarray:
    """Rows of a real Constant as float32, converted from the mapped tensor (bf16 through OpenVINO)."""
    if op.get_element_type() in (ov.Type.f16, ov.Type.f32, ov.Type.f64):
        return op.get_tensor_view().data[start:stop].astype(np.float32)
    return op.get_data(dtype=np.float32)[start:stop].copy()


def constants_by_name(model: ov.Model) -> dict[str, ov.Node]:
    return {op.get_friendly_name(): op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"}


def dequantize(consts: dict[str, ov.Node], name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """
    scale * (q - zero_point) (+ the per-group zero point offset, if stored) of the NNCF-compressed weight `name`, in
    its grouped shape, float32; rows `start:stop` of its first axis (all by default).
    """
    codes = consts[codes_constant_name(name)]
    stop = int(codes.get_output_shape(0)[0]) if stop is None else stop
    q = _rows(codes, start, stop).astype(np.float32)
    zero_point = consts.get(zero_point_constant_name(name))
    if zero_point is not None:
        q = q - _leading_rows(zero_point, start, stop).astype(np.float32)
    scale = _leading_rows(consts[scale_constant_name(name)], start, stop)
    dequantized = q * scale
    offset = consts.get(zero_point_offset_name(name))
    if offset is not None:  # one per group, in the order of the scales
        scales_per_row = int(np.prod(consts[scale_constant_name(name)].get_output_shape(0)[1:]))
        values = _rows(offset, 0, int(offset.get_output_shape(0)[0])).reshape(-1)
        dequantized = dequantized + values[start * scales_per_row : stop * scales_per_row].reshape(scale.shape)
    return dequantized


def _leading_rows(op: ov.Node, start: int, stop: int) -> np.ndarray:
    """Rows of a per-row constant (scale, zero point), or the whole constant when it is a scalar or one row."""
    shape = tuple(op.get_output_shape(0))
    if not shape or shape[0] == 1:
        return constant_value(op)
    return _rows(op, start, stop)


def layer_reports(
    compressed: ov.Model, reference: ov.Model, equalization: EqualizationPlan | None = None
) -> list[dict]:
    """
    One entry per NNCF-compressed weight: name, shape, precision ("int4_asym", "int8_sym", ...), group size and
    relative reconstruction error ||W - W_hat|| / ||W|| against the same-named constant of `reference`.

    With the `equalization` the model was compressed with (`compress_weights_and_plan`), W_hat is the weight the
    compressed model effectively applies to the original input: its dequantized weight with the equalization
    factors divided out. The error is accumulated over blocks of rows (`BLOCK_ELEMENTS` weights), in float64.
    """
    consts = constants_by_name(compressed)
    reference_consts = constants_by_name(reference)
    factors = {} if equalization is None else equalization.factors
    reports = []
    for name, op in consts.items():
        if op.get_element_type() not in INTEGER_WEIGHT_TYPES or scale_constant_name(name) not in consts:
            continue
        weight_shape = tuple(reference_consts[name].get_output_shape(0))
        bits = 4 if op.get_element_type() in LOW_BIT_TYPES else 8
        zero_point = consts.get(zero_point_constant_name(name))
        symmetric = zero_point is None or int(np.prod(list(zero_point.get_output_shape(0)))) == 1  # unsigned sym
        q_shape = tuple(op.get_output_shape(0))
        reports.append(
            {
                "name": name,
                "shape": list(weight_shape),
                "precision": f"int{bits}_{'sym' if symmetric else 'asym'}",
                "group_size": q_shape[-1] if len(q_shape) > len(weight_shape) else -1,
                "zero_point_type": None if zero_point is None else zero_point.get_element_type().get_type_name(),
                "num_scales": int(np.prod(list(consts[scale_constant_name(name)].get_output_shape(0)))),
                "relative_error": _relative_error(consts, name, reference_consts[name], factors.get(name, {})),
            }
        )
    return reports


def _relative_error(consts: dict[str, ov.Node], name: str, reference: ov.Node, factors: dict) -> float:
    """||W_hat - W|| / ||W||, over blocks of the compressed weight's rows (its first axis) where they are W's."""
    weight_shape = tuple(reference.get_output_shape(0))
    q_shape = tuple(consts[codes_constant_name(name)].get_output_shape(0))
    if q_shape[0] == weight_shape[0]:
        step = max(BLOCK_ELEMENTS // max(int(np.prod(q_shape[1:])), 1), 1)
        blocks = [(start, min(start + step, q_shape[0])) * 2 for start in range(0, q_shape[0], step)]
    else:  # grouped along the first axis: the codes' rows are not W's, one block
        blocks = [(0, q_shape[0], 0, weight_shape[0])]
    error, norm = 0.0, 0.0
    for q_start, q_stop, start, stop in blocks:
        effective = dequantize(consts, name, q_start, q_stop).reshape((stop - start, *weight_shape[1:]))
        effective = effective.astype(np.float64)
        for axis, vector in factors.items():
            shape = [1] * effective.ndim
            shape[axis] = -1
            effective = effective / (vector[start:stop] if axis == 0 else vector).reshape(shape)
        weight = _rows(reference, start, stop).astype(np.float64)
        error += float(np.sum(np.square(effective - weight)))
        norm += float(np.sum(np.square(weight)))
    return float(np.sqrt(error) / np.sqrt(norm)) if norm > 0 else 0.0
