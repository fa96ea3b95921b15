"""
The smallest memory limit under which each method compresses a model, through the API or through the command,
measured with a real limit (cgroup v1 memory controller, root needed), not as peak RSS.

    python -m benchmarks.memory                          # the 3 GB stack and the registry LLMs, API and command
    python -m benchmarks.memory --models smollm2-135m --methods rtn hqq-default --paths api --config int4_asym:128

Each run is a fresh process placed in its own memory cgroup. Through the API (`--paths api`): it reads the f16 IR,
compresses it with NNCF's defaults besides mode and group (embeddings and the last layer in INT8) and saves it, as
a user's script would. Through the command (`--paths command`): `nncf-hqq compress --src IR_DIR` with the method's
and config's options (`rtn`: `--method rtn`), which also copies the tokenizer, measures every layer's weight error
against the IR and writes the metadata.
The file cache is dropped before each run, so that the process pays for reading its input (pages cached by an
earlier run would be charged to that run's cgroup).
Per (model, method): one run without a limit (its `memory.max_usage_in_bytes`, which counts the page cache, and
its time), then a bisection of the limit between a failing and a completing one down to `--resolution` of the
f16 IR's size. A run that the kernel kills, that fails, or that takes over `--timeout-factor` times the unlimited
run's time (thrashing on the weights' file pages) does not complete. Printed: every probe, then the smallest
completing limit in MiB and as a share of the IR (its .bin) for each method.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import openvino as ov

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
MIB = 2**20


@dataclass
class Probe:
    """One run under a limit (None: unlimited)."""

    limit_mib: float | None
    completed: bool
    seconds: float
    max_usage_mib: float
    outcome: str  # "ok", "killed", "error: ...", "timeout"


def memory_cgroup_available() -> bool:
    """Whether this process can create memory cgroups: root, and the cgroup v1 memory controller mounted."""
    return (CGROUP_ROOT / "cgroup.procs").exists() and os.geteuid() == 0


COMMAND_METHODS = {"rtn": ["--method", "rtn"], "hqq-default": []}  # the methods the command runs as they are
PATHS = ("api", "command")


def command_arguments(ir: str, method_name: str, config: str, out_dir: str) -> list[str]:
    """`nncf-hqq` arguments compressing `ir` with a method and "mode:group" into `out_dir`/model."""
    if method_name not in COMMAND_METHODS:
        raise SystemExit(f"The command runs {list(COMMAND_METHODS)}, not {method_name}.")
    mode, group_size = config.split(":")
    options = ["--bits", mode[3], "--group-size", group_size] + (["--sym"] if mode.endswith("_sym") else [])
    return ["compress", "--src", ir, "--dst", str(Path(out_dir) / "model"), "--cache-dir",
            str(Path(out_dir) / "cache"), *COMMAND_METHODS[method_name], *options]  # fmt: skip


def child(ir: str, method_name: str, config: str, out_dir: str, path: str) -> None:
    """Runs inside the cgroup: read, compress and save `ir` (through the API or the command); prints {"seconds"}."""
    start = time.perf_counter()
    if path == "command":
        from nncf_hqq.cli.main import main

        if main(command_arguments(ir, method_name, config, out_dir)) != 0:
            raise SystemExit("the command failed")
    else:
        from benchmarks.methods import compress_model
        from benchmarks.methods import method

        mode, group_size = config.split(":")
        model, _ = compress_model(Path(ir), method(method_name), mode, int(group_size))
        ov.save_model(model, Path(out_dir) / "openvino_model.xml", compress_to_fp16=False)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def drop_file_cache() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_in_cgroup(command: list[str], limit_mib: float | None, timeout: float | None) -> tuple[Probe, str]:
    """
    Runs `command` in a new memory cgroup with `limit_mib` (None: no limit), the file cache dropped first, and
    removes the cgroup after; returns the probe (its seconds: the process's wall time) and the process's stdout.
    """
    group = CGROUP_ROOT / f"nncf_hqq_memory_{os.getpid()}"
    group.mkdir()
    try:
        if limit_mib is not None:
            (group / "memory.limit_in_bytes").write_text(str(int(limit_mib * MIB)))
        drop_file_cache()
        start = time.perf_counter()
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())),
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            outcome = "ok" if process.returncode == 0 else None
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            outcome = "timeout"
        seconds = time.perf_counter() - start
        max_usage = int((group / "memory.max_usage_in_bytes").read_text()) / MIB
        oom_kills = dict(line.split() for line in (group / "memory.oom_control").read_text().splitlines())
        if outcome is None:
            killed = process.returncode < 0 or int(oom_kills.get("oom_kill", 0)) > 0
            last = (stderr.strip().splitlines() or ["(no message)"])[-1]
            outcome = "killed" if killed else f"error: {last[:200]}"
        return Probe(limit_mib, outcome == "ok", seconds, max_usage, outcome), stdout
    finally:
        for _ in range(50):  # a process that has just exited may still be charged to the group for a moment
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        else:
            group.rmdir()


def run_limited(
    ir: Path,
    method: str,
    config: str,
    limit_mib: float | None,
    timeout: float | None,
    scratch: Path,
    path: str = "api",
) -> Probe:
    """Compresses `ir` in a fresh process under `limit_mib` (`child`); its seconds: the child's own measure."""
    with tempfile.TemporaryDirectory(prefix="nncf_hqq_memory_", dir=scratch) as out_dir:
        command = [sys.executable, "-m", "benchmarks.memory", "--child", str(ir), method, config, out_dir, path]
        probe, stdout = run_in_cgroup(command, limit_mib, timeout)
    if probe.completed:
        probe.seconds = json.loads(stdout.strip().splitlines()[-1])["seconds"]
    return probe


def smallest_limit(
    ir: Path, method: str, config: str, args, path: str = "api"
) -> tuple[Probe, Probe | None, list[Probe]]:
    """(unlimited probe, smallest completing probe, all probes) for one model, method and path."""
    scratch = args.cache_dir / "memory"  # the compressed models, deleted after each run
    scratch.mkdir(parents=True, exist_ok=True)
    unlimited = run_limited(ir, method, config, None, None, scratch, path)
    print(f"  {method} ({path}): no limit: {unlimited.outcome}, {unlimited.seconds:.1f} s, max usage "
          f"{unlimited.max_usage_mib:.0f} MiB", flush=True)  # fmt: skip
    if not unlimited.completed:
        raise RuntimeError(f"{method} fails without a limit: {unlimited.outcome}")
    ir_mib = ir.with_suffix(".bin").stat().st_size / MIB
    step = max(args.resolution * ir_mib, 16.0)
    timeout = args.timeout_factor * unlimited.seconds + 30.0
    failing, completing = 0.0, None
    high = unlimited.max_usage_mib + step
    probes = []
    while completing is None or completing.limit_mib - failing > step:
        limit = high if completing is None else (failing + completing.limit_mib) / 2
        probe = run_limited(ir, method, config, limit, timeout, scratch, path)
        probes.append(probe)
        print(f"  {method} ({path}): limit {limit:.0f} MiB ({limit / ir_mib:.2f}x IR): {probe.outcome}, "
              f"{probe.seconds:.1f} s", flush=True)  # fmt: skip
        if probe.completed:
            completing = probe
        elif completing is None:
            raise RuntimeError(f"{method} ({path}) fails under {limit:.0f} MiB, above its unlimited max usage")
        else:
            failing = limit
    return unlimited, completing, probes


MODELS = ["stack-3gb", "smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]


def model_ir(name: str, cache_dir: Path) -> Path:
    """The f16 IR of a registry LLM, or of a synthetic stack in a directory of its own (the command copies the
    directory's other files), its input named input_ids (the command takes only LLMs)."""
    from benchmarks.models import llm_source
    from benchmarks.speed import synthetic_stack
    from nncf_hqq.cli.export import full_precision_ir

    stacks = {"stack-3gb": ((11008, 4096), 16), "stack-2048": ((2048, 2048), 8)}  # 3gb: 1.44G weights, 2.7 GiB
    if name in stacks:
        shape, layers = stacks[name]
        return synthetic_stack(cache_dir / "memory-irs" / name / "openvino_model.xml", shape, layers,
                               input_name="input_ids")  # fmt: skip
    return full_precision_ir(llm_source(name, cache_dir)[0], cache_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=[*MODELS, "stack-2048"])
    parser.add_argument("--methods", nargs="+", default=["rtn", "hqq-default"], help="names of benchmarks.methods")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS, help="the API, the command")
    parser.add_argument("--config", default="int4_asym:128", help="mode:group, e.g. int4_sym:128")
    parser.add_argument("--resolution", type=float, default=0.02, help="bisection step, a share of the IR's size")
    parser.add_argument("--timeout-factor", type=float, default=5.0)
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--child", nargs=5, metavar=("IR", "METHOD", "CONFIG", "OUT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if not memory_cgroup_available():
        raise SystemExit(f"Needs root and the cgroup v1 memory controller at {CGROUP_ROOT}.")

    rows = []
    for name in args.models:
        ir = model_ir(name, args.cache_dir)
        ir_mib = ir.with_suffix(".bin").stat().st_size / MIB
        print(f"{name}: f16 IR {ir_mib:.0f} MiB", flush=True)
        for method in args.methods:
            for path in args.paths:
                unlimited, completing, _ = smallest_limit(ir, method, args.config, args, path)
                rows.append((name, ir_mib, method, path, unlimited, completing))

    mode, group_size = args.config.split(":")
    print(f"\n{mode.upper()} g{group_size}, read + compress + save in a fresh process per run, file cache dropped "
          f"before each; bisection step {100 * args.resolution:.0f}% of the IR\n")  # fmt: skip
    print("| model | f16 IR, MiB | method | path | smallest limit, MiB | limit / IR | vs RTN | vs API "
          "| time at it, s | no limit: max usage, MiB | no limit: time, s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    limits = {(name, method, path): completing.limit_mib for name, _, method, path, _, completing in rows}
    for name, ir_mib, method, path, unlimited, completing in rows:
        limit = completing.limit_mib
        rtn = limits.get((name, "rtn", path))
        api = limits.get((name, method, "api"))
        versus_rtn = f"{limit / rtn:.2f}" if rtn else ""
        versus_api = f"{limit / api:.2f}" if api else ""
        print(f"| {name} | {ir_mib:.0f} | {method} | {path} | {limit:.0f} | {limit / ir_mib:.2f} | {versus_rtn} | "
              f"{versus_api} | {completing.seconds:.1f} | {unlimited.max_usage_mib:.0f} | "
              f"{unlimited.seconds:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
