"""The benchmarks run end to end on small inputs (they check the pipelines, not the numbers)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def test_perplexity_quick_mode_writes_table_json_and_plot(bundled_hqq, cache_dir, tmp_path):
    out_dir = tmp_path / "ppl"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.perplexity", "--quick", "--max-tokens", "1024", "--window", "256",
         "--cache-dir", str(cache_dir), "--out-dir", str(out_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out_dir / "results.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"fp16", "rtn", "hqq-u4", "hqq-f16zp", "hqq-offset"}
    for r in rows:
        assert len(r["window_nll"]) == 4 and np.isfinite(r["ppl"]) and r["tokens_per_s"] > 0
    rtn = next(r for r in rows if r["method"] == "rtn")
    assert rtn["nll_minus_rtn"] == 0.0 and rtn["gap_closed"] == 0.0
    assert "| smollm2-135m | int4_asym | 64 | hqq-u4 |" in (out_dir / "results.md").read_text()
    assert (out_dir / "perplexity_vs_size.png").stat().st_size > 0
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
    rows.append({**row("fp16", [2.8, 2.9, 2.9]), "group_size": None})
    add_paired_statistics(rows)
    gap = rows[0]["ppl"] - rows[2]["ppl"]
    assert np.isclose(rows[1]["gap_closed"], (rows[0]["ppl"] - rows[1]["ppl"]) / gap)


def test_speed_benchmark_child_reports_time_and_peak_memory(tmp_path):
    from benchmarks.speed import measure
    from benchmarks.speed import synthetic_stack

    ir = synthetic_stack(tmp_path / "stack.xml", (256, 512), layers=2)
    for method in ("rtn", "hqq-u4"):
        result = measure(ir, method)
        assert result["seconds"] > 0 and result["peak_rss_mib"] > 0
        assert result["num_weights"] == 2 * 2 * 256 * 512


def test_inference_speed_benchmark_times_every_storage_against_rtn(tmp_path):
    from benchmarks.inference_speed import STORAGE_METHODS
    from benchmarks.inference_speed import matmul_latencies
    from benchmarks.inference_speed import with_ratios

    rows = matmul_latencies((128, 256), layers=2, group_size=64, prompt=8, rounds=1, work_dir=tmp_path)
    rows = with_ratios(rows, "latency_ms")
    assert [(r["tokens"], r["method"]) for r in rows] == [(t, m) for t in (1, 8) for m in STORAGE_METHODS]
    assert all(r["latency_ms"] > 0 for r in rows)
    assert all(r["latency_ms_vs_rtn"] == 1.0 for r in rows if r["method"] == "rtn")
