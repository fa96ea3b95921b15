"""
What nncf-hqq does inside one call of NNCF's weight compression, step by step as NNCF's hooks hand over plain data
(`nncf_hqq._nncf`): checking the weights, planning and applying the equalization, solving each weight with HQQ,
storing its codes and float zero points, and undoing every graph edit on failure.
"""

import functools
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nncf
import openvino as ov
from nncf.common.logging import nncf_logger
from nncf.tensor import Tensor

from nncf_hqq._nncf import CompressedWeight
from nncf_hqq._nncf import WeightSite
from nncf_hqq._nncf import codes_constant_name
from nncf_hqq._nncf import read_constant
from nncf_hqq.activation_moments import probe_fits_in_memory
from nncf_hqq.activation_moments import scaled_by_factors
from nncf_hqq.activation_moments import weight_input_moments
from nncf_hqq.code_packing import carries_codes
from nncf_hqq.code_packing import with_codes_as_constant_data
from nncf_hqq.codes_offload import CodesOffload
from nncf_hqq.equalization.algorithm import Equalization
from nncf_hqq.equalization.algorithm import EqualizationPlan
from nncf_hqq.equalization.algorithm import WeightConfig
from nncf_hqq.equalization.algorithm import fold
from nncf_hqq.equalization.statistics import random_token_batches
from nncf_hqq.equalization.statistics import token_inputs
from nncf_hqq.graph_journal import GraphJournal
from nncf_hqq.hqq import HQQ
from nncf_hqq.hqq import HQQWeightTask
from nncf_hqq.hqq import check_weight_is_finite
from nncf_hqq.openvino_graph import codes_buffer
from nncf_hqq.openvino_graph import node_under
from nncf_hqq.zero_point_storage import FloatZeroPoints


@dataclass(frozen=True)
class SessionSettings:
    """
    What nncf-hqq does in one call of NNCF's weight compression, resolved once (`nncf_hqq.compress`).

    :param hqq: The HQQ algorithm, with its parameters.
    :param rt_info: What to record in the model's rt_info, nncf/weight_compression/hqq/.
    :param zero_point_offsets: Store float zero points as integer ones plus per-group offsets (else as f16).
    :param eager: Check every weight when NNCF lists them, and solve every weight before NNCF's transform (when AWQ
        or LoRA correction edit the model before or during it), at the cost of reading every weight twice.
    :param equalization: The equalization to plan and fold, or None.
    :param equalize_at: When it is planned and applied: "statistics", "precision" or "transform" (see
        `CompressionSession`).
    :param offload_codes: Keep the codes of the compressed weights in mapped files (`nncf_hqq.codes_offload`).
    :param offload_dir: Where those files go; None: the system's temporary directory.
    :param moments_dataset: The dataset whose activations weigh HQQ's objective (`nncf_hqq.activation_moments`),
        measured on its first `moments_subset_size` samples when NNCF's transform starts.
    :param random_moments: Without a dataset: (windows, BOS token) of the random token ids whose activations weigh
        HQQ's objective instead, for a language model of token ids that a run fits in memory; None: not weighted.
    """

    hqq: HQQ
    rt_info: dict[str, Any]
    zero_point_offsets: bool = False
    eager: bool = False
    equalization: Equalization | None = None
    equalize_at: str = "transform"
    offload_codes: bool = False
    offload_dir: str | None = None
    moments_dataset: nncf.Dataset | None = None
    moments_subset_size: int = 128
    random_moments: tuple[int, int | None] | None = None


class CompressionSession:
    """
    nncf-hqq's part of one NNCF weight-compression call. The hooks of `nncf_hqq._nncf` call, in NNCF's order:
    - `check_weight` for every weight when NNCF has listed them, with `eager` (AWQ edits the model before the
      transform); and `equalize(..., materialize=True)` then with `equalize_at` "statistics" (a dataset: NNCF's
      statistics must see the equalized model; planned as if every ratio-defining weight stayed in the primary
      precision), or once NNCF's mixed precision has chosen each weight's config with `equalize_at` "precision"
      (algorithms that read the model before the transform: AWQ, scale estimation, LoRA correction);
    - around NNCF's transform: `equalize(..., materialize=False)` (with `equalize_at` "transform" the plan is made
      here and each compressed weight scaled as NNCF reads it), `plan` (HQQ's tasks), with `eager`
      `solve_before_transform` for each of them, `begin_transform`; per weight `before_subgraph` (solved when NNCF
      reads it, so weights are read one at a time) and `after_subgraph` (its codes and float zero point stored;
      with `offload_codes`, the codes in a mapped file); `finish_transform` (zero point offsets added) and
      `end_transform`;
    - `undo`, on any exception (`nncf_hqq.compress`): the graph edits made so far (equalization, re-wiring of
      compressed weights, zero point offsets) are undone, the model's graph is again the one given (LoRA adapters,
      which NNCF inserts during its transform, are not undone).
    """

    def __init__(self, settings: SessionSettings):
        self.settings = settings
        self.journal = GraphJournal()
        self.zero_points = FloatZeroPoints(settings.zero_point_offsets, self.journal)
        self.equalization_plan: EqualizationPlan | None = None
        self.codes_needed_after_subgraph = False  # NNCF's LoRA correction reads a weight's codes after its subgraph
        self._tasks: dict[str, HQQWeightTask] = {}
        self._pending: dict[str, tuple[WeightSite, HQQWeightTask | None]] = {}  # by constant, while transforming
        self._lazy_factors: set[str] = set()  # weight constants the plan scales as they are compressed
        self._offload: CodesOffload | None = None
        self._matmuls: dict[str, ov.Node | None] = {}  # by weight constant, for zero point offsets
        self.moments_tokens = 0  # tokens the activation moments were measured on
        self.moments_source = "none"  # what they were measured on: "dataset", "random_tokens" or "none"

    @staticmethod
    def check_weight(weight_name: str, weight: Tensor) -> None:
        check_weight_is_finite(weight_name, weight)

    def equalize(
        self, model: ov.Model, sites: list[WeightSite], constants: dict[str, ov.Node], materialize: bool
    ) -> dict[str, ov.Node]:
        """
        Plans the equalization for the weights NNCF compresses and applies it: constants replaced by their scaled
        values (all of them with `materialize`; otherwise those not compressed, and the compressed weights are
        scaled in `before_subgraph`). Does nothing without an equalization or when done already.

        :param constants: The model's Constants by friendly name.
        :return: The new Constants, by the name of those they replace.
        """
        if self.settings.equalization is None or self.equalization_plan is not None:
            return {}
        configs = {}
        for site in sites:
            config = site.config
            if config is not None and config.is_integer and site.axis is not None:
                configs[site.constant_name] = WeightConfig(
                    config.group_size, config.num_bits, site.axis, not config.is_asym_mode
                )
        plan = self.settings.equalization.plan(model, configs, read_constant)
        self.equalization_plan = plan
        if not materialize:
            self._lazy_factors = {name for name in plan.factors if name in configs}
        folded = [name for name in plan.factors if name not in self._lazy_factors]
        return fold(plan, constants, folded, read_constant, self.journal)

    def plan(self, model: ov.Model, sites: list[WeightSite], precomputed: dict | None) -> list[WeightSite]:
        """
        HQQ's tasks for the weights NNCF is about to compress, weighted by the second moments of their activations
        on the dataset or random token ids (`_moment_samples`), measured now on `model` as NNCF is about to compress
        it (the equalization folded, or left to be applied as each weight is read: its factors then applied to the
        moments); returns the sites HQQ solves, in order.
        """
        samples = self._moment_samples(model)
        moments = None if samples is None else self._measure_moments(model, sites, samples)
        self._tasks = self.settings.hqq.plan(sites, precomputed, moments)
        return [site for site in sites if site.name in self._tasks]

    def _moment_samples(self, model: ov.Model) -> Iterable | None:
        """The samples to measure the activations on (their source recorded), None for none."""
        settings = self.settings
        if settings.moments_dataset is not None:
            self.moments_source = "dataset"
            return itertools.islice(settings.moments_dataset.get_inference_data(), settings.moments_subset_size)
        if settings.random_moments is None or token_inputs(model) is None:
            return None
        if not probe_fits_in_memory(model):
            nncf_logger.info("HQQ: a run of the model would not fit in the memory available; errors not weighted.")
            return None
        self.moments_source = "random_tokens"
        windows, bos_token_id = settings.random_moments
        return random_token_batches(model, windows, 128, seed=0, bos_token_id=bos_token_id)

    def _measure_moments(self, model: ov.Model, sites: list[WeightSite], samples: Iterable) -> dict[str, Any]:
        weights = {
            site.constant_name: site.matmul for site in sites if site.config is not None and site.config.is_integer
        }
        try:
            moments, self.moments_tokens = weight_input_moments(model, weights, samples)
        except ValueError as error:
            raise nncf.ValidationError(f"HQQ cannot measure the activations on the dataset: {error}") from error
        for name in self._lazy_factors & set(moments):
            axis = next(site.axis for site in sites if site.constant_name == name)
            moments[name] = scaled_by_factors(moments[name], self.equalization_plan.factors[name].get(axis))
        source = "random token ids" if self.moments_source == "random_tokens" else "the dataset"
        nncf_logger.info(
            f"HQQ weighs {len(moments)} weights by their activations on {self.moments_tokens} tokens of {source}."
        )
        return moments

    def solve_before_transform(self, site: WeightSite, weight: Tensor) -> CompressedWeight:
        """
        The weight's HQQ scale and zero point (`eager`), without the codes: holding them until NNCF's transform
        would cost a byte per weight of the model, and NNCF computes them from the parameters.
        """
        compressed = self._tasks[site.name].solve(site, weight)
        return CompressedWeight(None, compressed.scale, compressed.zero_point)

    def begin_transform(self, sites: list[WeightSite], precomputed: dict | None, lora_correction: bool) -> None:
        """NNCF's transform of `sites` starts (with `precomputed` parameters; `lora_correction` reads the codes)."""
        self.codes_needed_after_subgraph = lora_correction
        if not self.settings.eager:
            self._pending = {site.constant_name: (site, self._tasks.get(site.name)) for site in sites}
        if self.zero_points.offsets:
            self._matmuls = {site.constant_name: site.matmul for site in sites}
        if self.settings.offload_codes:
            self._offload = CodesOffload(self.settings.offload_dir)

    def before_subgraph(
        self, const_name: str, weight: Tensor, precomputed: CompressedWeight | None, is_integer: bool, codes_type
    ) -> tuple[Tensor, CompressedWeight | None]:
        """
        The weight NNCF is about to compress, scaled by its equalization factors if they were left to this point,
        and its precomputed parameters: solved now by its task (which checks it), or checked and left as given.
        Codes of `codes_type` that come with the parameters are handed to NNCF as its own quantization returns
        them.
        """
        if const_name in self._lazy_factors:
            weight = Tensor(self.equalization_plan.apply_keeping_float16(const_name, weight.as_numpy_tensor().data))
        if const_name in self._pending:
            site, task = self._pending[const_name]
            if task is None:
                self.check_weight(site.name, weight)
            else:  # checks the weight as it solves it; codes written where the constant will share them
                allocate = codes_buffer if self._offload is None else self._offload.codes_buffer
                precomputed = task.solve(site, weight, functools.partial(allocate, codes_type))
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
        if self._offload is not None:
            codes = node_under(mul, codes_constant_name(const_name))
            if codes is not None and codes.get_type_name() == "Constant":
                self._offload.move(codes)

    def finish_transform(self, model: ov.Model) -> None:
        """NNCF's transform has succeeded: the zero point offsets are added, every codes file has its constant."""
        if self.zero_points.offsets:
            self.zero_points.add_offsets(self._matmuls)
        if self._offload is not None:
            self._offload.adopt_remaining(model)

    def end_transform(self) -> None:
        """NNCF's transform has ended, well or not: what it needed is released."""
        self.zero_points.clear()
        if self._offload is not None:
            self._offload.close()
        self._offload, self._pending, self._tasks, self._lazy_factors, self._matmuls = None, {}, {}, set(), {}

    def undo(self) -> None:
        self.journal.undo()

    def summary(self) -> dict[str, Any]:
        """
        What the session decided besides `settings.rt_info`: what the activations' moments were measured on
        (`activation_moments_source`: dataset, random_tokens or none) and how many tokens; the numbers of groups
        equalized and skipped, and with `EqualizationMethod.AUTO` how many groups kept each candidate
        (`equalization_chosen_<candidate>`).
        """
        plan = self.equalization_plan
        measured = {"activation_moments_source": self.moments_source}
        if self.moments_tokens:
            measured["activation_moments_tokens"] = self.moments_tokens
        if plan is None:
            return measured
        chosen = list(plan.chosen.values())
        return {
            **measured,
            "equalized_groups": len(plan.equalized),
            "equalization_skipped_groups": len(plan.skipped),
            **{f"equalization_chosen_{name}": chosen.count(name) for name in dict.fromkeys(chosen)},
        }
