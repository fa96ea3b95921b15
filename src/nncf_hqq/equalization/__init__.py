"""
Data-free per-input-channel equalization, folded into an OpenVINO model.

- `parameters`: what the user chooses (`AdvancedEqualizationParameters`, `EqualizationMethod`);
- `patterns`: which MatMuls share an input and which producer of that input absorbs a scale (OpenVINO graph);
- `scales`: the candidate scales, on `nncf.tensor` Tensors;
- `algorithm`: the `Equalization` algorithm that plans the scales of a model, and `fold`, which applies a plan to
  the model's constants; `nncf_hqq.compression_session` applies the plan while NNCF compresses the model.
"""

from nncf_hqq.equalization.algorithm import Equalization
from nncf_hqq.equalization.algorithm import EqualizationPlan
from nncf_hqq.equalization.algorithm import EqualizationRule
from nncf_hqq.equalization.algorithm import WeightConfig
from nncf_hqq.equalization.algorithm import fold

__all__ = ["Equalization", "EqualizationPlan", "EqualizationRule", "WeightConfig", "fold"]
