"""
Hashes of what `nncf-hqq compress` writes, for checking that a change leaves the outputs as they were.

    python scripts/output_hashes.py --models smollm2-135m gemma3-270m --out before.json
    (change the code)
    python scripts/output_hashes.py --models smollm2-135m gemma3-270m --out after.json --compare before.json

Per registry model (`benchmarks.models.LLMS`) and configuration (`CONFIGS`): the SHA-256 of every constant of the
compressed model (name, element type, shape, bytes; constants OpenVINO names `Constant_<n>` after a global counter
are hashed without their names) and of its `nncf` rt_info, the parameters that were recorded (but the times, whether
the self-written text came from the cache, and the temporary directory of the codes). Run it once first after a
change of the compiled kernels: a kernel compiled in the process and the same kernel loaded from numba's cache
give a few groups 1-ulp different scales (README, HQQ).
"""

import argparse
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path

import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.models import llm_source
from nncf_hqq.cli.export import full_precision_ir
from nncf_hqq.cli.pipeline import CompressionOptions
from nncf_hqq.cli.pipeline import compress_llm

CONFIGS = {
    "default": CompressionOptions(),
    "int4-sym": CompressionOptions(sym=True),
    "float16-zero-point": CompressionOptions(zero_point="float16"),
    "offset-zero-point": CompressionOptions(zero_point="offset", group_size=128),
    "ratio-0.7-awq": CompressionOptions(ratio=0.7, awq=True),
    "self-calibration": CompressionOptions(calibration="self", group_size=128),
}
AUTO_NAME = re.compile(r"^Constant_\d+$")


def model_hashes(xml_file: Path) -> dict[str, str]:
    """{"constants": hash of every constant, "rt_info": hash of the nncf rt_info}."""
    model = ov.Core().read_model(xml_file)
    entries = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        name = op.get_friendly_name()
        name = "" if AUTO_NAME.match(name) else name
        data = op.get_tensor_view().data.tobytes()
        digest = hashlib.sha256(data).hexdigest()
        entries.append(f"{name}|{op.get_element_type().get_type_name()}|{list(op.get_output_shape(0))}|{digest}")
    rt_info = model.get_rt_info(["nncf"]).astype(dict) if model.has_rt_info(["nncf"]) else {}
    rt_info = {key: value for key, value in _flat(rt_info).items() if "seconds" not in key and "cached" not in key}
    rt_info = {key: re.sub(r"'offload_dir': [^,}]*", "'offload_dir': <temporary>", v) for key, v in rt_info.items()}
    return {
        "constants": hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest(),
        "num_constants": len(entries),
        "rt_info": hashlib.sha256(json.dumps(rt_info, sort_keys=True).encode()).hexdigest(),
    }


def _flat(tree, prefix: str = "") -> dict[str, str]:
    """rt_info as {path: value}; its leaves are OpenVINO `OVAny` values."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}/{key}").items()}
    return {prefix: tree.astype(str) if hasattr(tree, "astype") else str(tree)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path, help="an earlier output: exit 1 if any shared entry differs")
    args = parser.parse_args(argv)
    results = {}
    for model_name in args.models:
        ir_file = full_precision_ir(llm_source(model_name, args.cache_dir)[0], args.cache_dir)
        for config in args.configs:
            with tempfile.TemporaryDirectory(prefix="hashes-") as work:
                dst = Path(work) / "out"
                compress_llm(ir_file, dst, CONFIGS[config], cache_dir=args.cache_dir)
                results[f"{model_name}/{config}"] = model_hashes(dst / "openvino_model.xml")
            print(model_name, config, results[f"{model_name}/{config}"], flush=True)
            args.out.write_text(json.dumps(results, indent=2))
    if args.compare is None:
        return 0
    before = json.loads(args.compare.read_text())
    shared = [key for key in results if key in before]
    failed = False
    for part in ("constants", "rt_info"):
        differing = [key for key in shared if before[key][part] != results[key][part]]
        failed = failed or bool(differing)
        print(f"{part}: {len(shared) - len(differing)} of {len(shared)} shared outputs identical"
              + (f"; differing: {', '.join(differing)}" if differing else ""))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
