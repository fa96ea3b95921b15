"""
The HQQ solver (the equations of `nncf_hqq.solver`), fused per group of weights and compiled with numba.

Each group's RTN start, scale search, proximal iterations and selection run on one group of weights at a time
(held in registers and the L1 cache), groups in parallel, reading f16 weights as they are stored. The tests compare
it with a reference written one tensor operation per equation; it computes the same candidates in the same order,
in float32, but sums are accumulated in another order and |r|^p is a polynomial approximation that vectorises
(`_abs_pow`, within 2e-6 of `powf`), so where two candidates tie to float rounding (common: shifting the zero
point by a whole step gives the same residuals unless the shift clips) a group may pick the other one. Compiled
with numpy's error model: a division by zero gives inf instead of raising, which lets the per-weight loops
vectorise (every division here is guarded).
"""

from nncf_hqq._numba import FASTMATH as _FASTMATH  # isort: skip (numba's settings first)
import numba
import numpy as np

from nncf_hqq._float16 import FLOAT16_TABLE
from nncf_hqq._float16 import bits_float
from nncf_hqq._float16 import float16_bits
from nncf_hqq._float16 import float_bits
from nncf_hqq._float16 import load_float32

# Groups per parallel task: scratch buffers are allocated once per task.
_CHUNK = 256


@numba.njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _abs_pow(x, p):
    """
    |x|^p for float32 x and p in (0, 1], as 2^(p log2|x|) with polynomials, in operations a loop vectorises (libm's
    `powf` is a scalar call). Measured relative error: below 1.3e-6 for |x| >= 1e-8 (libm's `powf`: 1.1e-6 at
    p = 0.7), below 6e-6 down to the smallest normal float32; exactly 0 at x = 0; approximate for subnormal x.

    With |x| = m 2^e, m in [sqrt(1/2), sqrt(2)):  log2|x| = e + 2 atanh(t) / ln 2,  t = (m - 1) / (m + 1), |t| < 0.172,
    by the series of atanh to t^9; then y = p log2|x| = n + f with n = round(y), 2^y = 2^n e^(f ln 2) by Taylor to
    degree 7 (|f ln 2| <= 0.347).
    """
    one, half = np.float32(1.0), np.float32(0.5)
    magnitude = abs(x)
    bits = float_bits(magnitude)
    exponent = np.float32(np.int32(bits >> np.int32(23)) - np.int32(127))
    mantissa = bits_float(np.int32(bits & np.int32(0x7FFFFF)) | np.int32(0x3F800000))  # in [1, 2)
    above = mantissa > np.float32(1.4142135)
    mantissa = mantissa * half if above else mantissa
    exponent = exponent + one if above else exponent
    t = (mantissa - one) / (mantissa + one)
    t2 = t * t
    series = np.float32(2.0 / 7.0) + t2 * np.float32(2.0 / 9.0)
    series = np.float32(2.0) + t2 * (np.float32(2.0 / 3.0) + t2 * (np.float32(0.4) + t2 * series))
    y = p * (exponent + t * series * np.float32(1.4426950408889634))
    y = min(max(y, np.float32(-126.0)), np.float32(126.0))
    n = np.rint(y)
    g = (y - n) * np.float32(0.6931471805599453)
    poly = np.float32(1.0 / 120.0) + g * (np.float32(1.0 / 720.0) + g * np.float32(1.0 / 5040.0))
    poly = one + g * (one + g * (half + g * (np.float32(1.0 / 6.0) + g * (np.float32(1.0 / 24.0) + g * poly))))
    power_of_two = bits_float(np.int32(np.int32(n) + np.int32(127)) << np.int32(23))
    return poly * power_of_two if magnitude != np.float32(0.0) else np.float32(0.0)


@numba.njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _scratch(group_size):
    """A parallel task's buffers for one group: its weights, u = w / s, the codes, the residual and |residual|^p."""
    return (
        np.empty(group_size, np.float32),
        np.empty(group_size, np.float32),
        np.empty(group_size, np.float32),
        np.empty(group_size, np.float32),
        np.empty(group_size, np.float32),
    )


@numba.njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _store_codes(q, codes, i):
    """
    Row `i` of `codes` from the group's codes `q` (integer-valued float32): one per element, or, when `codes` has
    half as many columns, two 4-bit codes per byte, the first in the low half (two's complement for signed codes),
    as OpenVINO's u4/i4 tensors hold them.
    """
    group_size = q.shape[0]
    if codes.shape[1] == group_size:
        for j in range(group_size):
            codes[i, j] = q[j]
    else:
        for j in range(0, group_size, 2):
            codes[i, j // 2] = (np.int32(q[j]) & np.int32(15)) | ((np.int32(q[j + 1]) & np.int32(15)) << np.int32(4))


@numba.njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _quantize(w, scale, zero_point, q_max, p, u, q, residual, residual_p):
    """Fills u = w / s, Q = clip(round(u + z), 0, q_max), the residual u + z - Q and |residual|^p; returns phi."""
    total = np.float32(0.0)
    for j in range(w.shape[0]):
        u[j] = w[j] / scale
        shifted = u[j] + zero_point
        q[j] = min(max(np.rint(shifted), np.float32(0.0)), q_max)
        residual[j] = shifted - q[j]
        residual_p[j] = abs(residual[j]) if p == 1.0 else _abs_pow(residual[j], p)
        total += residual_p[j]
    return total * (abs(scale) if p == 1.0 else abs(scale) ** p)


@numba.njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _squared_errors(w, a, scale, zero_point_1, zero_point_2, q_max, weighted):
    """sum a (u + z - Q)^2 with u = w (1 / s), for z = `zero_point_1` and `zero_point_2` in one pass (a = 1 unless
    `weighted`)."""
    total_1, total_2 = np.float32(0.0), np.float32(0.0)
    inverse = np.float32(1.0) / scale
    for j in range(w.shape[0]):
        u = w[j] * inverse
        shifted_1, shifted_2 = u + zero_point_1, u + zero_point_2
        r_1 = shifted_1 - min(max(np.rint(shifted_1), np.float32(0.0)), q_max)
        r_2 = shifted_2 - min(max(np.rint(shifted_2), np.float32(0.0)), q_max)
        total_1 += a[j] * r_1 * r_1 if weighted else r_1 * r_1
        total_2 += a[j] * r_2 * r_2 if weighted else r_2 * r_2
    return total_1, total_2


@numba.njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _scale_expansion_search(w, a, weighted, group_min, group_max, scale, q_max, steps, step):
    """The scale expansion search for one group: the best (s, z) of the expanded scales."""
    best_scale, best_zero_point, best_error = scale, np.float32(0.0), np.float32(np.inf)
    for k in range(steps + 1):
        expansion = 1.0 + k * step
        candidate_scale = scale * np.float32(expansion)
        aligned = np.rint(-group_min / candidate_scale)
        centred = np.rint(q_max / np.float32(2.0) - (group_max + group_min) / (np.float32(2.0) * candidate_scale))
        aligned = min(max(aligned, np.float32(0.0)), q_max)
        centred = min(max(centred, np.float32(0.0)), q_max)
        errors = _squared_errors(w, a, candidate_scale, aligned, centred, q_max, weighted)
        for candidate_zero_point, error in ((aligned, errors[0]), (centred, errors[1])):
            error = error * np.float32(expansion**2)
            if best_error == np.inf or error < best_error:
                best_scale, best_zero_point, best_error = candidate_scale, candidate_zero_point, error
    return best_scale, best_zero_point


@numba.njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _weighted_error(w, a, scale, zero_point, q_max):
    """sum a (W - s (Q - z))^2 with Q = clip(round(W / s + z), 0, q_max): the group's expected output error."""
    total = np.float32(0.0)
    inverse = np.float32(1.0) / scale
    for j in range(w.shape[0]):
        level = min(max(np.rint(w[j] * inverse + zero_point), np.float32(0.0)), q_max) - zero_point
        error = w[j] - scale * level
        total += a[j] * error * error
    return total


@numba.njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _weighted_refit(w, a, scale, zero_point, q_max):
    """The scale of least sum a (W - s L)^2 for the levels L = Q - z of `scale`: <a L, W> / <a L, L> (kept when
    that is not of the scale's sign)."""
    numerator, denominator = np.float32(0.0), np.float32(0.0)
    inverse = np.float32(1.0) / scale
    for j in range(w.shape[0]):
        level = min(max(np.rint(w[j] * inverse + zero_point), np.float32(0.0)), q_max) - zero_point
        numerator += a[j] * level * w[j]
        denominator += a[j] * level * level
    ratio = numerator / max(denominator, np.float32(1e-30))
    return ratio if denominator > 0 and ratio * scale > 0 else scale


@numba.njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _weighted_choice(w, a, scale, zero_point, grid_scale, grid_zero_point, q_max, grid, refits):
    """
    The (s, z) of least expected output error sum a (W - s (Q - z))^2 among the solver's (`scale`, `zero_point`)
    and the grid's (f `grid_scale`, `grid_zero_point`) for f in `grid`, each also after `refits` weighted
    least-squares refits of its scale (`_weighted_refit`).
    """
    best_scale, best_zero_point = scale, zero_point
    best_error = _weighted_error(w, a, scale, zero_point, q_max)
    for k in range(grid.shape[0] + 1):
        s = scale if k == 0 else grid_scale * grid[k - 1]
        z = zero_point if k == 0 else grid_zero_point
        for refit in range(refits + 1):
            if refit > 0:
                s = _weighted_refit(w, a, s, z, q_max)
            elif k == 0:
                continue  # the solver's own, evaluated above
            error = _weighted_error(w, a, s, z, q_max)
            if error < best_error:
                best_scale, best_zero_point, best_error = s, z, error
    return best_scale, best_zero_point


@numba.njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def solve_asymmetric(
    weight,
    scale,
    zero_point,
    importance,
    q_max,
    lp_norm,
    beta,
    kappa,
    num_iterations,
    patience,
    search_steps,
    search_step,
    clip_extremes,
    refit_zero_point,
    grid,
    refits,
    codes,
):
    """
    The solver of `nncf_hqq.solver` for asymmetric modes, the float zero point refit included: the best (s, z)
    per group.

    :param weight: [groups, group size], float32 or float16 bits as uint16, each group contiguous.
    :param scale: float32 [groups], the starting scales; [0] to start from NNCF's RTN scales and zero points,
        s = (max(W, 0) - min(W, 0)) / q_max (at least float32 eps), z = clip(-round(min(W, 0) / s), 0, q_max).
    :param zero_point: float32 [groups], the starting (integer-valued) zero points, with `scale`.
    :param importance: float32 [groups, group size] factors a of the squared errors, or [0, 0] for none: of the
        scale search's, and the choice among the solver's (s, z) and the grid's (`_weighted_choice`).
    :param q_max: Largest code, 2^bits - 1 (float32).
    :param lp_norm, beta, kappa, num_iterations, clip_extremes: As in `AdvancedHQQParameters`.
    :param patience: A group stops after this many consecutive iterations without a lower phi (`patience` of
        `AdvancedHQQParameters`; more than `num_iterations` never stops).
    :param search_steps: Number of scale expansions searched (0: no search).
    :param search_step: Their relative step: the candidate scales are (1 + search_step k) s, k = 0..search_steps.
    :param refit_zero_point: 0: integer zero points; 1: then refit a float zero point, z_f = mean(Q - W / s) for the
        codes Q of the best (s, z), where it lowers phi; 2: the same, z_f rounded to float16.
    :param codes: uint8 [groups, group size], filled with the codes of the weights for the best (s, z):
        Q = clip(round(W / s + z), 0, q_max), as NNCF's integer quantization computes them from a given scale and
        zero point; or uint8 [groups, group size / 2], two 4-bit codes a byte (`_store_codes`).
    :return: The best scale and zero point per group, float32 [groups] each, and `codes`. A group with a NaN or
        infinite weight gets a NaN scale (zero point 0, codes undefined).
    """
    num_groups, group_size = weight.shape
    weighted = importance.shape[0] == num_groups
    rtn_start = scale.shape[0] != num_groups
    best_scales = np.empty(num_groups, np.float32)
    best_zero_points = np.empty(num_groups, np.float32)
    p = np.float32(lp_norm)
    half, zero = np.float32(0.5), np.float32(0.0)
    eps = np.finfo(np.float32).eps
    for chunk in numba.prange((num_groups + _CHUNK - 1) // _CHUNK):
        w, u, q, residual, residual_p = _scratch(group_size)
        for i in range(chunk * _CHUNK, min((chunk + 1) * _CHUNK, num_groups)):
            load_float32(weight[i], w)
            a = importance[i] if weighted else w
            group_max, group_min, non_finite = zero, zero, zero
            for j in range(group_size):
                group_max = max(group_max, w[j])
                group_min = min(group_min, w[j])
                non_finite += w[j] * zero  # NaN once a weight is NaN or infinite, else 0
            if non_finite != zero:
                best_scales[i], best_zero_points[i] = np.nan, zero
                continue
            rtn_scale = (group_max - group_min) / q_max
            rtn_scale = eps if abs(rtn_scale) < eps else rtn_scale
            rtn_zero_point = min(max(zero - np.rint(group_min / rtn_scale), zero), q_max)
            s, z = (rtn_scale, rtn_zero_point) if rtn_start else (scale[i], zero_point[i])
            best_scale, best_zero_point = s, z
            best_error = _quantize(w, s, z, q_max, p, u, q, residual, residual_p)
            q_holds_best_codes = True
            if search_steps > 0:
                s, z = _scale_expansion_search(
                    w, a, weighted, group_min, group_max, s, q_max, search_steps, search_step
                )
            b, stale = beta, 0
            for iteration in range(num_iterations + 1):
                # the buffers still hold the start's quantization if the search kept the start
                if iteration > 0 or s != best_scale or z != best_zero_point:
                    error = _quantize(w, s, z, q_max, p, u, q, residual, residual_p)
                    q_holds_best_codes = error < best_error
                    if q_holds_best_codes:
                        best_scale, best_zero_point, best_error, stale = s, z, error, 0
                    elif iteration > 0:
                        stale += 1
                if iteration == num_iterations or stale >= patience:
                    break
                # E = shrink_p(residual, beta); the target of (Q - z) is u - E
                mean = zero
                for j in range(group_size):
                    magnitude = abs(residual[j])
                    threshold = residual_p[j] / (max(magnitude, np.float32(1e-30)) * np.float32(b))
                    u[j] = u[j] - np.sign(residual[j]) * max(magnitude - threshold, zero)
                    mean += q[j] - u[j]
                z = min(max(np.rint(mean / np.float32(group_size)), zero), q_max)
                numerator, denominator = zero, zero
                for j in range(group_size):
                    level = q[j] - z
                    numerator += u[j] * level
                    denominator += level * level
                ratio = numerator / max(denominator, np.float32(1e-30))
                s = s * (ratio if denominator > 0 and ratio > 0 else np.float32(1.0))
                if not clip_extremes:
                    s = max(s, max(group_max / (q_max + half - z), -group_min / (z + half)))
                b *= kappa
            if refit_zero_point:  # z_f = mean(Q - u) for the codes Q of the best (s, z)
                total = zero
                for j in range(group_size):
                    shifted = w[j] / best_scale
                    total += min(max(np.rint(shifted + best_zero_point), zero), q_max) - shifted
                float_zero_point = total / np.float32(group_size)
                if refit_zero_point == 2:
                    float_zero_point = FLOAT16_TABLE[float16_bits(float_zero_point)]
                error = _quantize(w, best_scale, float_zero_point, q_max, p, u, q, residual, residual_p)
                q_holds_best_codes = error < best_error
                if q_holds_best_codes:
                    best_zero_point = float_zero_point
            if weighted and grid.shape[0] + refits > 0:
                chosen = _weighted_choice(
                    w, a, best_scale, best_zero_point, rtn_scale, rtn_zero_point, q_max, grid, refits
                )
                q_holds_best_codes = chosen[0] == best_scale and chosen[1] == best_zero_point and q_holds_best_codes
                best_scale, best_zero_point = chosen
            best_scales[i], best_zero_points[i] = best_scale, best_zero_point
            if not q_holds_best_codes:  # Q = clip(round(W / s + z)), as `_quantize` computes it
                for j in range(group_size):
                    q[j] = min(max(np.rint(w[j] / best_scale + best_zero_point), zero), q_max)
            _store_codes(q, codes, i)  # else the last `_quantize` was of the best (s, z)
    return best_scales, best_zero_points, codes


@numba.njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def solve_symmetric(
    weight,
    scale,
    importance,
    q_min,
    q_max,
    lp_norm,
    beta,
    kappa,
    num_iterations,
    patience,
    clip_extremes,
    grid,
    refits,
    codes,
):
    """
    The solver of `nncf_hqq.solver` for symmetric modes: the best scale per group.

    The signed codes Q = clip(round(W / s), q_min, q_max) are handled as Q - q_min on [0, q_max - q_min] with the
    fixed zero point -q_min, so that `_quantize` serves both modes; the scale keeps its sign (NNCF's symmetric
    scale is signed) and, unless `clip_extremes`, a magnitude that keeps the group's extremes within half a step.

    :param weight: [groups, group size], float32 or float16 bits as uint16, each group contiguous.
    :param scale: float32 [groups], the starting scales; [0] to start from NNCF's signed symmetric scales,
        s = |min W| / -q_min if |min W| >= max W, else -max W / -q_min (eps where |s| < float32 eps).
    :param importance: float32 [groups, group size] factors a of the squared errors for the choice among the
        solver's scale and the grid's (`_weighted_choice`), or [0, 0] for none.
    :param q_min: Smallest code, -2^(bits - 1) (float32).
    :param q_max: Largest code, 2^(bits - 1) - 1 (float32).
    :param lp_norm, beta, kappa, num_iterations, clip_extremes: As in `AdvancedHQQParameters`.
    :param patience, grid, refits: As in `solve_asymmetric` (the grid's factors of NNCF's scale).
    :param codes: int8 [groups, group size], filled with the codes of the weights for the best scale:
        Q = clip(round(W / s), q_min, q_max), as NNCF's integer quantization computes them from a given scale; or
        uint8 [groups, group size / 2], two 4-bit codes a byte in two's complement (`_store_codes`).
    :return: The best scale per group, float32 [groups], NaN for a group with a NaN or infinite weight (its codes
        undefined); and `codes`.
    """
    num_groups, group_size = weight.shape
    nncf_start = scale.shape[0] != num_groups
    weighted = importance.shape[0] == num_groups
    best_scales = np.empty(num_groups, np.float32)
    eps = np.finfo(np.float32).eps
    p = np.float32(lp_norm)
    half, zero = np.float32(0.5), np.float32(0.0)
    z, top = -q_min, q_max - q_min
    for chunk in numba.prange((num_groups + _CHUNK - 1) // _CHUNK):
        w, u, q, residual, residual_p = _scratch(group_size)
        for i in range(chunk * _CHUNK, min((chunk + 1) * _CHUNK, num_groups)):
            load_float32(weight[i], w)
            raw_max, raw_min, non_finite = w[0], w[0], zero
            for j in range(group_size):
                raw_max = max(raw_max, w[j])
                raw_min = min(raw_min, w[j])
                non_finite += w[j] * zero  # NaN once a weight is NaN or infinite, else 0
            group_max, group_min = max(raw_max, zero), min(raw_min, zero)
            if non_finite != zero:
                best_scales[i] = np.nan
                continue
            nncf_scale = (abs(raw_min) if abs(raw_min) >= raw_max else -raw_max) / (-q_min)
            nncf_scale = eps if abs(nncf_scale) < eps else nncf_scale
            s = nncf_scale if nncf_start else scale[i]
            if s > zero:  # |s| that keeps the extremes within half a step of [q_min, q_max]
                no_clip = max(group_max / (q_max + half), -group_min / (half - q_min))
            else:
                no_clip = max(-group_min / (q_max + half), group_max / (half - q_min))
            best_scale, best_error = s, _quantize(w, s, z, top, p, u, q, residual, residual_p)
            b, stale = beta, 0
            for iteration in range(num_iterations + 1):
                if iteration > 0:
                    error = _quantize(w, s, z, top, p, u, q, residual, residual_p)
                    if error < best_error:
                        best_scale, best_error, stale = s, error, 0
                    else:
                        stale += 1
                if iteration == num_iterations or stale >= patience:
                    break
                # E = shrink_p(residual, beta); the scale's least-squares fit of the target u - E by the codes
                numerator, denominator = zero, zero
                for j in range(group_size):
                    magnitude = abs(residual[j])
                    threshold = residual_p[j] / (max(magnitude, np.float32(1e-30)) * np.float32(b))
                    target = u[j] - np.sign(residual[j]) * max(magnitude - threshold, zero)
                    level = q[j] - z
                    numerator += target * level
                    denominator += level * level
                ratio = numerator / max(denominator, np.float32(1e-30))
                s = s * (ratio if denominator > 0 and ratio > 0 else np.float32(1.0))
                if not clip_extremes:
                    s = max(abs(s), no_clip) * (np.float32(1.0) if s > zero else np.float32(-1.0))
                b *= kappa
            if weighted and grid.shape[0] + refits > 0:
                best_scale, _ = _weighted_choice(w, importance[i], best_scale, z, nncf_scale, z, top, grid, refits)
            best_scales[i] = best_scale
            for j in range(group_size):
                q[j] = min(max(np.rint(w[j] / best_scale), q_min), q_max)
            _store_codes(q, codes, i)
    return best_scales, codes
