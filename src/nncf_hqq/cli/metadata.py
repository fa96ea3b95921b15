"""What the command records beside the compressed model (`quantization_metadata.json`)."""

import dataclasses
import importlib.metadata
import json
from pathlib import Path

import numpy as np
import openvino as ov

from nncf_hqq.cli.options import CompressionOptions

METADATA_FILE = "quantization_metadata.json"
PACKAGES = ("nncf-hqq", "nncf", "openvino", "optimum-intel", "transformers", "torch", "numpy")


def is_nncf_hqq_output(path: Path) -> bool:
    """Whether the directory holds a model that nncf-hqq wrote (its metadata file names nncf-hqq's version)."""
    try:
        metadata = json.loads((path / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and "nncf-hqq" in (metadata.get("versions") or {}) and "method" in metadata


def compression_metadata(
    source: str, options: CompressionOptions, seconds: float, layers: list, src_ir: Path, dst_ir: Path
) -> dict:
    """The metadata of a compression: its source, options, versions, time, sizes and per-layer report."""

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


def calibration_record(model: ov.Model) -> dict | None:
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
