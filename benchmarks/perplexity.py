"""
Perplexity and divergence of compressed LLMs, offline: every method side by side on the same tokens, with paired
statistics.

    python -m benchmarks.perplexity --quick                       # SmolLM2, a few methods, a few minutes
    python -m benchmarks.perplexity --models smollm2-135m qwen2.5-coder-0.5b --max-tokens 65536

Protocol: the corpus is concatenated and tokenized without special tokens; non-overlapping windows of `--window`
tokens (up to `--max-tokens`) are each scored from an empty KV cache. Per window: the mean next-token NLL, the
mean KL divergence from the uncompressed model and the share of positions whose most probable next token is the
uncompressed model's (`benchmarks.llm_eval`). Perplexity = exp(mean window NLL). Every method is scored on the
same windows, so per-window differences from RTN are paired: the table gives their mean and standard error.
Data-aware methods calibrate on a disjoint slice of the corpus (tokens after the evaluated ones; `--text-*`), or,
the `self:` methods, on text the uncompressed model wrote itself (`nncf_hqq.calibration`; `--self-*`).
"""

import argparse
import dataclasses
import json
import math
import re
import shutil
from datetime import date
from pathlib import Path

import nncf
import numpy as np
import openvino as ov

from benchmarks.corpus import corpus_text
from benchmarks.corpus import token_ids
from benchmarks.llm_eval import PRECISIONS
from benchmarks.llm_eval import generation_speed
from benchmarks.llm_eval import load_model
from benchmarks.llm_eval import window_scores
from benchmarks.methods import CONFIGS
from benchmarks.methods import FULL_PRECISION
from benchmarks.methods import compress
from benchmarks.methods import method
from benchmarks.methods import parse_configs
from benchmarks.methods import safe_name
from benchmarks.models import LLMS
from benchmarks.models import llm_source
from benchmarks.stats import format_difference
from benchmarks.stats import paired_difference
from nncf_hqq.calibration.dataset import stateful_llm_dataset
from nncf_hqq.calibration.parameters import SelfCalibrationParameters
from nncf_hqq.calibration.parameters import bos_token_id
from nncf_hqq.calibration.self_written import SelfWrittenData
from nncf_hqq.calibration.self_written import self_written_data
from nncf_hqq.cli.export import full_precision_ir

DEFAULT_METHODS = [FULL_PRECISION, "rtn", "hqq-default", "awq-df+rtn", "awq-df+hqq-default", "hqq-f16zp", "hqq-offset"]
QUICK_METHODS = [FULL_PRECISION, "rtn", "hqq-default", "hqq-f16zp", "hqq-offset"]


def calibration_dataset(ids: np.ndarray, model: ov.Model, num_samples: int = 32, length: int = 128) -> nncf.Dataset:
    """Inputs of the optimum-intel stateful LLM `model`, from consecutive slices of `ids` (`num_samples` x `length`)."""
    return stateful_llm_dataset(ids[: num_samples * length].reshape(num_samples, length), model)


class CalibrationData:
    """The datasets of one model's data-aware methods, by `Method.calibration`; the self-written one made once."""

    def __init__(self, ir_file: Path, text: nncf.Dataset, params: SelfCalibrationParameters):
        self._ir_file, self._params = ir_file, params
        self.text = text
        self._self: SelfWrittenData | None = None

    @property
    def self_written(self) -> SelfWrittenData:
        """The model's own text (written once, kept in the parameters' cache)."""
        if self._self is None:
            params = dataclasses.replace(self._params, bos_token_id=bos_token_id(self._ir_file.parent))
            self._self = self_written_data(ov.Core().read_model(self._ir_file), params)
        return self._self

    @property
    def self_seconds(self) -> float:
        """Time the model took to write its text (in the run that wrote it); NaN if not written."""
        return math.nan if self._self is None else self._self.seconds

    def dataset(self, kind: str) -> nncf.Dataset:
        return self.text if kind == "text" else self.self_written.dataset


def model_size(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("openvino_model.*"))


# ------------------------------------------------------------------------------------------------------- report


def add_paired_statistics(rows: list[dict]) -> None:
    """
    Against the RTN row of the same model and config (of the same mixed-precision ratio for `...-r<ratio>`
    methods): the paired per-window differences of NLL and KL (mean and standard error), the share of RTN's KL
    removed; with the full-precision row, the share of the RTN->full precision perplexity gap closed.
    """
    by_key = {(r["model"], r["mode"], r["group_size"], r["method"]): r for r in rows}
    for r in rows:
        r["kl"] = float(np.mean(r["window_kl"])) if r.get("window_kl") else None
        r["top1"] = float(np.mean(r["window_top1"])) if r.get("window_top1") else None
    for r in rows:
        ratio = re.search(r"-r[0-9.]+$", r["method"])
        rtn = by_key.get((r["model"], r["mode"], r["group_size"], "rtn" + (ratio.group(0) if ratio else "")))
        full = next((x for x in rows if x["model"] == r["model"] and x["method"] == FULL_PRECISION), None)
        if rtn is None:
            continue
        r["nll_minus_rtn"], r["nll_minus_rtn_se"] = paired_difference(r["window_nll"], rtn["window_nll"])
        if r["kl"] is not None and rtn["kl"]:
            r["kl_minus_rtn"], r["kl_minus_rtn_se"] = paired_difference(r["window_kl"], rtn["window_kl"])
            r["kl_cut"] = 1.0 - r["kl"] / rtn["kl"]
        if full is None:
            continue
        gap = rtn["ppl"] - full["ppl"]
        r["gap_closed"] = (rtn["ppl"] - r["ppl"]) / gap if gap > 0 else float("nan")


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | mode | group | method | PPL | gap closed | NLL - RTN (± SE) | KL | KL - RTN (± SE) | KL cut | "
        "top-1 | compress, s | self-text, s | size, MiB | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        nll = format_difference(r["nll_minus_rtn"], r["nll_minus_rtn_se"]) if "nll_minus_rtn" in r else ""
        kl_diff = format_difference(r["kl_minus_rtn"], r["kl_minus_rtn_se"]) if "kl_minus_rtn" in r else ""
        gap = f"{100 * r['gap_closed']:.0f}%" if r.get("gap_closed") is not None else ""
        kl = f"{r['kl']:.4f}" if r.get("kl") is not None else ""
        kl_cut = f"{100 * r['kl_cut']:.1f}%" if r.get("kl_cut") is not None else ""
        top1 = f"{100 * r['top1']:.1f}%" if r.get("top1") is not None else ""
        speed = "" if math.isnan(r["tokens_per_s"]) else f"{r['tokens_per_s']:.1f}"
        writing = r.get("calibration_seconds")
        writing = "" if writing is None or math.isnan(writing) else f"{writing:.1f}"
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['group_size']} | {r['method']} | {r['ppl']:.3f} | {gap} | {nll} | "
            f"{kl} | {kl_diff} | {kl_cut} | {top1} | {r['compress_seconds']:.1f} | {writing} | "
            f"{r['size_bytes'] / 2**20:.1f} | {speed} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Per model: KL divergence from the uncompressed model (left) and perplexity (right) of every row, sorted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 0.8 + 0.28 * len(rows) / max(len(models), 1) + 2),
                             squeeze=False)  # fmt: skip
    for (kl_axis, ppl_axis), model in zip(axes, models, strict=True):
        model_rows = sorted((r for r in rows if r["model"] == model), key=lambda r: r["ppl"])
        labels = [r["method"] if r["method"] == FULL_PRECISION else f"{r['method']} {r['mode']} g{r['group_size']}"
                  for r in model_rows]  # fmt: skip
        positions = range(len(model_rows))
        kl_axis.barh(positions, [r.get("kl") or 0.0 for r in model_rows], color="tab:orange")
        kl_axis.set_yticks(positions, labels, fontsize=7)
        kl_axis.invert_yaxis()
        kl_axis.set_title(f"{model}: KL divergence from the uncompressed model")
        kl_axis.set_xlabel("nats per token (lower is better)")
        kl_axis.grid(alpha=0.3, axis="x")
        ppl_axis.barh(positions, [r["ppl"] for r in model_rows], color="tab:blue")
        ppl_axis.set_yticks(positions, labels, fontsize=7)
        ppl_axis.invert_yaxis()
        ppl_axis.set_xlim(min(r["ppl"] for r in model_rows) * 0.95, max(r["ppl"] for r in model_rows) * 1.02)
        ppl_axis.set_title(f"{model}: perplexity")
        ppl_axis.set_xlabel("perplexity (lower is better)")
        ppl_axis.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def write_report(rows: list[dict], corpus_label: str, notes: dict, out_dir: Path) -> None:
    """Paired statistics, then results.md, results.json and perplexity.png in `out_dir`."""
    add_paired_statistics(rows)
    window = rows[0]["tokens"] // len(rows[0]["window_nll"])
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    precision = rows[0].get("precision", "default")
    settings = "" if precision == "default" else f"; inference settings {precision} (benchmarks.llm_eval.PRECISIONS)"
    header = (
        f"Corpus: {corpus_label}; windows of {window} tokens, {rows[0]['tokens']} tokens per model "
        f"(first model){settings}; written {date.today().isoformat()}.\n\n"
        + "\n".join(f"- {name}: {note}" for name, note in notes.items())
    )
    (out_dir / "results.md").write_text(header + "\n\n" + table + "\n")
    (out_dir / "results.json").write_text(json.dumps({"corpus": corpus_label, "rows": rows}, indent=2))
    plot(rows, out_dir / "perplexity.png")
    print(header + "\n\n" + table)


def merged_rows(results_files: list[Path]) -> tuple[list[dict], str]:
    """The rows of several results.json files (a later file's row replaces an earlier one's), and the corpus."""
    by_key, corpora = {}, set()
    for path in results_files:
        results = json.loads(path.read_text())
        corpora.add(results["corpus"])
        for row in results["rows"]:
            by_key[(row["model"], row["mode"], row["group_size"], row["method"])] = row
    if len(corpora) != 1:
        raise SystemExit(f"--merge: the results are on different corpora: {sorted(corpora)}")
    rows = list(by_key.values())
    for model in {r["model"] for r in rows}:
        windows = {(len(r["window_nll"]), r["tokens"]) for r in rows if r["model"] == model}
        if len(windows) != 1:
            raise SystemExit(f"--merge: the {model} results were measured on different windows: {sorted(windows)}")
    return rows, corpora.pop()


# ---------------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m"], help=f"{list(LLMS)} or paths")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, help="names of benchmarks.methods")
    parser.add_argument("--configs", nargs="+", default=[f"{m}:{g}" for m, g in CONFIGS], help="mode:group")
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=65536)
    parser.add_argument("--wikitext", type=Path, help="local WikiText-2-raw-v1 test text file")
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/perplexity"))
    parser.add_argument(
        "--quick", action="store_true",
        help="SmolLM2, a few methods, int4_asym g64, 4k tokens, generation speed of 16 tokens once",
    )  # fmt: skip
    parser.add_argument("--no-speed", action="store_true", help="skip the generation speed measurement")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="default",
                        help="inference settings of every model scored (benchmarks.llm_eval.PRECISIONS)")  # fmt: skip
    parser.add_argument(
        "--self-sequences", type=int, default=SelfCalibrationParameters.num_sequences,
        help="sequences the model writes for the self: methods",
    )  # fmt: skip
    parser.add_argument(
        "--self-length", type=int, default=SelfCalibrationParameters.length, help="tokens per self-written sequence"
    )
    parser.add_argument("--text-samples", type=int, default=32, help="real-text calibration samples")
    parser.add_argument("--text-length", type=int, default=128, help="tokens per real-text calibration sample")
    parser.add_argument(
        "--score-self-text", action="store_true",
        help="also score every row on the model's own text (KL per sequence, `self_text_window_kl`)",
    )  # fmt: skip
    parser.add_argument("--self-top-p", type=float, default=SelfCalibrationParameters.top_p, help="nucleus mass")
    parser.add_argument("--self-temperature", type=float, default=SelfCalibrationParameters.temperature)
    parser.add_argument(
        "--self-start", choices=["spread", "bos"], default="spread",
        help="self-written text from BOS and a start token across the vocabulary, or from BOS alone",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true", help="keep the rows an interrupted run saved in --out-dir, run the rest"
    )
    parser.add_argument(
        "--merge", nargs="+", type=Path, metavar="RESULTS_JSON",
        help="no run: combine the rows of earlier runs (same corpus, windows and tokens) into one report",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.merge:
        rows, corpus = merged_rows(args.merge)
        write_report(rows, corpus, {}, args.out_dir)
        return
    if args.quick:
        args.methods, args.configs = QUICK_METHODS, ["int4_asym:64"]
        args.window, args.max_tokens = min(args.window, 512), min(args.max_tokens, 4096)
    # new tokens and runs of the speed measurement: --quick measures 16 tokens once, a smoke test of the path
    speed_settings = (16, 1) if args.quick else (64, 3)
    methods = [method(name) for name in args.methods]
    configs = parse_configs(args.configs)
    from rich.progress import track
    from transformers import AutoTokenizer

    text, corpus_label = corpus_text(args.wikitext)
    rows, notes = [], {}
    saved_rows = args.out_dir / "rows.jsonl"  # one line per finished row, so a crash loses one row at most
    if args.resume and saved_rows.exists():
        rows = [json.loads(line) for line in saved_rows.read_text().splitlines()]
    else:
        saved_rows.unlink(missing_ok=True)
    done = {(r["model"], r["mode"], r["group_size"], r["method"]) for r in rows}
    for model_name in args.models:
        source, notes[model_name] = llm_source(model_name, args.cache_dir)
        ir_file = full_precision_ir(source, args.cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(ir_file.parent)
        ids = token_ids(tokenizer, text, args.cache_dir / f"tokens-{ir_file.parent.name}-{len(text)}.npy")
        n_windows = min(args.max_tokens, len(ids)) // args.window
        windows = ids[: n_windows * args.window].reshape(n_windows, args.window)
        self_params = SelfCalibrationParameters(
            num_sequences=args.self_sequences, length=args.self_length, top_p=args.self_top_p,
            temperature=args.self_temperature, spread_start=args.self_start == "spread",
            cache_dir=args.cache_dir / "self-written",
        )  # fmt: skip
        full_precision = ov.Core().read_model(ir_file)  # its input names
        text = calibration_dataset(ids[n_windows * args.window :], full_precision, args.text_samples, args.text_length)
        calibration = CalibrationData(ir_file, text, self_params)
        prompt = ids[:32]
        runs = [(m, FULL_PRECISION, None) if m.name == FULL_PRECISION else (m, *c) for m in methods for c in configs]
        runs = list({(m.name, mode, gs): (m, mode, gs) for m, mode, gs in runs}.values())
        runs = [(m, mode, gs) for m, mode, gs in runs if (model_name, mode, gs, m.name) not in done]
        for run_method, mode, group_size in track(runs, description=f"{model_name}: compress and evaluate"):
            out_dir = args.out_dir / "models" / model_name / safe_name(f"{run_method.name}-{mode}-g{group_size}")
            shutil.rmtree(out_dir, ignore_errors=True)
            dataset = calibration.dataset(run_method.calibration) if run_method.data_aware else None
            seconds = compress(ir_file, run_method, mode, group_size, dataset, out_dir)
            reference_dir = None if run_method.name == FULL_PRECISION else ir_file.parent
            model = load_model(out_dir, args.precision)  # compiled once for the scores and the speed
            scores = window_scores(out_dir, windows, reference_dir, args.precision, model=model)
            if args.score_self_text and reference_dir is not None:  # the same measures on the model's own text
                own = window_scores(
                    out_dir, calibration.self_written.sequences, reference_dir, args.precision, model=model
                )
                scores.update({f"self_text_{key}": value for key, value in own.items()})
            latency, speed = math.nan, math.nan
            if not args.no_speed:
                latency, speed = generation_speed(out_dir, prompt, *speed_settings, model=model)
            del model
            rows.append({
                "model": model_name, "mode": mode, "group_size": group_size, "method": run_method.name,
                "precision": args.precision, "ppl": float(np.exp(np.mean(scores["window_nll"]))), **scores,
                "compress_seconds": seconds, "size_bytes": model_size(out_dir), "first_token_s": latency,
                "tokens_per_s": speed, "tokens": int(windows.size),
                "calibration_seconds": calibration.self_seconds if run_method.calibration == "self" else None,
            })  # fmt: skip
            saved_rows.parent.mkdir(parents=True, exist_ok=True)
            with saved_rows.open("a") as f:
                f.write(json.dumps(rows[-1]) + "\n")
            shutil.rmtree(out_dir, ignore_errors=True)

    write_report(rows, corpus_label, notes, args.out_dir)


if __name__ == "__main__":
    main()
