"""Mean and spread over seeds: the book's one aggregation (figures, tables, records, verdicts).

The spread is the sample standard deviation (ddof 1, :func:`sample_sd`). One value has no
spread to measure: :func:`aggregate` records its ``std`` as None (JSON null) and
:func:`mean_sd_text` says "sd unknown (1 seed)", never "± 0". A NaN among the values makes
the mean and the spread NaN: a run that diverged is not silently left out. Imports nothing
from the package.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


def sample_sd(values: Sequence[float]) -> float:
    """The sample standard deviation (ddof 1) of two or more values."""
    n = len(values)
    if n < 2:
        raise ValueError(f"sample_sd needs at least two values, got {n}")
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(values: Sequence[float]) -> dict:
    """``{"mean", "std", "per_seed"}`` of one metric over seeds; ``std`` is None for a single value."""
    v = [float(x) for x in values]
    mean = float(np.mean(np.asarray(v, dtype=np.float64))) if v else math.nan
    return {"mean": mean, "std": sample_sd(v) if len(v) > 1 else None, "per_seed": v}


def mean_sd_text(summary: dict, fmt: str = ".3g", sd_fmt: str = ".2g") -> str:
    """``"0.58 ± 0.03"`` from an :func:`aggregate` (mean ± sample sd), ``"0.58 (sd unknown, 1 seed)"`` for one value."""
    std: Optional[float] = summary["std"]
    n = len(summary["per_seed"])
    if std is None:
        return f"{summary['mean']:{fmt}} (sd unknown, {n} seed{'s' if n != 1 else ''})"
    return f"{summary['mean']:{fmt}} ± {std:{sd_fmt}}"
