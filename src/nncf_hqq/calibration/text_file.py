"""A user's calibration text: a UTF-8 text file, tokenized with the model's tokenizer into windows of token ids."""

from pathlib import Path

import nncf
import numpy as np

WINDOW_LENGTH = 128  # tokens per window, BOS included (as the self-written text's sequences)
MAX_WINDOWS = 32


def text_file_windows(
    path: Path, tokenizer_dir: Path, bos_token_id: int | None, length: int = WINDOW_LENGTH, windows: int = MAX_WINDOWS
) -> np.ndarray:
    """
    The text of the UTF-8 file `path`, tokenized with the tokenizer of `tokenizer_dir` (transformers'), cut into
    up to `windows` consecutive windows of `length` tokens, each opening with BOS when the model has one:
    int64 [windows, length].

    :raises nncf.ValidationError: The file cannot be read, is not UTF-8, or has fewer tokens than one window.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        msg = f"The calibration text {path} is not UTF-8 (byte {error.start}): convert it to UTF-8."
        raise nncf.ValidationError(msg) from error
    except OSError as error:
        msg = f"The calibration text {path} cannot be read: {error.strerror or error}."
        raise nncf.ValidationError(msg) from error
    from transformers import AutoTokenizer  # the export extras

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except (OSError, ValueError) as error:
        msg = f"The model directory {tokenizer_dir} has no tokenizer to read the calibration text with."
        raise nncf.ValidationError(msg) from error
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], np.int64)
    body = length - (bos_token_id is not None)
    count = min(windows, len(ids) // body)
    if count == 0:
        msg = (
            f"The calibration text {path} has {len(ids)} tokens, fewer than one window of {body}: give a longer text "
            f"(up to {windows * body} tokens are used)."
        )
        raise nncf.ValidationError(msg)
    cut = ids[: count * body].reshape(count, body)
    if bos_token_id is None:
        return cut
    return np.concatenate([np.full((count, 1), bos_token_id, np.int64), cut], axis=1)
