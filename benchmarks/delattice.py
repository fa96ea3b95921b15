"""
A de-latticed reference for a dequantized-GGUF model: every weight dithered inside its GGUF block's lattice step.

A GGUF model's dequantized weights sit on a lattice: per block of 32 consecutive weights along a row, `d q + m`
with integer codes `q`. Round-to-nearest with the same grid partly re-finds that lattice, which a float model's
weights would not let it do. The de-latticed copy adds to every weight of a block uniform noise of one lattice step,
`u ~ U(-step/2, step/2)`, where `step` is the smallest gap between the block's distinct values: a float model that
the same GGUF file could have been quantized from (each weight still rounds to its lattice point), with no lattice
left to re-find. Blocks whose values are all equal are left as they are. Seeded: the same model and seed give the
same copy.

Only weight matrices are dithered (constants with two axes or more longer than 1, whose last axis, the one GGUF
blocks run along, is a multiple of the block); norms, biases and the graph's other constants are kept.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import openvino as ov
from openvino import opset13 as ops

from nncf_hqq.cli.pipeline import copy_companion_files
from nncf_hqq.cli.workdirs import make_temporary_dir
from nncf_hqq.cli.workdirs import manifest_problem
from nncf_hqq.cli.workdirs import write_manifest

BLOCK = 32
ROWS_PER_CHUNK = 4096  # rows dithered at a time (bounds the float32 copies of a large embedding)


def lattice_steps(blocks: np.ndarray) -> np.ndarray:
    """Per block (last axis of `blocks`, float32): the smallest positive gap between its values; 0 if none."""
    ordered = np.sort(blocks, axis=-1)
    gaps = np.diff(ordered, axis=-1)
    gaps[gaps <= 0] = np.inf
    steps = gaps.min(axis=-1)
    steps[~np.isfinite(steps)] = 0.0
    return steps


def dither(values: np.ndarray, rng: np.random.Generator, block: int = BLOCK) -> np.ndarray:
    """
    `values` (last axis a multiple of `block`) with uniform noise of one lattice step added per block, in
    `values`' dtype.
    """
    rows = values.reshape(-1, values.shape[-1])
    out = np.empty_like(rows)
    for start in range(0, rows.shape[0], ROWS_PER_CHUNK):
        chunk = rows[start : start + ROWS_PER_CHUNK].astype(np.float32)
        blocks = chunk.reshape(chunk.shape[0], -1, block)
        steps = lattice_steps(blocks)
        noise = rng.uniform(-0.5, 0.5, size=blocks.shape).astype(np.float32) * steps[..., None]
        out[start : start + ROWS_PER_CHUNK] = (blocks + noise).reshape(chunk.shape).astype(values.dtype)
    return out.reshape(values.shape)


def is_weight_matrix(node: ov.Node, block: int = BLOCK) -> bool:
    """A floating-point constant with two axes or more longer than 1, the last a multiple of `block`."""
    if node.get_type_name() != "Constant" or not node.get_element_type().is_real():
        return False
    shape = list(node.get_output_partial_shape(0).to_shape())
    return sum(d > 1 for d in shape) >= 2 and shape[-1] % block == 0


def delattice_model(model: ov.Model, seed: int) -> int:
    """Replaces every weight matrix of `model` by its dithered copy (in place); returns how many were replaced."""
    weights = [node for node in model.get_ordered_ops() if is_weight_matrix(node)]
    for index, node in enumerate(weights):  # a generator per weight, by its place in the graph's order
        new = ops.constant(dither(node.get_data(), np.random.default_rng([seed, index])), node.get_element_type())
        new.set_friendly_name(node.get_friendly_name())
        new.output(0).set_names(node.output(0).get_names())
        node.output(0).replace(new.output(0))
    return len(weights)


def delatticed_ir(ir_file: Path, cache_dir: Path, seed: int = 0) -> Path:
    """
    The `openvino_model.xml` of the de-latticed copy of the optimum-intel model directory of `ir_file` (with its
    tokenizer and config), made once into `cache_dir` and reused while its files match their manifest.
    """
    target = Path(cache_dir) / f"{ir_file.parent.name}-delatticed-s{seed}"
    if target.exists() and manifest_problem(target) is None:
        return target / ir_file.name
    shutil.rmtree(target, ignore_errors=True)
    partial = make_temporary_dir(Path(cache_dir), f".{target.name}.")
    try:
        model = ov.Core().read_model(ir_file)
        count = delattice_model(model, seed)
        model.set_rt_info(str(seed), ["delatticed", "seed"])
        model.set_rt_info(str(count), ["delatticed", "weights"])
        ov.save_model(model, partial / ir_file.name, compress_to_fp16=False)
        del model
        copy_companion_files(ir_file.parent, partial)
        write_manifest(partial)
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target / ir_file.name
