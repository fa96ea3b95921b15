"""
The floor of a method against RTN, read from earlier runs: `benchmarks.perplexity`'s results of the LLMs and
`benchmarks.decide`'s rows of the encoders, one table in RESULTS.md's form.

    python -m benchmarks.floor --method hqq-default --perplexity outputs/*/results.json --decide encoders.json

Per model, reference, text and configuration: the share of RTN's KL divergence (encoders: embedding error 1 - cos)
removed, with the standard error of the paired difference relative to RTN's mean, and the paired NLL difference
from RTN on the model's own domain (reported on the other texts, not judged). The floor (`--floor-se`) holds where
the method is nowhere worse than RTN beyond that many standard errors in KL (or 1 - cos) on every text and in NLL
on the model's own domain; it is judged on the de-latticed LLM references and the encoders' genuine float32
weights, and reported on the original references.
"""

import argparse
import json
from pathlib import Path

from benchmarks.judge import domain
from benchmarks.perplexity import add_paired_statistics
from benchmarks.perplexity import row_key
from benchmarks.stats import paired_difference

FLOOR_REFERENCES = ("delatticed", "float32")


def llm_cells(rows: list[dict], method: str) -> list[dict]:
    """
    A cell per (model, reference, text, mode, group) of `method`, from perplexity rows (statistics added), with the
    windows it was measured on (`windows`: layout, de-lattice seed, count).
    """
    add_paired_statistics(rows)
    floats = {row_key(r)[:3]: r for r in rows if r["method"] == "float"}
    cells = []
    for r in rows:
        model, reference, text, mode, group_size, name = row_key(r)
        if name != method or "kl_minus_rtn" not in r:
            continue
        rtn_kl = r["kl"] / (1.0 - r["kl_cut"])
        reference_row = floats.get((model, reference, text), {})
        rtn = next(x for x in rows if row_key(x) == (model, reference, text, mode, group_size, "rtn"))
        cells.append({
            "model": model, "reference": reference, "text": text, "mode": mode, "group_size": group_size,
            "cut": r["kl_cut"], "cut_se": r["kl_minus_rtn_se"] / rtn_kl,
            "worse_kl": r["kl_minus_rtn"] / r["kl_minus_rtn_se"],
            "nll": r["nll_minus_rtn"], "nll_se": r["nll_minus_rtn_se"], "own_domain": text == domain(model),
            "entropy": r.get("entropy"), "rtn_entropy": rtn.get("entropy"),
            "best_temperature": reference_row.get("best_temperature"),
            "temperature_gain": (reference_row.get("nll_gain_at_best_temperature") or (None,))[0],
            "windows": (r.get("layout", "spread"), r.get("delattice_seed", 0), len(r["window_nll"])),
        })  # fmt: skip
    return cells


def encoder_cells(rows: list[dict], method: str) -> list[dict]:
    """A cell per (encoder, mode, group) of `method`, from `benchmarks.decide --json` rows."""
    rtn = {(r["model"], r["mode"], r["group_size"]): r for r in rows if r["method"] == "rtn"}
    cells = []
    for r in rows:
        if r["method"] != method or r.get("measure") != "1 - cos":
            continue
        base = rtn[(r["model"], r["mode"], r["group_size"])]
        difference, se = paired_difference(r["items"], base["items"])
        base_mean = sum(base["items"]) / len(base["items"])
        cells.append({
            "model": r["model"], "reference": "float32", "text": "passages", "mode": r["mode"],
            "group_size": r["group_size"], "cut": -difference / base_mean, "cut_se": se / base_mean,
            "worse_kl": difference / se if se else 0.0, "nll": None, "nll_se": None, "own_domain": False,
            "entropy": None, "rtn_entropy": None, "best_temperature": None, "temperature_gain": None,
        })  # fmt: skip
    return cells


def worse_by(cell: dict) -> float:
    """How many SEs the cell is worse than RTN by: in KL (or 1 - cos), or in NLL on the model's own domain."""
    worse = cell["worse_kl"]
    if cell["own_domain"] and cell["nll"] is not None and cell["nll_se"]:
        worse = max(worse, cell["nll"] / cell["nll_se"])
    return worse


def cell_verdict(runs: list[dict], threshold: float = 2.0, single: float = 3.0) -> str:
    """
    "holds", "FAILS" or "re-measure" for the runs of one cell (one per distinct `windows`; of runs on the same
    windows, the last): FAILS if a run is worse than RTN beyond `single` SE or two beyond `threshold`.
    """
    scores = [worse_by(run) for run in {run.get("windows"): run for run in runs}.values()]
    over = sum(score > threshold for score in scores)
    if any(score > single for score in scores) or over >= 2:
        return "FAILS"
    return "re-measure" if over == 1 and len(scores) == 1 else "holds"


def cell_key(cell: dict) -> tuple:
    return cell["model"], cell["reference"], cell["text"], cell["mode"], cell["group_size"]


def verdicts(cells: list[dict], threshold: float = 2.0, single: float = 3.0) -> dict[tuple, str]:
    """`cell_verdict` per cell key."""
    runs: dict[tuple, list[dict]] = {}
    for cell in cells:
        runs.setdefault(cell_key(cell), []).append(cell)
    return {key: cell_verdict(value, threshold, single) for key, value in runs.items()}


def floor_holds(cells: list[dict], threshold: float, single: float = 3.0) -> bool:
    """Every cell holds (`cell_verdict`): no cell worse than RTN beyond the rule, none left to re-measure."""
    return all(verdict == "holds" for verdict in verdicts(cells, threshold, single).values())


def table(cells: list[dict], threshold: float, single: float = 3.0) -> str:
    by_key = verdicts(cells, threshold, single)
    lines = [
        "| model | reference | text | mode | group | windows (layout, seed, count) | KL cut vs RTN (± SE) "
        "| NLL - RTN (± SE) | entropy, RTN -> method | reference's best T (NLL gain) | floor (all runs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        nll = "" if cell["nll"] is None else f"{cell['nll']:+.4f} ± {cell['nll_se']:.4f}"
        nll = f"**{nll}**" if nll and cell["own_domain"] else nll  # judged on the model's own domain
        entropy = "" if cell["entropy"] is None else f"{cell['rtn_entropy']:.3f} -> {cell['entropy']:.3f}"
        temperature = ""
        if cell["best_temperature"] is not None:
            temperature = f"{cell['best_temperature']:.1f} ({0.0 - cell['temperature_gain']:+.3f})"
        on_floor = cell["reference"] in FLOOR_REFERENCES
        verdict = by_key[cell_key(cell)] if on_floor else "(reported)"
        windows = ", ".join(str(w) for w in cell.get("windows") or ())
        lines.append(
            f"| {cell['model']} | {cell['reference']} | {cell['text']} | {cell['mode']} | {cell['group_size']} | "
            f"{windows} | {100 * cell['cut']:+.1f}% ± {100 * cell['cut_se']:.1f}% | {nll} | {entropy} | {temperature} "
            f"| {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="hqq-default")
    parser.add_argument("--perplexity", nargs="*", type=Path, default=[], help="results.json of benchmarks.perplexity")
    parser.add_argument("--decide", nargs="*", type=Path, default=[], help="--json rows of benchmarks.decide")
    parser.add_argument("--floor-se", type=float, default=2.0)
    parser.add_argument("--single-se", type=float, default=3.0, help="worse beyond this in one run: fails")
    args = parser.parse_args(argv)
    cells = []
    for path in args.perplexity:
        cells += llm_cells(json.loads(path.read_text())["rows"], args.method)
    for path in args.decide:
        cells += encoder_cells(json.loads(path.read_text()), args.method)
    print(table(cells, args.floor_se, args.single_se))
    print()
    for model in dict.fromkeys(c["model"] for c in cells):
        judged = [c for c in cells if c["model"] == model and c["reference"] in FLOOR_REFERENCES]
        if not judged:
            print(f"{model}: no de-latticed or float32 reference measured; the floor is not judged")
            continue
        found = set(verdicts(judged, args.floor_se, args.single_se).values())
        verdict = "FAILS" if "FAILS" in found else "re-measure" if "re-measure" in found else "holds"
        cuts = [100 * c["cut"] for c in judged]
        print(f"{model}: floor {verdict} on {len(judged)} cells; KL cut {min(cuts):+.1f}% to {max(cuts):+.1f}%")


if __name__ == "__main__":
    main()
