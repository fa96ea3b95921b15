"""
What an LLM is judged on: which reference model (the dequantized GGUF as exported, or its de-latticed copy), which
texts (the model's own domain and prose), and which windows of them.

The judge of a compression is its fidelity to the reference: KL divergence from it on every text, and NLL on the
model's own domain (code for the code models). On text outside a model's domain the uncompressed model can be
over-confident, and there a compression's noise lowers NLL as a temperature would (`benchmarks.llm_eval`): NLL is
reported there, not judged.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.corpus import held_out_ids
from benchmarks.corpus import spread_windows
from benchmarks.corpus import text_by_name
from benchmarks.corpus import token_ids
from benchmarks.delattice import delatticed_ir
from benchmarks.models import LLMS
from benchmarks.models import llm_source
from nncf_hqq.calibration.parameters import bos_token_id
from nncf_hqq.cli.export import full_precision_ir

REFERENCES = ("original", "delatticed")
OWN = "own"  # in a list of texts: the model's own domain
WINDOW_LAYOUTS = ("spread", "consecutive")


def domain(model_name: str) -> str:
    """The registry model's own text ("code" or "prose"); "prose" for a model given by path."""
    return LLMS[model_name].domain if model_name in LLMS else "prose"


def judged_texts(model_name: str, texts: list[str]) -> list[str]:
    """`texts` with "own" replaced by the model's domain, without repeats, the model's domain first."""
    resolved = [domain(model_name) if t == OWN else t for t in texts]
    own = domain(model_name)
    ordered = ([own] if own in resolved else []) + [t for t in resolved if t != own]
    return list(dict.fromkeys(ordered))


def reference_ir(model_name: str, reference: str, cache_dir: Path, seed: int = 0) -> tuple[Path, str]:
    """
    (IR file, notes) of the model as judged: its full-precision export, or the de-latticed copy of it
    (`benchmarks.delattice`).
    """
    source, notes = llm_source(model_name, cache_dir)
    ir_file = full_precision_ir(source, cache_dir)
    if reference == "original":
        return ir_file, notes
    if reference == "delatticed":
        return delatticed_ir(ir_file, cache_dir, seed), f"{notes} De-latticed (seed {seed})."
    raise ValueError(f"Unknown reference {reference}; known: {', '.join(REFERENCES)}")


@dataclass(frozen=True)
class TextWindows:
    """
    :param name: The text ("code" or "prose").
    :param label: What it is, for reports.
    :param windows: The scored windows, [n, window] token ids.
    :param held_out: Tokens disjoint from the windows, for calibration.
    """

    name: str
    label: str
    windows: np.ndarray
    held_out: np.ndarray


def text_windows(
    tokenizer, ir_dir: Path, text: str, window: int, max_tokens: int, cache_dir: Path, layout: str = "spread"
) -> TextWindows:
    """
    The windows of `text` for the model whose tokenizer is `tokenizer`: spread evenly over the text (the last
    tenth held out for calibration), or, `layout` "consecutive", the first `max_tokens` (the rest held out). Each
    window starts with the model's BOS token when it has one (`bos_token_id` of its config), then `window - 1`
    tokens of the text: every window is read as a document from its start (Gemma's output is close to noise
    without it).
    """
    body, label = text_by_name(text)
    ids = token_ids(tokenizer, body, cache_dir / f"tokens-{text}-{_tokenizer_key(ir_dir)}-{len(body)}.npy")
    if layout == "spread":
        windows, held_out = spread_windows(ids, window, max_tokens), held_out_ids(ids)
    else:
        n = min(max_tokens, len(ids)) // window
        windows, held_out = ids[: n * window].reshape(n, window), ids[n * window :]
    return TextWindows(text, label, with_bos(windows, bos_token_id(ir_dir)), held_out)


def with_bos(windows: np.ndarray, bos: int | None) -> np.ndarray:
    """`windows` with `bos` in front of each in place of its last token (as they are when `bos` is None)."""
    if bos is None:
        return windows
    return np.concatenate([np.full((len(windows), 1), bos, windows.dtype), windows[:, :-1]], axis=1)


def _tokenizer_key(ir_dir: Path) -> str:
    """The model directory's name without a de-latticed suffix: both references share one tokenizer."""
    return ir_dir.name.split("-delatticed-")[0]
