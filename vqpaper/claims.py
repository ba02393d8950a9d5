"""The paper's claims as checks on recorded numbers (SPEC §5): three-valued, with uncertainty.

A claim compares two settings pair by pair (usually seed by seed), e.g. "pretraining gives a
higher allocation entropy than scratch". The evidence is the paired difference, signed so that
a positive value points the way the claim says. Over the ``n`` pairs we take its mean (the
effect) and a two-sided t interval at ``CONFIDENCE``; the verdict is

* **held** when the whole interval lies above zero,
* **not held** when it lies at or below zero (the data point the other way, or show no
  difference at all),
* **inconclusive** when it straddles zero, when there are fewer than ``MIN_PAIRS`` pairs
  (one seed says nothing about the seed-to-seed spread), or when the caller reports that
  the runs had not converged.

A verdict decided "3 of 3 seeds" by a hair is not decided: the interval says how far from
zero the effect is, and ``margin`` says it in units of the interval's half-width, which the
regression check uses to tell a decided verdict from one at its threshold (see
``vqpaper.regression``). The book quotes ``verdict`` through ``glue``; a claim that does not
hold at a profile is reported as such, not hidden.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

# ------------------------------------------------------------------ the one place
#: Two-sided confidence of the interval of the mean paired difference.
CONFIDENCE = 0.95
#: Fewer pairs than this cannot estimate the spread, so they decide nothing.
MIN_PAIRS = 2

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
OUTCOMES = (HELD, NOT_HELD, INCONCLUSIVE)


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student t quantile for the mean of ``n`` values (``n - 1`` degrees of freedom)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, n - 1))


def paired_interval(differences: Sequence[float], confidence: float = CONFIDENCE):
    """``(mean, low, high)`` of the mean of ``differences`` (t interval; sample std, ddof 1)."""
    n = len(differences)
    mean = math.fsum(differences) / n
    if n < 2:
        return mean, -math.inf, math.inf
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in differences) / (n - 1))
    half = t_quantile(n, confidence) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


@dataclass
class Claim:
    id: str
    statement: str
    outcome: str           # "held", "not held" or "inconclusive"
    reason: str            # why, in words
    effect: float          # mean paired difference, positive = the claimed direction
    low: float             # interval of the effect
    high: float
    n: int                 # pairs (usually seeds)
    n_agree: int           # pairs whose difference points the claimed way

    @property
    def held(self) -> bool:
        return self.outcome == HELD

    @property
    def decided(self) -> bool:
        return self.outcome != INCONCLUSIVE

    @property
    def margin(self) -> float:
        """How far the interval's near end is from zero, in half-widths (inf: no spread at all).

        0 means the interval touches zero (a verdict at its threshold); 1 means zero is a
        whole half-width beyond the interval's end. Negative for an interval that straddles zero.
        """
        half = (self.high - self.low) / 2
        if not math.isfinite(half):
            return -math.inf
        distance = self.low if self.effect > 0 else -self.high
        if half == 0:
            return math.inf if distance > 0 else (0.0 if distance == 0 else -math.inf)
        return distance / half

    @property
    def interval_text(self) -> str:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "no interval"
        return f"{int(CONFIDENCE * 100)}% CI [{_num(self.low)}, {_num(self.high)}]"

    @property
    def verdict(self) -> str:
        """One line for the book: outcome, effect, interval and the reason."""
        return (f"{self.outcome}: effect {_num(self.effect, signed=True)}, {self.interval_text} "
                f"over {self.n} pair{'s' if self.n != 1 else ''} ({self.reason})")

    def as_dict(self) -> dict:
        return {**asdict(self), "margin": self.margin, "verdict": self.verdict}


def _num(x: float, signed: bool = False) -> str:
    if not math.isfinite(x):
        return str(x)
    text = f"{x:+.3g}" if signed else f"{x:.3g}"
    return text


def decide(differences: Sequence[float], converged: bool = True) -> tuple[str, str, float, float, float]:
    """``(outcome, reason, effect, low, high)`` for paired differences signed the claim's way."""
    diffs = [float(d) for d in differences]
    n = len(diffs)
    if any(math.isnan(d) for d in diffs):
        return INCONCLUSIVE, "a value is NaN", math.nan, -math.inf, math.inf
    effect, low, high = paired_interval(diffs)
    if not converged:
        return INCONCLUSIVE, "the runs had not converged", effect, low, high
    if n < MIN_PAIRS:
        return (INCONCLUSIVE, f"{n} pair{'s' if n != 1 else ''}: too few to estimate the spread "
                f"(need {MIN_PAIRS})", effect, low, high)
    if low > 0:
        return HELD, "the interval lies above zero", effect, low, high
    if high <= 0:
        why = "no difference in any pair" if low == high == 0 else "the interval lies at or below zero"
        return NOT_HELD, why, effect, low, high
    return INCONCLUSIVE, "the interval straddles zero", effect, low, high


def paired(claim_id: str, statement: str, better: Sequence[float], worse: Sequence[float],
           higher_is_better: bool = True, converged: Optional[bool] = True) -> Claim:
    """Claim "``better`` beats ``worse``" pair by pair (``better[i]`` vs ``worse[i]``, usually seeds)."""
    if len(better) != len(worse) or not len(better):
        raise ValueError(f"claim {claim_id}: need two equally long, non-empty lists, got {len(better)} and {len(worse)}")
    sign = 1.0 if higher_is_better else -1.0
    diffs = [sign * (float(b) - float(w)) for b, w in zip(better, worse)]
    outcome, reason, effect, low, high = decide(diffs, converged=converged is not False)
    return Claim(claim_id, statement, outcome, reason, effect, low, high, len(diffs),
                 sum(d > 0 for d in diffs))


def count(checks: Sequence[Claim]) -> str:
    """"4 held, 1 not held, 2 inconclusive" (zero counts left out)."""
    parts = [f"{sum(c.outcome == o for c in checks)} {o}" for o in OUTCOMES
             if any(c.outcome == o for c in checks)]
    return ", ".join(parts) if parts else "no checks"


def table(claims: Sequence[Claim]):
    """The claims as a DataFrame for display in a notebook."""
    import pandas as pd

    return pd.DataFrame([{"claim": c.statement, "outcome": c.outcome, "effect": c.effect,
                          "interval": c.interval_text, "pairs": c.n, "why": c.reason} for c in claims])
