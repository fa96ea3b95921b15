"""The model's own text as an `nncf.Dataset`, timed."""

import time
from dataclasses import dataclass

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
    :param seconds: Time it took to write them (0 when given).
    """

    sequences: np.ndarray
    dataset: nncf.Dataset
    seconds: float


def self_written_data(
    model: ov.Model, params: SelfCalibrationParameters, sequences: np.ndarray | None = None
) -> SelfWrittenData:
    """The model's own sequences (written now unless given, e.g. from a cache) as a dataset for `model`."""
    seconds = 0.0
    if sequences is None:
        start = time.perf_counter()
        sequences = generate_sequences(model, params)
        seconds = time.perf_counter() - start
        nncf_logger.info(
            f"Self-calibration: {sequences.shape[0]} sequences of {sequences.shape[1]} tokens written by the model "
            f"in {seconds:.1f} s"
        )
    return SelfWrittenData(sequences, stateful_llm_dataset(sequences, model), seconds)
