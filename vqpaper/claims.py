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

from . import book, results
from .spread import sample_sd

# ------------------------------------------------------------------ the one place
#: Two-sided confidence of the interval of the mean paired difference.
CONFIDENCE = 0.95
#: Fewer pairs than this cannot estimate the spread, so they decide nothing.
MIN_PAIRS = 2
#: A run has converged when the last CONVERGENCE_TAIL of its final stage's epochs (at least one
#: epoch) brought less than CONVERGENCE_TOL of that stage's whole fall of the training loss:
#: a loss still falling that fast would move the numbers a claim compares. Measured as a
#: share of the stage's own fall, not of the loss, because the synthetic losses end near 0,
#: where a relative change of the loss itself is noise.
CONVERGENCE_TAIL = 0.10
CONVERGENCE_TOL = 0.10

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
OUTCOMES = (HELD, NOT_HELD, INCONCLUSIVE)


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student t quantile for the mean of ``n`` values (``n - 1`` degrees of freedom)."""
    from scipy.stats import t  # heavy (2 s to import): only a verdict needs it

    return float(t.ppf(0.5 + confidence / 2, n - 1))


def paired_interval(differences: Sequence[float], confidence: float = CONFIDENCE):
    """``(mean, low, high)`` of the mean of ``differences`` (t interval; sample std, ddof 1)."""
    n = len(differences)
    mean = math.fsum(differences) / n
    if n < 2:
        return mean, -math.inf, math.inf
    half = t_quantile(n, confidence) * sample_sd(differences) / math.sqrt(n)
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
    setting: str = ""      # where it was checked, e.g. "2-D" (default: the statement)

    def __post_init__(self):
        self.setting = self.setting or self.statement

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
    undecided = []
    if n < MIN_PAIRS:
        undecided.append(f"{n} pair{'s' if n != 1 else ''}: too few to estimate the spread (need {MIN_PAIRS})")
    if not converged:
        undecided.append("the runs had not converged")
    if undecided:
        return INCONCLUSIVE, "; ".join(undecided), effect, low, high
    if low > 0:
        return HELD, "the interval lies above zero", effect, low, high
    if high <= 0:
        why = "no difference in any pair" if low == high == 0 else "the interval lies at or below zero"
        return NOT_HELD, why, effect, low, high
    return INCONCLUSIVE, "the interval straddles zero", effect, low, high


def paired(claim_id: str, statement: str, better: Sequence[float], worse: Sequence[float],
           higher_is_better: bool = True, converged: Optional[bool] = True, setting: str = "") -> Claim:
    """Claim "``better`` beats ``worse``" pair by pair (``better[i]`` vs ``worse[i]``, usually seeds).

    ``converged=False`` (some run's loss was still falling, see :func:`converged`) makes the
    outcome inconclusive whatever the numbers say.
    """
    if len(better) != len(worse) or not len(better):
        raise ValueError(f"claim {claim_id}: need two equally long, non-empty lists, got {len(better)} and {len(worse)}")
    sign = 1.0 if higher_is_better else -1.0
    diffs = [sign * (float(b) - float(w)) for b, w in zip(better, worse)]
    outcome, reason, effect, low, high = decide(diffs, converged=converged is not False)
    return Claim(claim_id, statement, outcome, reason, effect, low, high, len(diffs),
                 sum(d > 0 for d in diffs), setting)


def loss_change(history: Sequence[dict], tail: float = CONVERGENCE_TAIL) -> float:
    """The share of the final stage's fall of the training loss that came in its last ``tail``.

    ``(mean of the window before - mean of the last window) / (first epoch - mean of the last
    window)``, each window ``max(1, ceil(tail * epochs))`` epochs long; 0 when the stage's loss
    did not fall at all, NaN when the stage has fewer than two windows of epochs. ``history`` is
    a run's list of per-epoch records (``stage``, ``loss``).
    """
    if not history:
        return math.nan
    stage = history[-1].get("stage")
    losses = [float(r["loss"]) for r in history if r.get("stage") == stage]
    k = max(1, math.ceil(tail * len(losses)))
    if len(losses) < 2 * k:
        return math.nan
    m_last, m_before = math.fsum(losses[-k:]) / k, math.fsum(losses[-2 * k:-k]) / k
    fall = losses[0] - m_last
    return (m_before - m_last) / fall if fall > 0 else 0.0


def converged(history: Sequence[dict], tail: float = CONVERGENCE_TAIL, tol: float = CONVERGENCE_TOL) -> bool:
    """Whether the final stage's loss has flattened (see ``CONVERGENCE_TOL``); too short a run has not."""
    change = loss_change(history, tail)
    return bool(math.isfinite(change) and change < tol)


@dataclass
class Family:
    """One claim of the paper (one sentence, one direction), checked in one or more settings.

    ``checks`` all point the way the sentence does, so they are never summed against checks of
    the opposite direction. The family **holds** when every check holds, **fails** (not held)
    when any check fails, and is **inconclusive** otherwise. ``phrases`` give the book's
    sentence for each outcome, so prose is computed from the verdict, never typed next to it.
    """

    id: str                   # no parameter values in it: the book and the results page name it
    source: str               # where in the paper, e.g. "§3.1.1, Fig. 3"
    paper: str                # the claim, in our words
    checks: Sequence[Claim]
    phrases: dict             # outcome -> sentence

    def __post_init__(self):
        missing = [o for o in OUTCOMES if o not in self.phrases]
        if missing:
            raise ValueError(f"family {self.id}: phrases for {missing} missing; give one per outcome {OUTCOMES}")
        if not self.checks:
            raise ValueError(f"family {self.id}: no checks")

    @property
    def outcome(self) -> str:
        outcomes = [c.outcome for c in self.checks]
        if all(o == HELD for o in outcomes):
            return HELD
        if NOT_HELD in outcomes:
            return NOT_HELD
        return INCONCLUSIVE

    @property
    def reason(self) -> str:
        n = len(self.checks)
        if self.outcome == HELD:
            return f"held in {'the one setting' if n == 1 else f'all {n} settings'}"
        if self.outcome == NOT_HELD:
            bad = [c for c in self.checks if c.outcome == NOT_HELD]
            return f"not held in {len(bad)} of {n} setting{'s' if n != 1 else ''}: " + "; ".join(
                c.setting for c in bad)
        open_ = [c for c in self.checks if c.outcome == INCONCLUSIVE]
        return f"undecided in {len(open_)} of {n}: " + "; ".join(f"{c.setting} ({c.reason})" for c in open_)

    @property
    def phrase(self) -> str:
        return self.phrases[self.outcome]

    @property
    def verdict(self) -> str:
        return f"{self.outcome} ({self.reason})"

    def as_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "paper": self.paper, "outcome": self.outcome,
                "verdict": self.verdict, "checks": {c.id: c.as_dict() for c in self.checks}}


def count(checks: Sequence) -> str:
    """"4 held, 1 not held, 2 inconclusive" (zero counts left out)."""
    parts = [f"{sum(c.outcome == o for c in checks)} {o}" for o in OUTCOMES
             if any(c.outcome == o for c in checks)]
    return ", ".join(parts) if parts else "no checks"


def table(items: Sequence):
    """Claims, or families of claims, as a DataFrame for display: one row per check."""
    import pandas as pd  # heavy: only notebooks show tables

    rows = []
    for item in items:
        for c in (item.checks if isinstance(item, Family) else [item]):
            rows.append({**({"family": item.id, "family outcome": item.outcome} if isinstance(item, Family) else {}),
                         "check": c.statement, "outcome": c.outcome, "effect": f"{c.effect:+.3g}",
                         "interval": c.interval_text, "pairs": c.n, "why": c.reason})
    return pd.DataFrame(rows)


def family_table(families: Sequence[Family]):
    """One row per family: the claim, where the paper makes it, the verdict."""
    import pandas as pd  # heavy: only notebooks show tables

    return pd.DataFrame([{"claim (paper)": f"{f.paper} ({f.source})", "verdict": f.verdict} for f in families])


def publish(cfg, families: Sequence[Family], figure_id: str, prefix: str):
    """Glue and record a notebook's verdicts; returns the table of checks to display.

    Glues ``claim.<family id>`` (the verdict line), ``claim.<family id>.phrase`` (the sentence
    of its outcome), ``claim.<family id>.outcome``, ``claim.<check id>`` for every check,
    ``<prefix>.claims.summary`` (outcomes counted over families, never over checks) and
    ``<prefix>.claims.table`` (one row per family); records every family under ``figure_id``
    with ``cfg``'s provenance (``config.NotebookParams.provenance``).
    """
    ids = [f.id for f in families] + [c.id for f in families for c in f.checks]
    if len(set(ids)) != len(ids):  # each is a glue key: a repeat is a book-build warning
        raise ValueError(f"publish: family and check ids must all differ, got {sorted(ids)}")
    for f in families:
        book.glue_text(f"claim.{f.id}", f.verdict)
        book.glue_text(f"claim.{f.id}.phrase", f.phrase)
        book.glue_text(f"claim.{f.id}.outcome", f.outcome)
        for c in f.checks:
            book.glue_text(f"claim.{c.id}", c.verdict)
    book.glue_text(f"{prefix}.claims.summary", count(families))
    book.glue_table(f"{prefix}.claims.table", family_table(families))
    results.record(figure_id, {f.id: f.as_dict() for f in families}, **cfg.provenance())
    return table(families)
