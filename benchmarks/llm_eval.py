"""
Scoring causal LLMs (optimum-intel model directories) on token windows: next-token NLL, and the divergence from
the uncompressed model (KL divergence, top-1 agreement), as llama.cpp reports them for its quantizations.

The uncompressed model's log-probabilities are computed once per window and kept in float32 files
(`ReferenceLogProbs`), so every compressed model scored against them costs one forward pass per window and only
one model is compiled at a time: KL(P || Q) = sum_v P(v) log(P(v) / Q(v)) over the whole vocabulary, averaged over
positions, exactly. (Keeping only P's top-k tokens and the rest of the mass as one bin was tried: on SmolLM2 with
k = 128 it found 87% of the KL, k = 512 93%; the small models' long tails carry the rest.) Beside NLL and KL, each
window gives the mean entropy of the model's next-token distributions and its NLL with the logits divided by a
few temperatures: where a lower NLL comes with a higher entropy, and the uncompressed model itself gains NLL above
temperature 1, NLL is rewarding noise (the model is over-confident on that text), not fidelity.

Models run with the CPU's default inference settings, as users run them (on this CPU: bf16 arithmetic, dynamic
int8 quantization of activations for compressed weights). Measured on SmolLM2 (4 windows of 1024 tokens): the
KL between the uncompressed model in bf16 and in f32 is 0.001 nats per token, 0.3% of INT4 RTN's (0.31), and
RTN's KL moved by 0.7% between the two settings; f32 was 3.5x slower.
"""

import hashlib
import signal
import sys
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


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM as SystemExit, so that the reference's log-probability files (gigabytes) are removed on the way out."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def load_model(model_dir: Path, precision: str = "default"):
    from optimum.intel import OVModelForCausalLM

    return OVModelForCausalLM.from_pretrained(model_dir, ov_config=dict(PRECISIONS[precision]), compile=True)


TEMPERATURES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5)  # of the reference's NLL-versus-temperature curve


class ReferenceLogProbs:
    """
    The uncompressed model's log-probabilities per window, computed once (the model compiled only then) and kept
    as float32 files in `directory`, so that every method scored against it costs one forward pass per window.
    """

    def __init__(self, model_dir: Path, directory: Path, precision: str = "default"):
        self.model_dir, self.directory, self.precision = Path(model_dir), Path(directory), precision
        self._model = None

    def __call__(self, window: np.ndarray):
        import torch

        path = self.directory / f"{hashlib.sha1(np.ascontiguousarray(window).tobytes()).hexdigest()[:20]}.npy"
        if path.exists():
            return torch.from_numpy(np.load(path))
        if self._model is None:
            self._model = load_model(self.model_dir, self.precision)
        log_p = log_probs(self._model, window)
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npy")
        np.save(partial, log_p.numpy())
        partial.replace(path)
        return log_p

    def release(self) -> None:
        """Frees the compiled model (the files stay)."""
        self._model = None


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


def entropy(log_probs) -> float:
    """Mean entropy, in nats, of the next-token distributions [positions, vocab]."""
    return float(-(log_probs.exp() * log_probs).sum(1).double().mean())


def nll_by_temperature(log_probs, window: np.ndarray, temperatures=TEMPERATURES) -> list[float]:
    """The window's mean NLL with the logits divided by each temperature (log-softmax(log p / T))."""
    import torch

    return [nll(torch.log_softmax(log_probs / t, dim=-1), window) for t in temperatures]


def divergence(log_p, log_q) -> tuple[float, float]:
    """
    Mean KL(P || Q) over positions and the share of positions where Q's most probable token is P's, from the
    log-probabilities [positions, vocab] of P (the reference) and Q.
    """
    kl = (log_p.exp() * (log_p - log_q)).sum(1)
    top1 = (log_q.argmax(1) == log_p.argmax(1)).double().mean()
    return float(kl.double().mean()), float(top1)


def model_log_probs(model):
    """`log_probs` of a loaded model, as a function of the window."""
    return lambda window: log_probs(model, window)


def window_scores(
    log_probs_of, windows: np.ndarray, reference: ReferenceLogProbs | None = None, temperatures: bool = False
) -> dict[str, list]:
    """
    Per window, from the log-probabilities `log_probs_of(window)` of the model scored: the NLL (`window_nll`) and
    the mean entropy of its next-token distributions (`window_entropy`); with `temperatures`, the NLL at each of
    `TEMPERATURES` (`window_nll_by_temperature`: 2 s a window at a vocabulary of 152k, so asked for the reference
    only); with the uncompressed model's `reference`, the mean KL divergence from it (`window_kl`) and the top-1
    agreement with it (`window_top1`).
    """
    scores = {key: [] for key in ("window_nll", "window_entropy", "window_kl", "window_top1")}
    if temperatures:
        scores["window_nll_by_temperature"] = []
    for window in windows:
        log_q = log_probs_of(window)
        scores["window_nll"].append(nll(log_q, window))
        scores["window_entropy"].append(entropy(log_q))
        if temperatures:
            scores["window_nll_by_temperature"].append(nll_by_temperature(log_q, window))
        if reference is not None:
            kl, top1 = divergence(reference(window), log_q)
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
