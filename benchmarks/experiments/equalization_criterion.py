"""
Experiment: can a data-free criterion tell, per scale group, which balance (none, power, Sinkhorn) quantizes best?

    python -m benchmarks.experiments.equalization_criterion --models smollm2-135m qwen2.5-coder-0.5b

For every scale group of the de-latticed reference (`nncf_hqq.equalization.patterns`, planned in the library's
order), each candidate c is scored by the expected output error of RTN on the balanced weights, in the original
coordinates:

    err(c) = sum_m sum_ij a_k^2 (W_ij - c_k Q(W_ij / c_k))^2,   k = the channel column j reads,

with a_k^2 = E[x_k^2], the second moment of the group's input channel k over real text (the model's own domain,
held out from the judge's windows): the truth. The data-free criteria replace a_k^2 by
- `flat`: 1 (the weight error),
- `norm`: the norm's scale squared for norm-fed groups, 1 otherwise,
- `producer`: the norm's scale squared, or the squared norm of the producer's row k (up_proj, v_proj),
- `inverse-b`: (mean_i |W_ik|)^(-2b) over the group's rows, b = 0.5, 1 (`inverse`), 1.5 (channels with small
  weights carry large activations),
- `random-tokens`: the second moments on 4 windows of BOS and 127 uniformly random token ids (no text).
Per criterion: how often it picks the truly best candidate, and the summed true error of its picks against the
best fixed candidate's and the per-group truth's.
"""

import argparse
from pathlib import Path

import numpy as np
import openvino as ov
from nncf.tensor import Tensor
from openvino import opset13 as opset

from benchmarks.judge import judged_texts
from benchmarks.judge import reference_ir
from benchmarks.judge import text_windows
from nncf_hqq.equalization._kernel import rtn_output_errors
from nncf_hqq.equalization.algorithm import EqualizationPlan
from nncf_hqq.equalization.patterns import find_scale_groups
from nncf_hqq.equalization.scales import columns_by_channel
from nncf_hqq.equalization.scales import power_scales
from nncf_hqq.equalization.scales import sinkhorn_scales

CANDIDATES = ("none", "power", "sinkhorn")
CRITERIA = ("flat", "norm", "producer", "inverse-0.5", "inverse", "inverse-1.5", "random-tokens")


def input_second_moments(model: ov.Model, groups, windows: np.ndarray) -> dict[str, np.ndarray]:
    """Per group name, E[x_k^2] of its (shared) input over every token of `windows` (stateful LLM inputs)."""
    probe = model.clone()
    named = {op.get_friendly_name(): op for op in probe.get_ordered_ops()}
    outputs = []
    for group in groups:
        matmul = named[group.matmuls[0].get_friendly_name()]
        outputs.append(opset.result(matmul.input_value(0)))
    probe.add_results(outputs)
    compiled = ov.Core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    first = len(probe.outputs) - len(outputs)
    sums = [None] * len(groups)
    count = 0
    request = compiled.create_infer_request()
    names = {i.get_any_name() for i in compiled.inputs}
    for window in windows:
        request.reset_state()
        ids = window[None, :].astype(np.int64)
        inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "position_ids" in names:
            inputs["position_ids"] = np.arange(ids.shape[1])[None, :]
        if "beam_idx" in names:
            inputs["beam_idx"] = np.zeros(1, np.int32)
        request.infer(inputs)
        for i in range(len(groups)):
            x = np.asarray(request.get_output_tensor(first + i).data, np.float64)
            x = x.reshape(-1, x.shape[-1])
            sums[i] = (x * x).sum(0) if sums[i] is None else sums[i] + (x * x).sum(0)
        count += ids.shape[1]
    return {g.name: s / count for g, s in zip(groups, sums, strict=True)}


def rtn_error(weight: np.ndarray, scales: np.ndarray, weights_sq: np.ndarray, group: int, sym: bool) -> float:
    """
    sum_ij a_j^2 (W_ij - c_j Q(W_ij / c_j))^2 for weight [rows, in], c and a^2 per column, NNCF's RTN, in numpy:
    the reference the library's compiled `rtn_output_errors` is tested against.
    """
    u = (weight / scales).reshape(weight.shape[0], -1, group)
    if sym:
        # NNCF's INT4_SYM: a signed scale mapping the group's largest magnitude to -8, levels -8..7
        step = np.take_along_axis(u, np.abs(u).argmax(-1)[..., None], -1) / -8.0
        step = np.where(step == 0, 1.0, step)
        q = np.clip(np.rint(u / step), -8, 7) * step
    else:
        low, high = np.minimum(u.min(-1, keepdims=True), 0), np.maximum(u.max(-1, keepdims=True), 0)
        step = (high - low) / 15.0
        step = np.where(step == 0, 1.0, step)
        zero = np.clip(np.rint(-low / step), 0, 15)
        q = (np.clip(np.rint(u / step + zero), 0, 15) - zero) * step
    error = (u - q).reshape(weight.shape) * scales
    return float((error * error * weights_sq).sum())


def random_windows(ir_file: Path, count: int, length: int, seed: int = 0) -> np.ndarray:
    """`count` windows of the BOS token then uniformly random token ids of the model's vocabulary."""
    import json

    from nncf_hqq.calibration.parameters import bos_token_id

    config = json.loads((ir_file.parent / "config.json").read_text())
    vocab = config.get("vocab_size") or config["text_config"]["vocab_size"]
    ids = np.random.default_rng(seed).integers(0, vocab, size=(count, length))
    bos = bos_token_id(ir_file.parent)
    if bos is not None:
        ids[:, 0] = bos
    return ids


def analyse(ir_file: Path, windows: np.ndarray, group_size: int, sym: bool) -> dict:
    model = ov.Core().read_model(ir_file)
    groups = find_scale_groups(model)
    moments = input_second_moments(model, groups, windows)
    random_moments = input_second_moments(model, groups, random_windows(ir_file, 4, 128))
    plan = EqualizationPlan()
    rows = []
    for group in groups:
        weights, maps = [], []
        for consumer in group.consumers:
            value = plan.apply(consumer.node.get_friendly_name(), consumer.node.get_data())
            weights.append(np.ascontiguousarray(np.moveaxis(value, consumer.axis, -1)))
            maps.append(consumer.channel_map)
        columns = columns_by_channel([Tensor(w) for w in weights], maps, group.num_channels)
        cs = {
            "none": np.ones(group.num_channels, np.float32),
            "power": power_scales(columns, 0.5).data,
            "sinkhorn": sinkhorn_scales(columns, group_size).data,
        }
        mean_abs = np.abs(columns.data).mean(0)
        norm = group.norm_scale if group.norm_scale is not None else np.ones(group.num_channels, np.float32)
        mean_abs = np.maximum(mean_abs, 1e-12).astype(np.float64)
        if group.norm_scale is None:  # the producer's output rows: E[x_k^2] ~ |row k of up or v|^2
            absorber = group.absorbers[0]
            value = plan.apply(absorber.node.get_friendly_name(), absorber.node.get_data())
            value = np.moveaxis(value, absorber.axis, 0)
            producer = (value.reshape(value.shape[0], -1).astype(np.float64) ** 2).sum(1)
        else:
            producer = norm.astype(np.float64) ** 2
        priors = {"flat": np.ones(group.num_channels), "norm": norm.astype(np.float64) ** 2, "producer": producer,
                  "inverse-0.5": mean_abs**-1, "inverse": mean_abs**-2, "inverse-1.5": mean_abs**-3,
                  "random-tokens": random_moments[group.name]}  # fmt: skip
        weightings = {"truth": moments[group.name], **priors}  # per channel of the group's shared input
        candidates = np.stack([cs[name] for name in CANDIDATES]).astype(np.float32)
        totals = {key: np.zeros(len(CANDIDATES)) for key in weightings}
        for w, channel_map in zip(weights, maps, strict=True):
            mapping = np.arange(w.shape[1]) if channel_map is None else channel_map.astype(np.int64)
            g = group_size if w.shape[1] % group_size == 0 else w.shape[1]
            for key, weighting in weightings.items():
                # measured moments are per input column; priors per channel
                columns_weights = weighting if len(weighting) == w.shape[1] else weighting[mapping]
                totals[key] += rtn_output_errors(
                    w.astype(np.float32), mapping, candidates, np.asarray(columns_weights, np.float32), g, sym
                )
        scores = {name: {key: float(totals[key][i]) for key in weightings} for i, name in enumerate(CANDIDATES)}
        rows.append({"group": group.name, "kind": group.kind.value, "scores": scores})
        plan.equalize(group, cs["sinkhorn"])  # later groups see the library's order of planned factors
    return summarise(rows)


def random_token_plan(ir_file: Path, model: ov.Model, group_size: int, symmetric: bool) -> EqualizationPlan:
    """
    The method `rtauto` (`benchmarks.methods`): per group in the library's order, the candidate (Sinkhorn, power,
    none) of least RTN output error weighted by the input's second moments on 4 windows of BOS and 127 random
    token ids (`random_windows`), measured once on the model as given.
    """
    groups = find_scale_groups(model)
    moments = input_second_moments(ov.Core().read_model(ir_file), groups, random_windows(ir_file, 4, 128))
    plan = EqualizationPlan()
    for group in groups:
        weights, maps = [], []
        for consumer in group.consumers:
            value = plan.apply(consumer.node.get_friendly_name(), consumer.node.get_data())
            weights.append(np.ascontiguousarray(np.moveaxis(value, consumer.axis, -1), dtype=np.float32))
            maps.append(consumer.channel_map)
        columns = columns_by_channel([Tensor(w) for w in weights], maps, group.num_channels)
        candidates = np.stack([
            np.ones(group.num_channels, np.float32),
            power_scales(columns, 0.5).data,
            sinkhorn_scales(columns, group_size).data,
        ]).astype(np.float32)  # fmt: skip
        errors = np.zeros(len(candidates))
        for w, channel_map in zip(weights, maps, strict=True):
            mapping = np.arange(w.shape[1]) if channel_map is None else channel_map.astype(np.int64)
            g = group_size if w.shape[1] % group_size == 0 else w.shape[1]
            weighting = moments[group.name].astype(np.float32)
            errors += rtn_output_errors(w, mapping, candidates, weighting, g, symmetric)
        best = int(np.argmin(errors))
        plan.chosen[group.name] = CANDIDATES[best]
        if best:
            plan.equalize(group, candidates[best])
    return plan


def summarise(rows: list[dict]) -> dict:
    summary = {}
    fixed = {c: sum(r["scores"][c]["truth"] for r in rows) for c in CANDIDATES}
    best = sum(min(r["scores"][c]["truth"] for c in CANDIDATES) for r in rows)
    summary["fixed"] = {c: fixed[c] / fixed["none"] for c in CANDIDATES}
    summary["per-group truth"] = best / fixed["none"]
    for criterion in CRITERIA:
        picks = [min(CANDIDATES, key=lambda c: r["scores"][c][criterion]) for r in rows]
        truth = [min(CANDIDATES, key=lambda c: r["scores"][c]["truth"]) for r in rows]
        chosen = sum(r["scores"][p]["truth"] for r, p in zip(rows, picks, strict=True))
        kinds = {}
        for r, p in zip(rows, picks, strict=True):
            total = kinds.setdefault(r["kind"], [0.0, 0.0])
            total[0] += r["scores"][p]["truth"]
            total[1] += r["scores"]["none"]["truth"]
        summary[criterion] = {
            "agreement": float(np.mean([p == t for p, t in zip(picks, truth, strict=True)])),
            "error": chosen / fixed["none"],
            "picks": {c: picks.count(c) for c in CANDIDATES},
            "error by kind": {kind: round(v[0] / v[1], 3) for kind, v in kinds.items()},
        }
    summary["truth picks"] = {c: [min(CANDIDATES, key=lambda x: r["scores"][x]["truth"]) for r in rows].count(c)
                              for c in CANDIDATES}  # fmt: skip
    by_kind = {}
    for r in rows:
        k = by_kind.setdefault(r["kind"], dict.fromkeys(CANDIDATES, 0.0))
        for c in CANDIDATES:
            k[c] += r["scores"][c]["truth"]
    summary["by kind (truth, relative to none)"] = {
        kind: {c: v[c] / v["none"] for c in CANDIDATES} for kind, v in by_kind.items()
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m"])
    parser.add_argument("--configs", nargs="+", default=["int4_asym:64", "int4_asym:128", "int4_sym:128"])
    parser.add_argument("--windows", type=int, default=8, help="windows of 512 tokens of held-out own text")
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    args = parser.parse_args()
    from transformers import AutoTokenizer

    for name in args.models:
        ir_file, _ = reference_ir(name, "delatticed", args.cache_dir)
        text = judged_texts(name, ["own"])[0]
        windows = text_windows(AutoTokenizer.from_pretrained(ir_file.parent), ir_file.parent, text, 512,
                               512 * args.windows, args.cache_dir)  # fmt: skip
        held_out = windows.held_out[: 512 * args.windows]
        held_out = held_out[: len(held_out) // 512 * 512].reshape(-1, 512)
        for config in args.configs:
            mode, group = config.split(":")
            summary = analyse(ir_file, held_out, int(group), mode.endswith("sym") and not mode.endswith("asym"))
            print(f"## {name} {config}")
            for key, value in summary.items():
                print(f"- {key}: {value}")


if __name__ == "__main__":
    main()
