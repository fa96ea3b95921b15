"""
The second moments of the inputs of the scale groups, E[x_j^2] per input column, measured on random token ids: a
language model run on a few windows of its BOS token and uniformly random tokens of its vocabulary, no text. They
stand in for the activations' magnitudes in `EqualizationMethod.AUTO`'s estimate of each candidate's output error.

Running the model compiles a copy of it (`nncf_hqq.activation_moments`): about the float model's size in memory while
it runs.
"""

from collections.abc import Iterator

import numpy as np
import openvino as ov

from nncf_hqq.activation_moments import second_moments as activation_second_moments
from nncf_hqq.calibration.dataset import model_input_names
from nncf_hqq.calibration.dataset import stateful_llm_inputs
from nncf_hqq.equalization.patterns import ScaleGroup
from nncf_hqq.openvino_graph import constant_through_converts


def token_inputs(model: ov.Model) -> tuple[int, dict[str, ov.Output]] | None:
    """
    (vocabulary size, the model's inputs by name) if `model` takes token ids (`input_ids`, and only inputs this
    module can fill) into an embedding table, a Gather of a constant [vocabulary, hidden]; else None.
    """
    inputs = {port.get_any_name(): port for port in model.inputs}
    known = {"input_ids", "attention_mask", "position_ids", "beam_idx", "token_type_ids"}
    if "input_ids" not in inputs or set(inputs) - known:
        return None
    vocabulary = _embedding_rows(model.input("input_ids"))
    return None if vocabulary is None else (vocabulary, inputs)


def _embedding_rows(ids: ov.Output) -> int | None:
    """The rows of the embedding table the token ids index (through Converts), None if there is none."""
    frontier = [ids]
    for _ in range(4):
        next_frontier = []
        for value in frontier:
            for target in value.get_target_inputs():
                node = target.get_node()
                if node.get_type_name() == "Convert":
                    next_frontier.append(node.output(0))
                elif node.get_type_name() == "Gather" and target.get_index() == 1:
                    table = constant_through_converts(node.input_value(0))
                    if table is not None and len(table.get_output_shape(0)) == 2:
                        return int(table.get_output_shape(0)[0])
        frontier = next_frontier
    return None


def random_token_batches(
    model: ov.Model, windows: int, length: int, seed: int, bos_token_id: int | None
) -> Iterator[dict[str, np.ndarray]]:
    """
    The inputs of `windows` windows of `length` tokens, BOS (if given) then random token ids of the vocabulary of
    `model` (a model `token_inputs` accepts), one window per inference (graphs exported for one sequence need not
    take more).
    """
    vocabulary, _ = token_inputs(model)
    ids = np.random.default_rng(seed).integers(0, vocabulary, size=(windows, length), dtype=np.int64)
    if bos_token_id is not None:
        ids[:, 0] = bos_token_id
    return token_batches(model, ids)


def token_batches(model: ov.Model, ids: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    """The inputs of the language model `model` for each window of token ids `ids` [windows, length]."""
    names = model_input_names(model)
    return (stateful_llm_inputs(window[None], 0, names) for window in ids)


def input_second_moments(
    model: ov.Model, groups: list[ScaleGroup], windows: int = 4, length: int = 128, seed: int = 0,
    bos_token_id: int | None = None,
) -> dict[str, np.ndarray] | None:  # fmt: skip
    """
    Per scale group (by name), the mean of x_j^2 over the tokens of `windows` random windows of `length` tokens
    (`random_token_batches`) for each input column j of its MatMuls, float32 [columns]; None if `model` is not a
    language model of token ids (`token_inputs`). `model` is not changed.
    """
    if token_inputs(model) is None or not groups:
        return None
    return second_moments(model, groups, random_token_batches(model, windows, length, seed, bos_token_id))


def second_moments(model: ov.Model, groups: list[ScaleGroup], batches) -> dict[str, np.ndarray]:
    """Per scale group (by name), the mean of x_j^2 over every token of `batches` for each input column j of its
    MatMuls (`nncf_hqq.activation_moments.second_moments`)."""
    values = [group.matmuls[0].input_value(0) for group in groups]
    moments, _ = activation_second_moments(model, values, batches)
    return {g.name: m for g, m in zip(groups, moments, strict=True)}
