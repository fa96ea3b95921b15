"""
Perplexity and fidelity of compressed LLMs, offline: every method side by side on the same tokens, with paired
statistics, on each model's own text and on prose, against the model as exported or its de-latticed copy.

    python -m benchmarks.perplexity --quick                       # SmolLM2, a few methods, a few minutes
    python -m benchmarks.perplexity --models qwen2.5-coder-0.5b --references original delatticed \\
        --methods float rtn hqq-default --configs int4_asym:64 int4_asym:128

Protocol (`benchmarks.judge`): per model, the reference is its full-precision export (`original`) or the copy with
every weight dithered inside its GGUF lattice step (`delatticed`, `benchmarks.delattice`); every method compresses
that reference. The texts are the model's own domain (code for the code models: the CPython standard library's
source) and prose (BoolQ's Wikipedia passages): each is tokenized without special tokens, and `--max-tokens //
--window` windows are spread evenly over its first nine tenths (`--windows consecutive`: the first `--max-tokens`
tokens), each the model's BOS token and `--window` - 1 tokens of text, scored from an empty KV cache. Per window
(`benchmarks.llm_eval`): the mean next-token NLL, the mean KL divergence from the reference, the share of
positions whose most probable next token is the reference's, the mean entropy of the next-token distributions and
the NLL at a few softmax temperatures. Perplexity = exp(mean window NLL). Every method is scored on the same
windows, so per-window differences from RTN are paired: the table gives their mean and standard error. Data-aware
methods calibrate on the held-out tokens of the model's own text (`--text-*`), or, the `self:` methods, on text the
reference wrote itself (`nncf_hqq.calibration`; `--self-*`), or, the `auto:` methods, on the text optimum-intel's
`dataset="auto"` has the reference write (`benchmarks.auto_text`).
"""

import argparse
import dataclasses
import json
import math
import re
import shutil
import tempfile
from datetime import date
from pathlib import Path

import nncf
import numpy as np
import openvino as ov

from benchmarks.auto_text import auto_dataset
from benchmarks.auto_text import auto_texts
from benchmarks.judge import OWN
from benchmarks.judge import REFERENCES
from benchmarks.judge import WINDOW_LAYOUTS
from benchmarks.judge import judged_texts
from benchmarks.judge import reference_ir
from benchmarks.judge import text_windows
from benchmarks.llm_eval import PRECISIONS
from benchmarks.llm_eval import TEMPERATURES
from benchmarks.llm_eval import ReferenceLogProbs
from benchmarks.llm_eval import exit_cleanly_on_sigterm
from benchmarks.llm_eval import generation_speed
from benchmarks.llm_eval import load_model
from benchmarks.llm_eval import model_log_probs
from benchmarks.llm_eval import window_scores
from benchmarks.methods import CONFIGS
from benchmarks.methods import FULL_PRECISION
from benchmarks.methods import Method
from benchmarks.methods import compress
from benchmarks.methods import method
from benchmarks.methods import parse_configs
from benchmarks.methods import safe_name
from benchmarks.models import LLMS
from benchmarks.stats import format_difference
from benchmarks.stats import paired_difference
from nncf_hqq.calibration.dataset import stateful_llm_dataset
from nncf_hqq.calibration.parameters import SelfCalibrationParameters
from nncf_hqq.calibration.parameters import bos_token_id
from nncf_hqq.calibration.self_written import SelfWrittenData
from nncf_hqq.calibration.self_written import self_written_data
from nncf_hqq.equalization.statistics import random_token_batches

DEFAULT_METHODS = [FULL_PRECISION, "rtn", "hqq-default", "awq-df+rtn", "awq-df+hqq-default", "hqq-f16zp", "hqq-offset"]
QUICK_METHODS = [FULL_PRECISION, "rtn", "hqq-default"]
ROW_KEY = ("model", "reference", "text", "mode", "group_size", "method")


def calibration_dataset(ids: np.ndarray, model: ov.Model, num_samples: int = 32, length: int = 128) -> nncf.Dataset:
    """Inputs of the optimum-intel stateful LLM `model`, from consecutive slices of `ids` (`num_samples` x `length`)."""
    return stateful_llm_dataset(ids[: num_samples * length].reshape(num_samples, length), model)


class CalibrationData:
    """
    The datasets of one model's data-aware methods, by `Method.calibration`; the self-written one and optimum-intel's
    dataset="auto" one made once.
    """

    def __init__(self, ir_file: Path, text: nncf.Dataset, params: SelfCalibrationParameters, cache_dir: Path):
        self._ir_file, self._params, self._cache_dir = ir_file, params, cache_dir
        self.text = text
        self._self: dict[tuple, SelfWrittenData] = {}
        self._auto: tuple[nncf.Dataset, float] | None = None

    def self_written(self, changes: tuple[tuple[str, object], ...] = ()) -> SelfWrittenData:
        """The model's own text, with these `SelfCalibrationParameters` changes (written once, kept in the cache)."""
        if changes not in self._self:
            params = dataclasses.replace(self._params, bos_token_id=bos_token_id(self._ir_file.parent), **dict(changes))
            self._self[changes] = self_written_data(ov.Core().read_model(self._ir_file), params)
        return self._self[changes]

    @property
    def auto(self) -> tuple[nncf.Dataset, float]:
        """optimum-intel's dataset="auto" text and the seconds it took to write (`benchmarks.auto_text`)."""
        if self._auto is None:
            texts, seconds = auto_texts(self._ir_file.parent, self._cache_dir)
            self._auto = auto_dataset(texts, self._ir_file.parent, ov.Core().read_model(self._ir_file)), seconds
        return self._auto

    def seconds(self, run_method: Method) -> float | None:
        """Time the model took to write the method's text (in the run that wrote it); None for real text."""
        if run_method.calibration == "self":
            return self.self_written(run_method.self_params).seconds
        return self.auto[1] if run_method.calibration == "auto" else None

    def dataset(self, run_method: Method) -> nncf.Dataset:
        if run_method.calibration == "self":
            return self.self_written(run_method.self_params).dataset
        if run_method.calibration.startswith("random"):  # no text: BOS and random token ids, "random<N>": N x 128
            windows = int(run_method.calibration.removeprefix("random") or 32)
            model = ov.Core().read_model(self._ir_file)
            bos = bos_token_id(self._ir_file.parent)
            return nncf.Dataset(list(random_token_batches(model, windows, 128, 0, bos)))
        return self.auto[0] if run_method.calibration == "auto" else self.text


def model_size(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("openvino_model.*"))


def row_key(row: dict) -> tuple:
    """(model, reference, text, mode, group size, method); rows of older runs are on the original reference, prose."""
    defaults = {"reference": "original", "text": "prose"}
    return tuple(row.get(k, defaults.get(k)) for k in ROW_KEY)


# ------------------------------------------------------------------------------------------------------- report


def add_paired_statistics(rows: list[dict]) -> None:
    """
    Against the RTN row of the same model, reference, text and config (of the same mixed-precision ratio for
    `...-r<ratio>` methods): the paired per-window differences of NLL and KL (mean and standard error), the share of
    RTN's KL removed; with the full-precision row, the share of the RTN->full precision perplexity gap closed. Per
    row scored at several temperatures (the reference's): the temperature of lowest NLL and the NLL it gains over
    temperature 1 (paired over windows).
    """
    by_key = {row_key(r): r for r in rows}
    full_by_panel = {row_key(r)[:3]: r for r in rows if r["method"] == FULL_PRECISION}
    for r in rows:
        for name in ("kl", "top1", "entropy"):
            values = r.get(f"window_{name}")
            r[name] = float(np.mean(values)) if values else None
        curves = r.get("window_nll_by_temperature")
        if curves:
            curves = np.asarray(curves)  # [windows, temperatures]
            best = int(np.argmin(curves.mean(0)))
            r["best_temperature"] = TEMPERATURES[best]
            at_one = curves[:, TEMPERATURES.index(1.0)]
            r["nll_gain_at_best_temperature"] = paired_difference(at_one, curves[:, best])
    for r in rows:
        model, reference, text, mode, group_size, name = row_key(r)
        ratio = re.search(r"-r[0-9.]+$", name)
        rtn = by_key.get((model, reference, text, mode, group_size, "rtn" + (ratio.group(0) if ratio else "")))
        full = full_by_panel.get((model, reference, text))
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
        "| model | reference | text | mode | group | method | PPL | gap closed | NLL - RTN (± SE) | KL "
        "| KL - RTN (± SE) | KL cut | top-1 | entropy | best T (NLL gain) | compress, s | self-text, s | size, MiB "
        "| tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        model, reference, text, mode, group_size, name = row_key(r)
        nll = format_difference(r["nll_minus_rtn"], r["nll_minus_rtn_se"]) if "nll_minus_rtn" in r else ""
        kl_diff = format_difference(r["kl_minus_rtn"], r["kl_minus_rtn_se"]) if "kl_minus_rtn" in r else ""
        gap = f"{100 * r['gap_closed']:.0f}%" if r.get("gap_closed") is not None else ""
        kl = f"{r['kl']:.4f}" if r.get("kl") is not None else ""
        kl_cut = f"{100 * r['kl_cut']:.1f}%" if r.get("kl_cut") is not None else ""
        top1 = f"{100 * r['top1']:.1f}%" if r.get("top1") is not None else ""
        entropy = f"{r['entropy']:.3f}" if r.get("entropy") is not None else ""
        temperature = ""
        if r.get("best_temperature") is not None:
            gain, gain_se = r["nll_gain_at_best_temperature"]
            temperature = f"{r['best_temperature']:.1f} ({-gain:+.3f} ± {gain_se:.3f})"
        speed = "" if math.isnan(r["tokens_per_s"]) else f"{r['tokens_per_s']:.1f}"
        writing = r.get("calibration_seconds")
        writing = "" if writing is None or math.isnan(writing) else f"{writing:.1f}"
        lines.append(
            f"| {model} | {reference} | {text} | {mode} | {group_size} | {name} | {r['ppl']:.3f} | {gap} | {nll} | "
            f"{kl} | {kl_diff} | {kl_cut} | {top1} | {entropy} | {temperature} | {r['compress_seconds']:.1f} | "
            f"{writing} | {r['size_bytes'] / 2**20:.1f} | {speed} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Per model, reference and text: KL divergence from the reference (left) and perplexity (right), sorted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({row_key(r)[:3] for r in rows})
    per_panel = max(len(rows) / max(len(panels), 1), 1)
    fig, axes = plt.subplots(len(panels), 2, figsize=(13, 0.8 + (0.28 * per_panel + 2) * len(panels)), squeeze=False)
    for (kl_axis, ppl_axis), panel in zip(axes, panels, strict=True):
        panel_rows = sorted((r for r in rows if row_key(r)[:3] == panel), key=lambda r: r["ppl"])
        labels = [r["method"] if r["method"] == FULL_PRECISION else f"{r['method']} {r['mode']} g{r['group_size']}"
                  for r in panel_rows]  # fmt: skip
        positions = range(len(panel_rows))
        title = " / ".join(str(p) for p in panel)
        kl_axis.barh(positions, [r.get("kl") or 0.0 for r in panel_rows], color="tab:orange")
        kl_axis.set_yticks(positions, labels, fontsize=7)
        kl_axis.invert_yaxis()
        kl_axis.set_title(f"{title}: KL divergence from the reference", fontsize=9)
        kl_axis.set_xlabel("nats per token (lower is better)")
        kl_axis.grid(alpha=0.3, axis="x")
        ppl_axis.barh(positions, [r["ppl"] for r in panel_rows], color="tab:blue")
        ppl_axis.set_yticks(positions, labels, fontsize=7)
        ppl_axis.invert_yaxis()
        ppl_axis.set_xlim(min(r["ppl"] for r in panel_rows) * 0.95, max(r["ppl"] for r in panel_rows) * 1.02)
        ppl_axis.set_title(f"{title}: perplexity", fontsize=9)
        ppl_axis.set_xlabel("perplexity (lower is better)")
        ppl_axis.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(rows: list[dict], corpora: dict[str, str], notes: dict, out_dir: Path) -> None:
    """Paired statistics, then results.md, results.json and perplexity.png in `out_dir`."""
    add_paired_statistics(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    precision = rows[0].get("precision", "default")
    settings = "" if precision == "default" else f"; inference settings {precision} (benchmarks.llm_eval.PRECISIONS)"
    windows = sorted({(row_key(r)[2], len(r["window_nll"]), r["tokens"] // len(r["window_nll"])) for r in rows})
    shape = ", ".join(f"{text} {n} x {w}" for text, n, w in windows)
    header = (
        "Texts: " + "; ".join(f"{name}: {label}" for name, label in corpora.items()) + f". Windows (count x tokens): "
        f"{shape}, layout {rows[0].get('layout', 'consecutive')}{settings}; written {date.today().isoformat()}.\n\n"
        + "\n".join(f"- {name}: {note}" for name, note in notes.items())
    )
    (out_dir / "results.md").write_text(header + "\n\n" + table + "\n")
    (out_dir / "results.json").write_text(json.dumps({"corpora": corpora, "rows": rows}, indent=2))
    plot(rows, out_dir / "perplexity.png")
    print(header + "\n\n" + table)


def merged_rows(results_files: list[Path]) -> tuple[list[dict], dict[str, str]]:
    """The rows of several results.json files (a later file's row replaces an earlier one's), and the texts."""
    by_key, corpora = {}, {}
    for path in results_files:
        results = json.loads(path.read_text())
        file_corpora = results.get("corpora") or {"prose": results["corpus"]}
        for name, label in file_corpora.items():
            if corpora.setdefault(name, label) != label:
                raise SystemExit(f"--merge: the {name} results are on different texts: {label} / {corpora[name]}")
        for row in results["rows"]:
            by_key[row_key(row)] = row
    rows = list(by_key.values())
    for panel in {row_key(r)[:3] for r in rows}:
        windows = {(len(r["window_nll"]), r["tokens"]) for r in rows if row_key(r)[:3] == panel}
        if len(windows) != 1:
            raise SystemExit(f"--merge: the {panel} results were measured on different windows: {sorted(windows)}")
    return rows, corpora


# ---------------------------------------------------------------------------------------------------------- main


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m"], help=f"{list(LLMS)} or paths")
    parser.add_argument("--references", nargs="+", default=["original"], choices=REFERENCES)
    parser.add_argument("--delattice-seed", type=int, default=0, help="seed of the de-latticed references")
    parser.add_argument(
        "--texts", nargs="+", default=[OWN, "prose"], choices=[OWN, "prose", "code"],
        help="texts to score on; own: the model's domain (code for the code models)",
    )  # fmt: skip
    parser.add_argument("--windows", choices=WINDOW_LAYOUTS, default="spread", help="window layout in each text")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, help="names of benchmarks.methods")
    parser.add_argument("--configs", nargs="+", default=[f"{m}:{g}" for m, g in CONFIGS], help="mode:group")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=8192, help="tokens scored per text")
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/perplexity"))
    parser.add_argument(
        "--quick", action="store_true",
        help="SmolLM2, a few methods, int4_asym g64, 4k tokens of prose, generation speed of 16 tokens once",
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
        help="also score every row on the model's own written text (KL per sequence, `self_text_window_kl`)",
    )  # fmt: skip
    parser.add_argument("--self-top-p", type=float, default=SelfCalibrationParameters.top_p, help="nucleus mass")
    parser.add_argument("--self-top-k", type=int, default=SelfCalibrationParameters.top_k, help="candidate tokens")
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
        help="no run: combine the rows of earlier runs (same texts, windows and tokens) into one report",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.methods, args.configs, args.texts = QUICK_METHODS, ["int4_asym:64"], ["prose"]
        args.window, args.max_tokens = min(args.window, 512), min(args.max_tokens, 4096)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    exit_cleanly_on_sigterm()
    if args.merge:
        rows, corpora = merged_rows(args.merge)
        write_report(rows, corpora, {}, args.out_dir)
        return
    # new tokens and runs of the speed measurement: --quick measures 16 tokens once, a smoke test of the path
    speed_settings = (16, 1) if args.quick else (64, 3)
    methods = [method(name) for name in args.methods]
    configs = parse_configs(args.configs)
    runs = [(m, FULL_PRECISION, None) if m.name == FULL_PRECISION else (m, *c) for m in methods for c in configs]
    runs = list({(m.name, mode, gs): (m, mode, gs) for m, mode, gs in runs}.values())
    runs.sort(key=lambda run: run[0].name != FULL_PRECISION)  # the reference first: it fills the log-prob files
    from rich.progress import track
    from transformers import AutoTokenizer

    rows, notes, corpora = [], {}, {}
    saved_rows = args.out_dir / "rows.jsonl"  # one line per finished row, so a crash loses one run at most
    if args.resume and saved_rows.exists():
        rows = [json.loads(line) for line in saved_rows.read_text().splitlines()]
    else:
        saved_rows.unlink(missing_ok=True)
    done = {row_key(r) for r in rows}
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    for model_name in args.models:
        for reference in args.references:
            ir_file, notes[f"{model_name} ({reference})"] = reference_ir(
                model_name, reference, args.cache_dir, args.delattice_seed
            )
            tokenizer = AutoTokenizer.from_pretrained(ir_file.parent)
            texts = [
                text_windows(tokenizer, ir_file.parent, name, args.window, args.max_tokens, args.cache_dir,
                             args.windows)
                for name in judged_texts(model_name, args.texts)
            ]  # fmt: skip
            corpora.update({t.name: t.label for t in texts})
            self_params = SelfCalibrationParameters(
                num_sequences=args.self_sequences, length=args.self_length, top_p=args.self_top_p,
                top_k=args.self_top_k, temperature=args.self_temperature, spread_start=args.self_start == "spread",
                cache_dir=args.cache_dir / "self-written",
            )  # fmt: skip
            calibration_text = calibration_dataset(
                texts[0].held_out, ov.Core().read_model(ir_file), args.text_samples, args.text_length
            )
            calibration = CalibrationData(ir_file, calibration_text, self_params, args.cache_dir)
            todo = [
                (m, mode, gs) for m, mode, gs in runs
                if any((model_name, reference, t.name, mode, gs, m.name) not in done for t in texts)
            ]  # fmt: skip
            with tempfile.TemporaryDirectory(prefix="reference-log-probs-", dir=args.cache_dir) as log_prob_dir:
                references = {
                    t.name: ReferenceLogProbs(ir_file.parent, Path(log_prob_dir) / t.name, args.precision)
                    for t in texts
                }
                for run_method, mode, group_size in track(todo, description=f"{model_name} ({reference})"):
                    rows += run_and_score(
                        args, run_method, mode, group_size, ir_file, texts, references, calibration,
                        speed_settings, (model_name, reference),
                    )  # fmt: skip
                    saved_rows.parent.mkdir(parents=True, exist_ok=True)
                    with saved_rows.open("a") as f:
                        f.writelines(json.dumps(r) + "\n" for r in rows[-len(texts) :])
    write_report(rows, corpora, notes, args.out_dir)


def run_and_score(
    args, run_method, mode, group_size, ir_file, texts, references, calibration, speed_settings, names
) -> list[dict]:
    """Compresses the reference with one method and scores it on every text: a row per text."""
    model_name, reference = names
    if run_method.name == FULL_PRECISION:
        model_dir, seconds = ir_file.parent, 0.0
    else:
        model_dir = args.out_dir / "models" / model_name / safe_name(f"{run_method.name}-{mode}-g{group_size}")
        shutil.rmtree(model_dir, ignore_errors=True)
        dataset = calibration.dataset(run_method) if run_method.data_aware else None
        seconds = compress(ir_file, run_method, mode, group_size, dataset, model_dir)
    model = None
    rows = []
    for text in texts:
        if run_method.name == FULL_PRECISION:  # the reference's own log-probabilities (computed once, kept)
            scores = window_scores(references[text.name], text.windows, temperatures=True)
        else:
            model = load_model(model_dir, args.precision) if model is None else model
            scores = window_scores(model_log_probs(model), text.windows, references[text.name])
        rows.append({
            "model": model_name, "reference": reference, "text": text.name, "mode": mode,
            "group_size": group_size, "method": run_method.name, "precision": args.precision,
            "layout": args.windows, "delattice_seed": args.delattice_seed if reference == "delatticed" else None,
            "ppl": float(np.exp(np.mean(scores["window_nll"]))), **scores,
            "compress_seconds": seconds, "size_bytes": model_size(model_dir), "tokens": int(text.windows.size),
            "calibration_seconds": calibration.seconds(run_method) if run_method.data_aware else None,
        })  # fmt: skip
    if args.score_self_text and run_method.name != FULL_PRECISION:  # the same measures on the model's own writing
        own_reference = ReferenceLogProbs(ir_file.parent, references[texts[0].name].directory / "self-written")
        own = window_scores(model_log_probs(model), calibration.self_written().sequences, own_reference)
        rows[0].update({f"self_text_{key}": value for key, value in own.items()})
    latency, speed = math.nan, math.nan
    if not args.no_speed:
        model = load_model(model_dir) if model is None or args.precision != "default" else model
        latency, speed = generation_speed(model_dir, texts[0].windows[0][:32], *speed_settings, model=model)
    for row in rows:
        row.update(first_token_s=latency, tokens_per_s=speed)
    del model
    if run_method.name != FULL_PRECISION:
        shutil.rmtree(model_dir, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
