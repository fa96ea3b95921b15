"""
The fast decision mode: candidate methods against RTN on every registry model, LLMs and genuine-float encoders,
in minutes, so that a default is chosen on several models, not one.

    python -m benchmarks.decide --methods hqq-default awq-df+rtn
    python -m benchmarks.decide --methods hqq-default --configs int4_asym:64 int4_asym:128 int4_sym:128

For each model and config: RTN and every candidate, scored on the same items. LLMs (`--tokens` tokens in windows
of `--window`): mean KL divergence from the uncompressed model per window, and the paired per-window difference
from RTN; encoders (`--passages` passages): mean 1 - cos to the float32 embedding, and the paired per-passage
difference from RTN. The verdict column says whether the candidate is better or worse than RTN by more than
`--se` standard errors of the paired difference ("tie" otherwise).
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

from benchmarks.corpus import corpus_text
from benchmarks.corpus import token_ids
from benchmarks.embedding_fidelity import evaluate_encoder
from benchmarks.llm_eval import PRECISIONS
from benchmarks.llm_eval import window_scores
from benchmarks.methods import compress
from benchmarks.methods import method
from benchmarks.methods import parse_configs
from benchmarks.methods import safe_name
from benchmarks.models import ENCODERS
from benchmarks.models import LLMS
from benchmarks.models import llm_source
from benchmarks.stats import paired_difference
from nncf_hqq.cli.export import full_precision_ir

DEFAULT_CONFIGS = ["int4_asym:64", "int4_asym:128"]


def llm_rows(
    name: str, methods, configs, window: int, tokens: int, cache_dir: Path, precision: str = "default"
) -> list[dict]:
    """Per method and config: per-window KL divergence from the uncompressed model, and NLL."""
    from transformers import AutoTokenizer

    source, _ = llm_source(name, cache_dir)
    ir_file = full_precision_ir(source, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(ir_file.parent)
    text, _ = corpus_text()
    ids = token_ids(tokenizer, text, cache_dir / f"tokens-{ir_file.parent.name}-{len(text)}.npy")
    n_windows = min(tokens, len(ids)) // window
    windows = ids[: n_windows * window].reshape(n_windows, window)
    rows = []
    with tempfile.TemporaryDirectory(prefix="decide-") as work:
        for mode, group_size in configs:
            for run_method in methods:
                key = f"{name}-{mode}-g{group_size}-{run_method.name}-{n_windows}x{window}-{precision}"
                row = _cached_rtn_row(cache_dir, key) if run_method.name == "rtn" else None
                if row is None:
                    out_dir = Path(work) / safe_name(f"{run_method.name}-{mode}-{group_size}")
                    seconds = compress(ir_file, run_method, mode, group_size, None, out_dir)
                    scores = window_scores(out_dir, windows, ir_file.parent, precision)
                    shutil.rmtree(out_dir)
                    row = {"model": name, "mode": mode, "group_size": group_size, "method": run_method.name,
                           "measure": "KL", "items": scores["window_kl"], "compress_seconds": seconds}  # fmt: skip
                    if run_method.name == "rtn":
                        _save_rtn_row(cache_dir, key, row)
                rows.append(row)
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
            rows.append(row)
            done.add((name, mode, group_size, "rtn"))

    def on_row(row: dict) -> None:
        rows.append({"model": name, "mode": row["mode"], "group_size": row["group_size"], "method": row["method"],
                     "measure": "1 - cos", "items": row["passage_error"],
                     "compress_seconds": row["compress_seconds"]})  # fmt: skip
        if row["method"] == "rtn":
            _save_rtn_row(cache_dir, f"{name}-{row['mode']}-g{row['group_size']}-rtn-{passages}p", rows[-1])

    evaluate_encoder(name, methods, configs, passages, cache_dir, done, on_row)
    return rows


def verdicts(rows: list[dict], threshold: float) -> list[dict]:
    """Adds to every candidate row its mean, the paired difference from RTN and a verdict."""
    rtn = {(r["model"], r["mode"], r["group_size"]): r for r in rows if r["method"] == "rtn"}
    for r in rows:
        base = rtn[(r["model"], r["mode"], r["group_size"])]
        r["mean"] = float(np.mean(r["items"]))
        r["minus_rtn"], r["minus_rtn_se"] = paired_difference(r["items"], base["items"])
        r["cut"] = 1.0 - r["mean"] / float(np.mean(base["items"]))
        if r["method"] == "rtn":
            r["verdict"] = ""
        elif r["minus_rtn"] < -threshold * r["minus_rtn_se"]:
            r["verdict"] = "better"
        elif r["minus_rtn"] > threshold * r["minus_rtn_se"]:
            r["verdict"] = "WORSE"
        else:
            r["verdict"] = "tie"
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| model | mode | group | method | measure | mean | - RTN (± SE) | cut vs RTN | verdict | compress, s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['group_size']} | {r['method']} | {r['measure']} | {r['mean']:.5f} | "
            f"{r['minus_rtn']:+.5f} ± {r['minus_rtn_se']:.5f} | {100 * r['cut']:.1f}% | {r['verdict']} | "
            f"{r['compress_seconds']:.1f} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    lines = []
    for name in dict.fromkeys(r["method"] for r in rows if r["method"] != "rtn"):
        mine = [r for r in rows if r["method"] == name]
        counts = {v: sum(r["verdict"] == v for r in mine) for v in ("better", "tie", "WORSE")}
        cuts = ", ".join(f"{r['model']} g{r['group_size']} {100 * r['cut']:+.1f}%" for r in mine)
        lines.append(f"{name}: better on {counts['better']}, tie on {counts['tie']}, WORSE on {counts['WORSE']} of "
                     f"{len(mine)}; cut vs RTN: {cuts}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", required=True, help="candidate names of benchmarks.methods")
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="mode:group")
    parser.add_argument("--llms", nargs="*", default=list(LLMS))
    parser.add_argument("--encoders", nargs="*", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--passages", type=int, default=128)
    parser.add_argument("--precision", choices=list(PRECISIONS), default="default", help="LLM inference settings")
    parser.add_argument("--se", type=float, default=1.0, help="verdict threshold, in standard errors")
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    nncf.set_log_level(logging.WARNING)  # no statistics tables per compression
    methods = [method("rtn")] + [method(name) for name in args.methods if name != "rtn"]
    configs = parse_configs(args.configs)
    rows = []
    for name in args.llms:
        rows += llm_rows(name, methods, configs, args.window, args.tokens, args.cache_dir, args.precision)
    for name in args.encoders:
        rows += encoder_rows(name, methods, configs, args.passages, args.cache_dir)
    rows = verdicts(rows, args.se)
    print("\n" + table(rows) + "\n\n" + summary(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
