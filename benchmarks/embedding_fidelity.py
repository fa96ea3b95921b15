"""
Embedding fidelity of compressed sentence encoders with genuine float32 weights, offline: every method side by
side on the same passages, with paired statistics.

    python -m benchmarks.embedding_fidelity --quick              # all-MiniLM-L6-v2, a few methods, seconds
    python -m benchmarks.embedding_fidelity --models embeddinggemma-300m all-mpnet-base-v2 all-minilm-l6-v2

Protocol: the first `--passages` unique passages of BoolQ validation, each truncated to 256 tokens (with the
model's document prompt), and each passage's first question (with the query prompt). Per passage, the error of a
compressed model is e = 1 - cos(embedding, float32 model's embedding); methods are compared by the paired
per-passage differences e - e_RTN (mean, standard error) and by the share of RTN's mean error they remove
("error cut"). Downstream: question -> passage retrieval among the evaluated passages by cosine similarity,
recall@1 and mean reciprocal rank, with the paired difference of reciprocal ranks from RTN. Inference in f32 on
the CPU (this CPU would use bf16); data-aware methods calibrate on the passages after the evaluated ones.
"""

import argparse
import json
from datetime import date
from pathlib import Path

import nncf
import numpy as np

from benchmarks.corpus import BOOLQ_LABEL
from benchmarks.corpus import boolq_pairs
from benchmarks.encoders import CompiledEncoder
from benchmarks.encoders import Tokenizer
from benchmarks.encoders import encoder_ir
from benchmarks.methods import CONFIGS
from benchmarks.methods import FULL_PRECISION
from benchmarks.methods import compress_model
from benchmarks.methods import method
from benchmarks.methods import parse_configs
from benchmarks.models import ENCODERS
from benchmarks.stats import format_difference
from benchmarks.stats import paired_difference

DEFAULT_METHODS = [FULL_PRECISION, "rtn", "hqq-default", "awq-df+rtn", "awq-df+hqq-default", "hqq-f16zp", "hqq-offset"]
QUICK_METHODS = [FULL_PRECISION, "rtn", "hqq-default"]


def cosine_errors(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """1 - cos(embeddings[i], reference[i]) per row."""
    dots = np.sum(embeddings.astype(np.float64) * reference, axis=1)
    norms = np.linalg.norm(embeddings.astype(np.float64), axis=1) * np.linalg.norm(reference.astype(np.float64), axis=1)
    return 1.0 - dots / np.maximum(norms, 1e-30)


def reciprocal_ranks(queries: np.ndarray, passages: np.ndarray) -> np.ndarray:
    """Per query i, 1 / (rank of passage i among all passages by cosine similarity; ties counted against it)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    p = passages / np.linalg.norm(passages, axis=1, keepdims=True)
    similarity = q @ p.T
    own = np.diag(similarity)
    ranks = np.sum(similarity >= own[:, None], axis=1)  # passages at least as similar, itself included
    return 1.0 / ranks


def calibration_dataset(token_ids: list[np.ndarray], num_samples: int = 32) -> nncf.Dataset:
    """Encoder inputs from passages that are not evaluated."""
    return nncf.Dataset(
        [{"input_ids": ids[None], "attention_mask": np.ones_like(ids)[None]} for ids in token_ids[:num_samples]]
    )


def weights_size(model) -> int:
    """Bytes of the model's constants (weights, scales, zero points)."""
    return sum(op.get_byte_size() for op in model.get_ordered_ops() if op.get_type_name() == "Constant")


def add_paired_statistics(rows: list[dict]) -> None:
    """Against the RTN row of the same model and config: paired differences of error and reciprocal rank."""
    by_key = {(r["model"], r["mode"], r["group_size"], r["method"]): r for r in rows}
    for r in rows:
        r["mean_error"] = float(np.mean(r["passage_error"]))
        r["recall_at_1"] = float(np.mean(np.asarray(r["reciprocal_rank"]) == 1.0))
        r["mrr"] = float(np.mean(r["reciprocal_rank"]))
    for r in rows:
        rtn = by_key.get((r["model"], r["mode"], r["group_size"], "rtn"))
        if rtn is None or r["method"] == FULL_PRECISION:
            continue
        r["error_minus_rtn"], r["error_minus_rtn_se"] = paired_difference(r["passage_error"], rtn["passage_error"])
        r["error_cut"] = 1.0 - r["mean_error"] / rtn["mean_error"] if rtn["mean_error"] > 0 else float("nan")
        r["rr_minus_rtn"], r["rr_minus_rtn_se"] = paired_difference(r["reciprocal_rank"], rtn["reciprocal_rank"])


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | mode | group | method | mean 1 - cos | error - RTN (± SE) | error cut | recall@1 | MRR | "
        "MRR - RTN (± SE) | compress, s | weights, MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = format_difference(r["error_minus_rtn"], r["error_minus_rtn_se"], 5) if "error_minus_rtn" in r else ""
        cut = f"{100 * r['error_cut']:.1f}%" if "error_cut" in r else ""
        rr = format_difference(r["rr_minus_rtn"], r["rr_minus_rtn_se"]) if "rr_minus_rtn" in r else ""
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['group_size']} | {r['method']} | {r['mean_error']:.5f} | {diff} | "
            f"{cut} | {100 * r['recall_at_1']:.1f}% | {r['mrr']:.4f} | {rr} | {r['compress_seconds']:.1f} | "
            f"{r['size_bytes'] / 2**20:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Per model: the mean embedding error of every compressed row, sorted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    compressed = [r for r in rows if r["method"] != FULL_PRECISION]
    per_model = max((sum(r["model"] == m for r in compressed) for m in models), default=1)
    fig, axes = plt.subplots(len(models), 1, figsize=(9, 1.5 + 0.3 * per_model * len(models)), squeeze=False)
    for (axis,), model in zip(axes, models, strict=True):
        model_rows = sorted((r for r in compressed if r["model"] == model), key=lambda r: r["mean_error"])
        labels = [f"{r['method']} {r['mode']} g{r['group_size']}" for r in model_rows]
        axis.barh(range(len(model_rows)), [r["mean_error"] for r in model_rows], color="tab:green")
        axis.set_yticks(range(len(model_rows)), labels, fontsize=7)
        axis.invert_yaxis()
        axis.set_title(f"{model}: mean 1 - cos to the float32 embedding (lower is better)")
        axis.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def write_report(rows: list[dict], label: str, notes: dict, out_dir: Path) -> None:
    add_paired_statistics(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    header = f"{label}; written {date.today().isoformat()}.\n\n" + "\n".join(f"- {n}: {t}" for n, t in notes.items())
    (out_dir / "results.md").write_text(header + "\n\n" + table + "\n")
    (out_dir / "results.json").write_text(json.dumps({"corpus": label, "rows": rows}, indent=2))
    plot(rows, out_dir / "embedding_error.png")
    print(header + "\n\n" + table)


def evaluate_encoder(name: str, methods, configs, passages: int, cache_dir: Path, done: set, on_row) -> str:
    """Compresses the encoder with every method and config not in `done`; calls `on_row(row)` per row."""
    from rich.progress import track

    entry = ENCODERS[name]
    model_dir = entry.locate(cache_dir)
    pairs = boolq_pairs()
    tokenizer = Tokenizer(model_dir)
    documents = tokenizer([entry.document_prompt + p for p, _ in pairs[:passages]])
    queries = tokenizer([entry.query_prompt + q for _, q in pairs[:passages]])
    calibration = calibration_dataset(tokenizer([entry.document_prompt + p for p, _ in pairs[passages:]]))
    ir_file = encoder_ir(name, model_dir, cache_dir, [entry.document_prompt + p for p, _ in pairs[:8]])
    reference_encoder = CompiledEncoder(ir_file)
    reference = reference_encoder.embed(documents, tokenizer.pad_id)
    del reference_encoder
    runs = [(m, FULL_PRECISION, None) if m.name == FULL_PRECISION else (m, *c) for m in methods for c in configs]
    runs = list({(m.name, mode, gs): (m, mode, gs) for m, mode, gs in runs}.values())
    runs = [(m, mode, gs) for m, mode, gs in runs if (name, mode, gs, m.name) not in done]
    for run_method, mode, group_size in track(runs, description=f"{name}: compress and embed"):
        model, seconds = compress_model(ir_file, run_method, mode, group_size, calibration)
        size = weights_size(model)
        encoder = CompiledEncoder(model)
        del model
        embeddings = encoder.embed(documents, tokenizer.pad_id)
        query_embeddings = encoder.embed(queries, tokenizer.pad_id)
        del encoder
        on_row({
            "model": name, "mode": mode, "group_size": group_size, "method": run_method.name,
            "passage_error": cosine_errors(embeddings, reference).tolist(),
            "reciprocal_rank": reciprocal_ranks(query_embeddings, embeddings).tolist(),
            "compress_seconds": seconds, "size_bytes": size, "passages": len(documents),
        })  # fmt: skip
    return entry.notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, help="names of benchmarks.methods")
    parser.add_argument("--configs", nargs="+", default=[f"{m}:{g}" for m, g in CONFIGS], help="mode:group")
    parser.add_argument("--passages", type=int, default=600)
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/embedding_fidelity"))
    parser.add_argument("--quick", action="store_true", help="all-MiniLM-L6-v2, a few methods, int4_asym g64")
    parser.add_argument(
        "--resume", action="store_true", help="keep the rows an interrupted run saved in --out-dir, run the rest"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.methods, args.configs = ["all-minilm-l6-v2"], QUICK_METHODS, ["int4_asym:64"]
        args.passages = min(args.passages, 64)
    methods = [method(name) for name in args.methods]
    saved_rows = args.out_dir / "rows.jsonl"  # one line per finished row
    rows = []
    if args.resume and saved_rows.exists():
        rows = [json.loads(line) for line in saved_rows.read_text().splitlines()]
    else:
        saved_rows.unlink(missing_ok=True)
    done = {(r["model"], r["mode"], r["group_size"], r["method"]) for r in rows}

    def on_row(row: dict) -> None:
        rows.append(row)
        saved_rows.parent.mkdir(parents=True, exist_ok=True)
        with saved_rows.open("a") as f:
            f.write(json.dumps(row) + "\n")

    notes = {}
    for name in args.models:
        notes[name] = evaluate_encoder(
            name, methods, parse_configs(args.configs), args.passages, args.cache_dir, done, on_row
        )
    label = f"{BOOLQ_LABEL}: the first {args.passages} unique passages (256 tokens at most) and their first questions"
    write_report(rows, label, notes, args.out_dir)


if __name__ == "__main__":
    main()
