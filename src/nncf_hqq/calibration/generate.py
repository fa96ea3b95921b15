"""
Sampling token sequences from an optimum-intel stateful LLM with OpenVINO alone (no torch, no tokenizer).

The model is the one being compressed, before compression. Sequences are generated `batch_size` at a time with
the model's KV cache: one forward pass over the start tokens, then one per new token. Next tokens are drawn from
softmax(logits / temperature) restricted to the `top_k` most probable tokens and, among them, to the nucleus of
mass `top_p` (the order of transformers' sampling), by a seeded numpy generator.
"""

from collections.abc import Callable

import nncf
import numpy as np
import openvino as ov

from nncf_hqq._nncf import track
from nncf_hqq.calibration.dataset import model_input_names
from nncf_hqq.calibration.dataset import stateful_llm_inputs
from nncf_hqq.calibration.parameters import SelfCalibrationParameters

_KNOWN_INPUTS = ("input_ids", "attention_mask", "position_ids", "beam_idx")


def generate_sequences(
    model: ov.Model,
    params: SelfCalibrationParameters | None = None,
    device: str = "CPU",
    compile_model: Callable[[ov.Model, str], ov.CompiledModel] | None = None,
) -> np.ndarray:
    """
    Token sequences written by the model itself.

    :param model: An optimum-intel causal LM (inputs `input_ids`, `attention_mask`, optionally `position_ids` and
        `beam_idx`; a `logits` output), stateful (KV cache inside). It is compiled, not changed.
    :param params: How many sequences, how long, how sampled, from which BOS token; defaults when None.
    :param device: OpenVINO device to run the model on.
    :param compile_model: Compiles the model (`ov.Core().compile_model` when None).
    :return: int64 token ids [num_sequences, length].
    """
    params = params or SelfCalibrationParameters()
    params.validate()
    names = _input_names(model)
    compiled = (compile_model or (lambda m, d: ov.Core().compile_model(m, d)))(model, device)
    request = compiled.create_infer_request()
    run = _Forward(request, names, _logits_output(compiled))
    vocab_size = run(np.zeros((1, 1), np.int64), 0).shape[-1]  # one token's logits: the vocabulary, even if dynamic
    rng = np.random.default_rng(params.seed)
    sequences = []
    batches = range(0, params.num_sequences, params.batch_size)
    for first in track(batches, description="Writing calibration text"):
        size = min(params.batch_size, params.num_sequences - first)
        starts = _start_tokens(first, size, params, vocab_size)
        sequences.append(_sample_batch(run, starts, params, rng))
    return np.concatenate(sequences)


def _input_names(model: ov.Model) -> set[str]:
    names = model_input_names(model)
    if "input_ids" not in names or "attention_mask" not in names:
        msg = f"Self-calibration needs an optimum-intel causal LM (input_ids, attention_mask); inputs: {sorted(names)}."
        raise nncf.ValidationError(msg)
    unknown = [m.get_any_name() for m in model.inputs if not set(m.get_names()) & set(_KNOWN_INPUTS)]
    if unknown:
        msg = f"Self-calibration cannot feed the model's inputs {unknown}: give a dataset instead."
        raise nncf.ValidationError(msg)
    if not model.get_sinks() and not any("ReadValue" == op.get_type_name() for op in model.get_ops()):
        msg = "Self-calibration needs a stateful model (KV cache inside, as optimum-intel exports it by default)."
        raise nncf.ValidationError(msg)
    return names


def _logits_output(compiled: ov.CompiledModel) -> ov.ConstOutput:
    for output in compiled.outputs:
        if "logits" in output.get_names():
            return output
    return compiled.outputs[0]


def _start_tokens(first: int, size: int, params: SelfCalibrationParameters, vocab_size: int) -> np.ndarray:
    """[size, 1 or 2]: BOS (if any) and, unless the model chooses it, a start token from across the vocabulary."""
    stride = max(1, vocab_size // params.num_sequences)
    spread = (np.arange(first, first + size, dtype=np.int64) * stride) % vocab_size
    bos = params.bos_token_id
    if bos is None:
        return spread[:, None]
    bos_column = np.full(size, bos, np.int64)
    return np.stack([bos_column, spread], axis=1) if params.spread_start else bos_column[:, None]


class _Forward:
    """One forward pass of new tokens [batch, n] after `past` cached ones; the logits of the last position."""

    def __init__(self, request: ov.InferRequest, names: set[str], logits: ov.ConstOutput):
        self._request, self._names, self._logits = request, names, logits

    def __call__(self, tokens: np.ndarray, past: int) -> np.ndarray:
        if past == 0:
            self._request.reset_state()
        self._request.infer(stateful_llm_inputs(tokens, past, self._names))
        return np.array(self._request.get_tensor(self._logits).data[:, -1, :], dtype=np.float32)


def _sample_batch(run: _Forward, starts: np.ndarray, params: SelfCalibrationParameters, rng) -> np.ndarray:
    """[batch, length]: the start tokens, then tokens sampled one at a time with the KV cache."""
    tokens = np.zeros((starts.shape[0], params.length), np.int64)
    tokens[:, : starts.shape[1]] = starts
    logits = run(starts, 0)
    for position in range(starts.shape[1], params.length):
        tokens[:, position] = sample_next_tokens(logits, params.temperature, params.top_p, rng, params.top_k)
        if position + 1 < params.length:
            logits = run(tokens[:, position : position + 1], position)
    return tokens


def sample_next_tokens(
    logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator, top_k: int | None = None
) -> np.ndarray:
    """
    One token per row of `logits` [batch, vocab], drawn from softmax(logits / temperature) restricted to the
    `top_k` most probable tokens (all when None) and, among them (renormalised), to the smallest set of most
    probable tokens whose probability reaches `top_p` (renormalised again).

    Only the `top_k` candidates are sorted: with the default 50 a step costs one partition of the logits, where a
    sort of a 49k-262k vocabulary per row cost more than the forward pass of a small model.
    """
    batch, vocab = logits.shape
    k = vocab if top_k is None else min(top_k, vocab)
    if k < vocab:
        candidates = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        scaled = np.take_along_axis(logits, candidates, 1).astype(np.float64) / temperature
    else:
        candidates = np.broadcast_to(np.arange(vocab), (batch, vocab))
        scaled = logits.astype(np.float64) / temperature
    probabilities = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    order = np.argsort(-probabilities, axis=1, kind="stable")
    ids = np.take_along_axis(candidates, order, 1)
    cumulative = np.cumsum(np.take_along_axis(probabilities, order, 1), axis=1)
    nucleus = (cumulative < top_p).sum(axis=1) + 1  # tokens kept per row: the first that reaches top_p included
    nucleus = np.minimum(nucleus, ids.shape[1])
    draws = rng.random(batch) * cumulative[np.arange(batch), nucleus - 1]
    picked = np.minimum((cumulative < draws[:, None]).sum(axis=1), nucleus - 1)
    return ids[np.arange(batch), picked]
