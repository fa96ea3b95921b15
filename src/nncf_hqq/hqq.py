"""HQQ: Half-Quadratic Quantization (Badri & Shaji, 2023) for NNCF's integer weight compression."""

import dataclasses
from collections.abc import Callable

import nncf
import numpy as np
from nncf.common.logging import nncf_logger
from nncf.tensor import Tensor
from nncf.tensor import TensorDataType
from nncf.tensor import functions as fns

from nncf_hqq._nncf import CompressedWeight
from nncf_hqq._nncf import CompressWeightsMode
from nncf_hqq._nncf import WeightCompressionConfig
from nncf_hqq._nncf import WeightSite
from nncf_hqq._nncf import reshape_weight_for_grouped_quantization
from nncf_hqq.openvino_graph import can_take_zero_point_offset
from nncf_hqq.openvino_graph import norm_scale_feeding
from nncf_hqq.parameters import AdvancedHQQParameters
from nncf_hqq.parameters import HQQZeroPointStorage
from nncf_hqq.solver import solve_asymmetric_fused
from nncf_hqq.solver import solve_symmetric_fused

# Given the codes' shape and numpy dtype, memory for the solver to write them into: the Tensor to hand to NNCF and
# the C-contiguous writable array behind it; None to let the solver allocate its own.
CodesAllocator = Callable[[tuple[int, ...], type], tuple[Tensor, np.ndarray] | None]

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
    input_importance: Tensor | None = None  # per input channel, see `HQQ.calculate_compressed_weight`
    input_moments: Tensor | None = None  # per input channel, see `HQQ.calculate_compressed_weight`

    def solve(self, site: WeightSite, weight: Tensor, allocate_codes: CodesAllocator | None = None) -> CompressedWeight:
        """
        The weight's HQQ scale, zero point (asymmetric modes) and codes, from its value `weight` (the codes in
        memory from `allocate_codes` where it gives some, see `HQQ.calculate_compressed_weight`).

        :raises nncf.ValidationError: The weight has NaN or infinite values.
        """
        compressed = HQQ.calculate_compressed_weight(
            weight,
            site.reduction_axes,
            site.config,
            self.params,
            initial_scale=None if self.initial is None else self.initial.scale,
            initial_zero_point=None if self.initial is None else self.initial.zero_point,
            input_importance=self.input_importance,
            allocate_codes=allocate_codes,
            input_moments=self.input_moments,
        )
        if not np.isfinite(compressed.scale.as_numpy_tensor().data).all():  # a group with a NaN or infinite weight
            raise nncf.ValidationError(_non_finite_weight_message(site.name))
        return compressed


class HQQ:
    """
    HQQ weight compression: per group of weights, finds the scale and zero point that minimise the lp-norm (p <= 1)
    of the weight reconstruction error with a half-quadratic proximal solver, starting from NNCF's round-to-nearest
    (RTN) parameters (or scale estimation's) and never ending worse than them in that objective; given the second
    moments of a weight's input activations, the parameters of least activation-weighted squared error among
    HQQ's and clipped RTN scales (`nncf_hqq.solver`). In asymmetric modes, an optional search over expanded scales
    (`scale_search_steps`) precedes the proximal iterations, and the float zero point storages refit each group's
    zero point by least squares at the end. The equalization folded into the model first is planned by
    `nncf_hqq.equalization`, not here.
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
    def is_applicable(site: WeightSite) -> bool:
        """Whether HQQ handles the weight: it is compressed to one of `SUPPORTED_MODES`."""
        return site.config is not None and site.config.mode in SUPPORTED_MODES

    def plan(
        self,
        sites: list[WeightSite],
        precomputed_compressed_weights: dict[str, CompressedWeight] | None = None,
        input_moments: dict[str, np.ndarray] | None = None,
    ) -> dict[str, HQQWeightTask]:
        """
        Decides, without reading any weight, which weights HQQ compresses and how; each task then solves its
        weight when the caller reads it (one weight in memory at a time).

        :param sites: The weights to compress, their compression configs and their place in the graph.
        :param precomputed_compressed_weights: Parameters from an earlier algorithm (scale estimation). HQQ keeps
            them as they are (its kernel computes the codes for them), or with `refine_scale_estimation` starts from
            them and keeps them where it cannot improve.
        :param input_moments: Per weight constant, the second moments of the activations along its reduction axis
            (`nncf_hqq.activation_moments`): that weight's parameters minimise the expected output error.
        :return: A task per weight HQQ compresses, by weight name.
        """
        precomputed = precomputed_compressed_weights or {}
        estimated = {name for name, cw in precomputed.items() if cw.scale is not None}
        sites = [site for site in sites if self.is_applicable(site)]
        kept = set()
        if estimated and not self._params.refine_scale_estimation:
            kept = {site.name for site in sites if site.name in estimated}
            nncf_logger.info(
                f"HQQ keeps the scale estimation parameters of {len(kept)} weights (their codes computed by HQQ's "
                f"kernel) and compresses the other {len(sites) - len(kept)}; set "
                "AdvancedHQQParameters.refine_scale_estimation to refine them."
            )
        # the estimated parameters as they are: no search, no iteration, integer zero points (NNCF's own format)
        keep = dataclasses.replace(
            self._params, num_iterations=0, scale_search_steps=0, zero_point_storage=HQQZeroPointStorage.INTEGER
        )
        integer_params = dataclasses.replace(self._params, zero_point_storage=HQQZeroPointStorage.INTEGER)
        integer_fallback = set()
        if self._params.zero_point_storage == HQQZeroPointStorage.OFFSET:
            integer_fallback = {
                site.name
                for site in sites
                if site.config.is_asym_mode and site.name not in kept and not _takes_zero_point_offset(site)
            }
        if integer_fallback:
            nncf_logger.info(
                f"HQQ keeps integer zero points for {len(integer_fallback)} weights that are not the weight of a "
                "single MatMul, which the zero point offset storage needs."
            )
            nncf_logger.debug(f"Weights with integer zero points: {sorted(integer_fallback)}")
        tasks = {}
        for site in sites:
            initial = precomputed.get(site.name)
            norm_scale = None
            if self._params.norm_importance and site.matmul is not None:
                norm_scale = norm_scale_feeding(site.matmul)
            if site.name in kept:
                params = keep
            elif site.name in integer_fallback:
                params = integer_params
            else:
                params = self._params
            moments = (input_moments or {}).get(site.constant_name)
            if moments is not None and (
                site.axis is None
                or site.constant is None
                or params is keep
                or moments.shape[0] != site.constant.get_output_shape(0)[site.axis]
            ):
                moments = None  # kept parameters, or not along the MatMul's input channels
            tasks[site.name] = HQQWeightTask(
                params,
                initial if initial is not None and initial.scale is not None else None,
                None if norm_scale is None else Tensor(norm_scale * norm_scale),
                None if moments is None else Tensor(moments),
            )
        return tasks

    @staticmethod
    def calculate_compressed_weight(
        weight: Tensor,
        reduction_axes: tuple[int, ...],
        config: WeightCompressionConfig,
        params: AdvancedHQQParameters | None = None,
        initial_scale: Tensor | None = None,
        initial_zero_point: Tensor | None = None,
        input_importance: Tensor | None = None,
        allocate_codes: CodesAllocator | None = None,
        input_moments: Tensor | None = None,
    ) -> CompressedWeight:
        """
        Scale and zero point of one weight, in NNCF's layout (that of `calculate_integer_quantization_params` on
        the weight grouped by `reshape_weight_for_grouped_quantization`), and the codes for them, as NNCF's integer
        quantization would compute them from these parameters (so it need not).

        :param weight: The weight tensor, as stored in the model.
        :param reduction_axes: Axes along which the weight's rows share quantization parameters.
        :param config: Compression config of the weight (mode, group size).
        :param params: Solver parameters.
        :param initial_scale: Starting scale (e.g. from scale estimation); RTN's when None.
        :param initial_zero_point: Starting zero point, with `initial_scale`.
        :param input_importance: Weights of the scale search's L2 error per index along the (single) reduction
            axis, e.g. the squared scale of the normalisation layer feeding the MatMul; uniform when None.
        :param allocate_codes: Asked for the codes' memory when their layout is the solver's (the reduction axis
            last): the solver writes them there (4-bit codes two a byte when it gives half the bytes) and the
            returned codes are the Tensor it gives, so that they are held once (e.g. by an OpenVINO constant that
            shares them).
        :param input_moments: The second moments E[x_k^2] of the activations along the (single) reduction axis
            (the MatMul's input channels): each group's parameters are then the ones of least expected output
            error sum_k E[x_k^2] (W_k - s (Q_k - z))^2 among HQQ's and a grid of clipped RTN scales, each refitted
            by weighted least squares (`nncf_hqq.solver`); None: HQQ's.
        :return: The scale (float32); the zero point: int32 on the integer grid, float32 for the FLOAT16 and
            OFFSET zero point storages, None for symmetric modes; the codes in the grouped weight's layout,
            Q = clip(round(W / s + z), 0, 2^b - 1) uint8 (asymmetric modes) or clip(round(W / s), -2^(b-1),
            2^(b-1) - 1) int8 (symmetric ones). A group with a NaN or infinite weight gets a non-finite scale, so
            checking the scales checks the weight.
        """
        params = params if params is not None else AdvancedHQQParameters()
        if config.mode not in SUPPORTED_MODES:
            msg = f"HQQ supports {[m.value for m in SUPPORTED_MODES]} modes, got {config.mode.value}."
            raise nncf.ValidationError(msg)
        weight = weight.as_numpy_tensor()
        if weight.dtype not in (TensorDataType.float16, TensorDataType.float32):
            weight = weight.astype(TensorDataType.float32)
        importance = _per_weight(input_importance, weight, reduction_axes)
        moments = _per_weight(input_moments, weight, reduction_axes)
        if config.group_size != -1:
            if importance is not None:
                importance, _ = reshape_weight_for_grouped_quantization(importance, reduction_axes, config.group_size)
            if moments is not None:
                moments, _ = reshape_weight_for_grouped_quantization(moments, reduction_axes, config.group_size)
            weight, axis = reshape_weight_for_grouped_quantization(weight, reduction_axes, config.group_size)
            reduction_axes = (axis,)
        if config.is_asym_mode and initial_scale is not None and initial_zero_point is None:
            msg = "An initial zero point is required with an initial scale in asymmetric modes."
            raise nncf.ValidationError(msg)

        rows = _RowsAlongLastAxis(weight.shape, reduction_axes)
        importance = None if importance is None else rows.to_rows(importance)
        moments = None if moments is None else rows.to_rows(moments)
        given = None
        if allocate_codes is not None and rows.keeps_layout:
            given = allocate_codes(tuple(weight.shape), np.uint8 if config.is_asym_mode else np.int8)
        out = None if given is None else given[1]
        if config.is_asym_mode:
            scale, zero_point, codes = solve_asymmetric_fused(
                rows.to_rows(weight),
                None if initial_scale is None else rows.to_rows(initial_scale),
                None if initial_scale is None else rows.to_rows(initial_zero_point),
                config.num_bits,
                params,
                importance,
                codes=out,
                moments=moments,
            )
        else:
            scale = None if initial_scale is None else rows.to_rows(initial_scale.astype(TensorDataType.float32))
            scale, codes = solve_symmetric_fused(
                rows.to_rows(weight), scale, config.num_bits, params, codes=out, moments=moments
            )
            zero_point = None
        codes = rows.values_from_rows(codes) if given is None else given[0]

        scale = rows.from_rows(scale)
        if zero_point is not None:
            integer = params.zero_point_storage == HQQZeroPointStorage.INTEGER
            zero_point = rows.from_rows(zero_point.astype(TensorDataType.int32) if integer else zero_point)
        return CompressedWeight(codes, scale, zero_point)


def _per_weight(per_channel: Tensor | None, weight: Tensor, reduction_axes: tuple[int, ...]) -> Tensor | None:
    """A vector along the (single) reduction axis broadcast to the weight's shape, float32; None if not given."""
    if per_channel is None or len(reduction_axes) != 1:
        return None
    shape = [1] * weight.ndim
    shape[reduction_axes[0] % weight.ndim] = -1
    vector = per_channel.as_numpy_tensor().astype(TensorDataType.float32).reshape(tuple(shape))
    return vector * fns.ones_like(weight)  # float32, broadcast to the weight's shape


def _takes_zero_point_offset(site: WeightSite) -> bool:
    """Whether the weight's zero point can be stored as an integer one plus per-group offsets."""
    return (
        site.matmul is not None
        and site.constant is not None
        and can_take_zero_point_offset(site.matmul, site.constant, site.reduction_axes)
    )


def check_weight_is_finite(weight_name: str, weight: Tensor) -> None:
    """Raises `nncf.ValidationError` naming the weight if it has NaN or infinite values."""
    if not np.isfinite(weight.as_numpy_tensor().data).all():  # nncf.tensor has no isfinite; this is 2x faster
        raise nncf.ValidationError(_non_finite_weight_message(weight_name))


def _non_finite_weight_message(weight_name: str) -> str:
    return f"Weight {weight_name} contains NaN or infinite values; fix the model before compressing it."


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
        self.keeps_layout = self._permutation == tuple(range(ndim))  # rows are the tensor's memory as it is

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
