"""
Equalization variants that the product does not offer, folded into a model before compression, for comparison
(`benchmarks.methods`): a per-group guard by the estimated output error, and producer-kind filters.

    "<candidate>[@kinds][|guard[plain]]": candidate "sinkhorn" or "pow:<alpha>"; kinds: comma-separated producer
    kinds to equalize (norm, gated, attention; default all); guard: keep a group's scales only where the estimated
    error (with the norm scale as the activations' magnitude; plain: without) is lower than without them.
"""

import numba
import numpy as np
import openvino as ov

from nncf_hqq.equalization import fold as fold_plan
from nncf_hqq.equalization.algorithm import Equalization
from nncf_hqq.equalization.algorithm import EqualizationPlan
from nncf_hqq.equalization.algorithm import EqualizationRule
from nncf_hqq.equalization.patterns import ProducerKind
from nncf_hqq.equalization.patterns import find_scale_groups


@numba.njit(parallel=True, error_model="numpy", cache=True)
def rtn_errors(weight, channel_map, scales, activation, group_size, q_max):
    """
    err(c) = sum_ij a_k^2 (W_ij - c_k Q(W_ij / c_k))^2, k = channel_map[j], for each candidate c (a row of `scales`),
    Q being NNCF's asymmetric round-to-nearest per group of `group_size` along j.

    :param weight: float32 [rows, in], input channels last.
    :param channel_map: int64 [in], the channel of each column.
    :param scales: float32 [candidates, channels].
    :param activation: float32 [channels], a_k.
    :param group_size: Columns per group (dividing `in`).
    :param q_max: 2^bits - 1.
    :return: float64 [candidates].
    """
    rows, columns = weight.shape
    candidates = scales.shape[0]
    groups = columns // group_size
    totals = np.zeros((rows, candidates), np.float64)
    for i in numba.prange(rows):
        w = weight[i]
        u = np.empty(group_size, np.float32)
        for candidate in range(candidates):
            total = 0.0
            for g in range(groups):
                low, high = np.float32(0.0), np.float32(0.0)
                for t in range(group_size):
                    j = g * group_size + t
                    u[t] = w[j] / scales[candidate, channel_map[j]]
                    low = min(low, u[t])
                    high = max(high, u[t])
                step = (high - low) / q_max
                step = max(step, np.finfo(np.float32).eps)
                zero_point = min(max(-np.rint(low / step), np.float32(0.0)), q_max)
                group_total = np.float32(0.0)
                for t in range(group_size):
                    j = g * group_size + t
                    k = channel_map[j]
                    code = min(max(np.rint(u[t] / step + zero_point), np.float32(0.0)), q_max)
                    error = (u[t] - (code - zero_point) * step) * scales[candidate, k] * activation[k]
                    group_total += error * error
                total += group_total
            totals[i, candidate] = total
    return totals.sum(axis=0)


def _errors(weights, maps, cs, activation, group_size: int, num_bits: int) -> np.ndarray:
    scales = np.stack(cs).astype(np.float32)
    a = np.ones(len(cs[0]), np.float32) if activation is None else activation.astype(np.float32)
    total = np.zeros(len(cs))
    for weight, channel_map in zip(weights, maps, strict=True):
        w = np.ascontiguousarray(weight.data, dtype=np.float32)
        m = np.arange(w.shape[1]) if channel_map is None else channel_map.astype(np.int64)
        g = group_size if group_size > 0 and w.shape[1] % group_size == 0 else w.shape[1]
        total += rtn_errors(w, m, scales, a, g, np.float32(2**num_bits - 1))
    return total


def plan(model: ov.Model, spec: str, group_size: int, num_bits: int = 4) -> EqualizationPlan:
    if spec.startswith("presinq"):  # SINQ's reference rule (benchmarks.presinq); "presinq@attention": with v -> o
        from benchmarks import presinq

        return presinq.plan(model, group_size, with_attention=spec.endswith("@attention"))
    guard = None
    if "|" in spec:
        spec, guard = spec.split("|")
    producers = tuple(ProducerKind)
    if "@" in spec:
        spec, kinds = spec.split("@")
        producers = tuple(ProducerKind(k) for k in kinds.split(","))
    method, alpha = (spec.split(":")[0], float(spec.split(":")[1])) if ":" in spec else (spec, 0.5)
    equalization = Equalization(EqualizationRule("sinkhorn" if method == "sinkhorn" else "power", alpha, producers))
    result = EqualizationPlan()
    read = lambda const: const.get_data()
    for group in find_scale_groups(model):
        if group.kind not in producers:
            continue
        weights, maps = equalization._weights_as_rows(result, group, read)
        c = equalization.scales(weights, maps, group, group_size)
        if guard is not None:
            activation = None
            if group.norm_scale is not None and guard == "guard":
                activation = np.abs(
                    result.apply(group.absorbers[0].node.get_friendly_name(), read(group.absorbers[0].node))
                ).ravel()
            errors = _errors(weights, maps, [np.ones_like(c), c], activation, group_size, num_bits)
            if errors[1] >= errors[0]:
                continue
        result.equalize(group, c)
    return result


def fold(model: ov.Model, plan: EqualizationPlan) -> None:
    fold_plan(plan, {op.get_friendly_name(): op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"})
