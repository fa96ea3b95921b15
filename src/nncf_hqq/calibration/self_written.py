"""The model's own text as an `nncf.Dataset`, timed, and kept in a cache keyed by the model's weights."""

import dataclasses
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
from nncf.common.logging import nncf_logger

from nncf_hqq.calibration.dataset import stateful_llm_dataset
from nncf_hqq.calibration.generate import generate_sequences
from nncf_hqq.calibration.parameters import SelfCalibrationParameters


@dataclass(frozen=True)
class SelfWrittenData:
    """
    :param sequences: int64 token ids [num_sequences, length].
    :param dataset: The sequences as inputs of the model.
    :param seconds: Time it took the model to write them (in the run that wrote them, if taken from the cache).
    :param cached: Whether they were taken from the cache.
    """

    sequences: np.ndarray
    dataset: nncf.Dataset
    seconds: float
    cached: bool = False


def self_written_data(model: ov.Model, params: SelfCalibrationParameters) -> SelfWrittenData:
    """
    The model's own sequences as a dataset for `model`: those kept in `params.cache_dir` for this model and
    parameters, else written now (and kept there).
    """
    cache_file = None if params.cache_dir is None else _cache_file(model, params)
    if cache_file is not None and cache_file.is_file():
        with np.load(cache_file) as saved:
            sequences, seconds = saved["sequences"], float(saved["seconds"])
        nncf_logger.info(f"Self-calibration: the sequences kept in {cache_file}")
        return SelfWrittenData(sequences, stateful_llm_dataset(sequences, model), seconds, cached=True)
    start = time.perf_counter()
    sequences = generate_sequences(model, params)
    seconds = time.perf_counter() - start
    nncf_logger.info(
        f"Self-calibration: {sequences.shape[0]} sequences of {sequences.shape[1]} tokens written by the model in "
        f"{seconds:.1f} s"
    )
    if cache_file is not None:
        _save(cache_file, sequences, seconds)
    return SelfWrittenData(sequences, stateful_llm_dataset(sequences, model), seconds)


def _cache_file(model: ov.Model, params: SelfCalibrationParameters) -> Path:
    """The cache entry of the model (a digest of every constant's name, type, shape and bytes) and parameters."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(dataclasses.replace(params, cache_dir=None)).encode())
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            digest.update(f"{op.get_friendly_name()}:{op.get_element_type()}:{op.get_output_shape(0)}".encode())
            digest.update(memoryview(op.get_data()).cast("B"))
    return Path(params.cache_dir) / f"self-written-{digest.hexdigest()}.npz"


def _save(cache_file: Path, sequences: np.ndarray, seconds: float) -> None:
    """Writes the entry aside and renames it into place: a reader never sees half a file."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{cache_file.name}.", suffix=".npz", dir=cache_file.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, sequences=sequences, seconds=seconds)
        os.replace(partial, cache_file)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
