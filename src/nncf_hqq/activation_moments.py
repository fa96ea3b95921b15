"""
The second moments of the activations the weights multiply, E[x_k^2] per input channel k, measured in one pass
over a dataset: the diagonal of the Gram matrix G = E[x x^T] that weights a weight's expected output error,
E|x^T (W - W_q)_i|^2 ~ sum_k E[x_k^2] (W_ik - W_q,ik)^2 (cross-channel terms dropped).

One pass runs a copy of the model whose outputs are, per measured activation, sum_t x_t,k^2 over the sample's
tokens (computed in the graph: nothing of the size of an activation leaves it) and the activation's shape; the
model's own outputs, and what only they need, are dropped. Compiling the copy needs about the float model's size
in memory while the pass runs.

Scaling a weight's input channels by factors v (W' = W diag(v), x' = x / v, as equalization folds them) scales
the moments by 1 / v^2 (`scaled_by_factors`): measured once on the model as given, they hold for the equalized one.
"""

from collections.abc import Iterable
from typing import Any

import numpy as np
import openvino as ov
from nncf.common.logging import nncf_logger
from openvino import opset13 as opset

from nncf_hqq.openvino_graph import constant_through_converts

# float32 inference, so that the moments do not depend on the machine's precision
_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def second_moments(model: ov.Model, values: list[ov.Output], samples: Iterable[Any]) -> tuple[list[np.ndarray], int]:
    """
    The mean of x_k^2 over every token of every sample for each activation of `values` (outputs of `model`'s ops,
    [..., channels]), float32 [channels], and the number of tokens (the most any activation saw); each sample (the
    compiled model's inputs) is run from an empty state. `model` is not changed. Raises ValueError when `samples` is
    empty.
    """
    if not values:
        return [], 0
    probe = model.clone()
    # the clone's ops in the same order as the model's (auto-generated names are not kept by a clone)
    position = {op.get_instance_id(): i for i, op in enumerate(model.get_ordered_ops())}
    cloned = probe.get_ordered_ops()
    results = []
    for value in values:
        x = cloned[position[value.get_node().get_instance_id()]].output(value.get_index())
        token_axes = list(range(x.get_partial_shape().rank.get_length() - 1))
        x32 = opset.convert(x, ov.Type.f32)
        squares = opset.multiply(x32, x32)
        results.append(opset.result(opset.reduce_sum(squares, opset.constant(token_axes, ov.Type.i64), False)))
        results.append(opset.result(opset.shape_of(x, ov.Type.i64)))
    own = list(probe.get_results())
    probe.add_results(results)
    for result in own:  # the model's outputs (an LLM's logits: its largest MatMul) are not needed
        probe.remove_result(result)
    request = ov.Core().compile_model(probe, "CPU", _CONFIG).create_infer_request()
    sums = [np.zeros(0)] * len(values)
    tokens = np.zeros(len(values), np.int64)
    for sample in samples:
        request.reset_state()
        request.infer(sample)
        for i in range(len(values)):
            total = np.asarray(request.get_output_tensor(2 * i).data, np.float64)
            sums[i] = total if tokens[i] == 0 else sums[i] + total
            tokens[i] += int(np.prod(request.get_output_tensor(2 * i + 1).data[:-1]))
    if len(values) and not tokens.any():
        raise ValueError("No sample to measure the activations on.")
    nncf_logger.debug(f"Second moments of {len(values)} activations on {int(tokens.max(initial=0))} tokens")
    return [(s / max(n, 1)).astype(np.float32) for s, n in zip(sums, tokens, strict=True)], int(tokens.max(initial=0))


def matmul_input(matmul: ov.Node, constant_name: str) -> ov.Output | None:
    """
    The activation input of `matmul` whose channels the weight constant `constant_name` (its second input,
    through Converts) multiplies along its reduction axis; None for any other MatMul.
    """
    if matmul is None or matmul.get_type_name() != "MatMul" or matmul.get_attributes().get("transpose_a", False):
        return None
    constant = constant_through_converts(matmul.input_value(1))
    if constant is None or constant.get_friendly_name() != constant_name:
        return None
    return matmul.input_value(0)


def weight_input_moments(
    model: ov.Model, weights: dict[str, ov.Node | None], samples: Iterable[Any]
) -> tuple[dict[str, np.ndarray], int]:
    """
    Per weight constant (by friendly name: the MatMul that takes it), the second moments of the MatMul's input
    channels over `samples` (`second_moments`), and the number of tokens; weights whose MatMul `matmul_input` does
    not handle are absent. Activations shared by several weights are measured once.
    """
    readers: dict[tuple[int, int], list[str]] = {}
    values: dict[tuple[int, int], ov.Output] = {}
    for name, matmul in weights.items():
        value = matmul_input(matmul, name)
        if value is not None:
            key = (value.get_node().get_instance_id(), value.get_index())
            readers.setdefault(key, []).append(name)
            values[key] = value
    moments, tokens = second_moments(model, list(values.values()), samples)
    return {name: m for key, m in zip(values, moments, strict=True) for name in readers[key]}, tokens


def probe_fits_in_memory(model: ov.Model, margin: float = 1.5) -> bool:
    """
    Whether a float32 run of `model` (its constants as float32, the largest share of what compiling it needs),
    times `margin`, fits in the memory available to this process: the system's available memory and, under a
    cgroup (v2 or v1) limit, what the limit leaves.
    """
    need = (
        margin
        * 4
        * sum(
            int(np.prod(op.get_output_shape(0))) for op in model.get_ordered_ops() if op.get_type_name() == "Constant"
        )
    )
    return need <= _available_memory()


def _available_memory() -> float:
    available = float("inf")
    try:
        for line in open("/proc/meminfo").read().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = open(_own_cgroup_file(limit_file)).read().strip()
            usage = int(open(_own_cgroup_file(usage_file)).read())
        except (OSError, ValueError):
            continue
        if limit.isdigit():
            available = min(available, int(limit) - usage)
    return available


def _own_cgroup_file(path: str) -> str:
    """`path` under this process's own cgroup (v2: the unified hierarchy's path in /proc/self/cgroup)."""
    try:
        for line in open("/proc/self/cgroup").read().splitlines():
            hierarchy, controllers, group = line.split(":", 2)
            v2 = hierarchy == "0" and "/memory." in path and "/memory/" not in path
            v1 = "memory" in controllers.split(",") and "/memory/" in path
            if (v2 or v1) and group not in ("", "/"):
                base = "/sys/fs/cgroup/memory" if v1 else "/sys/fs/cgroup"
                return path.replace(base, base + group, 1)
    except (OSError, ValueError):
        pass
    return path


def scaled_by_factors(moments: np.ndarray, factors: np.ndarray | None) -> np.ndarray:
    """The moments of the input x / v of a weight whose input channels were scaled by `factors` v: E[x^2] / v^2."""
    return moments if factors is None else (moments / np.square(factors.astype(np.float32))).astype(np.float32)
