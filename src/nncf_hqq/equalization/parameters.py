"""User-facing parameters of the data-free equalization that `compress_weights(..., hqq=True)` folds in first."""

from dataclasses import dataclass
from enum import Enum

from nncf_hqq.validation import check_enum
from nncf_hqq.validation import check_integer
from nncf_hqq.validation import check_real
from nncf_hqq.validation import enum_from_string


class EqualizationMethod(Enum):
    """
    How the per-input-channel scales c of a group of MatMuls sharing an input are chosen: the weights' input
    columns are divided by c and the input's producer (a norm's scale, the rows of up_proj for down_proj, of v_proj
    for o_proj) multiplies its output by c, so the float model is unchanged and the compressed one keeps the ops of
    an RTN model (`nncf_hqq.equalization`).

    :param NONE: No equalization.
    :param POWER: c_k = (mean over the rows of |W_ik|)^alpha, alpha = `AdvancedEqualizationParameters.alpha`.
    :param SINKHORN: c balancing the standard deviations of the rows and columns of each group of columns
        (Sinkhorn-Knopp, as SINQ's foldable pre-SINQ).
    :param AUTO: Per group, the one of SINKHORN, POWER and no scaling whose estimated round-to-nearest output
        error, sum_ij a_j (W_ij - c_k Q(W_ij / c_k))^2, is least, with a_j the second moment of the input column j
        reads (`AdvancedEqualizationParameters.activations`).
    """

    NONE = "none"
    POWER = "power"
    SINKHORN = "sinkhorn"
    AUTO = "auto"


class ActivationEstimate(Enum):
    """
    Where `EqualizationMethod.AUTO` takes the second moments of the groups' inputs from.

    :param RANDOM_TOKENS: Measured on a few windows of random token ids (`nncf_hqq.equalization.statistics`): no
        text, but a run of the model, which needs about the float model's size in memory while it runs. A model
        that does not take token ids gets POWER scales.
    :param WEIGHTS: (mean_i |W_ik|)^(-2 beta) from the group's weights (beta = `prior_exponent`): no model run.
    """

    RANDOM_TOKENS = "random_tokens"
    WEIGHTS = "weights"


@dataclass
class AdvancedEqualizationParameters:
    """
    Parameters of the equalization folded into the model before HQQ compresses it (with `hqq=True` only; a group
    is equalized when all its MatMuls are compressed to 4 bits in the same groups).

    :param method: See `EqualizationMethod`; `POWER` by default: one pass over the weights, judged on seven models
        (benchmarks/RESULTS.md). `AUTO` removes more of RTN's KL divergence on Gemma-3 and SmolLM2 in 7 of their 8
        configurations measured, at about RTN's compression time and a run of the model; on Qwen2.5-Coder-0.5B's
        code at INT4_SYM g128 its NLL was measured above RTN's by 5.3 SE (the floor fails there, as for POWER).
    :param alpha: The exponent of `EqualizationMethod.POWER`, in (0, 1].
    :param activations: Where AUTO takes the activations' second moments from (`ActivationEstimate`).
    :param prior_exponent: beta of the WEIGHTS estimate, E[x_k^2] ~ (mean_i |W_ik|)^(-2 beta) (channels whose
        weights are small carry large activations; 0: the plain weight error), in [0, 4].
    :param bos_token_id: The first token of each random window (RANDOM_TOKENS), as a text would start; None: a
        random token (an OpenVINO model does not record its BOS token; the command reads it from the config).
    """

    method: EqualizationMethod = EqualizationMethod.POWER
    alpha: float = 0.5
    activations: ActivationEstimate = ActivationEstimate.RANDOM_TOKENS
    prior_exponent: float = 1.0
    bos_token_id: int | None = None

    def __post_init__(self) -> None:
        self.method = enum_from_string(self.method, EqualizationMethod)  # "power" as well as the member
        self.activations = enum_from_string(self.activations, ActivationEstimate)

    def validate(self) -> None:
        """Raises nncf.ValidationError naming the first invalid field and what to change."""
        check_enum("AdvancedEqualizationParameters.method", self.method, EqualizationMethod)
        check_enum("AdvancedEqualizationParameters.activations", self.activations, ActivationEstimate)
        check_integer("AdvancedEqualizationParameters.bos_token_id", self.bos_token_id, allow_none=True)
        check_real("AdvancedEqualizationParameters.alpha", self.alpha, "a number in (0, 1]", lambda x: 0.0 < x <= 1.0)
        check_real(
            "AdvancedEqualizationParameters.prior_exponent", self.prior_exponent, "a number in [0, 4]",
            lambda x: 0.0 <= x <= 4.0,
        )  # fmt: skip
