"""
The tests' reference HQQ solver: the half-quadratic proximal iterations of Badri & Shaji (2023) on `nncf.tensor`
Tensors, one tensor operation per equation of `nncf_hqq.solver` (`solve`), and the scale expansion search that
precedes them in asymmetric modes. The compiled solvers that `HQQ` runs (`nncf_hqq.solver.fused`) are compared
with it.
"""

import numpy as np
from nncf.tensor import Tensor
from nncf.tensor import TensorBackend
from nncf.tensor import TensorDataType
from nncf.tensor import functions as fns

from nncf_hqq.parameters import SCALE_SEARCH_STEP
from nncf_hqq.parameters import AdvancedHQQParameters
from nncf_hqq.parameters import HQQZeroPointStorage


def solve(
    weight: Tensor,
    scale: Tensor,
    zero_point: Tensor | None,
    num_bits: int,
    params: AdvancedHQQParameters,
    importance: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """
    The half-quadratic proximal solver over groups of weights along the last axis.

    With u = W / s (weights in quantisation steps) and Q(s, z) = clip(round(u + z), q_min, q_max), the solver
    minimises the lp error  phi(s, z) = sum |W - s (Q - z)|^p  (0 < p <= 1) by splitting off the error
    E ~ u - (Q - z) and alternating, with beta annealed by kappa each iteration:

        E  <- shrink_p(u - (Q - z), beta),  shrink_p(x) = sign(x) max(|x| - |x|^(p-1) / beta, 0)
        z  <- clip(round(mean(Q - (u - E))))                     asymmetric modes: z stays on the integer grid
        s  <- s <(u - E), Q - z> / |Q - z|^2                      and the scale absorbs the rest (least squares)
        s  <- s <u - E, Q> / |Q|^2                                symmetric modes (no zero point)

    In asymmetric modes with `params.scale_search_steps` > 0, the iterations start from the best expanded scale
    found by `_scale_expansion_search`, the given (s, z) remaining a candidate. With a float zero point storage
    (FLOAT16, OFFSET), z is then refitted as a float, z <- mean(Q - u) (the least-squares zero point for the codes
    Q; f16-rounded for FLOAT16), where that lowers phi. (The reference HQQ's float update z <- mean(Q - (u - E))
    inside the loop was measured worse for perplexity, see benchmarks/RESULTS.md.) Per group, the result is the
    candidate with the lowest phi: never worse than the given (s, z), and never worse with more iterations (a
    group's result stops changing once it stops improving). With `params.patience` = k, a group stops iterating
    after k consecutive iterations without a lower phi (HQQ's early stop, applied per group).

    :param weight: float32 weights, [..., group].
    :param scale: Initial scale, [..., 1].
    :param zero_point: Initial zero point, [..., 1]; None for symmetric quantisation.
    :param num_bits: Bit width of the integer grid.
    :param params: Solver parameters, `params.zero_point_storage` among them.
    :param importance: Per-weight factors of the scale search's squared errors, [..., group]; uniform when None.
    :return: Best scale and zero point, [..., 1].
    """
    if zero_point is None:
        q_min, q_max = -(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1
    else:
        q_min, q_max = 0, 2**num_bits - 1
    p, beta = params.lp_norm, params.beta
    storage = params.zero_point_storage
    search = zero_point is not None and params.scale_search_steps > 0
    num_iterations = params.iterations(asymmetric=zero_point is not None)
    best_scale, best_zero_point, best_error = scale, zero_point, None
    if zero_point is None or not params.clip_extremes or search:  # the group ranges bound or guide the scale
        group_max = fns.maximum(fns.max(weight, axis=-1, keepdims=True), 0.0)
        group_min = fns.minimum(fns.min(weight, axis=-1, keepdims=True), 0.0)
    if zero_point is None and not params.clip_extremes:
        # |s| that keeps the extremes within half a step of [q_min, q_max]; NNCF's symmetric scale is signed
        positive_bound = fns.maximum(group_max / (q_max + 0.5), -group_min / (0.5 - q_min))
        negative_bound = fns.maximum(-group_min / (q_max + 0.5), group_max / (0.5 - q_min))
        symmetric_no_clip = fns.where(scale > 0, positive_bound, negative_bound)
    if search:  # the starting point competes as a candidate; the iterations start from the search's result
        best_error = _quantize(weight, scale, zero_point, q_min, q_max, p)[-1]
        scale, zero_point = _scale_expansion_search(
            weight, group_min, group_max, scale, q_min, q_max, params.scale_search_steps, importance
        )

    active, stale = None, None  # groups still iterating; consecutive iterations without a lower phi
    for iteration in range(num_iterations + 1):
        u, q, residual, abs_residual, abs_residual_p, error = _quantize(weight, scale, zero_point, q_min, q_max, p)

        if best_error is None:
            best_error = error
        else:
            improved = error < best_error
            best_error = fns.where(improved, error, best_error)
            best_scale = fns.where(improved, scale, best_scale)
            if zero_point is not None:
                best_zero_point = fns.where(improved, zero_point, best_zero_point)
            if iteration > 0 and params.patience is not None:
                stale = fns.where(improved, 0.0, (0.0 if stale is None else stale) + 1.0)
                active = stale < params.patience
                if not fns.any(active):
                    break
        if iteration == num_iterations:
            break
        previous_scale, previous_zero_point = scale, zero_point

        # shrink_p(residual) with |x|^(p-1) = |x|^p / |x|, safe at x = 0
        threshold = abs_residual_p / (fns.maximum(abs_residual, 1e-30) * beta)
        shrunk = fns.sign(residual) * fns.maximum(abs_residual - threshold, 0.0)
        target = u - shrunk  # what (Q - z) should approximate, in quantisation steps
        if zero_point is None:
            scale = scale * _least_squares_ratio(target, q)
            if not params.clip_extremes:
                scale = fns.sign(scale) * fns.maximum(fns.abs(scale), symmetric_no_clip)
        else:
            zero_point = fns.clip(fns.round(fns.mean(q - target, axis=-1, keepdims=True)), q_min, q_max)
            scale = scale * _least_squares_ratio(target, q - zero_point)
            if not params.clip_extremes:
                no_clip_scale = fns.maximum(
                    group_max / (q_max + 0.5 - zero_point), -group_min / (zero_point - q_min + 0.5)
                )
                scale = fns.maximum(scale, no_clip_scale)
        if active is not None:  # stopped groups keep their parameters (and so their best)
            scale = fns.where(active, scale, previous_scale)
            if zero_point is not None:
                zero_point = fns.where(active, zero_point, previous_zero_point)
        beta *= params.kappa

    if zero_point is not None and storage != HQQZeroPointStorage.INTEGER:
        best_zero_point = _refit_float_zero_point(weight, best_scale, best_zero_point, best_error, q_max, p, storage)
    return best_scale, best_zero_point


def _refit_float_zero_point(
    weight: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    error: Tensor,
    q_max: int,
    p: float,
    storage: HQQZeroPointStorage,
) -> Tensor:
    """
    The least-squares float zero point for the codes Q of (s, z), z_f = mean(Q - W / s) (f16-rounded for the
    FLOAT16 storage), where its lp error is below `error` (that of (s, z)); z elsewhere. Asymmetric grid [0, q_max].
    """
    q = _quantize(weight, scale, zero_point, 0, q_max, p)[1]
    float_zero_point = fns.mean(q - weight / scale, axis=-1, keepdims=True)
    if storage == HQQZeroPointStorage.FLOAT16:  # the value the model will hold
        float_zero_point = float_zero_point.astype(TensorDataType.float16).astype(TensorDataType.float32)
    float_error = _quantize(weight, scale, float_zero_point, 0, q_max, p)[-1]
    return fns.where(float_error < error, float_zero_point, zero_point)


def _quantize(weight: Tensor, scale: Tensor, zero_point: Tensor | None, q_min: int, q_max: int, p: float):
    """u = W / s, Q, the residual u - (Q - z), |residual|, |residual|^p and the per-group error phi(s, z)."""
    u = weight / scale
    shifted = u if zero_point is None else u + zero_point
    q = fns.clip(fns.round(shifted), q_min, q_max)
    residual = shifted - q
    abs_residual = fns.abs(residual)
    abs_residual_p = abs_residual if p == 1.0 else abs_residual**p
    error = fns.sum(abs_residual_p, axis=-1, keepdims=True) * fns.abs(scale) ** p
    return u, q, residual, abs_residual, abs_residual_p, error


def _scale_expansion_search(
    weight: Tensor,
    group_min: Tensor,
    group_max: Tensor,
    scale: Tensor,
    q_min: int,
    q_max: int,
    steps: int,
    importance: Tensor | None = None,
    step: float = SCALE_SEARCH_STEP,
) -> tuple[Tensor, Tensor]:
    """
    Per group, the scale s = (1 + k step) s_0, k = 0..steps (expansion only: the group's range never clipped),
    with the integer zero point aligned to the group's minimum or centred on its range, that minimises the L2
    reconstruction error sum a (W - s (Q - z))^2, a = `importance` (1 when None). `group_min` <= 0 <= `group_max`
    are the groups' ranges.
    """
    best_scale, best_zero_point, best_error = None, None, None
    for k in range(steps + 1):
        expansion = 1.0 + k * step
        candidate_scale = scale * expansion
        u = weight * (1.0 / candidate_scale)  # a product is cheaper than a division per weight
        aligned = fns.round(q_min - group_min / candidate_scale)
        centred = fns.round((q_min + q_max) / 2 - (group_max + group_min) / (2 * candidate_scale))
        for candidate_zero_point in (aligned, centred):
            candidate_zero_point = fns.clip(candidate_zero_point, q_min, q_max)
            shifted = u + candidate_zero_point
            residual = shifted - fns.clip(fns.round(shifted), q_min, q_max)  # (W - s (Q - z)) / s
            # the L2 error divided by s_0^2, which all candidates of a group share
            error = _sum_of_squares(residual, importance) * expansion**2
            if best_error is None:
                best_scale, best_zero_point, best_error = candidate_scale, candidate_zero_point, error
                continue
            better = error < best_error
            best_error = fns.where(better, error, best_error)
            best_scale = fns.where(better, candidate_scale, best_scale)
            best_zero_point = fns.where(better, candidate_zero_point, best_zero_point)
    return best_scale, best_zero_point


def _sum_of_squares(x: Tensor, weights: Tensor | None = None) -> Tensor:
    """
    sum(weights x^2) over the last axis, kept (weights 1 when None). numpy's einsum does it in one pass (about 5x
    faster than x * x, then sum).
    """
    weighted = x if weights is None else x * weights
    if x.backend == TensorBackend.numpy:
        return Tensor(np.einsum("...i,...i->...", weighted.data, x.data)[..., None])
    return fns.sum(weighted * x, axis=-1, keepdims=True)


def _least_squares_ratio(target: Tensor, levels: Tensor) -> Tensor:
    """argmin_r |target - r levels|^2 per group, or 1 where it is undefined or not positive."""
    numerator = fns.sum(target * levels, axis=-1, keepdims=True)
    denominator = fns.sum(levels * levels, axis=-1, keepdims=True)
    ratio = numerator / fns.maximum(denominator, 1e-30)
    return fns.where((denominator > 0) & (ratio > 0), ratio, 1.0)


def quantization_params(weight: Tensor, reduction_axes: tuple[int, ...], config, params=None, **kwargs):
    """The scale and zero point `HQQ.calculate_compressed_weight` gives a weight (same parameters)."""
    from nncf_hqq import HQQ

    compressed = HQQ.calculate_compressed_weight(weight, reduction_axes, config, params, **kwargs)
    return compressed.scale, compressed.zero_point
