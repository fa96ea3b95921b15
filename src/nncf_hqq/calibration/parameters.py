"""Parameters of self-written calibration text."""

import json
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import nncf

from nncf_hqq.validation import check_bool
from nncf_hqq.validation import check_integer
from nncf_hqq.validation import check_real


@dataclass
class SelfCalibrationParameters:
    """
    How the model writes its own calibration text (`nncf_hqq.calibration.generate_sequences`).

    Each sequence starts from the model's BOS token, when it has one, and (`spread_start`) one start token taken
    at an even stride across the vocabulary (as NNCF's `generate_text_data`), so that the sequences open on
    different subjects; the rest is sampled from the model's own next-token distribution.

    :param num_sequences: Number of sequences.
    :param length: Tokens per sequence, start tokens included.
    :param temperature: Softmax temperature of the sampling (1: the model's distribution).
    :param top_k: Sample among this many most probable tokens (None: the whole vocabulary); 50, as transformers'
        `generate` samples by default.
    :param top_p: Nucleus sampling: among those, sample among the most probable tokens whose probabilities add up
        to `top_p` (1: all of them). Cuts the long tail of a small model's distribution, which derails texts.
    :param batch_size: Sequences generated at once.
    :param seed: Seed of the sampling; the same model and parameters give the same sequences.
    :param bos_token_id: The model's beginning-of-sequence token (`bos_token_id` of its config.json), put first in
        every sequence; None: sequences start from their start token alone (an OpenVINO model does not record its
        BOS token; Gemma models need it).
    :param spread_start: Put a start token from across the vocabulary after BOS; False: the model chooses the first
        token too (from BOS; a model without a BOS token always gets a spread start token).
    :param cache_dir: Directory where written sequences are kept, keyed by the model's weights and these
        parameters, and reused; None: not kept.
    """

    num_sequences: int = 32
    length: int = 128
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 0.95
    batch_size: int = 32
    seed: int = 0
    bos_token_id: int | None = None
    spread_start: bool = True
    cache_dir: Path | None = None

    def validate(self) -> None:
        """Raises nncf.ValidationError naming the first invalid field and what to change."""
        field = "SelfCalibrationParameters.{}".format
        for name in ("num_sequences", "length", "batch_size"):
            check_integer(field(name), getattr(self, name), minimum=1)
        check_integer(field("top_k"), self.top_k, minimum=1, allow_none=True)
        if self.length < 3:
            raise nncf.ValidationError(f"SelfCalibrationParameters.length must be at least 3, got {self.length}.")
        check_bool(field("spread_start"), self.spread_start)
        if self.cache_dir is not None and not isinstance(self.cache_dir, str | os.PathLike):
            msg = f"SelfCalibrationParameters.cache_dir must be a directory path or None, got {self.cache_dir!r}."
            raise nncf.ValidationError(msg)
        bos = self.bos_token_id
        if bos is not None and (not isinstance(bos, numbers.Integral) or isinstance(bos, bool) or bos < 0):
            msg = f"SelfCalibrationParameters.bos_token_id must be a token id or None, got {bos!r}."
            raise nncf.ValidationError(msg)
        if not isinstance(self.seed, numbers.Integral) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**32:
            raise nncf.ValidationError(f"SelfCalibrationParameters.seed must be in [0, 2^32 - 1], got {self.seed!r}.")
        check_real(field("temperature"), self.temperature, "a positive number", lambda x: x > 0.0)
        check_real(field("top_p"), self.top_p, "a number in (0, 1]", lambda x: 0.0 < x <= 1.0)


def bos_token_id(model_dir: Path) -> int | None:
    """The `bos_token_id` of an optimum-intel model directory (generation_config.json, else config.json), or None."""
    for name in ("generation_config.json", "config.json"):
        try:
            value = json.loads((Path(model_dir) / name).read_text()).get("bos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None
