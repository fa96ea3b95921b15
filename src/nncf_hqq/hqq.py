"""HQQ: Half-Quadratic Quantization (Badri & Shaji, 2023) for NNCF's integer weight compression."""

import contextlib
import dataclasses
import gc
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import nncf
import numpy as np
from nncf.common.logging import nncf_logger
from nncf.tensor import Tensor
from nncf.tensor import TensorBackend
from nncf.tensor import TensorDataType
from nncf.tensor import functions as fns

from nncf_hqq._nncf import CompressedWeight
from nncf_hqq._nncf import CompressWeightsMode
from nncf_hqq._nncf import NNCFGraph
from nncf_hqq._nncf import WeightCompressionConfig
from nncf_hqq._nncf import WeightCompressionParameters
from nncf_hqq._nncf import calculate_integer_quantization_params
from nncf_hqq._nncf import reshape_weight_for_grouped_quantization
from nncf_hqq._nncf import track
from nncf_hqq.parameters import SCALE_SEARCH_STEP
from nncf_hqq.parameters import AdvancedHQQParameters
from nncf_hqq.parameters import HQQZeroPointStorage

TModel = TypeVar("TModel")

# Rows (groups) per block of the solver: 4096 x 64 float32 weights (1 MiB) stay in cache across iterations.
# Measured on 16.8M weights (2 cores): 4.2x faster than solving whole weights, with identical results.
ROW_BLOCK = 4096

SUPPORTED_MODES = (
    CompressWeightsMode.INT4_ASYM,
    CompressWeightsMode.INT4_SYM,
    CompressWeightsMode.INT8_ASYM,
    CompressWeightsMode.INT8_SYM,
)


@dataclasses.dataclass(frozen=True)
class HQQWeightTask:
    """How HQQ compresses one weight, decided before any weight is read."""

    params: AdvancedHQQParameters
    initial: CompressedWeight | None = None  # starting scale and zero point (scale estimation's); RTN's when None
    input_importance: Tensor | None = None  # per input channel, see `HQQ.calculate_quantization_params`

    def solve(self, wp: WeightCompressionParameters, weight: Tensor) -> CompressedWeight:
        """
        The weight's HQQ scale and zero point, and in asymmetric modes its codes, from its value `weight`.

        :raises nncf.ValidationError: The weight has NaN or infinite values.
        """
        compressed = HQQ.calculate_compressed_weight(
            weight,
            wp.reduction_axes,
            wp.compression_config,
            self.params,
            initial_scale=None if self.initial is None else self.initial.scale,
            initial_zero_point=None if self.initial is None else self.initial.zero_point,
            input_importance=self.input_importance,
        )
        if not np.isfinite(compressed.scale.as_numpy_tensor().data).all():  # a group with a NaN or infinite weight
            raise nncf.ValidationError(_non_finite_weight_message(wp.weight_name))
        return compressed


class HQQ:
    """
    Data-free HQQ weight compression: per group of weights, finds the scale and zero point that minimise the
    lp-norm (p <= 1) of the weight reconstruction error with a half-quadratic proximal solver, starting from
    NNCF's round-to-nearest (RTN) parameters (or scale estimation's) and never ending worse than them in that
    objective. In asymmetric modes, a search over expanded scales precedes the proximal iterations, and the float
    zero point storages refit each group's zero point by least squares at the end.
    """

    def __init__(self, params: AdvancedHQQParameters | None = None):
        """
        :param params: Parameters of the solver; defaults of `AdvancedHQQParameters` when None.
        """
        self._params = params if params is not None else AdvancedHQQParameters()
        self._params.validate()

    @property
    def params(self) -> AdvancedHQQParameters:
        return self._params

    @staticmethod
    def is_applicable(wp: WeightCompressionParameters) -> bool:
        """Whether HQQ handles the weight: it is compressed to one of `SUPPORTED_MODES`."""
        return wp.compression_config is not None and wp.compression_config.mode in SUPPORTED_MODES

    def apply(
        self,
        model: TModel,
        graph: NNCFGraph,
        all_weight_params: list[WeightCompressionParameters],
        backend_entity,
        precomputed_compressed_weights: dict[str, CompressedWeight] | None = None,
    ) -> dict[str, CompressedWeight]:
        """
        Computes HQQ scales and zero points for every applicable weight of the model (`plan`, then each task).

        :param model: The model, after any algorithm that changes weights (AWQ) has run.
        :param graph: The model's NNCFGraph.
        :param all_weight_params: The weights to compress and their compression configs.
        :param backend_entity: NNCF weight-compression backend used to read the weights.
        :param precomputed_compressed_weights: Parameters from an earlier algorithm (scale estimation), see `plan`.
        :return: Precomputed parameters for NNCF's compression step: the given ones, with HQQ's scales and zero
            points replacing them for the weights HQQ handles (NNCF computes the codes).
        """
        result = dict(precomputed_compressed_weights or {})
        tasks = self.plan(all_weight_params, backend_entity, precomputed_compressed_weights)
        weight_params = [wp for wp in all_weight_params if wp.weight_name in tasks]
        sizes = [wp.num_weights for wp in weight_params]
        for wp in track(weight_params, description="Applying HQQ", weights=sizes):
            weight = backend_entity.get_weight(wp.node_with_weight, wp.weight_port_id, model, graph)
            compressed = tasks[wp.weight_name].solve(wp, weight)
            # without the codes: holding them until NNCF's transform would cost a byte per weight of the model
            result[wp.weight_name] = CompressedWeight(None, compressed.scale, compressed.zero_point)
        return result

    def plan(
        self,
        all_weight_params: list[WeightCompressionParameters],
        backend_entity,
        precomputed_compressed_weights: dict[str, CompressedWeight] | None = None,
    ) -> dict[str, HQQWeightTask]:
        """
        Decides, without reading any weight, which weights HQQ compresses and how; lets a caller solve each
        weight when it reads it (one weight in memory at a time).

        :param all_weight_params: The weights to compress and their compression configs.
        :param backend_entity: NNCF weight-compression backend: the graph around each weight (zero point offsets,
            normalisation scales).
        :param precomputed_compressed_weights: Parameters from an earlier algorithm (scale estimation). HQQ
            leaves those weights out, or with `refine_scale_estimation` starts from them and keeps them where it
            cannot improve.
        :return: A task per weight HQQ compresses, by weight name.
        """
        precomputed = precomputed_compressed_weights or {}
        estimated = {name for name, cw in precomputed.items() if cw.scale is not None}
        weight_params = [wp for wp in all_weight_params if self.is_applicable(wp)]
        if estimated and not self._params.refine_scale_estimation:
            kept = [wp for wp in weight_params if wp.weight_name in estimated]
            weight_params = [wp for wp in weight_params if wp.weight_name not in estimated]
            nncf_logger.info(
                f"HQQ keeps the scale estimation parameters of {len(kept)} weights and compresses the other "
                f"{len(weight_params)}; set AdvancedHQQParameters.refine_scale_estimation to refine them."
            )
        integer_params = dataclasses.replace(self._params, zero_point_storage=HQQZeroPointStorage.INTEGER)
        integer_fallback = set()
        if self._params.zero_point_storage == HQQZeroPointStorage.OFFSET:
            integer_fallback = {
                wp.weight_name
                for wp in weight_params
                if wp.compression_config.is_asym_mode and not backend_entity.supports_zero_point_offset(wp)
            }
        if integer_fallback:
            nncf_logger.info(
                f"HQQ keeps integer zero points for {len(integer_fallback)} weights that are not the weight of a "
                "single MatMul, which the zero point offset storage needs."
            )
            nncf_logger.debug(f"Weights with integer zero points: {sorted(integer_fallback)}")
        tasks = {}
        for wp in weight_params:
            initial = precomputed.get(wp.weight_name)
            norm_scale = backend_entity.input_norm_scale(wp) if self._params.norm_importance else None
            tasks[wp.weight_name] = HQQWeightTask(
                integer_params if wp.weight_name in integer_fallback else self._params,
                initial if initial is not None and initial.scale is not None else None,
                None if norm_scale is None else norm_scale * norm_scale,
            )
        return tasks

    @staticmethod
    def calculate_quantization_params(
        weight: Tensor,
        reduction_axes: tuple[int, ...],
        config: WeightCompressionConfig,
        params: AdvancedHQQParameters | None = None,
        initial_scale: Tensor | None = None,
        initial_zero_point: Tensor | None = None,
        input_importance: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """
        Scale and zero point of one weight: those of `calculate_compressed_weight` (same parameters).
        """
        compressed = HQQ.calculate_compressed_weight(
            weight, reduction_axes, config, params, initial_scale, initial_zero_point, input_importance
        )
        return compressed.scale, compressed.zero_point

    @staticmethod
    def calculate_compressed_weight(
        weight: Tensor,
        reduction_axes: tuple[int, ...],
        config: WeightCompressionConfig,
        params: AdvancedHQQParameters | None = None,
        initial_scale: Tensor | None = None,
        initial_zero_point: Tensor | None = None,
        input_importance: Tensor | None = None,
    ) -> CompressedWeight:
        """
        Scale and zero point of one weight, in NNCF's layout (that of `calculate_integer_quantization_params` on
        the weight grouped by `reshape_weight_for_grouped_quantization`), and in asymmetric modes the codes for
        them, as NNCF's integer quantization would compute them from these parameters (so it need not).

        :param weight: The weight tensor, as stored in the model.
        :param reduction_axes: Axes along which the weight's rows share quantization parameters.
        :param config: Compression config of the weight (mode, group size).
        :param params: Solver parameters.
        :param initial_scale: Starting scale (e.g. from scale estimation); RTN's when None.
        :param initial_zero_point: Starting zero point, with `initial_scale`.
        :param input_importance: Weights of the scale search's L2 error per index along the (single) reduction
            axis, e.g. the squared scale of the normalisation layer feeding the MatMul; uniform when None.
        :return: The scale (float32); the zero point: int32 on the integer grid, float32 for the FLOAT16 and
            OFFSET zero point storages, None for symmetric modes; the codes Q = clip(round(W / s + z), 0, 2^b - 1),
            uint8 in the grouped weight's layout, for asymmetric modes (None for symmetric ones). A group with a
            NaN or infinite weight gets a non-finite scale, so checking the scales checks the weight.
        """
        params = params if params is not None else AdvancedHQQParameters()
        if config.mode not in SUPPORTED_MODES:
            msg = f"HQQ supports {[m.value for m in SUPPORTED_MODES]} modes, got {config.mode.value}."
            raise nncf.ValidationError(msg)
        weight = weight.as_numpy_tensor()
        if weight.dtype not in (TensorDataType.float16, TensorDataType.float32):
            weight = weight.astype(TensorDataType.float32)
        importance = None
        if input_importance is not None and len(reduction_axes) == 1:
            axis = reduction_axes[0] % weight.ndim
            shape = [1] * weight.ndim
            shape[axis] = -1
            importance = input_importance.as_numpy_tensor().astype(TensorDataType.float32).reshape(tuple(shape))
            importance = importance * fns.ones_like(weight)  # float32, broadcast to the weight's shape
        if config.group_size != -1:
            if importance is not None:
                importance, _ = reshape_weight_for_grouped_quantization(importance, reduction_axes, config.group_size)
            weight, axis = reshape_weight_for_grouped_quantization(weight, reduction_axes, config.group_size)
            reduction_axes = (axis,)
        if config.is_asym_mode and initial_scale is not None and initial_zero_point is None:
            msg = "An initial zero point is required with an initial scale in asymmetric modes."
            raise nncf.ValidationError(msg)

        rows = _RowsAlongLastAxis(weight.shape, reduction_axes)
        importance = None if importance is None else rows.to_rows(importance)
        codes = None
        if config.is_asym_mode:
            scale, zero_point, codes = solve_asymmetric_fused(
                rows.to_rows(weight),
                None if initial_scale is None else rows.to_rows(initial_scale),
                None if initial_scale is None else rows.to_rows(initial_zero_point),
                config.num_bits,
                params,
                importance,
            )
            codes = rows.values_from_rows(codes)
        else:
            weight = weight.astype(TensorDataType.float32)
            if initial_scale is None:
                initial_scale, _ = calculate_integer_quantization_params(weight, reduction_axes, config)
            scale = rows.to_rows(initial_scale.astype(TensorDataType.float32))
            scale, zero_point = solve_in_row_blocks(
                rows.to_rows(weight), scale, None, config.num_bits, params, importance
            )

        scale = rows.from_rows(scale)
        if zero_point is not None:
            integer = params.zero_point_storage == HQQZeroPointStorage.INTEGER
            zero_point = rows.from_rows(zero_point.astype(TensorDataType.int32) if integer else zero_point)
        return CompressedWeight(codes, scale, zero_point)


def check_weight_is_finite(weight_name: str, weight: Tensor) -> None:
    """Raises `nncf.ValidationError` naming the weight if it has NaN or infinite values."""
    if not np.isfinite(weight.as_numpy_tensor().data).all():  # nncf.tensor has no isfinite; this is 2x faster
        raise nncf.ValidationError(_non_finite_weight_message(weight_name))


def _non_finite_weight_message(weight_name: str) -> str:
    return f"Weight {weight_name} contains NaN or infinite values; fix the model before compressing it."


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
    group's result stops changing once it stops improving).

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
        if iteration == num_iterations:
            break

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


def solve_in_row_blocks(
    weight: Tensor,
    scale: Tensor,
    zero_point: Tensor | None,
    num_bits: int,
    params: AdvancedHQQParameters,
    importance: Tensor | None = None,
    block_rows: int = ROW_BLOCK,
) -> tuple[Tensor, Tensor | None]:
    """
    `solve` on blocks of rows (groups are independent), in a thread pool: a block's working set stays in the
    CPU cache across iterations and numpy releases the GIL. The result does not depend on the blocking.
    (`calculate_quantization_params` uses it for symmetric modes, and `solve_asymmetric_fused` for asymmetric ones.)
    """
    weight = weight.reshape((-1, weight.shape[-1]))
    scale = scale.reshape((-1, 1))
    zero_point = None if zero_point is None else zero_point.reshape((-1, 1))
    importance = None if importance is None else importance.reshape((-1, weight.shape[-1]))
    starts = range(0, weight.shape[0], block_rows)

    def solve_block(start: int) -> tuple[Tensor, Tensor | None]:
        block = slice(start, start + block_rows)
        block_zero_point = None if zero_point is None else zero_point[block]
        block_importance = None if importance is None else importance[block]
        return solve(weight[block], scale[block], block_zero_point, num_bits, params, block_importance)

    if len(starts) == 1:
        results = [solve_block(0)]
    else:
        with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1)) as pool:
            results = list(pool.map(solve_block, starts))
    best_scale = fns.concatenate([r[0] for r in results], axis=0)
    best_zero_point = None if zero_point is None else fns.concatenate([r[1] for r in results], axis=0)
    return best_scale, best_zero_point


def solve_asymmetric_fused(
    weight: Tensor,
    scale: Tensor | None,
    zero_point: Tensor | None,
    num_bits: int,
    params: AdvancedHQQParameters,
    importance: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """
    `solve` for asymmetric modes, compiled and fused per group (`nncf_hqq.fused_solver`): the same result up to
    float rounding (ties between candidates may resolve differently).

    :param weight: float16 or float32 weights, [..., group].
    :param scale: Initial scale, [..., 1]; None to start from NNCF's RTN scale and zero point.
    :param zero_point: Initial zero point, [..., 1], with `scale`.
    :param num_bits: Bit width of the integer grid.
    :param params: Solver parameters, `params.zero_point_storage` among them.
    :param importance: Per-weight factors of the scale search's squared errors, [..., group]; uniform when None.
    :return: Best scale and zero point, float32 [groups, 1] (groups: the leading axes flattened), and the codes for
        them, uint8 [groups, group], see `nncf_hqq.fused_solver.solve_asymmetric`.
    """

    def as_array(x: Tensor, shape: tuple[int, ...]) -> np.ndarray:
        x = x.as_numpy_tensor().data
        return np.ascontiguousarray(x if x.dtype == np.float16 else x.astype(np.float32, copy=False)).reshape(shape)

    group_size = weight.shape[-1]
    weight_values = as_array(weight, (-1, group_size))
    no_values = np.zeros(0, np.float32)
    refit = {HQQZeroPointStorage.INTEGER: 0, HQQZeroPointStorage.OFFSET: 1, HQQZeroPointStorage.FLOAT16: 2}
    with _garbage_collection_paused():  # numba loads the compiled kernel (or compiles it) on its first call
        from nncf_hqq.fused_solver import solve_asymmetric

        best_scale, best_zero_point, codes = solve_asymmetric(
            weight_values.view(np.uint16) if weight_values.dtype == np.float16 else weight_values,
            no_values if scale is None else as_array(scale, (-1,)),
            no_values if scale is None else as_array(zero_point, (-1,)),
            np.zeros((0, 0), np.float32) if importance is None else as_array(importance, (-1, group_size)),
            np.float32(2**num_bits - 1),
            params.lp_norm,
            params.beta,
            params.kappa,
            params.iterations(asymmetric=True),
            params.scale_search_steps,
            SCALE_SEARCH_STEP,
            params.clip_extremes,
            refit[params.zero_point_storage],
        )
    return Tensor(best_scale[:, None]), Tensor(best_zero_point[:, None]), Tensor(codes)


@contextlib.contextmanager
def _garbage_collection_paused() -> Iterator[None]:
    """
    Python's cyclic garbage collector off for the block (as it was after). Loading numba and the compiled kernel
    creates tens of thousands of long-lived objects, for which the collector scans the whole heap of the process
    (one that holds OpenVINO, NNCF and a model: 0.1 s a time); measured here, the first solve's fixed cost went
    from 0.33 to 0.20 s. The kernel itself allocates almost no Python objects; when numba compiles it (the first use
    after an install) the pause added 13 MiB to the process's peak memory.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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


class _RowsAlongLastAxis:
    """Moves the reduction axes of a tensor to one last axis, and back."""

    def __init__(self, shape: tuple[int, ...], reduction_axes: tuple[int, ...]):
        ndim = len(shape)
        self._axes = tuple(sorted(a % ndim for a in reduction_axes))
        kept = [a for a in range(ndim) if a not in self._axes]
        self._permutation = tuple(kept + list(self._axes))
        self._kept_shape = tuple(shape[a] for a in kept)
        self._reduced_shape = tuple(shape[a] for a in self._axes)
        self._inverse = tuple(self._permutation.index(a) for a in range(ndim))

    def to_rows(self, x: Tensor) -> Tensor:
        x = fns.transpose(x, self._permutation)
        return x.reshape((*self._kept_shape, -1))

    def from_rows(self, x: Tensor) -> Tensor:
        """A tensor reduced over the rows ([..., 1]) in the layout of the original one reduced with keepdims."""
        x = x.reshape(self._kept_shape + (1,) * len(self._axes))
        return fns.transpose(x, self._inverse)

    def values_from_rows(self, x: Tensor) -> Tensor:
        """A tensor of the rows' shape in the original layout."""
        x = x.reshape(self._kept_shape + self._reduced_shape)
        return fns.transpose(x, self._inverse)
