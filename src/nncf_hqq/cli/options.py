"""The command's compression options, checked, and mapped onto `nncf_hqq.compress_weights`' arguments."""

from dataclasses import dataclass
from pathlib import Path

import nncf
import openvino as ov
from nncf.quantization.advanced_parameters import GroupSizeFallbackMode

from nncf_hqq.calibration.dataset import stateful_llm_dataset
from nncf_hqq.calibration.parameters import SelfCalibrationParameters
from nncf_hqq.calibration.parameters import bos_token_id
from nncf_hqq.calibration.text_file import text_file_windows
from nncf_hqq.cli.lm_head import lm_head_node_names
from nncf_hqq.equalization.parameters import AdvancedEqualizationParameters
from nncf_hqq.parameters import AdvancedCompressionParameters
from nncf_hqq.parameters import AdvancedHQQParameters

GROUP_SIZES = (32, 64, 128, -1)
METHODS = ("hqq", "rtn")
CALIBRATIONS = ("none", "self")


@dataclass
class CompressionOptions:
    """
    :param method: "hqq" or "rtn" (NNCF's round-to-nearest, for comparison).
    :param bits: 4 or 8.
    :param group_size: Weights per scale along input channels: 32, 64, 128, or -1 (per output channel).
        None: 64 for 4 bits, -1 for 8 bits.
    :param sym: Symmetric quantization (no zero point).
    :param ratio: Share of the 4-bit layers' weights kept at 4 bits (the rest INT8), in (0, 1].
    :param awq: AWQ before compression: data-free, or on the calibration text with `calibration`.
    :param keep_lm_head_fp16: Leave the output projection (and an embedding tied to it) uncompressed.
    :param zero_point: HQQ zero point storage, "int", "float16" or "offset" (`HQQZeroPointStorage`).
    :param iterations: HQQ solver iterations; None: the solver's default for the zero point storage.
    :param patience: A group's HQQ iterations stop after this many that did not lower its error; 0: never; None:
        the solver's default.
    :param equalization: HQQ equalization, "none", "power", "sinkhorn" or "auto" (`EqualizationMethod`); None: the
        default.
    :param calibration: "none" (HQQ weighted by the activations of random token ids); "self": by those of text the
        model writes itself (`nncf_hqq.calibration`); or the path of a UTF-8 text file, tokenized with the model's
        tokenizer into windows (`nncf_hqq.calibration.text_file`).
    :param seed: Seed of every random generator involved (the pipeline is deterministic for a fixed seed).
    """

    method: str = "hqq"
    bits: int = 4
    group_size: int | None = None
    sym: bool = False
    ratio: float = 1.0
    awq: bool = False
    keep_lm_head_fp16: bool = False
    zero_point: str = "int"
    iterations: int | None = None
    patience: int | None = None
    equalization: str | None = None
    calibration: str = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.group_size is None:
            self.group_size = 64 if self.bits == 4 else -1

    def validate(self) -> None:
        """Raises nncf.ValidationError for an unsupported value or combination, saying what to change."""
        if self.method not in METHODS:
            raise nncf.ValidationError(f"--method must be one of {METHODS}, got {self.method}.")
        if self.bits not in (4, 8):
            raise nncf.ValidationError(f"--bits must be 4 or 8, got {self.bits}.")
        if self.group_size not in GROUP_SIZES:
            raise nncf.ValidationError(f"--group-size must be one of {GROUP_SIZES}, got {self.group_size}.")
        if self.bits == 8 and self.group_size != -1:
            raise nncf.ValidationError("8-bit compression is per output channel: use --group-size -1 with --bits 8.")
        if not 0.0 < self.ratio <= 1.0:
            raise nncf.ValidationError(f"--ratio must be in (0, 1], got {self.ratio}.")
        if self.bits == 8 and (self.ratio != 1.0 or self.awq or self.calibration != "none"):
            raise nncf.ValidationError("--ratio, --awq and --calibration apply to 4-bit compression only.")
        if self.calibration not in CALIBRATIONS and not Path(self.calibration).is_file():
            msg = f"--calibration must be one of {CALIBRATIONS} or a text file, got {self.calibration} (no such file)."
            raise nncf.ValidationError(msg)
        if self.sym and self.zero_point != "int":
            msg = f"--zero-point {self.zero_point} needs asymmetric quantization: drop --sym."
            raise nncf.ValidationError(msg)
        if self.method == "rtn" and (
            self.zero_point != "int"
            or self.iterations is not None
            or self.patience is not None
            or self.equalization is not None
            or self.calibration != "none"
        ):
            msg = (
                "--zero-point, --iterations, --patience, --equalization and --calibration are HQQ options: use "
                "them with --method hqq."
            )
            raise nncf.ValidationError(msg)
        self.hqq_params().validate()
        self.equalization_params().validate()

    def hqq_params(self) -> AdvancedHQQParameters:
        """HQQ's parameters: its defaults but for the options given."""
        given = {} if self.patience is None else {"patience": self.patience or None}  # 0: every iteration
        return AdvancedHQQParameters(num_iterations=self.iterations, zero_point_storage=self.zero_point, **given)

    def equalization_params(self) -> AdvancedEqualizationParameters:
        """The equalization's parameters: its defaults but for the method given."""
        if self.equalization is None:
            return AdvancedEqualizationParameters()
        return AdvancedEqualizationParameters(method=self.equalization)

    @property
    def mode(self) -> nncf.CompressWeightsMode:
        return nncf.CompressWeightsMode(f"int{self.bits}_{'sym' if self.sym else 'asym'}")

    def compress_weights_kwargs(
        self,
        model: ov.Model,
        model_dir: Path | None = None,
        cache_dir: Path | None = None,
        offload_dir: Path | None = None,
    ) -> dict:
        """
        Arguments of `nncf_hqq.compress_weights` for `model` (from the optimum-intel directory `model_dir`); the
        self-written calibration text is kept in `cache_dir` when given, the compressed weights' codes are kept in
        mapped files in `offload_dir` (the system's temporary directory when None).
        """
        kwargs = {"mode": self.mode, "hqq": self.method == "hqq"}
        # a weight whose input channels the group size does not divide (Cohere's rotary embedding MatMul, layers
        # of 576 channels at --group-size 128) takes the largest power-of-two group that does, or else INT8
        advanced = {"group_size_fallback_mode": GroupSizeFallbackMode.ADJUST}
        if self.bits == 4:
            kwargs.update(group_size=self.group_size, ratio=self.ratio, awq=self.awq or None)
        if self.keep_lm_head_fp16:
            kwargs["ignored_scope"] = nncf.IgnoredScope(names=lm_head_node_names(model))
        if self.method == "hqq":
            self_calibration = None
            if self.calibration not in CALIBRATIONS:  # a text file
                ids = text_file_windows(Path(self.calibration), model_dir, bos_token_id(model_dir))
                kwargs["dataset"] = stateful_llm_dataset(ids, model)
            elif self.calibration == "self":
                bos = None if model_dir is None else bos_token_id(model_dir)
                self_calibration = SelfCalibrationParameters(seed=self.seed, bos_token_id=bos, cache_dir=cache_dir)
            advanced.update(
                hqq_params=self.hqq_params(),
                equalization_params=self.equalization_params(),
                self_calibration=self_calibration,
                offload_dir=offload_dir,
            )
        parameters = AdvancedCompressionParameters(**advanced)
        if model_dir is not None:  # random token windows start as texts do
            parameters = parameters.with_bos_token_id(bos_token_id(model_dir))
        kwargs["advanced_parameters"] = parameters
        return kwargs
