"""
What nncf-hqq does inside one call of NNCF's weight compression, step by step as NNCF's hooks hand over
(`nncf_hqq._nncf`): checking the weights, planning and applying the equalization, solving each weight with the
precomputing algorithm (HQQ), storing its codes and float zero points, and undoing every graph edit on failure.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Protocol

import openvino as ov
from nncf.tensor import Tensor

from nncf_hqq.code_packing import carries_codes
from nncf_hqq.code_packing import with_codes_as_constant_data
from nncf_hqq.codes_offload import CodesOffload
from nncf_hqq.equalization.algorithm import Equalization
from nncf_hqq.equalization.algorithm import EqualizationPlan
from nncf_hqq.equalization.algorithm import WeightConfig
from nncf_hqq.graph_journal import GraphJournal
from nncf_hqq.graph_journal import replace_constant
from nncf_hqq.openvino_graph import eight_bit_codes_buffer
from nncf_hqq.openvino_graph import node_under
from nncf_hqq.zero_point_storage import FloatZeroPoints

# NNCF's WeightCompressionParameters, CompressedWeight and NNCFGraph, named in type hints (nncf_hqq._nncf)
WeightParams = Any
CompressedWeight = Any


class WeightTask(Protocol):
    """How an algorithm compresses one weight (such as `nncf_hqq.hqq.HQQWeightTask`)."""

    def solve(self, wp: WeightParams, weight: Tensor, allocate_codes: Callable | None = None) -> CompressedWeight:
        """
        The quantization parameters of one weight, from its value, and its codes (where `allocate_codes`, given
        their shape and numpy dtype, returns memory for them: a Tensor and its writable array, in that memory);
        raises `nncf.ValidationError` if the weight has NaN or infinite values (the check `check_weight` makes on
        the weights without a task).
        """


class PrecomputingAlgorithm(Protocol):
    """An algorithm that computes scales/zero points for NNCF's compression step (such as `nncf_hqq.HQQ`)."""

    def plan(self, all_weight_params: list[WeightParams], backend_entity: Any, precomputed: dict | None) -> dict:
        """A `WeightTask` per weight the algorithm handles, by weight name, decided without reading the weights."""

    def apply(
        self, model: ov.Model, graph: Any, all_weight_params: list[WeightParams], backend_entity: Any, precomputed
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
        `CompressionSession`).
    :param record_plan: Called with the equalization plan once it is made (its factors say what was applied).
    :param offload_codes: Keep the codes of the compressed weights in mapped files (`nncf_hqq.codes_offload`).
    :param offload_dir: Where those files go; None: the system's temporary directory.
    """

    algorithm: PrecomputingAlgorithm
    check_weight: Callable[[str, Tensor], None]
    rt_info_key: str
    rt_info: dict[str, Any]
    zero_point_offsets: bool = False
    eager: bool = False
    equalization: Equalization | None = None
    equalize_at: str = "transform"
    record_plan: Callable[[EqualizationPlan], None] = lambda plan: None
    offload_codes: bool = False
    offload_dir: str | None = None


@dataclass
class _TransformState:
    """What one NNCF transform needs per weight constant, cleared when it ends."""

    # weight constant name -> the weight and its task (None: NNCF's parameters), while transforming lazily
    pending: dict[str, tuple[WeightParams, WeightTask | None]] = field(default_factory=dict)
    lazy_factors: set[str] = field(default_factory=set)  # weight constants the plan scales as they are compressed
    offload: CodesOffload | None = None


class CompressionSession:
    """
    nncf-hqq's part of one NNCF weight-compression call. The hooks of `nncf_hqq._nncf` call, in NNCF's order:
    - `weights_listed`: NNCF has listed the weights to compress. With `eager`, every weight is checked before
      anything changes the model (an algorithm such as AWQ edits it before the transform); with `equalize_at`
      "statistics" (a dataset: NNCF's statistics must see the equalized model), the equalization is planned, as if
      every ratio-defining weight stayed in the primary precision, and every scaled constant replaced;
    - `precision_chosen`: NNCF's mixed precision has chosen each weight's config (ranking the weights as given);
      with `equalize_at` "precision" (algorithms that read the model before the transform: AWQ, scale estimation,
      LoRA correction), the equalization is planned for those configs and every scaled constant replaced;
    - `transform`, around NNCF's transform: with `equalize_at` "transform", the plan is made there and each weight
      scaled as it is compressed; each weight is checked and solved when NNCF reads it (`before_subgraph`), so
      weights are read one at a time (with `eager`, all solved before the transform, reading each twice);
      its codes and float zero point are stored (`after_subgraph`; with `offload_codes`, the codes in a mapped
      file), and zero point offsets added at the end;
    - `undo`, on any exception: the graph edits made so far (equalization, re-wiring of compressed weights, zero
      point offsets) are undone, the model's graph is again the one given (LoRA adapters, which NNCF inserts during
      its transform, are not undone).

    :param backend: nncf-hqq's OpenVINO backend (`nncf_hqq._nncf.PrecomputedParamsOVBackend`): the model's
        constants, a weight's constant, axis and MatMul, and NNCF's weight reading.
    """

    def __init__(self, settings: SeamSettings, backend: Any):
        self.settings = settings
        self._backend = backend
        self.journal = GraphJournal()
        self.zero_points = FloatZeroPoints(settings.zero_point_offsets, self.journal)
        self.equalization_plan: EqualizationPlan | None = None
        self._listed: list[WeightParams] = []  # their configs change in NNCF's mixed-precision step
        self._state = _TransformState()

    def weights_listed(self, model: ov.Model, graph: Any, all_weight_params: list[WeightParams]) -> None:
        self._listed = all_weight_params
        if self.settings.eager:
            for wp in all_weight_params:
                self.settings.check_weight(wp.weight_name, self._backend.read_weight(wp, model, graph))
        if self.settings.equalize_at == "statistics":
            self.equalize(model, all_weight_params, materialize=True)

    def precision_chosen(self, model: ov.Model) -> None:
        if self.settings.equalize_at == "precision":
            self.equalize(model, self._listed, materialize=True)

    def equalize(self, model: ov.Model, all_weight_params: list[WeightParams], materialize: bool) -> None:
        """
        Plans the equalization for the weights NNCF compresses and applies it: constants replaced by their scaled
        values (all of them with `materialize`; otherwise those not compressed, and the compressed weights are
        scaled in `before_subgraph`). Does nothing without an equalization or when done already.
        """
        if self.settings.equalization is None or self.equalization_plan is not None:
            return
        configs = {}
        for wp in all_weight_params:
            config = wp.compression_config
            if config is not None and config.is_integer and len(wp.reduction_axes) == 1:
                name = self._backend.weight_constant_name(wp)
                configs[name] = WeightConfig(config.group_size, config.num_bits, self._backend.weight_axis(wp))
        constants = self._backend.constant_nodes()
        plan = self.settings.equalization.plan(model, configs, self._backend.read_constant)
        self.equalization_plan = plan
        self.settings.record_plan(plan)
        for name in plan.factors:
            if materialize or name not in configs:
                value = plan.apply(name, self._backend.read_constant(constants[name]))
                self._backend.set_constant(name, replace_constant(constants[name], value, self.journal))
            else:
                self._state.lazy_factors.add(name)

    def transform(
        self,
        model: ov.Model,
        graph: Any,
        all_weight_params: list[WeightParams],
        precomputed: dict | None,
        nncf_transform: Callable[[dict | None], ov.Model],
    ) -> ov.Model:
        """NNCF's transform (`nncf_transform(precomputed)`) with nncf-hqq's steps around it."""
        self.equalize(model, all_weight_params, materialize=False)
        if self.settings.eager:
            precomputed = self.settings.algorithm.apply(model, graph, all_weight_params, self._backend, precomputed)
        else:
            tasks = self.settings.algorithm.plan(all_weight_params, self._backend, precomputed)
            self._state.pending = {
                self._backend.weight_constant_name(wp): (wp, tasks.get(wp.weight_name)) for wp in all_weight_params
            }
        # NNCF's transform drops the name -> node mapping: keep the MatMuls that offsets may be added to
        matmuls = {}
        if self.zero_points.offsets:
            matmuls = {
                self._backend.weight_constant_name(wp): self._backend.matmul_with_weight(wp) for wp in all_weight_params
            }
        if self.settings.offload_codes:
            self._state.offload = CodesOffload(self.settings.offload_dir)
        try:
            model = nncf_transform(precomputed)
            self.zero_points.add_offsets(matmuls)
            if self._state.offload is not None:
                self._state.offload.adopt_remaining(model)
        finally:
            self.zero_points.clear()
            if self._state.offload is not None:
                self._state.offload.close()
            self._state = _TransformState()
        return model

    def before_subgraph(
        self, const_name: str, weight: Tensor, precomputed: CompressedWeight | None, is_integer: bool, codes_type
    ) -> tuple[Tensor, CompressedWeight | None]:
        """
        The weight NNCF is about to compress, scaled by its equalization factors if they were left to this point,
        and its precomputed parameters: solved now by its task (which checks it), or checked and left as given.
        Codes of `codes_type` that come with the parameters are handed to NNCF as its own quantization returns
        them.
        """
        if const_name in self._state.lazy_factors:
            weight = _scaled_weight(weight, self.equalization_plan, const_name)
        if const_name in self._state.pending:
            wp, task = self._state.pending[const_name]
            if task is None:
                self.settings.check_weight(wp.weight_name, weight)
            else:  # checks the weight as it solves it; 8-bit codes written where the constant will share them
                offload = self._state.offload
                allocate = eight_bit_codes_buffer if offload is None else offload.codes_buffer
                precomputed = task.solve(wp, weight, functools.partial(allocate, codes_type))
        if carries_codes(precomputed, is_integer):
            precomputed = with_codes_as_constant_data(precomputed, codes_type)
        return weight, precomputed

    def after_subgraph(
        self, mul: ov.Node, compressed: CompressedWeight, const_name: str, num_bits: int, zero_point_type: ov.Type
    ) -> None:
        """
        Stores the float zero point of the weight NNCF has just compressed (`FloatZeroPoints`), and with
        `offload_codes` moves its codes constant into a mapped file.
        """
        self.zero_points.store(mul, const_name, compressed, num_bits, zero_point_type)
        if self._state.offload is not None:
            codes = node_under(mul, const_name)
            if codes is not None and codes.get_type_name() == "Constant":
                self._state.offload.move(codes)

    def undo(self) -> None:
        self.journal.undo()

    def summary(self) -> dict[str, Any]:
        """What the session recorded besides `settings.rt_info`: the numbers of groups equalized and skipped."""
        plan = self.equalization_plan
        if plan is None:
            return {}
        return {"equalized_groups": len(plan.equalized), "equalization_skipped_groups": len(plan.skipped)}


def _scaled_weight(weight: Tensor, plan: EqualizationPlan, name: str) -> Tensor:
    """The weight times its equalization factors, rounded to its own precision when that is float16."""
    return Tensor(plan.apply_keeping_float16(name, weight.as_numpy_tensor().data))
