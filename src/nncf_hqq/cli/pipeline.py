"""Compressing an LLM from a source (IR, Hugging Face directory, GGUF) into an optimum-intel model directory."""

import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from nncf_hqq.cli.console import step
from nncf_hqq.cli.destination import check_cache_outside_source
from nncf_hqq.cli.destination import check_destination
from nncf_hqq.cli.destination import move_into_place
from nncf_hqq.cli.errors import save_model
from nncf_hqq.cli.export import IR_FILE
from nncf_hqq.cli.export import check_causal_lm_ir
from nncf_hqq.cli.export import full_precision_ir
from nncf_hqq.cli.export import read_ir
from nncf_hqq.cli.export import resolve_source
from nncf_hqq.cli.metadata import METADATA_FILE
from nncf_hqq.cli.metadata import calibration_record
from nncf_hqq.cli.metadata import compression_metadata
from nncf_hqq.cli.options import CALIBRATIONS
from nncf_hqq.cli.options import CompressionOptions
from nncf_hqq.cli.report import layer_reports
from nncf_hqq.cli.workdirs import chmod_like_mkdir
from nncf_hqq.cli.workdirs import locked
from nncf_hqq.cli.workdirs import make_temporary_dir
from nncf_hqq.cli.workdirs import remove_stale_temporaries
from nncf_hqq.compress import compress_weights_and_plan

__all__ = ["CALIBRATIONS", "METADATA_FILE", "CompressionOptions", "compress_llm", "copy_companion_files"]
SELF_WRITTEN = "self-written"  # the self-written calibration text's directory in the cache


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
        check_cache_outside_source(Path(cache_dir), source)
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
            calibration = calibration_record(model)
            del model
            metadata = compression_metadata(description, options, seconds, layers, ir_file, partial / IR_FILE)
            metadata["calibration"] = calibration
            (partial / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
            move_into_place(partial, dst, overwrite)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return metadata


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
