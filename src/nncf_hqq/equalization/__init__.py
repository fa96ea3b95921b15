"""
Data-free per-input-channel equalization, folded into an OpenVINO model.

- `parameters`: what the user chooses (`AdvancedEqualizationParameters`, `EqualizationMethod`);
- `patterns`: which MatMuls share an input and which producer of that input absorbs a scale (OpenVINO graph);
- `scales`: the candidate scales, on `nncf.tensor` Tensors;
- `algorithm`: the `Equalization` algorithm that plans the scales of a model; `nncf_hqq.compression_session`
  applies its plan while NNCF compresses the model.
"""

import openvino as ov

from nncf_hqq.equalization.algorithm import Equalization
from nncf_hqq.equalization.algorithm import EqualizationPlan
from nncf_hqq.equalization.algorithm import EqualizationRule
from nncf_hqq.equalization.algorithm import WeightConfig
from nncf_hqq.equalization.patterns import find_scale_groups
from nncf_hqq.graph_journal import replace_constant

__all__ = [
    "Equalization",
    "EqualizationPlan",
    "EqualizationRule",
    "WeightConfig",
    "fold_equalization",
    "replace_constants",
]


def fold_equalization(model: ov.Model, rule: EqualizationRule, group_size: int = 64) -> EqualizationPlan:
    """
    Equalizes `model` in place without compressing it, as if every MatMul weight were to be compressed to 4 bits
    in groups of `group_size` along its input channels: the float model computes the same function (up to the
    rounding of the constants' precision). For inspection and tests; `compress_weights` applies it as it compresses.
    """
    configs = {}
    for group in find_scale_groups(model):
        for consumer in group.consumers:
            configs[consumer.node.get_friendly_name()] = WeightConfig(group_size, 4, consumer.axis)
    plan = Equalization(rule).plan(model, configs, lambda const: const.get_data())
    replace_constants(model, plan)
    return plan


def replace_constants(model: ov.Model, plan: EqualizationPlan) -> None:
    """Replaces every constant that `plan` scales by its scaled value (same element type and name)."""
    constants = {op.get_friendly_name(): op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"}
    for name in plan.factors:
        replace_constant(constants[name], plan.apply(name, constants[name].get_data()))
