"""`compress_weights`: NNCF's function with an `hqq` switch."""

import dataclasses
import inspect
from pathlib import Path
from typing import Any
from typing import TypeVar

import nncf
from nncf import BackupMode
from nncf import CompressionFormat
from nncf import CompressWeightsMode
from nncf import Dataset
from nncf import IgnoredScope
from nncf import SensitivityMetric
from nncf.common.logging import nncf_logger

from nncf_hqq._nncf import is_openvino_model
from nncf_hqq._nncf import nncf_compress_weights
from nncf_hqq._nncf import nncf_rt_info_restored_on_error
from nncf_hqq._nncf import record_rt_info
from nncf_hqq._nncf import session_active
from nncf_hqq.calibration.parameters import SelfCalibrationParameters
from nncf_hqq.calibration.self_written import self_written_data
from nncf_hqq.compression_session import CompressionSession
from nncf_hqq.compression_session import SessionSettings
from nncf_hqq.equalization.algorithm import Equalization
from nncf_hqq.equalization.algorithm import EqualizationPlan
from nncf_hqq.equalization.algorithm import EqualizationRule
from nncf_hqq.equalization.parameters import ActivationEstimate
from nncf_hqq.equalization.parameters import AdvancedEqualizationParameters
from nncf_hqq.equalization.parameters import EqualizationMethod
from nncf_hqq.hqq import HQQ
from nncf_hqq.hqq import SUPPORTED_MODES
from nncf_hqq.parameters import AdvancedCompressionParameters
from nncf_hqq.parameters import AdvancedHQQParameters
from nncf_hqq.parameters import HQQZeroPointStorage
from nncf_hqq.validation import check_bool

TModel = TypeVar("TModel")
SYMMETRIC_MODES = (CompressWeightsMode.INT4_SYM, CompressWeightsMode.INT8_SYM)


def compress_weights(
    model: TModel,
    *,
    mode: CompressWeightsMode = CompressWeightsMode.INT8_ASYM,
    ratio: float | None = None,
    group_size: int | None = None,
    ignored_scope: IgnoredScope | None = None,
    all_layers: bool | None = None,
    dataset: Dataset | None = None,
    sensitivity_metric: SensitivityMetric | None = None,
    subset_size: int = 128,
    awq: bool | None = None,
    scale_estimation: bool | None = None,
    gptq: bool | None = None,
    lora_correction: bool | None = None,
    backup_mode: BackupMode | None = None,
    compression_format: CompressionFormat = CompressionFormat.DQ,
    advanced_parameters: nncf.AdvancedCompressionParameters | None = None,
    hqq: bool | None = None,
) -> TModel:
    """
    `nncf.compress_weights` with HQQ: NNCF's parameters (written out here with NNCF 3.4's defaults, which a test
    pins to `nncf.compress_weights`' own) forwarded as given, plus `hqq`.

    With `hqq` true, the scales and zero points of the integer-compressed weights (INT4/INT8, symmetric or
    asymmetric, primary and backup precision) are computed by HQQ's solver instead of round-to-nearest; the
    model is stored in NNCF's standard compressed format. AWQ runs before HQQ; with scale estimation, HQQ keeps
    the estimated parameters of the layers scale estimation handled (`refine_scale_estimation` to refine them).
    Solver parameters are taken from `advanced_parameters.hqq_params` when given
    (`nncf_hqq.AdvancedCompressionParameters`). Each weight's error is weighted by the second moments of the
    activations it multiplies: measured on `dataset` when given, else on random token ids (a language model of
    token ids; `AdvancedHQQParameters.activation_moments`). With `advanced_parameters.self_calibration` and no
    `dataset`, the model first writes its own calibration text (`nncf_hqq.calibration`), which becomes the dataset
    (of AWQ and scale estimation too, when `awq` or `scale_estimation` is True). With `hqq` false or None this is
    exactly `nncf.compress_weights`.

    :param hqq: Whether to compute quantization parameters with HQQ. Only OpenVINO models are supported.
    :return: The model with compressed weights (the input `ov.Model` object, transformed in place, as in NNCF).
    """
    arguments = {name: value for name, value in locals().items() if name not in ("model", "hqq")}
    return compress_weights_and_plan(model, hqq=hqq, **arguments)[0]


def compress_weights_and_plan(
    model: TModel, *, hqq: bool | None = None, **kwargs: Any
) -> tuple[TModel, EqualizationPlan | None]:
    """`compress_weights`, and the equalization it applied (None if none): its factors per constant."""
    if not hqq:
        return nncf_compress_weights(model, **kwargs), None
    arguments = _with_nncf_defaults(model, kwargs)
    session = CompressionSession(_resolve_settings(model, arguments))
    with nncf_rt_info_restored_on_error(model), session_active(session):
        try:
            model = nncf_compress_weights(model, **arguments)
        except BaseException:
            session.undo()
            raise
    record_rt_info(model, {**session.settings.rt_info, **session.summary()})
    return model, session.equalization_plan


compress_weights_and_plan.__signature__ = inspect.signature(compress_weights).replace(
    return_annotation=tuple[TModel, EqualizationPlan | None]
)


def _with_nncf_defaults(model: TModel, kwargs: dict[str, Any]) -> dict[str, Any]:
    """NNCF's keyword arguments as given, completed with `nncf.compress_weights`' defaults (TypeError if unknown)."""
    bound = inspect.signature(nncf_compress_weights).bind(model, **kwargs)
    bound.apply_defaults()
    return {name: value for name, value in bound.arguments.items() if name != "model"}


def _resolve_settings(model: TModel, arguments: dict[str, Any]) -> SessionSettings:
    """
    Checks the call and decides, once, what nncf-hqq does inside NNCF; with self-calibration, writes the model's
    text and sets `arguments`' dataset, awq and scale_estimation.
    """
    advanced_parameters, mode = arguments["advanced_parameters"], arguments["mode"]
    hqq_params = getattr(advanced_parameters, "hqq_params", None) or AdvancedHQQParameters()
    equalization_params = getattr(advanced_parameters, "equalization_params", None) or AdvancedEqualizationParameters()
    _check_hqq_arguments(model, mode, arguments["gptq"], hqq_params, equalization_params)
    if mode == CompressWeightsMode.INT4_SYM and equalization_params.method == EqualizationMethod.NONE:
        nncf_logger.warning(
            "HQQ without equalization in INT4_SYM was measured worse than NNCF's RTN on some models (KL "
            "divergence from the float model, embedding error); equalization is recommended with INT4_SYM."
        )
    rt_info = {"enabled": True, **{k: _rt_value(v) for k, v in dataclasses.asdict(hqq_params).items()}}
    rt_info.update(equalization=equalization_params.method.value, equalization_alpha=equalization_params.alpha)
    if equalization_params.method == EqualizationMethod.AUTO:
        rt_info.update(equalization_activations=equalization_params.activations.value)
        if equalization_params.activations == ActivationEstimate.WEIGHTS:
            rt_info.update(equalization_prior_exponent=equalization_params.prior_exponent)
    self_calibration = getattr(advanced_parameters, "self_calibration", None)
    if self_calibration is not None:
        _check_self_calibration(self_calibration, arguments["dataset"], mode)
        data = self_written_data(model, self_calibration)
        arguments.update(dataset=data.dataset)  # it weighs HQQ's error; AWQ and scale estimation run if asked
        rt_info.update(calibration="self", calibration_seconds=round(data.seconds, 3), calibration_cached=data.cached)
        recorded = {k: v for k, v in dataclasses.asdict(self_calibration).items() if k != "cache_dir"}
        rt_info.update({f"self_calibration_{k}": v for k, v in recorded.items() if v is not None})
    # AWQ edits the model before NNCF's transform, and LoRA correction inside it: check every weight first
    eager = bool(arguments["awq"]) or bool(arguments["lora_correction"])
    # algorithms that read weights or activations before NNCF's transform must see the equalized model; the
    # mixed-precision choice ranks the weights as given, and equalization is planned for the precisions it chose
    if arguments["dataset"] is not None:
        equalize_at = "statistics"
    elif eager or bool(arguments["scale_estimation"]):
        equalize_at = "precision"
    else:
        equalize_at = "transform"
    weighted = hqq_params.activation_moments
    moments_dataset = arguments["dataset"] if weighted else None
    random_moments = (hqq_params.random_token_windows, hqq_params.bos_token_id) if weighted else None
    rule = EqualizationRule.from_parameters(equalization_params)
    # NNCF's own parameters class (or none) gets nncf-hqq's default: the codes in mapped files
    offload_codes = getattr(advanced_parameters, "offload_codes", AdvancedCompressionParameters.offload_codes)
    offload_dir = getattr(advanced_parameters, "offload_dir", None)
    _check_offload(offload_codes, offload_dir)
    return SessionSettings(
        hqq=HQQ(hqq_params),
        rt_info=rt_info,
        zero_point_offsets=hqq_params.zero_point_storage == HQQZeroPointStorage.OFFSET,
        eager=eager,
        equalization=None if rule is None else Equalization(rule),
        equalize_at=equalize_at,
        offload_codes=offload_codes,
        offload_dir=None if offload_dir is None else str(offload_dir),
        moments_dataset=moments_dataset,
        moments_subset_size=arguments["subset_size"],
        random_moments=random_moments,
    )


def _check_offload(offload_codes, offload_dir) -> None:
    check_bool("AdvancedCompressionParameters.offload_codes", offload_codes)
    if offload_dir is not None and not (isinstance(offload_dir, str | Path) and Path(offload_dir).is_dir()):
        msg = f"AdvancedCompressionParameters.offload_dir must be an existing directory or None, got {offload_dir!r}."
        raise nncf.ValidationError(msg)


def _check_hqq_arguments(
    model,
    mode: CompressWeightsMode,
    gptq: bool | None,
    params: AdvancedHQQParameters,
    equalization_params: AdvancedEqualizationParameters,
) -> None:
    if not is_openvino_model(model):
        msg = f"HQQ supports OpenVINO models (openvino.Model) only, got {type(model).__name__}."
        raise nncf.UnsupportedBackendError(msg)
    if mode not in SUPPORTED_MODES:
        msg = f"HQQ supports the modes {[m.value for m in SUPPORTED_MODES]}, got {mode.value}. Change mode or hqq."
        raise nncf.ValidationError(msg)
    if gptq:
        msg = "HQQ and GPTQ both compute the quantization parameters: set one of hqq and gptq, not both."
        raise nncf.ValidationError(msg)
    for given, expected in ((params, AdvancedHQQParameters), (equalization_params, AdvancedEqualizationParameters)):
        if not isinstance(given, expected):
            msg = f"Pass HQQ's parameters as {expected.__name__} (in AdvancedCompressionParameters), got {given!r}."
            raise nncf.ValidationError(msg)
    params.validate()
    equalization_params.validate()
    if params.zero_point_storage != HQQZeroPointStorage.INTEGER and mode in SYMMETRIC_MODES:
        msg = (
            f"AdvancedHQQParameters.zero_point_storage {params.zero_point_storage.value} needs an asymmetric mode "
            f"(a symmetric one has no zero point), got {mode.value}: use INT4_ASYM/INT8_ASYM or the int storage."
        )
        raise nncf.ValidationError(msg)


def _check_self_calibration(params: SelfCalibrationParameters, dataset: Dataset | None, mode) -> None:
    if not isinstance(params, SelfCalibrationParameters):
        msg = f"self_calibration must be SelfCalibrationParameters or None, got {type(params).__name__}."
        raise nncf.ValidationError(msg)
    params.validate()
    if dataset is not None:
        msg = "Give either a dataset or self_calibration (the model's own text), not both."
        raise nncf.ValidationError(msg)
    if mode not in (CompressWeightsMode.INT4_ASYM, CompressWeightsMode.INT4_SYM):
        msg = f"Self-calibration is supported in 4-bit modes only (INT4_ASYM, INT4_SYM); got {mode.value}."
        raise nncf.ValidationError(msg)


def _rt_value(value):
    return value.value if hasattr(value, "value") else value
