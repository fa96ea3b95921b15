"""
SINQ's foldable balance ("pre-SINQ", huawei-csl/SINQ `presinq_models_generation/presinq_gguf.py` without AWQ), as
its reference code describes it, for comparison with the product's equalization (`benchmarks.methods`:
`presinq+rtn`, `presinq+hqq-default`). Written here in numpy from the reference's description, independently of
`nncf_hqq.equalization.scales`, so the two can be checked against each other.

Per group of weights sharing an input, their rows concatenated into W [rows, in] and cut into tiles of `block`
input columns (the nearest divisor of `in` when `block` does not divide it), each tile is balanced by
Sinkhorn-Knopp in the log domain (SINQ's `sinkhorn_log`, `order` = 4 steps, standard deviations with Bessel's
correction clamped to [1e-3, 1e3], a fixed target: the tile's smallest clamped row or column deviation plus 1e-6,
each step's factor clamped to [0.7, 2], the accumulated log scales to [-0.3, 10], the iterate of least imbalance
kept, a tile's updates stopped once its imbalance has risen). The column scales mu of every tile, divided by their
median, are the group's c: W' = W diag(1 / c), the producer times c. The order is the reference's: down_proj (c
into up_proj's rows), then q/k/v (into the attention norm), then gate/up (into the MLP norm; up's rows already
scaled); o_proj is left alone (`normalize_outproj=False`), and the pass runs once (`n_repeat=1`).
"""

import numpy as np
import openvino as ov

from nncf_hqq.equalization.algorithm import EqualizationPlan
from nncf_hqq.equalization.patterns import ProducerKind
from nncf_hqq.equalization.patterns import find_scale_groups

ORDER = 4
STD_CLAMP = (1e-3, 1e3)
STEP_CLAMP = (0.7, 2.0)
LOG_CLAMP = (-0.3, 10.0)
EPS = 1e-6


def _imbalance(m: np.ndarray) -> float:
    rows, cols = m.std(axis=1, ddof=1), m.std(axis=0, ddof=1)
    return max(rows.max(), cols.max()) / max(min(rows.min(), cols.min()), 1e-12)


def balance_tile(m: np.ndarray, order: int = ORDER) -> np.ndarray:
    """The column scales mu [cols] of one tile (float64 arithmetic), SINQ's Sinkhorn-Knopp."""
    m = m.astype(np.float64)
    target = min(np.clip(m.std(axis=1, ddof=1), *STD_CLAMP).min(), np.clip(m.std(axis=0, ddof=1), *STD_CLAMP).min())
    target += EPS
    log_mu_col, log_mu_row = np.zeros(m.shape[1]), np.zeros((m.shape[0], 1))
    least = _imbalance(m)
    best = np.ones(m.shape[1])
    stopped = False
    for _ in range(order):
        current = m / np.exp(log_mu_col) / np.exp(log_mu_row)
        imbalance = _imbalance(current)
        if imbalance <= least:
            best = np.exp(log_mu_col)
        least = min(least, imbalance)
        stopped = stopped or imbalance > least
        if stopped:
            continue
        std_row = np.clip(current.std(axis=1, ddof=1), *STD_CLAMP)[:, None]
        std_col = np.clip(current.std(axis=0, ddof=1), *STD_CLAMP)
        log_mu_col = np.clip(log_mu_col + np.log(np.clip(std_col / target, *STEP_CLAMP)), *LOG_CLAMP)
        log_mu_row = np.clip(log_mu_row + np.log(np.clip(std_row / target, *STEP_CLAMP)), *LOG_CLAMP)
    return best


def block_for(width: int, block: int) -> int:
    """`block`, or the nearest size that divides `width` (the reference's `find_block`)."""
    for i in range(width):
        if width % (block + i) == 0:
            return block + i
        if block - i > 0 and width % (block - i) == 0:
            return block - i
    return width


def presinq_scales(weight: np.ndarray, block: int, order: int = ORDER) -> np.ndarray:
    """c [in] of the row-concatenated weights `weight` [rows, in]: per-tile mu, divided by their median."""
    width = weight.shape[1]
    block = width if block <= 0 else block_for(width, block)
    mu = np.concatenate([balance_tile(weight[:, j : j + block], order) for j in range(0, width, block)])
    return (mu / np.median(mu)).astype(np.float32)


def _rows(plan: EqualizationPlan, group, num_channels: int) -> np.ndarray:
    """The group's weights with the factors planned so far, rows concatenated, columns as channels."""
    blocks = []
    for consumer in group.consumers:
        value = np.moveaxis(plan.apply(consumer.node.get_friendly_name(), consumer.node.get_data()), consumer.axis, -1)
        if consumer.channel_map is not None:  # GQA: column (kv head, repeat, i) reads channel (kv head, i)
            head_dim = int(np.argmax(np.diff(consumer.channel_map) != 1)) + 1  # where the map first jumps back
            n_rep = value.shape[1] // num_channels
            value = value.reshape(value.shape[0], num_channels // head_dim, n_rep, head_dim)
            value = value.transpose(0, 2, 1, 3).reshape(-1, num_channels)
        blocks.append(value)
    return np.concatenate(blocks, axis=0)


def plan(model: ov.Model, group_size: int, with_attention: bool = False) -> EqualizationPlan:
    """The pre-SINQ factors of `model` (the gated groups, then the norm groups; attention ones if asked)."""
    kinds = (ProducerKind.GATED, ProducerKind.NORM) + ((ProducerKind.ATTENTION,) if with_attention else ())
    result = EqualizationPlan()
    groups = [g for g in find_scale_groups(model) if g.kind in kinds]
    groups.sort(key=lambda g: kinds.index(g.kind))
    for group in groups:
        c = presinq_scales(_rows(result, group, group.num_channels), group_size)
        result.equalize(group, c)
    return result
