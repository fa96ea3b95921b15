"""What a compressed OpenVINO model holds: per-layer precision and weight reconstruction error."""

import numpy as np
import openvino as ov

from nncf_hqq._nncf import codes_constant_name
from nncf_hqq._nncf import scale_constant_name
from nncf_hqq._nncf import zero_point_constant_name
from nncf_hqq.equalization import EqualizationPlan
from nncf_hqq.zero_point_storage import zero_point_offset_name

LOW_BIT_TYPES = (ov.Type.u4, ov.Type.i4)
INTEGER_WEIGHT_TYPES = (ov.Type.u4, ov.Type.i4, ov.Type.u8, ov.Type.i8)


def constant_value(op: ov.Node) -> np.ndarray:
    """The value of a Constant: u4/i4 unpacked to one uint8/int8 per element, real types as float32."""
    element_type = op.get_element_type()
    shape = tuple(op.get_output_shape(0))
    if element_type in LOW_BIT_TYPES:
        packed = op.get_data().view(np.uint8).ravel()
        nibbles = np.stack([packed & 15, packed >> 4], axis=-1).ravel()[: int(np.prod(shape))]
        if element_type == ov.Type.i4:
            nibbles = np.where(nibbles > 7, nibbles.astype(np.int16) - 16, nibbles).astype(np.int8)
        return nibbles.reshape(shape)
    if element_type.is_real():
        return op.get_data(dtype=np.float32).copy()
    return op.get_data().copy()


def constants_by_name(model: ov.Model) -> dict[str, ov.Node]:
    return {op.get_friendly_name(): op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"}


def dequantize(consts: dict[str, ov.Node], name: str) -> np.ndarray:
    """
    scale * (q - zero_point) (+ the per-group zero point offset, if stored) of the NNCF-compressed weight `name`,
    in its grouped shape.
    """
    q = constant_value(consts[codes_constant_name(name)]).astype(np.float32)
    zero_point = consts.get(zero_point_constant_name(name))
    if zero_point is not None:
        q = q - constant_value(zero_point).astype(np.float32)
    scale = constant_value(consts[scale_constant_name(name)])
    dequantized = q * scale
    offset = consts.get(zero_point_offset_name(name))
    if offset is not None:  # one per group, in the order of the scales
        dequantized = dequantized + constant_value(offset).reshape(scale.shape)
    return dequantized


def layer_reports(
    compressed: ov.Model, reference: ov.Model, equalization: EqualizationPlan | None = None
) -> list[dict]:
    """
    One entry per NNCF-compressed weight: name, shape, precision ("int4_asym", "int8_sym", ...), group size and
    relative reconstruction error ||W - W_hat|| / ||W|| against the same-named constant of `reference`.

    With the `equalization` the model was compressed with (`compress_weights_and_plan`), W_hat is the weight the
    compressed model effectively applies to the original input: its dequantized weight with the equalization
    factors divided out.
    """
    consts = constants_by_name(compressed)
    reference_consts = constants_by_name(reference)
    reports, dequantized = [], {}
    for name, op in consts.items():
        if op.get_element_type() not in INTEGER_WEIGHT_TYPES or scale_constant_name(name) not in consts:
            continue
        weight_shape = tuple(reference_consts[name].get_output_shape(0))
        dequantized[name] = dequantize(consts, name).reshape(weight_shape)
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
            }
        )
    factors = {} if equalization is None else equalization.factors
    for report in reports:
        name = report["name"]
        weight = constant_value(reference_consts[name]).astype(np.float64)
        effective = dequantized.pop(name).astype(np.float64)
        for axis, vector in factors.get(name, {}).items():
            shape = [1] * effective.ndim
            shape[axis] = -1
            effective = effective / vector.reshape(shape)
        norm = np.linalg.norm(weight)
        report["relative_error"] = float(np.linalg.norm(effective - weight) / norm) if norm > 0 else 0.0
    return reports
