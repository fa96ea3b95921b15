"""What a compressed OpenVINO model holds: per-layer precision and weight reconstruction error."""

import numpy as np
import openvino as ov

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
    q = constant_value(consts[name]).astype(np.float32)
    zero_point = consts.get(f"{name}/zero_point")
    if zero_point is not None:
        q = q - constant_value(zero_point).astype(np.float32)
    scale = constant_value(consts[f"{name}/scale"])
    dequantized = q * scale
    offset = consts.get(f"{name}/zero_point_offset")
    if offset is not None:  # one per group, in the order of the scales
        dequantized = dequantized + constant_value(offset).reshape(scale.shape)
    return dequantized


def layer_reports(compressed: ov.Model, reference: ov.Model) -> list[dict]:
    """
    One entry per NNCF-compressed weight: name, shape, precision ("int4_asym", "int8_sym", ...), group size and
    relative reconstruction error ||W - W_hat|| / ||W|| against the same-named constant of `reference`.
    """
    consts = constants_by_name(compressed)
    reference_consts = constants_by_name(reference)
    reports = []
    for name, op in consts.items():
        if op.get_element_type() not in INTEGER_WEIGHT_TYPES or f"{name}/scale" not in consts:
            continue
        weight = constant_value(reference_consts[name]).astype(np.float64)
        dequantized = dequantize(consts, name).reshape(weight.shape)
        element_type = op.get_element_type()
        bits = 4 if element_type in LOW_BIT_TYPES else 8
        zero_point = consts.get(f"{name}/zero_point")
        symmetric = zero_point is None or int(np.prod(list(zero_point.get_output_shape(0)))) == 1  # unsigned sym
        scale_shape = tuple(consts[f"{name}/scale"].get_output_shape(0))
        q_shape = tuple(op.get_output_shape(0))
        group_size = q_shape[-1] if len(q_shape) > len(weight.shape) else -1
        norm = np.linalg.norm(weight)
        reports.append(
            {
                "name": name,
                "shape": list(weight.shape),
                "precision": f"int{bits}_{'sym' if symmetric else 'asym'}",
                "group_size": group_size,
                "zero_point_type": None if zero_point is None else zero_point.get_element_type().get_type_name(),
                "num_scales": int(np.prod(scale_shape)),
                "relative_error": float(np.linalg.norm(dequantized - weight) / norm) if norm > 0 else 0.0,
            }
        )
    return reports
