"""
Scoring causal LLMs (optimum-intel model directories) on token windows: next-token NLL, and the divergence from
the uncompressed model (KL divergence, top-1 agreement), as llama.cpp reports them for its quantizations.

Memory stays bounded by scoring the uncompressed model window by window beside the compressed one (both compiled
at once): per window, KL(P || Q) = sum_v P(v) log(P(v) / Q(v)) over the whole vocabulary, averaged over positions,
exactly, at the cost of one more forward pass per window. (Keeping only P's top-k tokens and the rest of the mass
as one bin was tried: on SmolLM2 with k = 128 it found 87% of the KL, k = 512 93%; the small models' long tails
carry the rest.)

Models run with the CPU's default inference settings, as users run them (on this CPU: bf16 arithmetic, dynamic
int8 quantization of activations for compressed weights). Measured on SmolLM2 (4 windows of 1024 tokens): the
KL between the uncompressed model in bf16 and in f32 is 0.001 nats per token, 0.3% of INT4 RTN's (0.31), and
RTN's KL moved by 0.7% between the two settings; f32 was 3.5x slower.
"""

import functools
import time
from pathlib import Path

import numpy as np

PRECISIONS = {
    "default": {},
    # f32 arithmetic, no dynamic int8 activations, f32 KV cache: the differences of the weights alone
    "f32": {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0", "KV_CACHE_PRECISION": "f32"},
    # the default settings without the dynamic int8 quantization of the compressed MatMuls' activations
    "no-dynamic-quantization": {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"},
}


def load_model(model_dir: Path, precision: str = "default"):
    from optimum.intel import OVModelForCausalLM

    return OVModelForCausalLM.from_pretrained(model_dir, ov_config=dict(PRECISIONS[precision]), compile=True)


@functools.lru_cache(maxsize=1)
def _reference_model(model_dir: str, precision: str):
    """The uncompressed model, compiled once for all the methods scored against it."""
    return load_model(Path(model_dir), precision)


def log_probs(model, window: np.ndarray):
    """log-softmax of the next-token logits at every position but the last, float32 [window - 1, vocab]."""
    import torch

    ids = torch.from_numpy(window[None])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # past=None: state reset
        return torch.log_softmax(logits[0, :-1].float(), dim=-1)


def nll(log_probs, window: np.ndarray) -> float:
    """Mean next-token negative log-likelihood of the window's tokens."""
    import torch

    targets = torch.from_numpy(window[1:]).long()
    return float(-log_probs.gather(1, targets[:, None]).mean())


def divergence(log_p, log_q) -> tuple[float, float]:
    """
    Mean KL(P || Q) over positions and the share of positions where Q's most probable token is P's, from the
    log-probabilities [positions, vocab] of P (the reference) and Q.
    """
    kl = (log_p.exp() * (log_p - log_q)).sum(1)
    top1 = (log_q.argmax(1) == log_p.argmax(1)).double().mean()
    return float(kl.double().mean()), float(top1)


def window_scores(model_dir: Path, windows: np.ndarray, reference_dir: Path | None = None,
                  precision: str = "default", model=None) -> dict[str, list[float]]:  # fmt: skip
    """
    Per window: the NLL (`window_nll`), and with the uncompressed model's directory `reference_dir`, the mean KL
    divergence from it (`window_kl`) and the top-1 agreement with it (`window_top1`). `model`: the model of
    `model_dir` loaded already (`load_model`), or None.
    """
    model = load_model(model_dir, precision) if model is None else model
    reference = None if reference_dir is None else _reference_model(str(reference_dir), precision)
    scores = {"window_nll": [], "window_kl": [], "window_top1": []}
    for window in windows:
        log_q = log_probs(model, window)
        scores["window_nll"].append(nll(log_q, window))
        if reference is not None:
            kl, top1 = divergence(log_probs(reference, window), log_q)
            scores["window_kl"].append(kl)
            scores["window_top1"].append(top1)
    return scores


def generation_run(model, prompt_ids: np.ndarray, new_tokens: int) -> tuple[float, float]:
    """One measurement: (first-token latency in s, tokens/s of the following `new_tokens` greedy steps)."""
    import torch

    ids = torch.from_numpy(prompt_ids[None])
    kwargs = {"attention_mask": torch.ones_like(ids), "do_sample": False}
    start = time.perf_counter()
    model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
    first = time.perf_counter() - start
    start = time.perf_counter()
    model.generate(ids, max_new_tokens=new_tokens + 1, min_new_tokens=new_tokens + 1, **kwargs)
    total = time.perf_counter() - start
    return first, new_tokens / max(total - first, 1e-9)


def generation_speed(
    model_dir: Path, prompt_ids: np.ndarray, new_tokens: int = 64, runs: int = 3, model=None
) -> tuple[float, float]:
    """
    (first-token latency in s, tokens/s) at batch 1 with the CPU's default settings, median of `runs` runs.
    `model`: the model of `model_dir` loaded already with the default settings, or None.
    """
    model = load_model(model_dir) if model is None else model
    generation_run(model, prompt_ids, 4)  # warm-up
    first, speed = zip(*(generation_run(model, prompt_ids, new_tokens) for _ in range(runs)), strict=True)
    return float(np.median(first)), float(np.median(speed))
