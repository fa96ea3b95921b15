"""Compressing an LLM from a source (IR, Hugging Face directory, GGUF) into an optimum-intel model directory."""

import dataclasses
import errno
import importlib.metadata
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
from nncf.quantization.advanced_parameters import GroupSizeFallbackMode

from nncf_hqq.calibration.parameters import SelfCalibrationParameters
from nncf_hqq.calibration.parameters import bos_token_id
from nncf_hqq.cli.console import step
from nncf_hqq.cli.errors import openvino_reason
from nncf_hqq.cli.export import IR_FILE
from nncf_hqq.cli.export import ModelSource
from nncf_hqq.cli.export import check_causal_lm_ir
from nncf_hqq.cli.export import full_precision_ir
from nncf_hqq.cli.export import read_ir
from nncf_hqq.cli.export import resolve_source
from nncf_hqq.cli.report import layer_reports
from nncf_hqq.cli.workdirs import OWNER_FILE
from nncf_hqq.cli.workdirs import chmod_like_mkdir
from nncf_hqq.cli.workdirs import locked
from nncf_hqq.cli.workdirs import make_temporary_dir
from nncf_hqq.cli.workdirs import remove_stale_temporaries
from nncf_hqq.compress import compress_weights_and_plan
from nncf_hqq.equalization.parameters import AdvancedEqualizationParameters
from nncf_hqq.parameters import AdvancedCompressionParameters
from nncf_hqq.parameters import AdvancedHQQParameters

METADATA_FILE = "quantization_metadata.json"
SELF_WRITTEN = "self-written"  # the self-written calibration text's directory in the cache
GROUP_SIZES = (32, 64, 128, -1)
METHODS = ("hqq", "rtn")
CALIBRATIONS = ("none", "self")
PACKAGES = ("nncf-hqq", "nncf", "openvino", "optimum-intel", "transformers", "torch", "numpy")


@dataclass
class CompressionOptions:
    """
    :param method: "hqq" or "rtn" (NNCF's round-to-nearest, for comparison).
    :param bits: 4 or 8.
    :param group_size: Weights per scale along input channels: 32, 64, 128, or -1 (per output channel).
        None: 64 for 4 bits, -1 for 8 bits.
    :param sym: Symmetric quantization (no zero point).
    :param ratio: Share of the 4-bit layers' weights kept at 4 bits (the rest INT8), in (0, 1].
    :param awq: Data-free AWQ before compression.
    :param keep_lm_head_fp16: Leave the output projection (and an embedding tied to it) uncompressed.
    :param zero_point: HQQ zero point storage, "int", "float16" or "offset" (`HQQZeroPointStorage`).
    :param iterations: HQQ solver iterations; None: the solver's default for the zero point storage.
    :param patience: A group's HQQ iterations stop after this many that did not lower its error; 0: never; None:
        the solver's default.
    :param equalization: HQQ equalization, "none", "power" or "sinkhorn" (`EqualizationMethod`); None: the default.
    :param calibration: "none" (data-free) or "self": the model writes its own calibration text, on which AWQ and
        scale estimation run before HQQ (`nncf_hqq.calibration`).
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
        if self.calibration not in CALIBRATIONS:
            raise nncf.ValidationError(f"--calibration must be one of {CALIBRATIONS}, got {self.calibration}.")
        if self.awq and self.calibration == "self":
            msg = "--calibration self runs AWQ on the model's own text: drop --awq (data-free AWQ)."
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
            if self.calibration == "self":
                bos = None if model_dir is None else bos_token_id(model_dir)
                self_calibration = SelfCalibrationParameters(seed=self.seed, bos_token_id=bos, cache_dir=cache_dir)
            advanced.update(
                hqq_params=self.hqq_params(),
                equalization_params=self.equalization_params(),
                self_calibration=self_calibration,
                offload_dir=offload_dir,
            )
        kwargs["advanced_parameters"] = AdvancedCompressionParameters(**advanced)
        return kwargs


def lm_head_node_names(model: ov.Model) -> list[str]:
    """The MatMul producing the `logits` output and, for tied embeddings, the Gather sharing its weight."""
    logits = next((out for out in model.outputs if "logits" in out.get_names()), model.outputs[0])
    node = logits.get_node()
    while node.get_type_name() != "MatMul":
        if node.get_input_size() == 0:
            raise nncf.ValidationError("No MatMul produces the logits: --keep-lm-head-fp16 cannot find the lm_head.")
        node = node.input_value(0).get_node()
    names = [node.get_friendly_name()]
    weight = node.input_value(1).get_node()
    while weight.get_type_name() == "Convert":
        weight = weight.input_value(0).get_node()
    users = [inp.get_node() for inp in weight.output(0).get_target_inputs()]
    while users:
        user = users.pop()
        if user.get_type_name() == "Convert":
            users += [inp.get_node() for inp in user.output(0).get_target_inputs()]
        elif user.get_type_name() == "Gather":
            names.append(user.get_friendly_name())
    return names


def compress_llm(
    src: str | os.PathLike | None,
    dst: str | os.PathLike,
    options: CompressionOptions,
    overwrite: bool = False,
    cache_dir: Path | None = None,
) -> dict:
    """
    Compresses the LLM at `src` (None: the bundled model) into the optimum-intel model directory `dst`.

    `src` is only read. `dst` is written into a temporary sibling directory and moved into place when complete,
    under a lock that refuses a concurrent run into the same `dst`. An existing non-empty `dst` is refused unless
    `overwrite`, and even then unless it is an earlier nncf-hqq output; a `dst` that overlaps `src` or
    `cache_dir` is refused. Full-precision exports of Hugging Face and GGUF sources are cached in `cache_dir`
    (a temporary directory when None).

    :return: The metadata written to `dst/quantization_metadata.json`.
    """
    options.validate()
    dst = Path(dst).absolute()
    source = resolve_source(src)
    protected = {"--src": source.path.parent if source.kind == "openvino" else source.path}
    if cache_dir is not None:
        protected["--cache-dir"] = Path(cache_dir)
        _check_cache_outside_source(Path(cache_dir), source)
    check_destination(dst, overwrite, protected)
    _seed_everything(options.seed)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with locked(dst.parent / f".{dst.name}.nncf-hqq.lock", f"--dst {dst}"):
        for kind in ("partial", "previous"):
            remove_stale_temporaries(dst.parent, f".{dst.name}.{kind}-")
        check_destination(dst, overwrite, protected)  # again, now that no other run can write it
        if cache_dir is not None:
            ir_file = full_precision_ir(source, cache_dir)
            return _compress_ir(ir_file, dst, options, source.description, overwrite, Path(cache_dir) / SELF_WRITTEN)
        with tempfile.TemporaryDirectory(prefix="nncf-hqq-export-") as temporary_cache:
            ir_file = full_precision_ir(source, Path(temporary_cache))
            return _compress_ir(ir_file, dst, options, source.description, overwrite)


def _compress_ir(
    ir_file: Path,
    dst: Path,
    options: CompressionOptions,
    description: str,
    overwrite: bool,
    calibration_cache: Path | None = None,
) -> dict:
    """
    Compresses the full-precision IR into `dst` (written aside, moved into place when complete); self-written
    calibration text is kept in `calibration_cache`.
    """
    model = read_ir(ir_file, description)
    check_causal_lm_ir(model, description)
    partial = make_temporary_dir(dst.parent, f".{dst.name}.partial-")
    chmod_like_mkdir(partial)
    try:
        start = time.perf_counter()
        # the codes' files beside the output (on its file system, not a RAM /tmp; removed with `partial` if killed)
        kwargs = options.compress_weights_kwargs(model, ir_file.parent, calibration_cache, offload_dir=partial)
        model, equalization = compress_weights_and_plan(model, **kwargs)
        seconds = time.perf_counter() - start
        with step("Writing the model and measuring its weight error"):
            save_model(model, partial / IR_FILE)
            copy_companion_files(ir_file.parent, partial)
            layers = layer_reports(model, read_ir(ir_file, description), equalization)
            calibration = _calibration_record(model)
            del model
            metadata = _metadata(description, options, seconds, layers, ir_file, partial / IR_FILE)
            metadata["calibration"] = calibration
            (partial / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
            _move_into_place(partial, dst, overwrite)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return metadata


def save_model(model: ov.Model, xml_file: Path) -> None:
    """`ov.save_model`, whose write failures (OpenVINO's "iostream error") become an OSError naming the file."""
    try:
        ov.save_model(model, xml_file)
    except RuntimeError as error:
        free = shutil.disk_usage(xml_file.parent).free
        code = errno.ENOSPC if free < 64 * 2**20 else errno.EIO
        reason = "the disk is full" if code == errno.ENOSPC else openvino_reason(error)
        message = f"could not write the model ({reason}): check free space and quotas"
        raise OSError(code, message, str(xml_file)) from None


def is_nncf_hqq_output(path: Path) -> bool:
    """Whether the directory holds a model that nncf-hqq wrote (its metadata file names nncf-hqq's version)."""
    try:
        metadata = json.loads((path / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and "nncf-hqq" in (metadata.get("versions") or {}) and "method" in metadata


def _check_cache_outside_source(cache_dir: Path, source: ModelSource) -> None:
    """An export cache inside a Hugging Face model directory would write into --src: refused."""
    if source.kind == "openvino" or not source.path.is_dir():
        return
    cache, src = cache_dir.absolute().resolve(), source.path.absolute().resolve()
    if cache == src or src in cache.parents:
        raise nncf.ValidationError(f"--cache-dir {cache_dir} is inside --src {source.path}: choose a cache outside it.")


def check_destination(dst: Path, overwrite: bool, protected: dict[str, Path]) -> None:
    """Raises nncf.ValidationError if writing `dst` could lose anything the user did not ask to replace."""
    if dst.exists() and not dst.is_dir():
        raise nncf.ValidationError(f"--dst {dst} is a file: give a directory.")
    resolved = dst.resolve()
    for option, path in protected.items():
        other = Path(path).absolute().resolve()
        if resolved == other or resolved in other.parents or other in resolved.parents:
            raise nncf.ValidationError(f"--dst {dst} overlaps {option} {path}: choose another output directory.")
    if not dst.is_dir() or not any(dst.iterdir()):
        return
    if not overwrite:
        raise nncf.ValidationError(f"--dst {dst} exists and is not empty: choose another directory or --overwrite.")
    if not is_nncf_hqq_output(dst):
        msg = (
            f"--dst {dst} is not empty and is not an nncf-hqq output ({METADATA_FILE} missing): --overwrite replaces "
            "only those; choose another directory."
        )
        raise nncf.ValidationError(msg)


def _move_into_place(partial: Path, dst: Path, overwrite: bool) -> None:
    """
    Moves `partial` to `dst`. A `dst` that appeared meanwhile is not replaced unless `overwrite` (it has been
    checked to be an earlier output); a replaced `dst` is removed only once the new one is in place.
    """
    (partial / OWNER_FILE).unlink()
    if not dst.exists() or (dst.is_dir() and not any(dst.iterdir())):
        try:
            os.rename(partial, dst)  # fails on a non-empty directory: never replaces one
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise nncf.ValidationError(f"--dst {dst} appeared while compressing: nothing was replaced.") from None
            raise
        return
    if not overwrite or not is_nncf_hqq_output(dst):
        raise nncf.ValidationError(f"--dst {dst} appeared while compressing: nothing was replaced.")
    previous = make_temporary_dir(dst.parent, f".{dst.name}.previous-")
    os.replace(dst, previous / "output")
    try:
        os.rename(partial, dst)
    except BaseException:
        os.replace(previous / "output", dst)
        raise
    finally:
        if dst.exists():
            shutil.rmtree(previous, ignore_errors=True)


def copy_companion_files(ir_dir: Path, out_dir: Path) -> None:
    """Tokenizer, configs and OpenVINO tokenizer models: everything of the IR directory but the model itself."""
    for item in ir_dir.iterdir():
        if item.name in (IR_FILE, "openvino_model.bin", METADATA_FILE):
            continue
        if item.is_dir():
            shutil.copytree(item, out_dir / item.name)
        else:
            shutil.copy2(item, out_dir / item.name)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)


def _metadata(source: str, options: CompressionOptions, seconds: float, layers: list, src_ir: Path, dst_ir: Path):
    def size(ir: Path) -> int:
        return ir.stat().st_size + ir.with_suffix(".bin").stat().st_size

    precisions: dict[str, int] = {}
    for layer in layers:
        precisions[layer["precision"]] = precisions.get(layer["precision"], 0) + 1
    return {
        "source": source,
        "method": options.method,
        "parameters": _parameters(options),
        "versions": {name: _version(name) for name in PACKAGES},
        "compression_seconds": round(seconds, 3),
        "model_size_bytes": {"before": size(src_ir), "after": size(dst_ir)},
        "layers_by_precision": precisions,
        "mean_relative_error": float(np.mean([layer["relative_error"] for layer in layers])) if layers else None,
        "layers": layers,
    }


def _parameters(options: CompressionOptions) -> dict:
    """The options as given, with the mode and, for HQQ, the equalization it applied (its default if not given)."""
    parameters = {**dataclasses.asdict(options), "mode": options.mode.value}
    if options.method == "hqq":
        parameters["equalization"] = options.equalization_params().method.value
    return parameters


def _calibration_record(model: ov.Model) -> dict | None:
    """What the compressed model's rt_info says of its self-written calibration text, None without one."""
    path = ["nncf", "weight_compression", "hqq"]
    if not model.has_rt_info([*path, "calibration"]):
        return None
    value = lambda name: model.get_rt_info([*path, name]).astype(str)
    return {
        "source": value("calibration"),
        "seconds": float(value("calibration_seconds")),  # writing it, in the run that wrote it
        "cached": value("calibration_cached") == "True",
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
