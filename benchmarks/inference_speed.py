"""
Inference speed of the zero point storages (RTN, HQQ u4, HQQ f16 zero point, HQQ offset), measured side by side.

    python -m benchmarks.inference_speed --rounds 5

1. MatMul stacks: `--layers` chained MatMuls of one weight shape, compiled for the CPU with default settings
   (dynamic activation quantization on where the plugin applies it), at batch 1 for one token (decode) and for a
   prompt of `--prompt` tokens (prefill). Latency of one inference.
2. LLMs (`--models`, default the bundled SmolLM2-135M-Instruct): first-token latency for a `--prompt`-token
   prompt and tokens/s of `--new-tokens` greedy steps, through optimum-intel.

INT4_ASYM, with each group size of `--group-sizes` (default 64).

Every measurement alternates the methods, `--rounds` times; printed are medians and the ratio to RTN's.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
from openvino import opset13 as opset

from benchmarks.llm_eval import generation_run
from benchmarks.methods import compress
from benchmarks.methods import method
from benchmarks.models import llm_source
from nncf_hqq.cli.export import full_precision_ir

STORAGE_METHODS = ("rtn", "hqq-default", "hqq-f16zp", "hqq-offset")
SHAPES = {"2048x2048": (2048, 2048), "11008x4096": (11008, 4096)}  # [out, in] of the first layer


def matmul_stack(shape: tuple[int, int], layers: int, seed: int = 0) -> ov.Model:
    """`layers` chained MatMuls y = x W^T with heavy-tailed f16 weights [out, in]; a dynamic number of tokens."""
    rng = np.random.default_rng(seed)
    out_features, in_features = shape
    x = opset.parameter([1, -1, in_features], ov.Type.f32, name="x")
    h = x
    for i in range(layers):
        fan_in = in_features if i % 2 == 0 else out_features
        fan_out = out_features if i % 2 == 0 else in_features
        weight = (rng.standard_t(3, size=(fan_out, fan_in)) * 0.02).astype(np.float16)
        h = opset.matmul(h, opset.convert(opset.constant(weight, name=f"layer{i}"), ov.Type.f32), False, True)
    return ov.Model([opset.result(h)], [x], "stack")


def matmul_latencies(
    shape: tuple[int, int], layers: int, group_size: int, prompt: int, rounds: int, work_dir: Path
) -> list[dict]:
    """Median latency of one inference of the compressed stack, per method and number of tokens."""
    shape_name = "x".join(map(str, shape))
    ir = work_dir / f"stack-{shape_name}" / "fp16" / "openvino_model.xml"
    ir.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(matmul_stack(shape, layers), ir, compress_to_fp16=False)
    compiled = {}
    for name in STORAGE_METHODS:
        out_dir = work_dir / f"stack-{shape_name}" / f"{name}-g{group_size}"
        compress(ir, method(name), "int4_asym", group_size, None, out_dir)
        compiled[name] = ov.Core().compile_model(out_dir / "openvino_model.xml", "CPU")
    rows = []
    for tokens in (1, prompt):
        x = np.random.default_rng(1).standard_normal((1, tokens, shape[1])).astype(np.float32)
        repeats = max(3, int(200 / tokens))
        times = {name: [] for name in STORAGE_METHODS}
        for name in STORAGE_METHODS:  # warm-up
            compiled[name]([x])
        for _ in range(rounds):
            for name in STORAGE_METHODS:
                start = time.perf_counter()
                for _ in range(repeats):
                    compiled[name]([x])
                times[name].append((time.perf_counter() - start) / repeats)
        for name in STORAGE_METHODS:
            rows.append({
                "model": f"stack {shape_name} x{layers}", "group_size": group_size, "tokens": tokens, "method": name,
                "latency_ms": 1000 * float(np.median(times[name])),
            })  # fmt: skip
    return rows


def llm_speeds(
    model_name: str, group_size: int, prompt: int, new_tokens: int, rounds: int, cache_dir: Path, work_dir: Path
) -> list[dict]:
    """Median first-token latency and tokens/s of the LLM compressed with each method."""
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    source, _ = llm_source(model_name, cache_dir)
    ir_file = full_precision_ir(source, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(ir_file.parent)
    text = "The history of the city begins in the Roman period, when a small settlement grew along the river. " * 40
    prompt_ids = np.asarray(tokenizer(text, add_special_tokens=False).input_ids[:prompt], dtype=np.int64)
    models = {}
    for name in STORAGE_METHODS:
        out_dir = work_dir / model_name / f"{name}-g{group_size}"
        compress(ir_file, method(name), "int4_asym", group_size, None, out_dir)
        models[name] = OVModelForCausalLM.from_pretrained(out_dir, compile=True)
        generation_run(models[name], prompt_ids, 4)  # warm-up
    first = {name: [] for name in STORAGE_METHODS}
    speed = {name: [] for name in STORAGE_METHODS}
    for _ in range(rounds):
        for name in STORAGE_METHODS:
            latency, tokens_per_s = generation_run(models[name], prompt_ids, new_tokens)
            first[name].append(latency)
            speed[name].append(tokens_per_s)
    return [
        {
            "model": model_name, "group_size": group_size, "tokens": prompt, "method": name,
            "first_token_ms": 1000 * float(np.median(first[name])), "tokens_per_s": float(np.median(speed[name])),
        }
        for name in STORAGE_METHODS
    ]  # fmt: skip


def with_ratios(rows: list[dict], key: str) -> list[dict]:
    """Adds `<key>_vs_rtn`: the row's value over the RTN row's of the same model, group size and number of tokens."""
    rtn = {(r["model"], r["group_size"], r["tokens"]): r[key] for r in rows if r["method"] == "rtn"}
    return [{**r, f"{key}_vs_rtn": r[key] / rtn[(r["model"], r["group_size"], r["tokens"])]} for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--group-sizes", nargs="+", type=int, default=[64])
    parser.add_argument("--models", nargs="*", default=["smollm2-135m"], help="registry names or paths")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/inference_speed"))
    args = parser.parse_args(argv)
    nncf.set_log_level(40)
    work_dir = args.out_dir / "models"
    lines = [
        f"Median of {args.rounds} alternating rounds; ratio = value / RTN's (latency: lower is better; tokens/s: "
        "higher is better). INT4_ASYM, CPU plugin defaults.",
        "",
        "| model | group | tokens | method | latency, ms | vs RTN |",
        "|---|---|---|---|---|---|",
    ]
    matmul_rows = []
    for shape_name in args.shapes:
        for g in args.group_sizes:
            matmul_rows += matmul_latencies(SHAPES[shape_name], args.layers, g, args.prompt, args.rounds, work_dir)
    matmul_rows = with_ratios(matmul_rows, "latency_ms")
    for r in matmul_rows:
        lines.append(f"| {r['model']} | {r['group_size']} | {r['tokens']} | {r['method']} | {r['latency_ms']:.2f} | "
                     f"{r['latency_ms_vs_rtn']:.2f}x |")  # fmt: skip
    llm_rows = []
    for model_name in args.models:
        for g in args.group_sizes:
            llm_rows += llm_speeds(model_name, g, args.prompt, args.new_tokens, args.rounds, args.cache_dir, work_dir)
    llm_rows = with_ratios(with_ratios(llm_rows, "first_token_ms"), "tokens_per_s")
    if llm_rows:
        lines += ["", "| model | group | prompt | method | first token, ms | vs RTN | tokens/s | vs RTN |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in llm_rows:
        first, first_ratio = r["first_token_ms"], r["first_token_ms_vs_rtn"]
        speed, speed_ratio = r["tokens_per_s"], r["tokens_per_s_vs_rtn"]
        lines.append(f"| {r['model']} | {r['group_size']} | {r['tokens']} | {r['method']} | {first:.1f} | "
                     f"{first_ratio:.2f}x | {speed:.1f} | {speed_ratio:.2f}x |")  # fmt: skip
    shutil.rmtree(work_dir, ignore_errors=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.md").write_text("\n".join(lines) + "\n")
    (args.out_dir / "results.json").write_text(json.dumps({"matmul": matmul_rows, "llm": llm_rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
