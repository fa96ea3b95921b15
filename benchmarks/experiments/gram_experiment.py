"""
Experiment: a data-aware choice of each group's INT4_ASYM scale from the second moments of the activations the
group multiplies (a candidate for self-calibration without NNCF's scale estimation).

The default's equalization is folded into the float model first; the calibration samples then run through it once,
and per MatMul with a constant [out, in] weight the Gram matrix of its input, G = sum_t x_t x_t^T over every
token, is kept. For each group of g input channels (block G_k of G) and each output row, the error of parameters
(s, z) is the group's expected output error e^T G_k e, e = w - s (clip(round(w / s + z), 0, 15) - z), cross-group
terms ignored. Candidates per group: HQQ's solution (the default's), RTN's scale times 1, 0.95, ..., 0.55 with
RTN's zero point (scale estimation's grid), each then refitted `refits` times by weighted least squares,
s = l^T G_k w / l^T G_k l with l = q - z the codes of the current scale; the candidate of least error is kept.
"""

import dataclasses

import nncf
import numpy as np
import openvino as ov
from nncf.tensor import Tensor
from openvino import opset13 as opset

from nncf_hqq import compress_weights
from nncf_hqq._nncf import CompressedWeight
from nncf_hqq.compress import compress_weights_and_plan
from nncf_hqq.equalization.algorithm import fold
from nncf_hqq.equalization.parameters import AdvancedEqualizationParameters
from nncf_hqq.equalization.parameters import EqualizationMethod
from nncf_hqq.hqq import HQQWeightTask

FACTORS = [1.0 - 0.05 * k for k in range(10)]


def _weight_constant(node: ov.Node) -> ov.Node | None:
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" else None


def collect_grams(model: ov.Model, dataset: nncf.Dataset) -> dict[str, np.ndarray]:
    """Per weight constant (friendly name) of a MatMul x W^T: the Gram matrix of x over every token, float64."""
    users = {}  # (producer's name, output index) of each MatMul input -> the weight constants it multiplies
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or not op.get_attributes().get("transpose_b", False):
            continue
        constant = _weight_constant(op.input_value(1).get_node())
        if constant is None or len(constant.get_output_shape(0)) != 2:
            continue
        activation = op.input_value(0)
        key = (activation.get_node().get_friendly_name(), activation.get_index())
        users.setdefault(key, []).append(constant.get_friendly_name())
    keys = list(users)
    probe = model.clone()
    # the clone's nodes are distinct: find each activation again by its producer's name and output index
    named = {op.get_friendly_name(): op for op in probe.get_ordered_ops()}
    results = [opset.result(named[name].output(index)) for name, index in keys]
    probe.add_results(results)
    compiled = ov.Core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    first = len(probe.outputs) - len(results)
    grams = [None] * len(keys)
    request = compiled.create_infer_request()
    for sample in dataset.get_inference_data():
        request.reset_state()
        request.infer(sample)
        for i in range(len(keys)):
            x = request.get_output_tensor(first + i).data
            x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
            grams[i] = x.T @ x if grams[i] is None else grams[i] + x.T @ x
    return {name: grams[i] for i, k in enumerate(keys) for name in users[k]}


def _blocks(gram: np.ndarray, group: int) -> np.ndarray:
    n = gram.shape[0] // group
    return np.stack([gram[k * group : (k + 1) * group, k * group : (k + 1) * group] for k in range(n)]).astype(
        np.float32
    )


def _codes(w, s, z):
    return np.clip(np.rint(w / s + z), 0.0, 15.0)


def _error(w, s, z, g):
    """e^T G e per [groups, out] and the codes; w [ng, out, g] (contiguous), s/z [ng, out, 1], g [ng, g, g]."""
    q = _codes(w, s, z)
    e = w - s * (q - z)
    return (e * np.matmul(e, g)).sum(-1), q


def _refit(w, s, z, g):
    """The scale of least e^T G e for the codes of `s`: l^T G w / l^T G l, l = q - z (kept where not positive)."""
    level = _codes(w, s, z) - z
    gl = np.matmul(level, g)
    num, den = (gl * w).sum(-1, keepdims=True), (gl * level).sum(-1, keepdims=True)
    return np.where((den > 0) & (num > 0), num / np.maximum(den, 1e-30), s).astype(np.float32)


def data_aware_solution(
    weight: np.ndarray, gram: np.ndarray, group: int, hqq: CompressedWeight, refits: int, diagonal: bool = False
):
    out, n_in = weight.shape
    grouped = lambda x: np.ascontiguousarray(x.reshape(out, n_in // group, -1).transpose(1, 0, 2))
    w = grouped(weight.astype(np.float32))
    g = _blocks(gram, group)
    if diagonal:  # the second moments only: e^T diag(G_k) e
        g = g * np.eye(group, dtype=np.float32)
    g = g / max(float(np.trace(g.sum(0))), 1e-30)  # scale-free
    lo, hi = np.minimum(w.min(-1, keepdims=True), 0), np.maximum(w.max(-1, keepdims=True), 0)
    s_rtn = np.maximum((hi - lo) / 15.0, np.finfo(np.float32).eps)
    z_rtn = np.clip(np.rint(-lo / s_rtn), 0, 15)
    s_h = grouped(hqq.scale.as_numpy_tensor().data.astype(np.float32))
    z_h = grouped(hqq.zero_point.as_numpy_tensor().data.astype(np.float32))
    best_s, best_z = s_h, z_h
    best_err, best_q = _error(w, s_h, z_h, g)
    for s0, z0 in [(s_h, z_h)] + [(s_rtn * f, z_rtn) for f in FACTORS]:
        s = s0
        for it in range(refits + 1):
            if it > 0:
                s = _refit(w, s, z0, g)
            err, q = _error(w, s, z0, g)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            b = better[..., None]
            best_s, best_z, best_q = np.where(b, s, best_s), np.where(b, z0, best_z), np.where(b, q, best_q)
    back = lambda x: np.ascontiguousarray(x.transpose(1, 0, 2))  # [out, ng, ...], NNCF's grouped layout
    return CompressedWeight(
        Tensor(back(best_q).astype(np.uint8)), Tensor(back(best_s)), Tensor(back(best_z).astype(np.int32))
    )


def compress(
    ir_file, mode: str, group_size: int, dataset: nncf.Dataset | None, advanced, refits: int = 2,
    diagonal: bool = False, random_tokens: int = 0, bos_token_id: int | None = None, **kwargs,
):  # fmt: skip
    """
    The experiment's compressed model (INT4_ASYM only). `diagonal`: G's diagonal only; `random_tokens` > 0: the
    statistics on that many windows of 128 random token ids after BOS instead of `dataset`.
    """
    if mode != "int4_asym":
        raise nncf.ValidationError("the Gram experiment is INT4_ASYM only")
    core = ov.Core()
    arguments = dict(mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=group_size, **kwargs)
    _, plan = compress_weights_and_plan(core.read_model(ir_file), hqq=True, advanced_parameters=advanced, **arguments)
    model = core.read_model(ir_file)
    constants = {op.get_friendly_name(): op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"}
    fold(plan, constants)
    if random_tokens:
        from nncf_hqq.equalization.statistics import random_token_batches

        dataset = nncf.Dataset(list(random_token_batches(model, random_tokens, 128, 0, bos_token_id)))
    grams = collect_grams(model, dataset)
    original = HQQWeightTask.solve

    def solve(task, site, weight, allocate_codes=None):
        hqq = original(task, site, weight)
        gram = grams.get(site.constant_name)
        config = site.config
        if gram is None or config.num_bits != 4 or not config.is_asym_mode or tuple(site.reduction_axes) != (1,):
            return hqq
        group = config.group_size if config.group_size != -1 else weight.shape[1]
        return data_aware_solution(weight.as_numpy_tensor().data, gram, group, hqq, refits, diagonal)

    none = dataclasses.replace(advanced, equalization_params=AdvancedEqualizationParameters(EqualizationMethod.NONE))
    unweighted = dataclasses.replace(advanced.hqq_params, activation_moments=False)
    none = dataclasses.replace(none, offload_codes=False, hqq_params=unweighted)
    HQQWeightTask.solve = solve
    try:
        return compress_weights(model, hqq=True, advanced_parameters=none, **arguments)
    finally:
        HQQWeightTask.solve = original
