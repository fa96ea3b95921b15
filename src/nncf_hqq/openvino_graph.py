"""OpenVINO graph queries and edits that nncf-hqq needs around a compressed weight (no NNCF internals here)."""

import nncf
import numpy as np
import openvino as ov
from nncf.tensor import Tensor


def consumers_through_converts(node: ov.Node) -> list[ov.Node]:
    """The nodes that use `node`'s output, looking through Convert nodes."""
    consumers = []
    for target in node.output(0).get_target_inputs():
        consumer = target.get_node()
        if consumer.get_type_name() == "Convert":
            consumers.extend(consumers_through_converts(consumer))
        else:
            consumers.append(consumer)
    return consumers


def constant_through_converts(value: ov.Output) -> ov.Node | None:
    """The Constant that produces `value`, looking through Convert nodes, or None."""
    node = value.get_node()
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" else None


def can_take_zero_point_offset(matmul: ov.Node, const: ov.Node, reduction_axes: tuple[int, ...]) -> bool:
    """
    Whether the constant `const`, the weight of `matmul`, can store its zero point as an integer one plus per-group
    offsets: it is the 2-D second input of the MatMul (its only consumer), grouped along the MatMul's contraction
    axis, and the activation has a static rank and a static number of input features.
    """
    attributes = matmul.get_attributes()
    shape = const.get_output_partial_shape(0)
    if attributes["transpose_a"] or shape.rank.get_length() != 2:
        return False
    if [n.get_friendly_name() for n in consumers_through_converts(const)] != [matmul.get_friendly_name()]:
        return False
    contraction_axis = 1 if attributes["transpose_b"] else 0
    if tuple(a % 2 for a in reduction_axes) != (contraction_axis,):
        return False
    activation = matmul.input_value(0).get_partial_shape()
    return activation.rank.is_static and activation.rank.get_length() >= 2 and activation[-1].is_static


def norm_scale_feeding(matmul: ov.Node) -> np.ndarray | None:
    """
    The per-channel scale (float32, [in]) of the normalisation layer whose output `matmul` multiplies (a Multiply
    by a constant vector, through Converts), or None when the MatMul's input is not such a Multiply.
    """
    node = matmul.input_value(0).get_node()
    in_features = matmul.input_value(0).get_partial_shape()[-1]
    if node.get_type_name() != "Multiply" or not in_features.is_static:
        return None
    for value in node.input_values():
        const = constant_through_converts(value)
        shape = list(const.get_output_shape(0)) if const is not None else []
        if shape and shape[-1] == in_features.get_length() and np.prod(shape) == shape[-1]:
            return const.get_data().astype(np.float32).ravel()
    return None


def four_bit_tensor(codes: np.ndarray, shape: tuple[int, ...], element_type: ov.Type = ov.Type.u4) -> ov.Tensor:
    """
    4-bit codes as a u4 (codes 0..15) or i4 (codes -8..7) OpenVINO tensor of `shape`: two codes per byte, the first
    in the low half. The tensor owns its memory, so a constant that shares it keeps it alive (one made from a numpy
    array would not, and one made from an int8 array with type i4 converts element by element).
    """
    nibbles = np.ascontiguousarray(codes).reshape(-1).view(np.uint8) & np.uint8(15)  # i4: two's complement
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    tensor = ov.Tensor(element_type, ov.Shape(list(shape)))
    pairs = nibbles.view("<u2")  # code 2i in the low byte, code 2i + 1 in the high byte
    np.bitwise_or(pairs, pairs >> 4, out=tensor.data, casting="unsafe")  # low byte: code 2i | code 2i + 1 << 4
    return tensor


def are_eight_bit_codes(element_type: ov.Type, dtype: type) -> bool:
    """Whether codes of numpy `dtype` are stored as they are in a constant of `element_type` (u8 or i8)."""
    return (element_type, np.dtype(dtype)) in ((ov.Type.u8, np.uint8), (ov.Type.i8, np.int8))


def are_packed_four_bit_codes(element_type: ov.Type, shape: tuple[int, ...]) -> bool:
    """Whether codes of `shape` are stored two a byte in a constant of `element_type` (u4 or i4) that the solver can
    write directly: whole bytes per row (an even last axis)."""
    return element_type in (ov.Type.u4, ov.Type.i4) and len(shape) > 0 and shape[-1] % 2 == 0


def codes_buffer(element_type: ov.Type, shape: tuple[int, ...], dtype: type) -> tuple[Tensor, np.ndarray] | None:
    """
    Memory for codes of numpy `dtype` that a constant of `element_type` can share: an OpenVINO tensor that owns it
    (a constant made from it keeps it alive) as a Tensor, and its writable numpy view: 8-bit codes one a byte,
    4-bit ones two a byte (uint8, `are_packed_four_bit_codes`); None for other types and shapes.
    """
    packed = are_packed_four_bit_codes(element_type, shape)
    if not (packed or are_eight_bit_codes(element_type, dtype)):
        return None
    tensor = ov.Tensor(element_type, ov.Shape(list(shape)))
    return Tensor(tensor), tensor.data.view(np.uint8) if packed else tensor.data


def replace_zero_point(output_node: ov.Node, subtract_name: str, zero_point: ov.Node) -> None:
    """
    Makes `zero_point` the zero point input of the Subtract named `subtract_name` (of a weight's compression
    subgraph), found under `output_node`.
    """
    subtract = node_under(output_node, subtract_name)
    if subtract is None:
        msg = f"Zero point subtract {subtract_name} not found in the compression subgraph."
        raise nncf.InternalError(msg)
    subtract.input(1).replace_source_output(zero_point.output(0))


def node_under(output_node: ov.Node, name: str) -> ov.Node | None:
    """The node of friendly name `name` among `output_node` and the nodes it reads from, directly or not; or None."""
    stack, seen = [output_node], set()
    while stack:
        node = stack.pop()
        if node.get_friendly_name() == name:
            return node
        for value in node.input_values():
            source = value.get_node()
            if source.get_friendly_name() not in seen:
                seen.add(source.get_friendly_name())
                stack.append(source)
    return None
