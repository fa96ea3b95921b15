"""User-facing parameters of HQQ weight compression."""

import dataclasses
from dataclasses import dataclass
from dataclasses import field
from enum import Enum
from pathlib import Path

from nncf.quantization.advanced_parameters import AdvancedCompressionParameters as NNCFAdvancedCompressionParameters

from nncf_hqq.calibration.parameters import SelfCalibrationParameters
from nncf_hqq.equalization.parameters import AdvancedEqualizationParameters
from nncf_hqq.validation import check_bool
from nncf_hqq.validation import check_enum
from nncf_hqq.validation import check_integer
from nncf_hqq.validation import check_real
from nncf_hqq.validation import enum_from_string

# Relative step of the scale expansion search: the candidate scales are (1 + SCALE_SEARCH_STEP k) s_RTN.
SCALE_SEARCH_STEP = 0.02
# With the activations' second moments (a dataset's or random token ids'): the factors f of RTN's scale (NNCF's
# symmetric one) that compete with the solver's scale for the least expected output error, and the weighted
# least-squares refits of each (NNCF's scale estimation's grid, 1 down to 0.55).
MOMENT_GRID = tuple(1.0 - 0.05 * k for k in range(10))
MOMENT_REFITS = 2


class HQQZeroPointStorage(Enum):
    """
    How an asymmetric zero point is stored in the compressed model.

    :param INTEGER: uint4/uint8 zero point, NNCF's standard format; the solver keeps the zero point on the
        integer grid and refits the scale, so the model runs with the same kernels as an RTN model.
    :param FLOAT16: the INTEGER solution with its zero point refitted as a float (least squares for the codes),
        stored as an f16 constant instead of NNCF's u4 one (`Constant(f16) -> Subtract`).
    :param OFFSET: the same float zero point, split exactly into NNCF's integer one and a per-group offset,
        s (q - z) = s (q - z_int) + d with d = s (z_int - z): the MatMul keeps NNCF's standard INT4 pattern and
        an extra, g times smaller one adds the offsets, y = x W_int^T + groupsum(x) D^T. MatMul weights only (other
        weights fall back to INTEGER).
    """

    INTEGER = "int"
    FLOAT16 = "float16"
    OFFSET = "offset"


@dataclass
class AdvancedHQQParameters:
    """
    Parameters of HQQ weight compression: per weight, the scale search and the half-quadratic proximal solver (the
    equalization folded into the model first has its own, `AdvancedEqualizationParameters`).

    Defaults: no scale search, one proximal iteration from RTN's parameters (asymmetric modes); in symmetric modes
    up to 20, each group stopping after two that did not lower its error.

    :param num_iterations: Number of proximal iterations per weight (0: the starting parameters alone, RTN's or the
        scale search's). None: 1 in asymmetric modes (more iterations were measured not to lower perplexity) and
        20 in symmetric ones.
    :param patience: Stop a group's iterations after this many consecutive iterations that did not lower its lp
        error (HQQ's early stop, per group; the group keeps its best parameters); None runs every iteration. With
        2, the symmetric default's gain over RTN was measured as that of all 20 iterations on average over six
        models (ahead on the Gemma family, behind on the BERT-style encoders) in 0.45-0.7x of their time.
    :param lp_norm: The p of the lp error norm the solver minimises, in (0, 1]; p < 1 makes it robust to outliers.
    :param beta: Initial penalty weight of the half-quadratic split.
    :param kappa: Growth factor of beta per iteration (beta is annealed towards the hard constraint).
    :param zero_point_storage: Storage of asymmetric zero points, see `HQQZeroPointStorage`.
    :param scale_search_steps: In asymmetric modes, first search the scales (1 + SCALE_SEARCH_STEP k) s_RTN,
        k = 0..steps (never clipping), with integer zero points, for the least L2 error, and start the proximal
        iterations from there; 0 (the default) starts from RTN. With equalization, the search was measured to make
        the genuine float encoders worse than without it (benchmarks/RESULTS.md); without equalization, 7 was best.
    :param refine_scale_estimation: With scale estimation, let HQQ start from the estimated parameters and keep
        them only where it cannot improve its (data-free) objective. By default HQQ leaves the layers scale
        estimation handled alone: refining them was measured to raise perplexity over scale estimation alone.
    :param norm_importance: Weight the scale search's squared errors of each input channel by the square of the
        scale vector of the normalisation layer (RMSNorm/LayerNorm) feeding the MatMul, when there is one: a
        data-free proxy for the magnitude of the activations the channel multiplies.
    :param activation_moments: Weigh each weight's error by the second moments of the activations it multiplies,
        measured in one run of the model: per group, the parameters of least expected output error
        sum_k E[x_k^2] (W_k - s (Q_k - z))^2 among HQQ's and RTN's scale times `MOMENT_GRID`, each refitted by
        weighted least squares. Measured on the dataset when one is given; without one, on `random_token_windows`
        windows of 128 random token ids after `bos_token_id` (no text) when the model takes token ids and the run
        fits in the memory available, else not weighted. False: HQQ's unweighted objective.
    :param random_token_windows: The random windows of 128 tokens that stand in for a dataset.
    :param bos_token_id: The model's BOS token, first in each random window as in a text (an OpenVINO model does
        not record it; the command reads it from the model's config); None: random tokens only.
    :param clip_extremes: Let the integer-zero-point and symmetric solvers shrink a group's scale so far that the
        group's largest weights are clipped. It lowers the lp error, but clipping large weights hurts perplexity.
    """

    num_iterations: int | None = None
    patience: int | None = 2
    lp_norm: float = 0.7
    beta: float = 10.0
    kappa: float = 1.01
    zero_point_storage: HQQZeroPointStorage = HQQZeroPointStorage.INTEGER
    scale_search_steps: int = 0
    refine_scale_estimation: bool = False
    clip_extremes: bool = False
    norm_importance: bool = False
    activation_moments: bool = True
    random_token_windows: int = 4
    bos_token_id: int | None = None

    def validate(self) -> None:
        """Raises nncf.ValidationError naming the first invalid field and what to change."""
        field = "AdvancedHQQParameters.{}".format
        check_integer(field("num_iterations"), self.num_iterations, allow_none=True)
        check_integer(field("patience"), self.patience, minimum=1, allow_none=True)
        check_integer(field("scale_search_steps"), self.scale_search_steps)
        check_integer(field("random_token_windows"), self.random_token_windows, minimum=1)
        check_integer(field("bos_token_id"), self.bos_token_id, allow_none=True)
        check_real(field("lp_norm"), self.lp_norm, "a number in (0, 1]", lambda x: 0.0 < x <= 1.0)
        check_real(field("beta"), self.beta, "a positive finite number", lambda x: x > 0.0)
        check_real(field("kappa"), self.kappa, "a positive finite number", lambda x: x > 0.0)
        for name in ("refine_scale_estimation", "clip_extremes", "norm_importance", "activation_moments"):
            check_bool(field(name), getattr(self, name))
        check_enum(field("zero_point_storage"), self.zero_point_storage, HQQZeroPointStorage)

    def iterations(self, asymmetric: bool) -> int:
        """The number of proximal iterations to run, `num_iterations` or its default for the mode."""
        if self.num_iterations is not None:
            return self.num_iterations
        return 1 if asymmetric else 20

    def __post_init__(self) -> None:
        self.zero_point_storage = enum_from_string(self.zero_point_storage, HQQZeroPointStorage)  # "int" too


@dataclass
class AdvancedCompressionParameters(NNCFAdvancedCompressionParameters):
    """
    NNCF's advanced compression parameters with nncf-hqq's added.

    :param hqq_params: Advanced parameters for the HQQ algorithm.
    :param equalization_params: The equalization folded into the model before HQQ (with `hqq=True`).
    :param self_calibration: With `hqq=True` and no dataset: the model writes its own calibration text with these
        parameters, whose activations then weigh HQQ's error (and feed AWQ and scale estimation when they are on).
        None: random token ids weigh it (`AdvancedHQQParameters.activation_moments`).
    :param offload_codes: With `hqq=True`: keep the integer codes of the compressed weights (a quarter of an f16
        model in 4 bits) in deleted files that OpenVINO maps instead of in the process's memory, so that the
        kernel can drop their pages under memory pressure and read them back when the model is saved or compiled
        (`nncf_hqq.codes_offload`). They need that much free disk space until the model is released.
    :param offload_dir: An existing directory for those files; None: the system's temporary directory (which
        should not be a RAM file system, or the codes stay in memory).
    """

    hqq_params: AdvancedHQQParameters = field(default_factory=AdvancedHQQParameters)
    equalization_params: AdvancedEqualizationParameters = field(default_factory=AdvancedEqualizationParameters)
    self_calibration: SelfCalibrationParameters | None = None
    offload_codes: bool = True
    offload_dir: str | Path | None = None

    def with_bos_token_id(self, bos_token_id: int | None) -> "AdvancedCompressionParameters":
        """A copy whose random token windows (HQQ's, equalization's) start with `bos_token_id` where none is set."""
        hqq, equalization = self.hqq_params, self.equalization_params
        if hqq.bos_token_id is None:
            hqq = dataclasses.replace(hqq, bos_token_id=bos_token_id)
        if equalization.bos_token_id is None:
            equalization = dataclasses.replace(equalization, bos_token_id=bos_token_id)
        return dataclasses.replace(self, hqq_params=hqq, equalization_params=equalization)
