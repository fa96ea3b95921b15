"""Token sequences as the inputs of an optimum-intel stateful LLM: for NNCF's data-aware algorithms and the sampler."""

import nncf
import numpy as np
import openvino as ov


def model_input_names(model: ov.Model) -> set[str]:
    """Every name of every input of the model."""
    return {name for model_input in model.inputs for name in model_input.get_names()}


def stateful_llm_inputs(tokens: np.ndarray, past: int, input_names: set[str]) -> dict[str, np.ndarray]:
    """
    The inputs that feed `tokens` [batch, n] after `past` tokens already in the model's KV cache: `input_ids`, and
    `attention_mask`, `position_ids`, `beam_idx` and `token_type_ids` (zeros) if the model has them (`input_names`).
    """
    batch, n = tokens.shape
    inputs = {"input_ids": tokens}
    if "attention_mask" in input_names:
        inputs["attention_mask"] = np.ones((batch, past + n), np.int64)
    if "position_ids" in input_names:
        inputs["position_ids"] = np.broadcast_to(np.arange(past, past + n, dtype=np.int64), (batch, n)).copy()
    if "beam_idx" in input_names:
        inputs["beam_idx"] = np.arange(batch, dtype=np.int32)
    if "token_type_ids" in input_names:
        inputs["token_type_ids"] = np.zeros((batch, n), np.int64)
    return inputs


def stateful_llm_dataset(sequences: np.ndarray, model: ov.Model) -> nncf.Dataset:
    """
    An `nncf.Dataset` of one sample per sequence: the whole sequence from an empty KV cache.

    :param sequences: int64 token ids [num_sequences, length].
    :param model: The model the samples are for (its input names).
    """
    names = model_input_names(model)
    return nncf.Dataset([stateful_llm_inputs(sequence[None], 0, names) for sequence in np.asarray(sequences, np.int64)])
