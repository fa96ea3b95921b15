"""
Weight reconstruction error and compression time of NNCF RTN vs HQQ on real weights, measured in one run.

    python -m benchmarks.weight_error --weights bert smollm2 qwen2.5-coder-0.5b --group-size 64 128

Every 2-D block weight of the source becomes one f16 MatMul constant of an OpenVINO model (as in an exported
LLM); each method compresses a fresh copy of that model with `nncf_hqq.compress_weights`. Reported per method:
relative L2 error sqrt(sum |W - W_hat|^2 / sum |W|^2) over all weights, mean relative L1 error, and wall time.
"""

import argparse
import json
import time
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
from nncf.quantization.advanced_parameters import GroupSizeFallbackMode
from openvino import opset13 as opset

from benchmarks import weights as weight_sources
from nncf_hqq import AdvancedCompressionParameters
from nncf_hqq import AdvancedHQQParameters
from nncf_hqq import compress_weights
from nncf_hqq.cli.report import constants_by_name
from nncf_hqq.cli.report import dequantize

# Group sizes that do not divide a layer's channels (SmolLM2's 576 with 128) fall back to a smaller group size
# (NNCF's ADJUST mode), the same for every method.
METHODS = {
    "rtn": {
        "hqq": False,
        "advanced_parameters": AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST),
    },
    "hqq-u4": {
        "hqq": True,
        "advanced_parameters": AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST),
    },
    "hqq-f16zp": {
        "hqq": True,
        "advanced_parameters": AdvancedCompressionParameters(
            group_size_fallback_mode=GroupSizeFallbackMode.ADJUST,
            hqq_params=AdvancedHQQParameters(zero_point_storage="float16"),
        ),
    },
}


def linear_model(weights: dict[str, np.ndarray]) -> ov.Model:
    """One f16 MatMul constant per weight, all on one input per input width."""
    inputs = {}
    results = []
    for name, weight in weights.items():
        width = weight.shape[1]
        if width not in inputs:
            inputs[width] = opset.parameter([1, 1, width], ov.Type.f32, name=f"x{width}")
        const = opset.convert(opset.constant(weight, dtype=ov.Type.f16, name=name), ov.Type.f32)
        results.append(opset.result(opset.matmul(inputs[width], const, False, True)))
    return ov.Model(results, list(inputs.values()))


def measure(weights: dict[str, np.ndarray], group_size: int, method: str) -> dict:
    model = linear_model(weights)
    start = time.perf_counter()
    model = compress_weights(
        model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=group_size, all_layers=True, **METHODS[method]
    )
    seconds = time.perf_counter() - start
    consts = constants_by_name(model)
    sq_err = sq_ref = 0.0
    l1 = []
    for name, weight in weights.items():
        reference = weight.astype(np.float16).astype(np.float64)
        error = dequantize(consts, name).reshape(reference.shape) - reference
        sq_err += (error**2).sum()
        sq_ref += (reference**2).sum()
        l1.append(np.abs(error).sum() / np.abs(reference).sum())
    return {"rel_l2": float(np.sqrt(sq_err / sq_ref)), "rel_l1": float(np.mean(l1)), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", default=["bert", "smollm2"])
    parser.add_argument("--group-size", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    rows = []
    for source in args.weights:
        weights = weight_sources.load(source, args.cache_dir)
        num_weights = sum(w.size for w in weights.values())
        for group_size in args.group_size:
            results = {method: measure(weights, group_size, method) for method in METHODS}
            for method, r in results.items():
                rows.append(
                    {
                        "weights": source,
                        "num_weights": num_weights,
                        "group_size": group_size,
                        "method": method,
                        **r,
                        "l2_vs_rtn": r["rel_l2"] / results["rtn"]["rel_l2"],
                        "time_vs_rtn": r["seconds"] / results["rtn"]["seconds"],
                    }
                )

    print(
        "\n| weights | params | INT4_ASYM group | method | rel. L2 error | vs RTN | rel. L1 error | time, s | vs RTN |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['weights']} | {r['num_weights'] / 1e6:.1f}M | {r['group_size']} | {r['method']} | "
            f"{r['rel_l2']:.5f} | {r['l2_vs_rtn']:.3f} | {r['rel_l1']:.5f} | {r['seconds']:.2f} | "
            f"{r['time_vs_rtn']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
