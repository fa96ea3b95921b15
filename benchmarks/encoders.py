"""
Sentence encoders in OpenVINO: a sentence-transformers model (transformer, pooling, dense layers, normalisation)
exported whole to one IR with float32 weights, and embedding texts with it.

The export goes through `torch.export` and `openvino.convert_model` (optimum-intel 2.2 refuses the transformers
version the LLM export needs for Gemma 3 models; TorchScript tracing fails on transformers' attention masks). Each
export is checked against sentence-transformers itself (cosine similarity above 0.9999 on sample passages) before
it is cached.
"""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import openvino as ov

from benchmarks.packaged import COMPLETE_MARKER

IR_FILE = "openvino_model.xml"
MAX_TOKENS = 256
BATCH = 16
# f32 arithmetic and no dynamic int8 activations: the measured differences are those of the weights
F32 = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
MIN_EXPORT_COSINE = 0.9999


def load_sentence_transformer(model_dir: Path):
    from sentence_transformers import SentenceTransformer

    # eager attention: the same function in torch and in the exported graph
    return SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"attn_implementation": "eager"})


class Tokenizer:
    """The model's tokenizer, truncating to the model's maximum length (at most MAX_TOKENS)."""

    def __init__(self, model_dir: Path, max_tokens: int = MAX_TOKENS):
        import json

        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        config = model_dir / "sentence_bert_config.json"
        model_max = json.loads(config.read_text()).get("max_seq_length", max_tokens) if config.exists() else max_tokens
        self.max_tokens = min(max_tokens, model_max)
        self.pad_id = self._tokenizer.pad_token_id or 0

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        encoded = self._tokenizer(texts, truncation=True, max_length=self.max_tokens)["input_ids"]
        return [np.asarray(ids, dtype=np.int64) for ids in encoded]


def _export(model_dir: Path, out_dir: Path, sample_texts: list[str]) -> None:
    import torch

    st = load_sentence_transformer(model_dir).eval()

    class Embedder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.st = st

        def forward(self, input_ids, attention_mask):
            return self.st({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]

    tokenizer = Tokenizer(model_dir)
    batch = padded_batch(tokenizer(sample_texts), tokenizer.pad_id)
    example = tuple(torch.from_numpy(x) for x in batch)
    dims = {0: torch.export.Dim("batch", min=1, max=4096), 1: torch.export.Dim("tokens", min=2, max=MAX_TOKENS)}
    embedder = Embedder().eval()
    with torch.no_grad():
        program = torch.export.export(embedder, example, dynamic_shapes={"input_ids": dims, "attention_mask": dims})
        expected = embedder(*example).numpy()  # sentence-transformers on the same (truncated) tokens
    model = ov.convert_model(program)
    model.outputs[0].get_tensor().set_names({"sentence_embedding"})
    ov.save_model(model, out_dir / IR_FILE, compress_to_fp16=False)
    got = CompiledEncoder(out_dir / IR_FILE).embed(tokenizer(sample_texts), tokenizer.pad_id)
    cosine = np.sum(got * expected, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    if cosine.min() < MIN_EXPORT_COSINE:
        raise RuntimeError(f"The OpenVINO export of {model_dir} differs from sentence-transformers: cos {cosine}")


def encoder_ir(name: str, model_dir: Path, cache_dir: Path, sample_texts: list[str]) -> Path:
    """The float32 IR of the sentence-transformers model in `model_dir` (exported once into `cache_dir`)."""
    target = cache_dir / "encoders" / f"{name}-f32"
    if (target / COMPLETE_MARKER).exists():
        return target / IR_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _export(model_dir, partial, sample_texts)
        (partial / COMPLETE_MARKER).write_text(str(model_dir))
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target / IR_FILE


def padded_batch(token_ids: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), [len(token_ids), longest], right-padded."""
    length = max(len(ids) for ids in token_ids)
    input_ids = np.full((len(token_ids), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(token_ids), length), dtype=np.int64)
    for i, ids in enumerate(token_ids):
        input_ids[i, : len(ids)] = ids
        mask[i, : len(ids)] = 1
    return input_ids, mask


class CompiledEncoder:
    """Embeds token sequences with an encoder IR (or an in-memory `ov.Model`) compiled for f32 on the CPU."""

    def __init__(self, model: Path | ov.Model):
        self._compiled = ov.Core().compile_model(model, "CPU", F32)

    def embed(self, token_ids: list[np.ndarray], pad_id: int, batch: int = BATCH) -> np.ndarray:
        """float32 [len(token_ids), dim]; sequences are batched by length (little padding), results in order."""
        order = np.argsort([len(ids) for ids in token_ids], kind="stable")
        out = None
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            input_ids, mask = padded_batch([token_ids[i] for i in chunk], pad_id)
            result = self._compiled({"input_ids": input_ids, "attention_mask": mask})[0]
            if out is None:
                out = np.empty((len(token_ids), result.shape[-1]), dtype=np.float32)
            out[chunk] = result
        return out
