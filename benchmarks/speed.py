"""
Compression time and peak memory of HQQ vs NNCF RTN, measured side by side in one run.

    python -m benchmarks.speed --runs 3

Models: synthetic f16 layer stacks (2048x2048 and 4096x11008 MatMuls) and the bundled SmolLM2-135M-Instruct
(exported to OpenVINO fp16); on request also `qwen2.5-coder-0.5b`, `qwen2.5-coder-1.5b` and `gemma3-270m`
(benchmarks.models' registry). Each (model, method) compression runs in a fresh process, the methods
alternating, `--runs` times after one warm-up round of the data-free methods (numba compiles the HQQ solver on
its first use after an install and caches it; the warm-up times are printed); the process reads the IR,
compresses it (timed) and reports its peak RSS. A `self:` method compresses with the API's `self_calibration`,
an `auto:` one through optimum-intel's `dataset="auto"` (its time includes loading the model): both write their
calibration text inside the timed call. Printed: median seconds, ms per million weights, time ratio to RTN, peak
RSS and its ratio. `--config` (mode:group), INT4_ASYM g64 by default. Generation speed of the compressed models
is measured by `benchmarks.perplexity` (tokens/s, first token).
"""

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
from openvino import opset13 as opset

from benchmarks.methods import method as benchmark_method
from nncf_hqq.calibration.parameters import SelfCalibrationParameters
from nncf_hqq.calibration.parameters import bos_token_id

DEFAULT_METHODS = ("rtn", "hqq-default", "hqq-f16zp", "hqq-offset")


def synthetic_stack(path: Path, shape: tuple[int, int], layers: int, seed: int = 0, input_name: str = "x") -> Path:
    """
    An IR of `layers` chained MatMuls with heavy-tailed f16 [out, in] weights (cached at `path`); its input named
    `input_name` ("input_ids" makes the command take it for an LLM).
    """
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    out_features, in_features = shape
    x = opset.parameter([1, 1, in_features], ov.Type.f32, name=input_name)
    h = x
    for i in range(layers):
        weight = (rng.standard_t(3, size=(out_features, in_features)) * 0.02).astype(np.float16)
        w = opset.convert(opset.constant(weight, name=f"layer{i}"), ov.Type.f32)
        h = opset.matmul(h, w, False, True)
        if out_features != in_features:  # keep the chain's widths consistent
            back = (rng.standard_t(3, size=(in_features, out_features)) * 0.02).astype(np.float16)
            h = opset.matmul(h, opset.convert(opset.constant(back, name=f"layer{i}_back"), ov.Type.f32), False, True)
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([opset.result(h)], [x]), path, compress_to_fp16=False)
    return path


def child(ir: str, method_name: str, config: str) -> None:
    """Runs in a fresh process: compress `ir` with `method_name` in `config` ("mode:group"), print {seconds,
    peak_rss_mib, num_weights}."""
    from benchmarks.methods import compress_model

    model = ov.Core().read_model(ir)
    num_weights = sum(
        int(np.prod(op.get_output_shape(0)))
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Constant" and op.get_element_type() in (ov.Type.f16, ov.Type.f32)
    )
    del model
    mode, group_size = config.split(":")
    run_method = benchmark_method(method_name)
    if run_method.experiment is not None:
        raise SystemExit(f"{method_name}: the speed benchmark does not time experiments")
    if run_method.calibration == "auto":
        seconds = optimum_auto_seconds(Path(ir), run_method, mode, int(group_size))
    else:
        if run_method.calibration == "self":  # the API's self-calibration: the text is written inside, timed
            params = SelfCalibrationParameters(
                bos_token_id=bos_token_id(Path(ir).parent), **dict(run_method.self_params)
            )
            run_method = dataclasses.replace(
                run_method, kwargs={**run_method.kwargs, "self_calibration": params}, data_aware=False
            )
        _, seconds = compress_model(Path(ir), run_method, mode, int(group_size), all_layers=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "num_weights": num_weights}))


def optimum_auto_seconds(ir: Path, run_method, mode: str, group_size: int) -> float:
    """
    Seconds of optimum-intel's weight compression of the model directory with `dataset="auto"` (it has the model
    write its calibration text, then runs NNCF's AWQ and scale estimation; with `hqq` in the method, nncf-hqq's
    `hqq=True` through the opt-in), the model's loading included.
    """
    from optimum.intel import OVModelForCausalLM
    from optimum.intel import OVWeightQuantizationConfig

    import nncf_hqq

    extra = {"hqq": True} if run_method.kwargs.get("hqq") else {}
    config = OVWeightQuantizationConfig(
        bits=4, sym=mode == "int4_sym", group_size=group_size, ratio=1.0, all_layers=True, dataset="auto",
        awq=run_method.kwargs.get("awq", False), scale_estimation=run_method.kwargs.get("scale_estimation", False),
        tokenizer=str(ir.parent), **extra,
    )  # fmt: skip
    start = time.perf_counter()
    with nncf_hqq.hqq_enabled():
        OVModelForCausalLM.from_pretrained(ir.parent, quantization_config=config, compile=False)
    return time.perf_counter() - start


def _cpu() -> str:
    """The CPU as LLVM (numba's compiler) sees it, and the vector width the solver is compiled for in this
    environment (the compressing processes inherit it)."""
    import llvmlite.binding as llvm
    import numba

    import nncf_hqq.solver._kernel  # noqa: F401 (sets numba's CPU features, unless the environment does)

    avx512 = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
    vector_bits = 512 if "-prefer-256-bit" in (numba.config.CPU_FEATURES or "").split(",") else 256
    return (
        f"CPU {llvm.get_host_cpu_name()}, {os.cpu_count()} cores, AVX-512 {'yes' if avx512 else 'no'}, "
        f"solver vectors {vector_bits}-bit"
    )


def measure(ir: Path, method: str, config: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.speed", "--child", str(ir), method, config]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument(
        "--models",
        nargs="+",
        default=["stack-2048", "stack-4096x11008", "smollm2-135m"],
        choices=[
            "stack-2048",
            "stack-4096x11008",
            "smollm2-135m",
            "qwen2.5-coder-0.5b",
            "qwen2.5-coder-1.5b",
            "gemma3-270m",
        ],
    )
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help="names of benchmarks.methods")
    parser.add_argument("--config", default="int4_asym:64", help="mode:group, e.g. int4_sym:128")
    parser.add_argument("--child", nargs=3, metavar=("IR", "METHOD", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from benchmarks.models import llm_source
    from nncf_hqq.cli.export import full_precision_ir
    from nncf_hqq.cli.export import resolve_source

    irs = {
        "stack-2048": lambda: synthetic_stack(args.cache_dir / "speed" / "stack-2048x2048x8.xml", (2048, 2048), 8),
        "stack-4096x11008": lambda: synthetic_stack(
            args.cache_dir / "speed" / "stack-4096x11008x1.xml", (11008, 4096), 1
        ),
        "smollm2-135m": lambda: full_precision_ir(resolve_source(None), args.cache_dir),
        **{
            name: (lambda name=name: full_precision_ir(llm_source(name, args.cache_dir)[0], args.cache_dir))
            for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma3-270m")
        },
    }  # fmt: skip
    rows = []
    for name in args.models:
        ir = irs[name]()
        methods = ["rtn"] + [m for m in args.methods if m != "rtn"]
        runs = {m: [] for m in methods}
        # warm-up, not counted: the OS file cache, and numba compiles HQQ's solver once (the data-aware methods,
        # minutes each, run after the data-free ones' warm-up)
        for method in [m for m in methods if not benchmark_method(m).data_aware]:
            warm_up = measure(ir, method, args.config)
            print(f"{name} {method} warm-up: {warm_up['seconds']:.2f} s", flush=True)
        for _ in range(args.runs):
            for method in methods:  # alternating, so drifts of the machine hit every method alike
                runs[method].append(measure(ir, method, args.config))
        rtn_time = np.median([r["seconds"] for r in runs["rtn"]])
        rtn_rss = np.median([r["peak_rss_mib"] for r in runs["rtn"]])
        for method, results in runs.items():
            seconds = float(np.median([r["seconds"] for r in results]))
            rss = float(np.median([r["peak_rss_mib"] for r in results]))
            millions = results[0]["num_weights"] / 1e6
            rows.append((name, millions, method, seconds, 1000 * seconds / millions, seconds / rtn_time, rss,
                         rss / rtn_rss))  # fmt: skip

    mode, group_size = args.config.split(":")
    print(f"\n{mode.upper()} g{group_size}, median of {args.runs} runs per method, each in a fresh process; {_cpu()}\n")
    print("| model | weights | method | time, s | ms / M weights | time vs RTN | peak RSS, MiB | RSS vs RTN |")
    print("|---|---|---|---|---|---|---|---|")
    for name, millions, method, seconds, ms_per_m, ratio, rss, rss_ratio in rows:
        print(
            f"| {name} | {millions:.1f}M | {method} | {seconds:.2f} | {ms_per_m:.0f} | {ratio:.2f} | {rss:.0f} | "
            f"{rss_ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
