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
- `random-tokens`: the second moments on 4 windows of BOS and 127 uniformly random token ids (no text), as
  `EqualizationMethod.AUTO` measures them (`nncf_hqq.equalization.statistics`).
Per criterion: how often it picks the truly best candidate, and the summed true error of its picks against the
best fixed candidate's and the per-group truth's.
"""

import argparse
from pathlib import Path

import numpy as np
import openvino as ov
from nncf.tensor import Tensor

from benchmarks.judge import judged_texts
from benchmarks.judge import reference_ir
from benchmarks.judge import text_windows
from nncf_hqq.calibration.parameters import bos_token_id
from nncf_hqq.equalization._kernel import rtn_output_errors
from nncf_hqq.equalization.algorithm import EqualizationPlan
from nncf_hqq.equalization.patterns import find_scale_groups
from nncf_hqq.equalization.scales import columns_by_channel
from nncf_hqq.equalization.scales import power_scales
from nncf_hqq.equalization.scales import sinkhorn_scales
from nncf_hqq.equalization.statistics import input_second_moments
from nncf_hqq.equalization.statistics import second_moments
from nncf_hqq.equalization.statistics import token_batches

CANDIDATES = ("none", "power", "sinkhorn")
CRITERIA = ("flat", "norm", "producer", "inverse-0.5", "inverse", "inverse-1.5", "random-tokens")


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


def analyse(ir_file: Path, windows: np.ndarray, group_size: int, sym: bool) -> dict:
    model = ov.Core().read_model(ir_file)
    groups = find_scale_groups(model)
    moments = second_moments(model, groups, token_batches(model, windows))
    random_moments = input_second_moments(model, groups, bos_token_id=bos_token_id(ir_file.parent))
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
