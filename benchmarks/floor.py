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
    """A cell per (model, reference, text, mode, group) of `method`, from perplexity rows (statistics added)."""
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


def floor_holds(cells: list[dict], threshold: float) -> bool:
    """No cell worse than RTN beyond `threshold` SE in KL (or 1 - cos), nor in NLL on the model's own domain."""
    for cell in cells:
        if cell["worse_kl"] > threshold:
            return False
        if cell["own_domain"] and cell["nll"] is not None and cell["nll"] > threshold * cell["nll_se"]:
            return False
    return True


def table(cells: list[dict], threshold: float) -> str:
    lines = [
        "| model | reference | text | mode | group | KL cut vs RTN (± SE) | NLL - RTN (± SE) | entropy, RTN -> method "
        "| reference's best T (NLL gain) | floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        nll = "" if cell["nll"] is None else f"{cell['nll']:+.4f} ± {cell['nll_se']:.4f}"
        nll = f"**{nll}**" if nll and cell["own_domain"] else nll  # judged on the model's own domain
        entropy = "" if cell["entropy"] is None else f"{cell['rtn_entropy']:.3f} -> {cell['entropy']:.3f}"
        temperature = ""
        if cell["best_temperature"] is not None:
            temperature = f"{cell['best_temperature']:.1f} ({0.0 - cell['temperature_gain']:+.3f})"
        on_floor = cell["reference"] in FLOOR_REFERENCES
        verdict = ("holds" if floor_holds([cell], threshold) else "FAILS") if on_floor else "(reported)"
        lines.append(
            f"| {cell['model']} | {cell['reference']} | {cell['text']} | {cell['mode']} | {cell['group_size']} | "
            f"{100 * cell['cut']:+.1f}% ± {100 * cell['cut_se']:.1f}% | {nll} | {entropy} | {temperature} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="hqq-default")
    parser.add_argument("--perplexity", nargs="*", type=Path, default=[], help="results.json of benchmarks.perplexity")
    parser.add_argument("--decide", nargs="*", type=Path, default=[], help="--json rows of benchmarks.decide")
    parser.add_argument("--floor-se", type=float, default=2.0)
    args = parser.parse_args(argv)
    cells = []
    for path in args.perplexity:
        cells += llm_cells(json.loads(path.read_text())["rows"], args.method)
    for path in args.decide:
        cells += encoder_cells(json.loads(path.read_text()), args.method)
    print(table(cells, args.floor_se))
    print()
    for model in dict.fromkeys(c["model"] for c in cells):
        judged = [c for c in cells if c["model"] == model and c["reference"] in FLOOR_REFERENCES]
        if not judged:
            print(f"{model}: no de-latticed or float32 reference measured; the floor is not judged")
            continue
        verdict = "holds" if floor_holds(judged, args.floor_se) else "FAILS"
        cuts = [100 * c["cut"] for c in judged]
        print(f"{model}: floor {verdict} on {len(judged)} cells; KL cut {min(cuts):+.1f}% to {max(cuts):+.1f}%")


if __name__ == "__main__":
    main()
