"""
Data-free equalization: per-input-channel scales chosen from the weights, folded into the model so that it keeps
the ops of an RTN model.

The algorithm decides, from the graph and the weights only, one scale vector c per group of MatMuls that share an
input (`patterns.find_scale_groups`) and returns them as per-constant factors: the consumers' weights are divided
by c along their input axis, the producers' constants multiplied by it along their output axis. Applying the
factors (at once, or as each weight is compressed) is the backend's.
"""

from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import NamedTuple

import numpy as np
import openvino as ov
from nncf.common.logging import nncf_logger
from nncf.tensor import Tensor

from nncf_hqq._float16 import kernel_values
from nncf_hqq._signals import signals_deferred
from nncf_hqq.equalization.parameters import ActivationEstimate
from nncf_hqq.equalization.parameters import AdvancedEqualizationParameters
from nncf_hqq.equalization.parameters import EqualizationMethod
from nncf_hqq.equalization.patterns import ProducerKind
from nncf_hqq.equalization.patterns import ScaleGroup
from nncf_hqq.equalization.patterns import count_linears
from nncf_hqq.equalization.patterns import find_scale_groups
from nncf_hqq.equalization.scales import columns_by_channel
from nncf_hqq.equalization.scales import power_scales
from nncf_hqq.equalization.scales import power_scales_of_means
from nncf_hqq.equalization.scales import sinkhorn_scales
from nncf_hqq.equalization.statistics import input_second_moments
from nncf_hqq.graph_journal import GraphJournal
from nncf_hqq.graph_journal import replace_constant


@dataclass(frozen=True)
class EqualizationRule:
    """
    How scales are chosen.

    :param method: POWER (c = mean |W|^alpha over the group's rows), SINKHORN (balanced row and column
        deviations per tile of `group_size` columns) or AUTO (per group the least estimated output error of
        SINKHORN, POWER and no scaling); the string values are accepted.
    :param alpha: The exponent of POWER.
    :param prior_exponent: AUTO's beta: E[x_k^2] taken as (mean_i |W_ik|)^(-2 beta) when the activations are
        estimated from the weights.
    :param producers: The producer kinds whose groups are equalized.
    :param activations: Where AUTO takes the activations' second moments from.
    :param bos_token_id: The first token of the random windows (RANDOM_TOKENS).
    """

    method: EqualizationMethod = EqualizationMethod.POWER
    alpha: float = 0.5
    prior_exponent: float = 1.0
    producers: tuple[ProducerKind, ...] = (ProducerKind.NORM, ProducerKind.GATED, ProducerKind.ATTENTION)
    activations: ActivationEstimate = ActivationEstimate.RANDOM_TOKENS
    bos_token_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", EqualizationMethod(self.method))
        object.__setattr__(self, "activations", ActivationEstimate(self.activations))
        if self.method == EqualizationMethod.NONE:
            raise ValueError("A rule equalizes: EqualizationMethod.NONE has none (from_parameters returns None).")

    @classmethod
    def from_parameters(cls, params: AdvancedEqualizationParameters) -> "EqualizationRule | None":
        """The rule `params` ask for, None for `EqualizationMethod.NONE`."""
        if params.method == EqualizationMethod.NONE:
            return None
        return cls(
            params.method, params.alpha, params.prior_exponent, activations=params.activations,
            bos_token_id=params.bos_token_id,
        )  # fmt: skip


@dataclass
class EqualizationPlan:
    """
    The result of planning: per constant (by friendly name) the factor vectors to multiply it by, {axis: vector};
    and, per scale group, what was decided.
    """

    factors: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    equalized: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # group name -> reason
    chosen: dict[str, str] = field(default_factory=dict)  # AUTO: group name -> the candidate kept

    def multiply(self, name: str, axis: int, vector: np.ndarray) -> None:
        axes = self.factors.setdefault(name, {})
        vector = vector.astype(np.float32)
        axes[axis] = axes[axis] * vector if axis in axes else vector

    def equalize(self, group: ScaleGroup, c: np.ndarray) -> None:
        """Records `group` as equalized by `c`: its consumers' input columns divided by c, its absorbers times c."""
        self.equalized.append(group.name)
        for consumer in group.consumers:
            column = c if consumer.channel_map is None else c[consumer.channel_map]
            self.multiply(consumer.node.get_friendly_name(), consumer.axis, 1.0 / column)
        for absorber in group.absorbers:
            self.multiply(absorber.node.get_friendly_name(), absorber.axis, c)

    def apply_keeping_float16(self, name: str, value: np.ndarray) -> np.ndarray:
        """
        `apply` rounded to float16 when `value` is float16 (as a float16 constant would store it), in one compiled
        pass for 2-D values; other values as `apply` gives them.
        """
        factors = self.factors.get(name, {})
        if value.dtype != np.float16:
            return self.apply(name, value)
        if value.ndim != 2 or not set(factors) <= {0, 1}:
            return self.apply(name, value).astype(np.float16)
        from nncf_hqq.equalization._kernel import scale_float16_rows_columns  # numba, loaded on first use

        none = np.zeros(0, np.float32)
        with signals_deferred():  # a KeyboardInterrupt inside a compiled kernel can crash the process
            bits = scale_float16_rows_columns(
                np.ascontiguousarray(value).view(np.uint16),
                factors.get(0, none),
                factors.get(1, none),
                next(iter(factors), 0) == 0,
            )
        return bits.view(np.float16)

    def apply(self, name: str, value: np.ndarray) -> np.ndarray:
        """`value` (of the constant `name`) times its factors, float32."""
        value = value.astype(np.float32)
        for axis, vector in self.factors.get(name, {}).items():
            shape = [1] * value.ndim
            shape[axis] = -1
            value = value * vector.reshape(shape)
        return value


def fold(
    plan: EqualizationPlan,
    constants: dict[str, ov.Node],
    names: Iterable[str] | None = None,
    read: Callable[[ov.Node], np.ndarray] = lambda node: node.get_data(),
    journal: GraphJournal | None = None,
) -> dict[str, ov.Node]:
    """
    Replaces each constant `plan` scales (those of `names`; all when None) by a Constant of its scaled value (same
    element type and name), re-wiring its consumers (recorded in `journal` if given).

    :param constants: The model's Constants by friendly name.
    :return: The new Constants, by name.
    """
    names = plan.factors if names is None else names
    return {name: replace_constant(constants[name], plan.apply(name, read(constants[name])), journal) for name in names}


class WeightConfig(NamedTuple):
    """How NNCF compresses one weight constant, as far as equalization is concerned."""

    group_size: int  # -1: per channel
    num_bits: int
    axis: int  # the grouped (reduction) axis of the constant, non-negative
    symmetric: bool = False


WeightConfigs = dict[str, WeightConfig]  # by weight constant name; the weights NNCF compresses to integers only


class Equalization:
    """Plans data-free per-input-channel equalization of an OpenVINO model (see the module docstring)."""

    def __init__(self, rule: EqualizationRule):
        self._rule = rule

    def plan(
        self,
        model: ov.Model,
        weight_configs: WeightConfigs,
        read: Callable[[ov.Node], np.ndarray],
        log: bool = True,
    ) -> EqualizationPlan:
        """
        :param model: The model (read only).
        :param weight_configs: The compression of every weight constant NNCF compresses (others are absent).
        :param read: Reads a constant's value.
        :param log: Log a line saying what was equalized and skipped.
        :return: The factors of every constant that equalization changes.
        """
        plan = EqualizationPlan()
        groups = find_scale_groups(model)
        method, moments = self._rule.method, None
        planned = [g for g in groups if self._skip_reason(g, weight_configs) is None]
        if method == EqualizationMethod.AUTO and self._rule.activations == ActivationEstimate.RANDOM_TOKENS and planned:
            moments = input_second_moments(model, planned, bos_token_id=self._rule.bos_token_id)
            if moments is None:
                method = EqualizationMethod.POWER
                nncf_logger.info("Equalization (auto): the model does not take token ids to measure; power scales.")
        for group in groups:
            reason = self._skip_reason(group, weight_configs)
            if reason is not None:
                plan.skipped[group.name] = reason
                continue
            mean_abs = None
            if method == EqualizationMethod.POWER:  # one pass over each weight, as stored
                mean_abs = _mean_abs_by_channel(plan, group, read)
            config = weight_configs[group.consumers[0].node.get_friendly_name()]
            if mean_abs is not None:
                c = power_scales_of_means(Tensor(mean_abs), self._rule.alpha).as_numpy_tensor().data
            elif method == EqualizationMethod.AUTO:
                c = self._chosen_scales(plan, group, read, config, None if moments is None else moments[group.name])
            else:
                weights, maps = self._weights_as_rows(plan, group, read)
                c = self.scales(weights, maps, group, config.group_size)
            if c is None:
                continue  # AUTO kept the weights as they are
            if not np.all(np.isfinite(c)):
                plan.skipped[group.name] = "non-finite weights or activations"
                continue
            plan.equalize(group, c)
        if log:
            self._log(plan, count_linears(model) - sum(len(g.consumers) for g in groups))
        return plan

    def _chosen_scales(
        self, plan: EqualizationPlan, group: ScaleGroup, read, config: WeightConfig, moments: np.ndarray | None
    ) -> np.ndarray | None:
        """
        AUTO: the candidate (SINKHORN, POWER, none) of least estimated round-to-nearest output error (recorded in
        `plan.chosen`), each input column weighted by `moments` (measured, [columns]) or else by the weights'
        `activation_prior`; None for none.
        """
        from nncf_hqq.equalization._kernel import rtn_output_errors  # numba, loaded on first use

        weights, maps = self._weights_as_rows(plan, group, read)
        columns = columns_by_channel(weights, maps, group.num_channels)
        names = (EqualizationMethod.SINKHORN, EqualizationMethod.POWER, EqualizationMethod.NONE)
        candidates = np.stack([
            sinkhorn_scales(columns, config.group_size).as_numpy_tensor().data,
            power_scales(columns, self._rule.alpha).as_numpy_tensor().data,
            np.ones(group.num_channels, np.float32),
        ]).astype(np.float32)  # fmt: skip
        prior = (
            None if moments is not None else activation_prior(columns.as_numpy_tensor().data, self._rule.prior_exponent)
        )
        errors = np.zeros(len(names))
        for weight, channel_map in zip(weights, maps, strict=True):
            w = weight.as_numpy_tensor().data
            mapping = np.arange(w.shape[1]) if channel_map is None else channel_map.astype(np.int64)
            column_weights = moments if moments is not None else prior[mapping]  # measured ones are per column
            with signals_deferred():  # a KeyboardInterrupt inside a compiled kernel can crash the process
                errors += rtn_output_errors(w, mapping, candidates, column_weights, config.group_size, config.symmetric)
        if not np.all(np.isfinite(errors)):
            return np.full(group.num_channels, np.nan, np.float32)  # skipped by the caller
        best = int(np.argmin(errors))  # ties: the earlier candidate
        plan.chosen[group.name] = names[best].value
        return None if names[best] == EqualizationMethod.NONE else candidates[best]

    def _log(self, plan: EqualizationPlan, unmatched: int) -> None:
        reasons: dict[str, int] = {}
        for reason in plan.skipped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        skipped = "; ".join(f"{count}: {reason}" for reason, count in reasons.items())
        choices = ""
        if plan.chosen:
            chosen = list(plan.chosen.values())
            counts = ", ".join(f"{name}: {chosen.count(name)}" for name in dict.fromkeys(chosen) if name != "none")
            choices = f" ({counts}; {chosen.count('none')} kept as they are, their estimated error the least)"
        nncf_logger.info(
            f"Equalization ({self._rule.method.value}): {len(plan.equalized)} groups of MatMuls sharing an input "
            f"equalized{choices}, {len(plan.skipped)} skipped{f' ({skipped})' if skipped else ''}; {unmatched} "
            "MatMuls left alone (their input's producer is not a norm, a gated product or an attention, or it feeds "
            "other ops)."
        )

    def scales(self, weights: list[Tensor], maps: list, group: ScaleGroup, group_size: int) -> np.ndarray:
        """The scale vector c of a group, float32 [channels]."""
        columns = columns_by_channel(weights, maps, group.num_channels)
        if self._rule.method == EqualizationMethod.SINKHORN:
            c = sinkhorn_scales(columns, group_size)
        else:
            c = power_scales(columns, self._rule.alpha)
        return c.as_numpy_tensor().data.astype(np.float32)

    def _skip_reason(self, group: ScaleGroup, weight_configs: WeightConfigs) -> str | None:
        if group.kind not in self._rule.producers:
            return f"{group.kind.value} producers are not equalized"
        configs = [weight_configs.get(c.node.get_friendly_name()) for c in group.consumers]
        if None in configs:
            return "a consumer weight is not compressed to an integer type"
        if any(config.axis != consumer.axis for config, consumer in zip(configs, group.consumers, strict=True)):
            return "a consumer weight is not grouped along its input channels"
        if len({(config.group_size, config.num_bits) for config in configs}) != 1:
            return "the consumer weights are compressed differently"
        if configs[0].num_bits != 4 or configs[0].group_size <= 0:
            return "the consumer weights are not compressed to 4 bits in groups"
        return None

    @staticmethod
    def _weights_as_rows(plan: EqualizationPlan, group: ScaleGroup, read) -> tuple[list[Tensor], list]:
        """The consumers' weights with the factors planned so far, float32 [out, in]."""
        weights, maps = [], []
        for consumer in group.consumers:
            value = plan.apply(consumer.node.get_friendly_name(), read(consumer.node))
            weights.append(Tensor(np.ascontiguousarray(np.moveaxis(value, consumer.axis, -1))))
            maps.append(consumer.channel_map)
        return weights, maps


def activation_prior(columns: np.ndarray, beta: float) -> np.ndarray:
    """
    The data-free stand-in for the second moments of a group's input channels, a_k^2 = (mean_i |W_ik|)^(-2 beta)
    over the group's rows (`columns` [rows, channels]), divided by its mean: float32 [channels].
    """
    mean_abs = np.maximum(np.abs(columns).mean(axis=0, dtype=np.float64), 1e-12)
    prior = mean_abs ** (-2.0 * beta)
    return (prior / prior.mean()).astype(np.float32)


def _mean_abs_by_channel(plan: EqualizationPlan, group: ScaleGroup, read) -> np.ndarray | None:
    """
    Per channel k, the mean of |W'| over the group's rows and the columns that read k (W' = W times the factors
    planned so far), float32 [channels]: what `power_scales` takes the mean of, in one compiled pass over each
    weight without a float32 copy. None when a consumer weight is not 2-D.
    """
    from nncf_hqq.equalization._kernel import weighted_abs_sums  # numba, loaded on first use

    totals = np.zeros(group.num_channels, np.float64)
    counts = np.zeros(group.num_channels, np.float64)
    no_factors = np.zeros(0, np.float32)
    for consumer in group.consumers:
        value = read(consumer.node)
        if value.ndim != 2:
            return None
        factors = plan.factors.get(consumer.node.get_friendly_name(), {})
        other = 1 - consumer.axis  # the output axis, summed over
        with signals_deferred():  # a KeyboardInterrupt inside a compiled kernel can crash the process
            sums = weighted_abs_sums(kernel_values(value), factors.get(other, no_factors), consumer.axis == 1)
        if consumer.axis in factors:
            sums = sums * factors[consumer.axis]
        rows = value.shape[other]
        if consumer.channel_map is None:
            totals += sums
            counts += rows
        else:
            totals += np.bincount(consumer.channel_map, weights=sums, minlength=group.num_channels)
            counts += rows * np.bincount(consumer.channel_map, minlength=group.num_channels)
    return (totals / counts).astype(np.float32)
