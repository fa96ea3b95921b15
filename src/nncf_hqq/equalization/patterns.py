"""
Where a per-input-channel scale can be folded in an OpenVINO model: which MatMul weights share an input, and which
producer of that input absorbs the scale so that the float model computes the same function.

For MatMuls y_m = x W_m^T sharing an input x (weights [out, in], groups along `in`), a positive vector c gives
W'_m = W_m diag(1/c) if the producer of x is changed to produce x' = x diag(c). The producers recognised here
are the three of transformer blocks (the same places NNCF's AWQ scales), as patterns of the graph, not per
model family:

- NORM: a Multiply by a constant vector (the scale of an RMSNorm or LayerNorm, Gemma's 1 + w folded), optionally
  followed by an Add of a constant vector (LayerNorm's bias): both constants absorb c. Only when the norm's
  output feeds nothing but the MatMuls (pre-norm blocks; in post-norm blocks it also feeds the residual).
- GATED: x = act(gate(h)) * up(h) feeding a MatMul (down_proj): the rows (and bias) of up's weight absorb c.
- ATTENTION: x = the heads of softmax(.) V, through Reshape/Transpose, feeding a MatMul (o_proj): the rows (and
  bias) of the value projection absorb c. With grouped-query attention (n_rep query heads per value head), o's
  input column j = (h, i) of query head h reads value channel (h // n_rep, i): c has one entry per value
  channel, repeated for the query heads that share it (`channel_map`).
"""

from dataclasses import dataclass
from dataclasses import field
from enum import Enum

import numpy as np
import openvino as ov

from nncf_hqq.openvino_graph import constant_through_converts

# ops that move channels around without mixing or scaling them (data input 0)
_LAYOUT_OPS = ("Reshape", "Transpose", "Convert", "Unsqueeze", "Squeeze", "Broadcast")


class ProducerKind(Enum):
    NORM = "norm"
    GATED = "gated"
    ATTENTION = "attention"


@dataclass
class ScaledConstant:
    """A constant that is multiplied by the scale along `axis` (absorbers), or divided by it (consumers)."""

    node: ov.Node  # the Constant
    axis: int  # the axis of the constant that runs over channels
    channel_map: np.ndarray | None = None  # channel index of each position along `axis`; None: the identity


@dataclass
class ScaleGroup:
    """
    One vector c of `num_channels` positive scales: the weights of `consumers` (MatMuls sharing an input) divide
    their input columns by it, the `absorbers` (the input's producer) multiply their output channels by it.

    :param name: The producer's name, for logs.
    :param kind: The producer's pattern.
    :param consumers: The MatMul weights, axis = their input-channel axis.
    :param absorbers: The producer's constants, axis = their output-channel axis.
    :param norm_scale: For NORM producers, the norm's scale vector (the activations' per-channel scale).
    :param matmuls: The consumer MatMul nodes, in the order of `consumers`.
    """

    name: str
    kind: ProducerKind
    num_channels: int
    consumers: list[ScaledConstant] = field(default_factory=list)
    absorbers: list[ScaledConstant] = field(default_factory=list)
    norm_scale: np.ndarray | None = None
    matmuls: list[ov.Node] = field(default_factory=list)


def _is_constant_vector(value: ov.Output, length: int) -> ov.Node | None:
    """The Constant (through Converts) producing `value` if it is a vector of `length` values (any rank), else None."""
    const = constant_through_converts(value)
    if const is None:
        return None
    shape = list(const.get_output_shape(0))
    if not shape or shape[-1] != length or int(np.prod(shape)) != length:
        return None
    return const


def _targets(output: ov.Output) -> list[ov.Input]:
    """The inputs that use the output's values (ShapeOf uses only its shape, which scaling does not change)."""
    return [t for t in output.get_target_inputs() if t.get_node().get_type_name() != "ShapeOf"]


def _single_consumer(output: ov.Output) -> ov.Node | None:
    targets = _targets(output)
    return targets[0].get_node() if len(targets) == 1 else None


@dataclass
class _Linear:
    """A MatMul x W^T (or x W) with a constant weight used by nothing else."""

    matmul: ov.Node
    weight: ov.Node
    in_axis: int  # axis of the weight that runs over input channels
    out_axis: int
    in_features: int
    out_features: int


def _linear(node: ov.Node) -> _Linear | None:
    if node.get_type_name() != "MatMul" or node.get_attributes()["transpose_a"]:
        return None
    weight = constant_through_converts(node.input_value(1))
    if weight is None or len(weight.get_output_shape(0)) != 2:
        return None
    # the weight constant (and its Converts) must feed this MatMul only
    value = node.input_value(1)
    while True:
        if len(_targets(value)) != 1:
            return None
        if value.get_node() is weight or value.get_node().get_type_name() != "Convert":
            break
        value = value.get_node().input_value(0)
    if value.get_node().get_friendly_name() != weight.get_friendly_name():
        return None
    if not node.input_value(0).get_partial_shape().rank.is_static:
        return None
    transpose_b = node.get_attributes()["transpose_b"]
    shape = list(weight.get_output_shape(0))
    in_axis, out_axis = (1, 0) if transpose_b else (0, 1)
    return _Linear(node, weight, in_axis, out_axis, shape[in_axis], shape[out_axis])


def count_linears(model: ov.Model) -> int:
    """The number of MatMuls with a constant weight of their own (the candidates for equalization)."""
    return sum(_linear(node) is not None for node in model.get_ordered_ops())


def find_scale_groups(model: ov.Model) -> list[ScaleGroup]:
    """
    The scale groups of `model`: MatMuls with constant weights that share an input whose producer matches one of
    the patterns (module docstring), in the model's topological order. Attention and gated groups come before the
    norm groups that feed their producers, so a producer's weight is rescaled (rows) before its own columns are.
    """
    consumers_by_input: dict[tuple[str, int], list[_Linear]] = {}
    sources: dict[tuple[str, int], ov.Output] = {}
    for node in model.get_ordered_ops():
        linear = _linear(node)
        if linear is None:
            continue
        source = node.input_value(0)
        key = (source.get_node().get_friendly_name(), source.get_index())
        consumers_by_input.setdefault(key, []).append(linear)
        sources[key] = source
    groups = []
    for key, linears in consumers_by_input.items():
        source = sources[key]
        if {t.get_node().get_friendly_name() for t in _targets(source)} != {
            lin.matmul.get_friendly_name() for lin in linears
        }:
            continue  # the input also feeds something else (a residual connection, another op)
        num_channels = linears[0].in_features
        if any(lin.in_features != num_channels for lin in linears):
            continue
        group = (
            _norm_group(source, linears, num_channels)
            or _gated_group(source, linears, num_channels)
            or _attention_group(source, linears, num_channels)
        )
        if group is not None:
            groups.append(group)
    order = {ProducerKind.ATTENTION: 0, ProducerKind.GATED: 0, ProducerKind.NORM: 1}
    return sorted(groups, key=lambda g: order[g.kind])


def _consumer_constants(linears: list[_Linear], channel_map: np.ndarray | None = None) -> list[ScaledConstant]:
    return [ScaledConstant(lin.weight, lin.in_axis, channel_map) for lin in linears]


def _norm_group(source: ov.Output, linears: list[_Linear], num_channels: int) -> ScaleGroup | None:
    """NORM: Multiply(x, gamma) [-> Add(beta)] feeding the MatMuls."""
    node = source.get_node()
    absorbers = []
    if node.get_type_name() == "Add":  # LayerNorm's bias
        beta, multiply = None, None
        for i in range(2):
            beta = _is_constant_vector(node.input_value(i), num_channels)
            if beta is not None:
                multiply = node.input_value(1 - i)
                break
        if beta is None or multiply.get_node().get_type_name() != "Multiply" or len(_targets(multiply)) != 1:
            return None
        absorbers.append(ScaledConstant(beta, len(beta.get_output_shape(0)) - 1))
        node = multiply.get_node()
    if node.get_type_name() != "Multiply":
        return None
    gammas = [_is_constant_vector(node.input_value(i), num_channels) for i in range(2)]
    if sum(g is not None for g in gammas) != 1:
        return None
    gamma = next(g for g in gammas if g is not None)
    if len(_targets(gamma.output(0))) != 1:
        return None  # a scale constant shared with another norm
    absorbers.insert(0, ScaledConstant(gamma, len(gamma.get_output_shape(0)) - 1))
    return ScaleGroup(
        name=node.get_friendly_name(),
        kind=ProducerKind.NORM,
        num_channels=num_channels,
        consumers=_consumer_constants(linears),
        absorbers=absorbers,
        norm_scale=gamma.get_data().astype(np.float32).ravel(),
        matmuls=[lin.matmul for lin in linears],
    )


def _linear_with_bias(value: ov.Output, out_features: int) -> tuple[_Linear, ov.Node | None] | None:
    """The linear producing `value`, directly or through an Add of a constant bias, used by nothing else."""
    node, bias = value.get_node(), None
    if node.get_type_name() == "Add":
        for i in range(2):
            bias = _is_constant_vector(node.input_value(i), out_features)
            if bias is not None:
                if len(_targets(bias.output(0))) != 1 or len(_targets(node.input_value(1 - i))) != 1:
                    return None
                node = node.input_value(1 - i).get_node()
                break
        else:
            return None
    linear = _linear(node)
    if linear is None or linear.out_features != out_features:
        return None
    return linear, bias


def _producer_absorbers(linear: _Linear, bias: ov.Node | None) -> list[ScaledConstant]:
    absorbers = [ScaledConstant(linear.weight, linear.out_axis)]
    if bias is not None:
        absorbers.append(ScaledConstant(bias, len(bias.get_output_shape(0)) - 1))
    return absorbers


def _gated_group(source: ov.Output, linears: list[_Linear], num_channels: int) -> ScaleGroup | None:
    """GATED: Multiply(act(gate(h)), up(h)) feeding the MatMuls; up's rows absorb c."""
    node = source.get_node()
    if node.get_type_name() != "Multiply":
        return None
    candidates = []
    for i in range(2):
        if len(_targets(node.input_value(i))) != 1:
            continue
        found = _linear_with_bias(node.input_value(i), num_channels)
        if found is not None:
            candidates.append(found)
    if len(candidates) != 1:  # both factors linear (a bilinear product): no single absorber
        return None
    linear, bias = candidates[0]
    return ScaleGroup(
        name=linear.matmul.get_friendly_name(),
        kind=ProducerKind.GATED,
        num_channels=num_channels,
        consumers=_consumer_constants(linears),
        absorbers=_producer_absorbers(linear, bias),
        matmuls=[lin.matmul for lin in linears],
    )


def _attention_group(source: ov.Output, linears: list[_Linear], num_channels: int) -> ScaleGroup | None:
    """ATTENTION: the value projection, through the attention, feeding the MatMuls (o_proj)."""
    value = _walk_layout_ops(source)
    node = value.get_node()
    if len(_targets(value)) != 1:
        return None
    if node.get_type_name() == "ScaledDotProductAttention":
        value_input = node.input_value(2)
    elif node.get_type_name() == "MatMul" and not any(node.get_attributes().values()):
        value_input = node.input_value(1)  # softmax(Q K^T) V
    else:
        return None
    head_dim = value_input.get_partial_shape()[-1]
    if not head_dim.is_static:
        return None
    found = _value_projection(value_input)
    if found is None:
        return None
    linear, bias = found
    head_dim = head_dim.get_length()
    kv_channels = linear.out_features
    if kv_channels % head_dim or num_channels % kv_channels:
        return None
    n_rep = num_channels // kv_channels
    j = np.arange(num_channels)
    channel_map = (j // (head_dim * n_rep)) * head_dim + j % head_dim
    return ScaleGroup(
        name=linear.matmul.get_friendly_name(),
        kind=ProducerKind.ATTENTION,
        num_channels=kv_channels,
        consumers=_consumer_constants(linears, None if n_rep == 1 else channel_map),
        absorbers=_producer_absorbers(linear, bias),
        matmuls=[lin.matmul for lin in linears],
    )


def _walk_layout_ops(value: ov.Output) -> ov.Output:
    """Follows `value` back through layout ops that have one consumer each."""
    while value.get_node().get_type_name() in _LAYOUT_OPS and len(_targets(value)) == 1:
        value = value.get_node().input_value(0)
    return value


def _value_projection(value: ov.Output) -> tuple[_Linear, ov.Node | None] | None:
    """
    The value projection behind the attention's value input: back through layout ops, a Concat with the past
    values (KV cache: its other input comes from a ReadValue), to a linear with an optional bias.
    """
    while True:
        node = value.get_node()
        if node.get_type_name() in _LAYOUT_OPS:
            if len(_targets(value)) != 1:
                return None
            value = node.input_value(0)
        elif node.get_type_name() == "Concat":  # past values, then the new ones; the result also goes to an Assign
            others = [t.get_node().get_type_name() for t in _targets(value)]
            if sorted(others).count("Assign") != len(others) - 1:
                return None
            new = [v for v in node.input_values() if not _from_state(v)]
            if len(new) != 1:
                return None
            value = new[0]
        else:
            break
    out_features = value.get_partial_shape()[-1]
    if len(_targets(value)) != 1 or not out_features.is_static:
        return None
    return _linear_with_bias(value, out_features.get_length())


def _from_state(value: ov.Output) -> bool:
    """Whether `value` comes from a ReadValue (the KV cache), through Gather (beam reordering) and layout ops."""
    for _ in range(8):
        node = value.get_node()
        if node.get_type_name() == "ReadValue":
            return True
        if node.get_type_name() not in (*_LAYOUT_OPS, "Gather"):
            return False
        value = node.input_value(0)
    return False
