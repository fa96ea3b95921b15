"""Token sequences as the inputs NNCF's data-aware algorithms feed an optimum-intel stateful LLM."""

import nncf
import numpy as np
import openvino as ov


def stateful_llm_dataset(sequences: np.ndarray, model: ov.Model) -> nncf.Dataset:
    """
    An `nncf.Dataset` of one sample per sequence: the whole sequence from an empty KV cache (`input_ids`,
    `attention_mask`, and `position_ids` and `beam_idx` if the model has them).

    :param sequences: int64 token ids [num_sequences, length].
    :param model: The model the samples are for (its input names).
    """
    names = {name for model_input in model.inputs for name in model_input.get_names()}
    samples = []
    for sequence in np.asarray(sequences, dtype=np.int64):
        ids = sequence[None]
        sample = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "position_ids" in names:
            sample["position_ids"] = np.arange(ids.shape[1], dtype=np.int64)[None]
        if "beam_idx" in names:
            sample["beam_idx"] = np.zeros(1, dtype=np.int32)
        samples.append(sample)
    return nncf.Dataset(samples)
