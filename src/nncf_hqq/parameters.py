"""User-facing parameters of HQQ weight compression."""

from dataclasses import dataclass
from dataclasses import field
from enum import Enum

import nncf
from nncf.quantization.advanced_parameters import AdvancedCompressionParameters as NNCFAdvancedCompressionParameters

# Relative step of the scale expansion search: the candidate scales are (1 + SCALE_SEARCH_STEP k) s_RTN.
SCALE_SEARCH_STEP = 0.02


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
    Parameters of the HQQ half-quadratic proximal solver.

    :param num_iterations: Number of proximal iterations per weight (0: the scale search alone). None: 1 in
        asymmetric modes (after the scale search, more iterations were measured not to lower perplexity) and 20 in
        symmetric ones.
    :param lp_norm: The p of the lp error norm the solver minimises, in (0, 1]; p < 1 makes it robust to outliers.
    :param beta: Initial penalty weight of the half-quadratic split.
    :param kappa: Growth factor of beta per iteration (beta is annealed towards the hard constraint).
    :param zero_point_storage: Storage of asymmetric zero points, see `HQQZeroPointStorage`.
    :param scale_search_steps: In asymmetric modes, first search the scales (1 + SCALE_SEARCH_STEP k) s_RTN,
        k = 0..steps (never clipping), with integer zero points, for the least L2 error, and start the proximal
        iterations from there; 0 starts from RTN. This search is where the integer path's perplexity gain was
        measured to come from; 7 expansions (up to 14%) had lower perplexity than 15 and 5 (benchmarks/RESULTS.md).
    :param refine_scale_estimation: With scale estimation, let HQQ start from the estimated parameters and keep
        them only where it cannot improve its (data-free) objective. By default HQQ leaves the layers scale
        estimation handled alone: refining them was measured to raise perplexity over scale estimation alone.
    :param norm_importance: Weight the scale search's squared errors of each input channel by the square of the
        scale vector of the normalisation layer (RMSNorm/LayerNorm) feeding the MatMul, when there is one: a
        data-free proxy for the magnitude of the activations the channel multiplies.
    :param clip_extremes: Let the integer-zero-point and symmetric solvers shrink a group's scale so far that the
        group's largest weights are clipped. It lowers the lp error, but clipping large weights hurts perplexity.
    """

    num_iterations: int | None = None
    lp_norm: float = 0.7
    beta: float = 10.0
    kappa: float = 1.01
    zero_point_storage: HQQZeroPointStorage = HQQZeroPointStorage.INTEGER
    scale_search_steps: int = 7
    refine_scale_estimation: bool = False
    clip_extremes: bool = False
    norm_importance: bool = False

    def validate(self) -> None:
        """Raises nncf.ValidationError naming the first invalid field and what to change."""
        iterations = self.num_iterations
        if iterations is not None and (
            not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0
        ):
            msg = f"AdvancedHQQParameters.num_iterations must be a non-negative integer, got {self.num_iterations!r}."
            raise nncf.ValidationError(msg)
        steps = self.scale_search_steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            msg = f"AdvancedHQQParameters.scale_search_steps must be a non-negative integer, got {steps!r}."
            raise nncf.ValidationError(msg)
        if not 0.0 < self.lp_norm <= 1.0:
            msg = f"AdvancedHQQParameters.lp_norm must be in (0, 1], got {self.lp_norm!r}."
            raise nncf.ValidationError(msg)
        if not self.beta > 0.0:
            msg = f"AdvancedHQQParameters.beta must be positive, got {self.beta!r}."
            raise nncf.ValidationError(msg)
        if not self.kappa > 0.0:
            msg = f"AdvancedHQQParameters.kappa must be positive, got {self.kappa!r}."
            raise nncf.ValidationError(msg)
        if not isinstance(self.zero_point_storage, HQQZeroPointStorage):
            choices = [s.value for s in HQQZeroPointStorage]
            msg = f"AdvancedHQQParameters.zero_point_storage must be one of {choices}, got {self.zero_point_storage!r}."
            raise nncf.ValidationError(msg)

    def iterations(self, asymmetric: bool) -> int:
        """The number of proximal iterations to run, `num_iterations` or its default for the mode."""
        if self.num_iterations is not None:
            return self.num_iterations
        return 1 if asymmetric else 20

    def __post_init__(self) -> None:
        # Accept the string values ("int", "float16") as well as the enum members.
        if isinstance(self.zero_point_storage, str):
            try:
                self.zero_point_storage = HQQZeroPointStorage(self.zero_point_storage)
            except ValueError:
                pass  # reported by validate()


@dataclass
class AdvancedCompressionParameters(NNCFAdvancedCompressionParameters):
    """
    NNCF's advanced compression parameters with the HQQ solver's parameters added.

    :param hqq_params: Advanced parameters for the HQQ algorithm.
    """

    hqq_params: AdvancedHQQParameters = field(default_factory=AdvancedHQQParameters)
