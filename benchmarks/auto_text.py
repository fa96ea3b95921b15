"""
optimum-intel's `dataset="auto"` calibration text, as it makes it for NNCF's AWQ and scale estimation: NNCF's
`generate_text_data` run on the uncompressed model through optimum-intel (`num_samples` texts, each 16 greedy tokens
from a start token across the vocabulary followed by 32 sampled ones, the sampled part kept), tokenized again
with the model's tokenizer (special tokens added as optimum-intel's calibration does). The texts and the seconds
it took to write them are kept in the cache, keyed by the model directory.
"""

import json
import time
from pathlib import Path

import nncf
import numpy as np
import openvino as ov

from nncf_hqq.calibration.dataset import model_input_names
from nncf_hqq.calibration.dataset import stateful_llm_inputs


def auto_texts(model_dir: Path, cache_dir: Path, num_samples: int = 128) -> tuple[list[str], float]:
    """The texts optimum-intel's dataset="auto" writes for the model, and the seconds that took (when written)."""
    cache_file = cache_dir / f"auto-texts-{model_dir.name}-{num_samples}.json"
    if cache_file.is_file():
        saved = json.loads(cache_file.read_text())
        return saved["texts"], saved["seconds"]
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    model = OVModelForCausalLM.from_pretrained(model_dir, compile=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    start = time.perf_counter()
    texts = nncf.data.generate_text_data(model, tokenizer, dataset_size=num_samples)
    seconds = time.perf_counter() - start
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps({"texts": texts, "seconds": seconds}))
    return texts, seconds


def auto_dataset(texts: list[str], model_dir: Path, model: ov.Model) -> nncf.Dataset:
    """The texts as inputs of the stateful LLM `model`, one sample per text from an empty KV cache."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    names = model_input_names(model)
    samples = [np.asarray(tokenizer(text)["input_ids"], np.int64)[None] for text in texts]
    return nncf.Dataset([stateful_llm_inputs(ids, 0, names) for ids in samples if ids.shape[1] > 0])
