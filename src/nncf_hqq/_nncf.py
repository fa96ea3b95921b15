"""
The one place that touches NNCF's internal (non-exported) API.

Everything nncf-hqq needs from inside NNCF is imported or subclassed here, so an NNCF upgrade is one module to
check. Tested with the NNCF version pinned in pyproject.toml.
"""

import threading
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from typing import Protocol

import numpy as np
import openvino as ov
from nncf.common.graph import NNCFGraph
from nncf.common.logging.track_progress import track
from nncf.openvino.graph.node_utils import get_const_value_as_numpy_tensor
from nncf.openvino.quantization import quantize_model as ov_quantize_model
from nncf.openvino.rt_info import dump_parameters
from nncf.parameters import CompressWeightsMode
from nncf.quantization.algorithms.weight_compression import openvino_backend as nncf_openvino_backend
from nncf.quantization.algorithms.weight_compression.algorithm import WeightCompression
from nncf.quantization.algorithms.weight_compression.config import WeightCompressionConfig
from nncf.quantization.algorithms.weight_compression.config import WeightCompressionParameters
from nncf.quantization.algorithms.weight_compression.openvino_backend import OVWeightCompressionAlgoBackend
from nncf.quantization.algorithms.weight_compression.parameters import CompressedWeight
from nncf.quantization.algorithms.weight_compression.weight_lowering import calculate_integer_quantization_params
from nncf.quantization.algorithms.weight_compression.weight_lowering import reshape_weight_for_grouped_quantization
from nncf.tensor import Tensor
from nncf.tensor import TensorDataType
from nncf.tensor.functions.openvino_numeric import DTYPE_MAP
from openvino import opset13 as opset

from nncf_hqq.equalization.algorithm import Equalization
from nncf_hqq.equalization.algorithm import EqualizationPlan
from nncf_hqq.openvino_graph import can_take_zero_point_offset
from nncf_hqq.openvino_graph import norm_scale_feeding
from nncf_hqq.openvino_graph import replace_zero_point
from nncf_hqq.openvino_graph import u4_tensor
from nncf_hqq.zero_point_offset import add_zero_point_offset
from nncf_hqq.zero_point_offset import split_zero_point

__all__ = [
    "CompressWeightsMode",
    "CompressedWeight",
    "NNCFGraph",
    "WeightCompressionConfig",
    "WeightCompressionParameters",
    "calculate_integer_quantization_params",
    "reshape_weight_for_grouped_quantization",
    "track",
    "weight_compression_class",
]


class WeightTask(Protocol):
    """How an algorithm compresses one weight (such as `nncf_hqq.hqq.HQQWeightTask`)."""

    def solve(self, wp: WeightCompressionParameters, weight: Tensor) -> CompressedWeight:
        """
        The quantization parameters of one weight, from its value; raises `nncf.ValidationError` if the weight has
        NaN or infinite values (the check `check_weight` makes on the weights without a task).
        """


class PrecomputingAlgorithm(Protocol):
    """An algorithm that computes scales/zero points for NNCF's compression step (such as `nncf_hqq.HQQ`)."""

    def plan(
        self, all_weight_params: list[WeightCompressionParameters], backend_entity: Any, precomputed: dict | None
    ) -> dict[str, WeightTask]:
        """A task per weight the algorithm handles, by weight name, decided without reading the weights."""

    def apply(
        self,
        model: ov.Model,
        graph: NNCFGraph,
        all_weight_params: list[WeightCompressionParameters],
        backend_entity: Any,
        precomputed: dict | None,
    ) -> dict[str, CompressedWeight]:
        """The parameters of every weight the algorithm handles (with the given ones for the others)."""


@dataclass(frozen=True)
class SeamSettings:
    """
    What nncf-hqq hands NNCF's weight compression for one call, resolved once (`nncf_hqq.compress`).

    :param algorithm: Computes the scales/zero points (and codes) of the weights it handles.
    :param check_weight: Raises for a weight that cannot be compressed (NaN/Inf), called on every other weight.
    :param rt_info_key: The model's rt_info section, `nncf/weight_compression/<rt_info_key>/`.
    :param rt_info: What to record there.
    :param zero_point_offsets: Store float zero points as integer ones plus per-group offsets (else as f16).
    :param eager: Check and solve every weight before NNCF's transform (when AWQ or LoRA correction edit the
        model before or during it), at the cost of reading every weight twice.
    :param equalization: The equalization to plan and fold, or None.
    :param equalize_at: When it is planned and applied: "statistics", "precision" or "transform" (see
        `weight_compression_class`).
    """

    algorithm: PrecomputingAlgorithm
    check_weight: Callable[[str, Tensor], None]
    rt_info_key: str
    rt_info: dict[str, Any]
    zero_point_offsets: bool = False
    eager: bool = False
    equalization: Equalization | None = None
    equalize_at: str = "transform"


_FLOAT_DTYPES = (TensorDataType.float16, TensorDataType.float32, TensorDataType.float64)


class PrecomputedParamsOVBackend(OVWeightCompressionAlgoBackend):
    """
    OpenVINO weight-compression backend that takes scales/zero points from an extra algorithm, after AWQ and scale
    estimation have run: each weight is checked and solved when NNCF's transform reads it, so weights are read one
    at a time (or, `eager`, all of them before the transform). A failure during the transform undoes the
    re-wiring of the weights replaced so far and of the zero point offsets added: the model's graph is left as it
    was given (LoRA adapters, which NNCF inserts during the transform, are not undone).

    A precomputed integer weight may carry its codes (HQQ's do); NNCF then stores them instead of quantizing the
    weight again from the scale and zero point (see `openvino_weight_compression_class`).

    Zero points that are not integer-valued would be silently truncated by NNCF's u4/u8 zero point constant. They
    are stored either as f16 constants (`Constant(f16) -> Subtract`), or, with `zero_point_offsets`, split into
    NNCF's integer zero point and a per-group offset added after the MatMul (see `add_zero_point_offset`).

    With an `equalization`, its plan is made once the weights to compress and their configs are known (`equalize`):
    the constants it scales are replaced at once (`materialize`, when other algorithms read the model before the
    transform), or only the small ones, the weights being scaled as they are compressed. Every re-wiring of the
    graph is journaled; `undo_edits` restores the model as it was given.
    """

    def __init__(self, model: ov.Model, settings: SeamSettings):
        super().__init__(model)
        self._algorithm = settings.algorithm
        self._check_weight = settings.check_weight
        self._zero_point_offsets = settings.zero_point_offsets
        self._eager = settings.eager
        self._equalization = settings.equalization
        self.equalization_plan: EqualizationPlan | None = None
        self._lazy_factors: set[str] = set()  # weight constants the plan scales as they are compressed
        self._offsets: dict[str, np.ndarray] = {}  # weight constant name -> f16 offsets, in the scale's layout
        # weight constant name -> the weight and its task (None: NNCF's parameters), while transforming lazily
        self._pending: dict[str, tuple[WeightCompressionParameters, WeightTask | None]] = {}
        self._edits: list[tuple[ov.Input, ov.Output]] = []  # (input, its previous source) for each re-wiring

    def equalize(self, model: ov.Model, all_weight_params: list[WeightCompressionParameters], materialize: bool):
        """
        Plans the equalization for the weights NNCF compresses and applies it: constants replaced by their scaled
        values (all of them with `materialize`; otherwise those not compressed, and the compressed weights are
        scaled in `_create_compression_subgraph`). Does nothing without an equalization or when done already.
        """
        if self._equalization is None or self.equalization_plan is not None:
            return
        configs = {}
        for wp in all_weight_params:
            config = wp.compression_config
            if config is not None and config.is_integer and len(wp.reduction_axes) == 1:
                axis = wp.reduction_axes[0] % len(self.get_weight_shape(wp.node_with_weight, wp.weight_port_id, None))
                configs[_constant_name(wp)] = (config.group_size, config.num_bits, axis)
        nodes = {name: node for name, node in self.name_to_node_mapping.items() if node.get_type_name() == "Constant"}
        plan = self._equalization.plan(model, configs, lambda const: get_const_value_as_numpy_tensor(const))
        self.equalization_plan = plan
        for name in plan.factors:
            if materialize or name not in configs:
                const = nodes[name]
                self._replace_constant(name, plan.apply(name, get_const_value_as_numpy_tensor(const)))
            else:
                self._lazy_factors.add(name)

    def _replace_constant(self, name: str, value: np.ndarray) -> None:
        """Replaces the constant `name` by one of `value` (same element type and name), journaled."""
        old = self.name_to_node_mapping[name]
        new = opset.constant(value, dtype=old.get_element_type(), name=name)
        for target in old.output(0).get_target_inputs():
            self._edits.append((target, old.output(0)))
            target.replace_source_output(new.output(0))
        self.name_to_node_mapping[name] = new

    def undo_edits(self) -> None:
        """Restores every re-wiring made so far, in reverse order: the graph is again the one given."""
        for target, source in reversed(self._edits):
            target.replace_source_output(source)
        self._edits = []

    def _matmul_with_weight(self, wp: WeightCompressionParameters) -> ov.Node | None:
        """The weight's node if it is a MatMul taking the weight as its second input, else None."""
        node = self.name_to_node_mapping.get(wp.node_with_weight.node_name)
        if node is None or node.get_type_name() != "MatMul" or wp.weight_port_id != 1:
            return None
        return node

    def supports_zero_point_offset(self, wp: WeightCompressionParameters) -> bool:
        """Whether the weight's zero point can be stored as an integer one plus per-group offsets."""
        matmul = self._matmul_with_weight(wp)
        const = self.name_to_node_mapping.get(_constant_name(wp))
        return matmul is not None and const is not None and can_take_zero_point_offset(matmul, const, wp.reduction_axes)

    def input_norm_scale(self, wp: WeightCompressionParameters) -> Tensor | None:
        """The per-channel scale of the normalisation layer feeding the weight's MatMul, or None."""
        matmul = self._matmul_with_weight(wp)
        scale = None if matmul is None else norm_scale_feeding(matmul)
        return None if scale is None else Tensor(scale)

    def transform_model(
        self,
        model: ov.Model,
        graph: NNCFGraph,
        weight_compression_parameters: Iterable[WeightCompressionParameters],
        precomputed_compressed_weights: dict[str, CompressedWeight] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> ov.Model:
        # NNCF hands over its progress tracker; the sequence behind it is the list of weights to compress.
        all_weight_params = list(getattr(weight_compression_parameters, "sequence", weight_compression_parameters))
        if not isinstance(weight_compression_parameters, track):
            weight_compression_parameters = all_weight_params
        precomputed = precomputed_compressed_weights
        self.equalize(model, all_weight_params, materialize=False)
        if self._eager:
            precomputed = self._algorithm.apply(model, graph, all_weight_params, self, precomputed)
        else:
            tasks = self._algorithm.plan(all_weight_params, self, precomputed)
            self._pending = {_constant_name(wp): (wp, tasks.get(wp.weight_name)) for wp in all_weight_params}
        # NNCF's transform drops the name -> node mapping: keep the MatMuls that offsets may be added to
        matmuls = {}
        if self._zero_point_offsets:
            matmuls = {_constant_name(wp): self._matmul_with_weight(wp) for wp in all_weight_params}
        self._offsets = {}
        try:
            model = super().transform_model(model, graph, weight_compression_parameters, precomputed, *args, **kwargs)
            groupsums: dict = {}
            for const_name, offset in self._offsets.items():
                matmul = matmuls[const_name]
                self._edits.extend((target, matmul.output(0)) for target in matmul.output(0).get_target_inputs())
                add_zero_point_offset(matmul, offset, f"{const_name}/zero_point_offset", groupsums)
        finally:
            self._offsets, self._pending, self._lazy_factors = {}, {}, set()
        return model

    def _replace_node(self, src_node: ov.Node, new_node: ov.Node) -> None:
        # NNCF re-wires the consumers of a weight constant (recursively through Converts): record them for undo
        self._edits.extend((target, src_node.output(0)) for target in src_node.output(0).get_target_inputs())
        super()._replace_node(src_node, new_node)

    def _create_compression_subgraph(
        self,
        weight,
        compression_config: WeightCompressionConfig,
        reduction_axes,
        const_node_name: str,
        weight_port_id: int,
        const_dtype,
        should_add_convert_node: bool,
        precomputed_compressed_weight: CompressedWeight | None = None,
    ):
        if const_node_name in self._lazy_factors:
            weight = _scaled_weight(weight, self.equalization_plan, const_node_name)
        if const_node_name in self._pending:
            wp, task = self._pending[const_node_name]
            if task is None:
                self._check_weight(wp.weight_name, weight)
            else:  # checks the weight as it solves it
                precomputed_compressed_weight = task.solve(wp, weight)
        if _carries_codes(precomputed_compressed_weight, compression_config):
            precomputed_compressed_weight = _with_codes_as_constant_data(
                precomputed_compressed_weight, compression_config
            )
        mul, compressed_weight = super()._create_compression_subgraph(
            weight,
            compression_config,
            reduction_axes,
            const_node_name,
            weight_port_id,
            const_dtype,
            should_add_convert_node,
            precomputed_compressed_weight,
        )
        zero_point = compressed_weight.zero_point
        if zero_point is None or zero_point.dtype not in _FLOAT_DTYPES:
            return mul, compressed_weight
        zero_point = zero_point.as_numpy_tensor().data.astype(np.float32)
        if np.array_equal(zero_point, np.round(zero_point)):  # integers in a float tensor (scale estimation's)
            return mul, compressed_weight  # NNCF stored them as its u4/u8 zero point
        name = f"{const_node_name}/zero_point"
        if not self._zero_point_offsets:
            replace_zero_point(mul, const_node_name, opset.constant(zero_point, dtype=ov.Type.f16, name=name))
            return mul, compressed_weight
        scale = compressed_weight.scale.as_numpy_tensor().data
        integer_zero_point, self._offsets[const_node_name] = split_zero_point(
            scale, zero_point, compression_config.num_bits
        )
        zero_point_type = DTYPE_MAP[compression_config.compression_dtype]
        integer_const = opset.constant(integer_zero_point.astype(np.uint8), dtype=zero_point_type, name=name)
        replace_zero_point(mul, const_node_name, opset.convert(integer_const, ov.Type.f16))
        return mul, compressed_weight


def _scaled_weight(weight: Tensor, plan: EqualizationPlan, name: str) -> Tensor:
    """The weight times its equalization factors, rounded to its own precision when that is float16."""
    value = weight.as_numpy_tensor().data
    scaled = plan.apply(name, value)
    return Tensor(scaled.astype(np.float16) if value.dtype == np.float16 else scaled)


def _carries_codes(compressed: CompressedWeight | None, config: WeightCompressionConfig) -> bool:
    """Whether a precomputed weight of an integer config comes with its codes."""
    return config.is_integer and compressed is not None and compressed.tensor is not None


def _with_codes_as_constant_data(compressed: CompressedWeight, config: WeightCompressionConfig) -> CompressedWeight:
    """
    The weight's unsigned integer codes (uint8 values) as NNCF's OpenVINO quantization returns them: 4-bit codes as
    a u4 OpenVINO tensor, which a constant shares; others as they are.
    """
    if DTYPE_MAP[config.compression_dtype] != ov.Type.u4:
        return compressed
    codes = compressed.tensor.as_numpy_tensor().data
    tensor = u4_tensor(codes, tuple(compressed.tensor.shape))
    return CompressedWeight(Tensor(tensor), compressed.scale, compressed.zero_point, compressed.codebook)


def _compress_weight_keeping_given_codes(compress_weight: Callable) -> Callable:
    """NNCF's `compress_weight`, except that a precomputed integer weight that has its codes is used as it is."""

    def compress_weight_keeping_given_codes(weight, reduction_axes, config, precomputed_compressed_weight=None):
        if _carries_codes(precomputed_compressed_weight, config):
            return precomputed_compressed_weight
        return compress_weight(weight, reduction_axes, config, precomputed_compressed_weight)

    return compress_weight_keeping_given_codes


def _constant_name(wp: WeightCompressionParameters) -> str:
    return wp.node_with_weight.layer_attributes.constant_attributes[wp.weight_port_id]["name"]


def weight_compression_class(settings: SeamSettings) -> type[WeightCompression]:
    """
    Returns a `WeightCompression` subclass that
    - takes the quantization parameters (and codes) of the weights `settings.algorithm` handles from it, computed
      right before NNCF compresses them (after AWQ and scale estimation),
    - calls `settings.check_weight(name, weight)` on every weight to compress before it is compressed; an
      exception during NNCF's transform leaves the model's graph as it was (see `PrecomputedParamsOVBackend`),
    - stores float zero points as f16, or with `zero_point_offsets` as integer ones plus per-group offsets,
    - records `settings.rt_info` in the model under `nncf/weight_compression/<rt_info_key>/`.
    With `eager`, every weight is checked before anything changes the model (needed when an algorithm such as
    AWQ edits the model before the transform) and solved before the transform, at the cost of reading every
    weight twice and a higher peak memory (every weight's pages resident before NNCF's transform allocates).
    With an `equalization`, it is planned from the weights' compression configs and applied (`equalize_at`):
    - "statistics": once NNCF has listed the weights to compress, before it collects activation statistics (with a
      dataset, which must see the equalized model), every scaled constant replaced; the plan assumes every
      ratio-defining weight in the primary precision, since NNCF's mixed precision chooses after the statistics;
    - "precision": after NNCF's mixed-precision choice (which ranks the weights as given), before the algorithms
      that read the model (AWQ, scale estimation, LoRA correction), every scaled constant replaced;
    - "transform": at the transform, each weight scaled as it is compressed.
    The numbers of
    groups equalized and skipped go to `nncf/weight_compression/<rt_info_key>/`. An exception anywhere in NNCF's
    algorithm undoes the graph edits made through the backend (equalization, re-wiring of compressed weights, zero
    point offsets).
    """

    class PrecomputedParamsWeightCompression(WeightCompression):
        def apply(self, model: ov.Model, graph: NNCFGraph, *args, **kwargs) -> ov.Model:
            try:
                return super().apply(model, graph, *args, **kwargs)
            except BaseException:
                if getattr(self, "_backend_entity", None) is not None:
                    self._backend_entity.undo_edits()
                raise

        def get_weight_compression_parameters(self, model: ov.Model, graph: NNCFGraph):
            all_weight_params, *rest = super().get_weight_compression_parameters(model, graph)
            self._listed_weight_params = all_weight_params  # their configs change in the mixed-precision step
            if settings.eager:
                for wp in all_weight_params:
                    weight = self._backend_entity.get_weight(wp.node_with_weight, wp.weight_port_id, model, graph)
                    settings.check_weight(wp.weight_name, weight)
            if settings.equalize_at == "statistics":
                self._backend_entity.equalize(model, all_weight_params, materialize=True)
            return (all_weight_params, *rest)

        def apply_mixed_precision(self, ratio_defining_params, model: ov.Model, graph: NNCFGraph, *args, **kwargs):
            super().apply_mixed_precision(ratio_defining_params, model, graph, *args, **kwargs)
            if settings.equalize_at == "precision":
                self._backend_entity.equalize(model, self._listed_weight_params, materialize=True)

        def set_backend_entity(self, model: ov.Model) -> None:
            self._backend_entity = PrecomputedParamsOVBackend(model, settings)

        def apply_with_parameters(self, model, graph, *args, **kwargs):
            model = super().apply_with_parameters(model, graph, *args, **kwargs)
            dump_parameters(model, settings.rt_info, algo_name="weight_compression", path=[settings.rt_info_key])
            plan = self._backend_entity.equalization_plan if self._backend_entity is not None else None
            if plan is not None:
                summary = {"equalized_groups": len(plan.equalized), "equalization_skipped_groups": len(plan.skipped)}
                dump_parameters(model, summary, algo_name="weight_compression", path=[settings.rt_info_key])
            return model

    return PrecomputedParamsWeightCompression


_PATCH_LOCK = threading.Lock()


@contextmanager
def openvino_weight_compression_class(cls: type[WeightCompression]) -> Iterator[None]:
    """
    Makes NNCF's OpenVINO `compress_weights` implementation build `cls` instead of `WeightCompression`, and its
    OpenVINO backend use the codes of a precomputed integer weight when they are given (NNCF would recompute them
    from its scale and zero point).
    """
    with _PATCH_LOCK:
        original_class = ov_quantize_model.WeightCompression
        original_compress_weight = nncf_openvino_backend.compress_weight
        ov_quantize_model.WeightCompression = cls
        nncf_openvino_backend.compress_weight = _compress_weight_keeping_given_codes(original_compress_weight)
        try:
            yield
        finally:
            ov_quantize_model.WeightCompression = original_class
            nncf_openvino_backend.compress_weight = original_compress_weight


@contextmanager
def nncf_rt_info_restored_on_error(model: ov.Model) -> Iterator[None]:
    """
    On an exception, removes the `nncf` rt_info section NNCF's OpenVINO entry point adds to the model before any
    algorithm runs (`nncf/friendly_names_were_updated`), if the model had no such section before.
    """
    had_nncf_rt_info = model.has_rt_info(["nncf"])
    try:
        yield
    except BaseException:
        if not had_nncf_rt_info and model.has_rt_info(["nncf"]):
            del model.get_rt_info()["nncf"]
        raise
