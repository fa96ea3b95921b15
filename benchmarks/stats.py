"""Paired statistics: every method is measured on the same items (windows, passages), so differences are paired."""

import math

import numpy as np


def mean_and_se(values) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN with fewer than two values)."""
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def paired_difference(values, baseline) -> tuple[float, float]:
    """Mean and standard error of the per-item differences `values - baseline`."""
    return mean_and_se(np.asarray(values, dtype=np.float64) - np.asarray(baseline, dtype=np.float64))


def format_difference(mean: float, se: float, digits: int = 4) -> str:
    return f"{mean:+.{digits}f} ± {se:.{digits}f}"
