"""
The fast decision mode: candidate methods against RTN on every registry model, LLMs and genuine-float encoders,
in minutes, so that a default is chosen on several models, not one.

    python -m benchmarks.decide --methods hqq-default awq-df+rtn
    python -m benchmarks.decide --methods hqq-default --configs int4_asym:64 int4_asym:128 int4_sym:128

For each model and config: RTN and every candidate, scored on the same items. LLMs (`benchmarks.judge`): on each
reference (`--references`: the model as exported, and its de-latticed copy) and text (`--texts`: the model's own
domain and prose), `--tokens` tokens in windows of `--window` spread over the text: the mean KL divergence from the
reference per window, and the NLL; encoders (`--passages` passages): mean 1 - cos to the float32 embedding. Every
measure is compared with RTN's by the paired per-item difference; a verdict says whether the candidate is better
or worse than RTN by more than `--se` standard errors ("tie" otherwise), in KL (or 1 - cos) on every text and in
NLL on the model's own domain. The floor (`--floor-se`, 2 by default) is judged on the stand-ins for the float
models users compress: the encoders' genuine float32 weights and the LLMs' de-latticed references; a candidate
holds it where it is nowhere worse than RTN beyond that many standard errors in KL, nor in NLL on the model's own
domain.
"""

import argparse
import importlib.metadata
import json
import logging
import shutil
import tempfile
from pathlib import Path

import nncf
import numpy as np

from benchmarks.embedding_fidelity import evaluate_encoder
from benchmarks.judge import OWN
from benchmarks.judge import REFERENCES
from benchmarks.judge import domain
from benchmarks.judge import judged_texts
from benchmarks.judge import reference_ir
from benchmarks.judge import text_windows
from benchmarks.llm_eval import PRECISIONS
from benchmarks.llm_eval import ReferenceLogProbs
from benchmarks.llm_eval import exit_cleanly_on_sigterm
from benchmarks.llm_eval import load_model
from benchmarks.llm_eval import model_log_probs
from benchmarks.llm_eval import window_scores
from benchmarks.methods import compress
from benchmarks.methods import method
from benchmarks.methods import parse_configs
from benchmarks.methods import safe_name
from benchmarks.models import ENCODERS
from benchmarks.models import LLMS
from benchmarks.stats import paired_difference

DEFAULT_CONFIGS = ["int4_asym:64", "int4_asym:128"]
FLOOR_REFERENCES = ("delatticed", "float32")  # the references that stand for float models users compress


def llm_rows(name: str, methods, configs, args) -> list[dict]:
    """Per reference, text, method and config: per-window KL divergence from the reference, and NLL."""
    from transformers import AutoTokenizer

    rows = []
    for reference in args.references:
        ir_file, _ = reference_ir(name, reference, args.cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(ir_file.parent)
        texts = [
            text_windows(tokenizer, ir_file.parent, t, args.window, args.tokens, args.cache_dir)
            for t in judged_texts(name, args.texts)
        ]
        with tempfile.TemporaryDirectory(prefix="decide-", dir=args.cache_dir) as work:
            references = {t.name: ReferenceLogProbs(ir_file.parent, Path(work) / t.name, args.precision) for t in texts}
            for mode, group_size in configs:
                for run_method in methods:
                    keys = {
                        t.name: f"{name}-{reference}-{t.name}-{mode}-g{group_size}-{run_method.name}-"
                        f"{len(t.windows)}x{args.window}-{args.precision}"
                        for t in texts
                    }
                    cached = [_cached_rtn_row(args.cache_dir, k) for k in keys.values()]
                    if run_method.name == "rtn" and all(row is not None for row in cached):
                        rows += cached
                        continue
                    out_dir = Path(work) / safe_name(f"{run_method.name}-{mode}-{group_size}")
                    seconds = compress(ir_file, run_method, mode, group_size, None, out_dir)
                    model = load_model(out_dir, args.precision)
                    for t in texts:
                        scores = window_scores(model_log_probs(model), t.windows, references[t.name])
                        row = {"model": name, "reference": reference, "text": t.name, "mode": mode,
                               "group_size": group_size, "method": run_method.name, "measure": "KL",
                               "items": scores["window_kl"], "nll_items": scores["window_nll"],
                               "own_domain": t.name == domain(name), "compress_seconds": seconds}  # fmt: skip
                        if run_method.name == "rtn":
                            _save_rtn_row(args.cache_dir, keys[t.name], row)
                        rows.append(row)
                    del model
                    shutil.rmtree(out_dir)
    return rows


def _rtn_cache_file(cache_dir: Path, key: str) -> Path:
    """RTN's rows do not change between candidates: cached per model, config, items and package versions."""
    versions = "-".join(importlib.metadata.version(p) for p in ("nncf", "openvino"))
    return cache_dir / "decide" / f"{key}-{versions}.json"


def _cached_rtn_row(cache_dir: Path, key: str) -> dict | None:
    path = _rtn_cache_file(cache_dir, key)
    return json.loads(path.read_text()) if path.exists() else None


def _save_rtn_row(cache_dir: Path, key: str, row: dict) -> None:
    path = _rtn_cache_file(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row))


def encoder_rows(name: str, methods, configs, passages: int, cache_dir: Path) -> list[dict]:
    """Per method and config: per-passage 1 - cos to the float32 model's embedding."""
    rows, done = [], set()
    for mode, group_size in configs:
        row = _cached_rtn_row(cache_dir, f"{name}-{mode}-g{group_size}-rtn-{passages}p")
        if row is not None:
            rows.append({"reference": "float32", "text": "passages", **row})
            done.add((name, mode, group_size, "rtn"))

    def on_row(row: dict) -> None:
        rows.append({"model": name, "reference": "float32", "text": "passages", "mode": row["mode"],
                     "group_size": row["group_size"], "method": row["method"], "measure": "1 - cos",
                     "items": row["passage_error"], "compress_seconds": row["compress_seconds"]})  # fmt: skip
        if row["method"] == "rtn":
            _save_rtn_row(cache_dir, f"{name}-{row['mode']}-g{row['group_size']}-rtn-{passages}p", rows[-1])

    evaluate_encoder(name, methods, configs, passages, cache_dir, done, on_row)
    return rows


def _verdict(difference: float, se: float, threshold: float) -> str:
    if difference < -threshold * se:
        return "better"
    if difference > threshold * se:
        return "WORSE"
    return "tie"


def verdicts(rows: list[dict], threshold: float, floor_threshold: float = 2.0) -> list[dict]:
    """
    Adds to every candidate row its mean, the paired difference from RTN and a verdict at `threshold` SE, in the
    row's measure and (own-domain LLM rows) in NLL; and whether it holds the floor (`floor_threshold` SE).
    """
    key = lambda r: (r["model"], r.get("reference"), r.get("text"), r["mode"], r["group_size"])
    rtn = {key(r): r for r in rows if r["method"] == "rtn"}
    for r in rows:
        base = rtn[key(r)]
        r["mean"] = float(np.mean(r["items"]))
        r["minus_rtn"], r["minus_rtn_se"] = paired_difference(r["items"], base["items"])
        r["cut"] = 1.0 - r["mean"] / float(np.mean(base["items"]))
        r["verdict"] = "" if r["method"] == "rtn" else _verdict(r["minus_rtn"], r["minus_rtn_se"], threshold)
        worse = [r["minus_rtn"] > floor_threshold * r["minus_rtn_se"]]
        if r.get("own_domain"):
            r["nll_minus_rtn"], r["nll_minus_rtn_se"] = paired_difference(r["nll_items"], base["nll_items"])
            r["nll_verdict"] = (
                "" if r["method"] == "rtn" else _verdict(r["nll_minus_rtn"], r["nll_minus_rtn_se"], threshold)
            )
            worse.append(r["nll_minus_rtn"] > floor_threshold * r["nll_minus_rtn_se"])
        r["on_floor"] = r.get("reference") in FLOOR_REFERENCES
        r["floor"] = "" if r["method"] == "rtn" or not r["on_floor"] else ("FAILS" if any(worse) else "holds")
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| model | reference | text | mode | group | method | measure | mean | - RTN (± SE) | cut vs RTN | verdict | "
        "NLL - RTN (± SE) | NLL verdict | floor | compress, s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        nll = f"{r['nll_minus_rtn']:+.5f} ± {r['nll_minus_rtn_se']:.5f}" if "nll_minus_rtn" in r else ""
        lines.append(
            f"| {r['model']} | {r.get('reference', '')} | {r.get('text', '')} | {r['mode']} | {r['group_size']} | "
            f"{r['method']} | {r['measure']} | {r['mean']:.5f} | {r['minus_rtn']:+.5f} ± {r['minus_rtn_se']:.5f} | "
            f"{100 * r['cut']:.1f}% | {r['verdict']} | {nll} | {r.get('nll_verdict', '')} | {r.get('floor', '')} | "
            f"{r['compress_seconds']:.1f} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    lines = []
    for name in dict.fromkeys(r["method"] for r in rows if r["method"] != "rtn"):
        mine = [r for r in rows if r["method"] == name]
        counts = {v: sum(r["verdict"] == v for r in mine) for v in ("better", "tie", "WORSE")}
        floor = [r for r in mine if r["on_floor"]]
        fails = [f"{r['model']} {r['text']} {r['mode']} g{r['group_size']}" for r in floor if r["floor"] == "FAILS"]
        cuts = ", ".join(
            f"{r['model']} {r.get('reference', '')} {r.get('text', '')} {r['mode']} g{r['group_size']} "
            f"{100 * r['cut']:+.1f}%"
            for r in mine
        )
        lines.append(
            f"{name}: better on {counts['better']}, tie on {counts['tie']}, WORSE on {counts['WORSE']} of {len(mine)} "
            f"(KL / 1 - cos); floor holds on {len(floor) - len(fails)} of {len(floor)}"
            + (f", fails on: {'; '.join(fails)}" if fails else "")
            + f"; cut vs RTN: {cuts}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", required=True, help="candidate names of benchmarks.methods")
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="mode:group")
    parser.add_argument("--llms", nargs="*", default=list(LLMS))
    parser.add_argument("--references", nargs="+", default=list(REFERENCES), choices=REFERENCES)
    parser.add_argument("--texts", nargs="+", default=[OWN, "prose"], choices=[OWN, "prose", "code"])
    parser.add_argument("--encoders", nargs="*", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=8192, help="tokens scored per text")
    parser.add_argument("--passages", type=int, default=128)
    parser.add_argument("--precision", choices=list(PRECISIONS), default="default", help="LLM inference settings")
    parser.add_argument("--se", type=float, default=1.0, help="verdict threshold, in standard errors")
    parser.add_argument("--floor-se", type=float, default=2.0, help="floor threshold, in standard errors")
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    nncf.set_log_level(logging.WARNING)  # no statistics tables per compression
    exit_cleanly_on_sigterm()
    methods = [method("rtn")] + [method(name) for name in args.methods if name != "rtn"]
    configs = parse_configs(args.configs)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.llms:
        rows += llm_rows(name, methods, configs, args)
    for name in args.encoders:
        rows += encoder_rows(name, methods, configs, args.passages, args.cache_dir)
    rows = verdicts(rows, args.se, args.floor_se)
    print("\n" + table(rows) + "\n\n" + summary(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
