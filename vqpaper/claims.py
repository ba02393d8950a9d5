"""The paper's claims as checks on recorded numbers (SPEC §5): three-valued, with uncertainty.

A claim compares two settings pair by pair (a pair = one seed, or one seed and coordinate), e.g.
"pretraining gives a higher allocation entropy than scratch". The evidence is the paired
difference, signed so that a positive value points the way the claim says; for a positive
quantity with a ratio meaning (perplexity, MSE, ...) it is the difference of natural logs
(``log better - log worse``: a ratio). Over the ``n`` pairs we take its mean (the *effect*), its
sample standard deviation ``sd`` (ddof 1) and the two-sided Student-t interval
``[low, high]`` at ``CONFIDENCE`` (95%).

**Smallest effect of interest.** Each compared metric declares, in :data:`EFFECTS` and nowhere
else, the smallest difference that matters, ``delta`` (δ), on its scale, with the reason
(:func:`effects_table` prints them for the book). An unknown metric is an error, never a default.

**Regions of the interval** (exhaustive and non-overlapping; :func:`region`):

=========================================  ============  ======================================
interval ``[low, high]`` of the effect      region        in words
=========================================  ============  ======================================
``low > 0`` and ``high >= δ``               positive      above zero, not shown negligible
``-δ < low`` and ``high < δ``               no effect     inside (-δ, δ): no effect larger than δ
``high < 0`` and ``low <= -δ``              negative      below zero, not shown negligible
otherwise: ``low <= 0 <= high`` and         undecided     straddles zero and reaches beyond ±δ
(``low <= -δ`` or ``high >= δ``)
=========================================  ============  ======================================

"Inside (-δ, δ)" is the equivalence test of two one-sided tests, each at 2.5%, i.e. the same 95%
interval. An interval wholly below zero but inside (-δ, δ) is "no effect": it is not a
difference larger than δ either way. With δ = 0 the "no effect" region is empty.

**Outcome of a check** from the region and the claim's ``kind``:

============  ===================  =======================  ============
region        ``kind="greater"``   ``kind="equal"``         ``decision``
============  ===================  =======================  ============
positive      held                 not held                 positive
no effect     not held             held                     no effect
negative      not held             not held                 negative
undecided     inconclusive         inconclusive             undecided
============  ===================  =======================  ============

``kind="greater"`` is "better beats worse" (most claims); ``kind="equal"`` is a claim of
sameness ("as many peaks as the input", Fig. 2 (b)): held when no difference larger than δ
is shown, not held when the interval excludes zero and reaches beyond ±δ. A check is also
inconclusive, whatever its interval, with fewer than ``MIN_PAIRS`` pairs (one value has no
spread: its spread is *unknown*, never "± 0"), when a value is NaN, or when the runs had not
converged (below). Identical differences over distinct pairs have ``sd = 0`` and a zero-width
interval: that is a measurement, and it decides. An inconclusive check says which way it points
("points the claimed way in 3 of 3 pairs").

**Families.** One sentence of the paper, checked in one or more settings: it holds when every
check holds, is not held when any check is not held (``decision`` says "no effect",
"negative"/"positive", or both), and is inconclusive otherwise. A family quotes its sentence
(``quote``) and says where it is: a claim of the paper names a section or figure (``source``
starting with "§", :attr:`Family.is_paper`); a companion's measure, ablation, variant or
question, or SimVQ's own claim, says so (:data:`COMPANION_SOURCES`) and is never counted among
the paper's claims (:func:`paper_count`: "N of M claims of the paper held, K not held, J
undecided"). A family the parameters cannot test (a trend over one codebook size) is a
:class:`LeftOut`, outcome "not tested", with what would test it; :class:`Families` carries both.
Its phrase is chosen by the outcome, "no effect" having its own where given; an undecided
family's phrase says which way its checks point, with their intervals.

**Power.** Each check records the ``n`` pairs that would reach a decision with 80% and 95%
probability if the measured effect and ``sd`` were the truth (:func:`n_needed`): when
``|effect| >= δ`` the interval must exclude zero (noncentral t), when ``|effect| < δ`` it must
fall inside (-δ, δ) (exact, integrating over the sample sd); at least ``MIN_PAIRS``, and
``None`` when more than ``N_CAP`` pairs would be needed or the spread is unknown.
:func:`power_table` tabulates them.

**Convergence** (:func:`convergence_report`, :func:`convergence`): every stage of every run
that feeds a claim (pretraining too) is judged on its training loss. Draw the loss curve through
the per-epoch losses (straight lines between epochs 1..E); with ``last`` its mean over the
stage's last quarter ``[1 + 3(E-1)/4, E]`` and ``before`` over the quarter before,
``change = (before - last) / (first epoch's loss - last)``, the share of the stage's fall that
came in its last quarter. The stage has converged when ``-CONVERGENCE_TOL <= change <
CONVERGENCE_TOL``: a loss still falling by 10% of its fall, or rising by as much, has not; a
stage of fewer than ``CONVERGENCE_MIN_EPOCHS`` epochs is too short to judge (not converged).
The window is the exact quarter, the boundary epochs weighted by their share, not
``ceil(E/4)`` whole epochs: the whole-epoch window jumps at E = 4k + 1 and judged 81 of 125
exponential and power-law curves converged at some length and not one epoch later; the exact
quarter is non-increasing in E on every such curve tested (tests/test_claims.py). That rule
judges every stage before the final one (pretraining feeds the K-means initialisation). For the
final stage what matters is whether a longer run could change the verdict, so where the runs
recorded their metrics at a checkpoint (``run.checkpoint = {"epoch", "fraction", "metrics"}``,
at 3/4 of the final stage) the final stage's loss must only not be rising, and the check itself
is judged on its effect (``paired(checkpoint=...)``): ``drift`` = the effect at the end minus
the effect at the checkpoint; the check is *settled* (:func:`settled`) when the interval shifted
by one more such drift lies in a region of the same outcome, i.e. one more quarter of training at
the rate of the last would not change the verdict; an unsettled check is inconclusive ("still
moving"). An effect that approaches its limit drifts less the longer the run, so this too is
monotone in training length. Without a checkpoint the loss rule judges the final stage as well,
and the report says so. Each group's own drift on the metric (:func:`metric_drift`) is recorded
for the reader.

``margin`` says how far a decided interval is from the nearest boundary of its region, in
half-widths; the regression check uses it to tell a firm verdict from one at its threshold
(see ``vqpaper.regression``). The book quotes ``verdict`` through ``glue``; a claim that does
not hold at a profile is reported as such, not hidden.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Optional, Sequence, Union

import numpy as np

from . import book, results
from .spread import sample_sd

# ------------------------------------------------------------------ the one place
#: Two-sided confidence of the interval of the mean paired difference.
CONFIDENCE = 0.95
#: Fewer pairs than this cannot estimate the spread, so they decide nothing.
MIN_PAIRS = 2
#: Power: the probabilities of reaching a decision the power analysis reports, and the most
#: pairs it searches (beyond it: "not reachable").
POWERS = (0.80, 0.95)
N_CAP = 1000
#: A stage has converged when its last quarter brought less than this share of its fall (and
#: rose by less than this share); see the module docstring.
CONVERGENCE_TOL = 0.10
#: Fewer epochs than this in a stage cannot be judged (two quarters of at least one epoch each
#: and a first epoch before them).
CONVERGENCE_MIN_EPOCHS = 4
#: The reason of a check that :func:`settled` found still moving begins with these words
#: (``overview.STILL_MOVING`` reads them on the results page).
STILL_MOVING = "still moving"

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
OUTCOMES = (HELD, NOT_HELD, INCONCLUSIVE)
#: Regions of the interval (``Claim.decision``); see the module docstring.
POSITIVE, NO_EFFECT, NEGATIVE, UNDECIDED = "positive", "no effect", "negative", "undecided"
DECISIONS = (POSITIVE, NO_EFFECT, NEGATIVE, UNDECIDED)
#: ``kind`` of a claim: "better beats worse", or "the two are the same".
GREATER, EQUAL = "greater", "equal"
KINDS = (GREATER, EQUAL)
OUTCOME_OF = {GREATER: {POSITIVE: HELD, NO_EFFECT: NOT_HELD, NEGATIVE: NOT_HELD, UNDECIDED: INCONCLUSIVE},
              EQUAL: {POSITIVE: NOT_HELD, NO_EFFECT: HELD, NEGATIVE: NOT_HELD, UNDECIDED: INCONCLUSIVE}}
ABSOLUTE, LOG = "absolute", "log"
SCALES = (ABSOLUTE, LOG)


# ------------------------------------------------------------------ smallest effects of interest
@dataclass(frozen=True)
class Effect:
    """The smallest effect of interest of one metric: ``delta`` on ``scale``, and why.

    ``scale="absolute"``: differences of the values; ``scale="log"``: differences of their
    natural logs (a ratio; positive quantities only). ``per_codebook``: ``delta`` is a share of
    the codebook size, resolved by :func:`effect_for`.
    """

    scale: str
    delta: float
    reason: str
    per_codebook: bool = False

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"Effect scale must be one of {SCALES}, got {self.scale!r}")
        if not (math.isfinite(self.delta) and self.delta >= 0):
            raise ValueError(f"Effect delta must be a finite number >= 0, got {self.delta!r}")

    @property
    def text(self) -> str:
        """δ in words: ``"0.05"`` or ``"10% (ratio 1.1)"``."""
        if self.scale == LOG:
            return f"{math.expm1(self.delta):.0%} (ratio {math.exp(self.delta):.3g})"
        return f"{self.delta:.3g}"


_SHARE = "one twentieth of the metric's range [0, 1]"
_RATIO = "a 10% change: the ratio of the two values beyond 1.1 (or below 1/1.1)"
_PEAKS = ("half a peak: counts are integers, a mean difference under half a peak is no systematic "
          "difference")
_LOG10 = math.log(1.10)

#: metric -> its smallest effect of interest, with the reason (the book shows this table).
EFFECTS: dict[str, Effect] = {
    **{m: Effect(ABSOLUTE, 0.05, _SHARE) for m in (
        "alloc_entropy", "usage", "coverage", "precision", "participation_ratio", "dead_tokens_near_origin",
        "tokens_outside")},
    "min_spread_ratio": Effect(ABSOLUTE, 0.05, "one twentieth of a faithful reconstruction's value 1 (the worst "
                                               "cluster reconstructed with its data's variance)"),
    **{m: Effect(LOG, _LOG10, _RATIO) for m in (
        "perplexity", "codes_used", "distinct_code_tuples", "mse", "test_mse", "test_mse_normalised",
        "sliced_wasserstein", "quantization_error", "range", "init_range")},
    "perplexity_growth": Effect(LOG, _LOG10, "a 10% larger (or smaller) growth factor of the perplexity between "
                                             "two codebook sizes"),
    "log_perplexity_slope": Effect(ABSOLUTE, 0.05, "one twentieth of full use's slope: with every token used the "
                                                   "perplexity grows as K, a slope of 1 of log perplexity over "
                                                   "log K; 0.05 is a 3.5% rise per doubling of K"),
    "log_test_mse_slope": Effect(ABSOLUTE, 0.05, "the same δ as log_perplexity_slope: a 3.5% change of the test "
                                                 "MSE per doubling of K, which compounds to a factor 1.5 over the "
                                                 "paper's twelve doublings (2^4 to 2^16)"),
    "codes_used_growth": Effect(LOG, _LOG10, "a 10% larger (or smaller) growth factor of the codes used from the "
                                             "smallest to the largest codebook"),
    "min_tokens_per_cluster": Effect(ABSOLUTE, 0.01, "a hundredth of the codebook", per_codebook=True),
    **{m: Effect(ABSOLUTE, 0.5, _PEAKS) for m in ("peaks", "embedding_peaks", "token_peaks", "peaks_with_tokens")},
}


def effect_for(metric: str, codebook_size: Optional[int] = None) -> Effect:
    """The :data:`EFFECTS` entry of ``metric``, with a per-codebook delta resolved for ``codebook_size``."""
    if metric not in EFFECTS:
        raise ValueError(f"no smallest effect of interest is declared for metric {metric!r}; known metrics: "
                         f"{sorted(EFFECTS)} (add it to vqpaper.claims.EFFECTS with its reason)")
    e = EFFECTS[metric]
    if not e.per_codebook:
        return e
    if isinstance(codebook_size, bool) or not isinstance(codebook_size, (int, np.integer)) or codebook_size < 1:
        raise ValueError(f"metric {metric!r}: its smallest effect is {e.reason}, so codebook_size must be a "
                         f"positive int, got {codebook_size!r}")
    return Effect(e.scale, e.delta * int(codebook_size), f"{e.reason} (K = {int(codebook_size):,})")


def effect_rows() -> list[dict]:
    """Every metric's smallest effect of interest: ``{metric, scale, δ, reason}`` (the book's table)."""
    return [{"metric": m, "scale": "log (ratio)" if e.scale == LOG else "absolute",
             "δ": f"{e.delta:g} × K" if e.per_codebook else e.text, "reason": e.reason} for m, e in EFFECTS.items()]


def effects_table():
    """:func:`effect_rows` as a DataFrame."""
    import pandas as pd

    return pd.DataFrame(effect_rows())


# ------------------------------------------------------------------ the interval
def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student t quantile for the mean of ``n`` values (``n - 1`` degrees of freedom)."""
    from scipy.stats import t  # heavy (2 s to import): only a verdict needs it

    return float(t.ppf(0.5 + confidence / 2, n - 1))


def paired_interval(differences: Sequence[float], confidence: float = CONFIDENCE):
    """``(mean, low, high)`` of the mean of ``differences`` (t interval; sample sd, ddof 1).

    One difference has no spread: the interval is ``(-inf, inf)``, never zero-width.
    """
    n = len(differences)
    mean = math.fsum(differences) / n
    if n < 2:
        return mean, -math.inf, math.inf
    half = t_quantile(n, confidence) * sample_sd(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def region(low: float, high: float, delta: float) -> str:
    """Which region of the module docstring's table the interval ``[low, high]`` falls in."""
    if low > 0 and high >= delta:
        return POSITIVE
    if -delta < low and high < delta:
        return NO_EFFECT
    if high < 0 and low <= -delta:
        return NEGATIVE
    return UNDECIDED


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` found: the outcome, the region of the interval and the numbers."""

    outcome: str
    decision: str
    reason: str
    effect: float
    low: float
    high: float
    sd: float
    n_agree: int = 0  # greater: pairs pointing the claimed way; equal: pairs within ±delta


def _scaled(x: float, scale: str, signed: bool = True) -> str:
    if not math.isfinite(x):
        return str(x)
    if scale == LOG:
        return f"×{math.exp(x):.3g}"
    return f"{x:+.3g}" if signed else f"{x:.3g}"


def _region_reason(decision: str, kind: str, delta: float, scale: str) -> str:
    d = _scaled(delta, scale, signed=False)
    inside = (f"(×{math.exp(-delta):.3g}, ×{math.exp(delta):.3g})" if scale == LOG
              else f"(-{delta:.3g}, {delta:.3g})")
    if decision == NO_EFFECT:
        return (f"no {'difference' if kind == EQUAL else 'effect'} larger than δ = {d}: the interval lies inside "
                f"{inside}")
    if kind == EQUAL:
        side = "above" if decision == POSITIVE else "below"
        return f"a difference: the interval lies {side} zero and reaches beyond ±δ = {d}"
    if decision == POSITIVE:
        return f"the claimed way: the interval lies above zero and reaches δ = {d}"
    return f"the other way: the interval lies below zero and reaches -δ (δ = {d})"


def decide(differences: Sequence[float], *, delta: float = 0.0, kind: str = GREATER, converged: bool = True,
           scale: str = ABSOLUTE, not_converged: str = "the runs had not converged", unit: str = "pair") -> Decision:
    """The outcome of paired ``differences`` signed the claim's way (module docstring's tables).

    ``delta`` is the smallest effect of interest on ``scale`` (only used for words there);
    ``not_converged`` the words used when ``converged`` is false; ``unit`` what a pair is, in
    words ("seed").
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not (math.isfinite(delta) and delta >= 0):
        raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
    diffs = [float(d) for d in differences]
    n = len(diffs)
    if not n:
        raise ValueError("decide: no differences")
    if any(math.isnan(d) for d in diffs):
        return Decision(INCONCLUSIVE, UNDECIDED, "a value is NaN", math.nan, -math.inf, math.inf, math.nan, 0)
    effect, low, high = paired_interval(diffs)
    sd = sample_sd(diffs) if n > 1 else math.nan  # one value: its spread is unknown, not 0
    units = f"{unit}{'s' if n != 1 else ''}"
    if kind == GREATER:
        agree = sum(d > 0 for d in diffs)
        direction = f"points the claimed way in {agree} of {n} {units}"
    else:
        agree = sum(abs(d) < delta for d in diffs)
        direction = f"{agree} of {n} {units} differ by less than δ"
    undecided = []
    if n < MIN_PAIRS:
        undecided.append(f"{n} {units}: the spread is unknown (need {MIN_PAIRS})")
    elif not (math.isfinite(sd) and math.isfinite(low) and math.isfinite(high)):
        undecided.append("the spread cannot be estimated")
    if not converged:
        undecided.append(not_converged)
    if undecided:
        return Decision(INCONCLUSIVE, UNDECIDED, "; ".join(undecided + [direction]), effect, low, high, sd, agree)
    where = region(low, high, delta)
    if where == UNDECIDED:
        if delta > 0:
            why = f"the interval straddles zero and reaches beyond ±δ (δ = {_scaled(delta, scale, signed=False)})"
        else:
            why = "the interval straddles zero (no smallest effect of interest declared)"
        return Decision(INCONCLUSIVE, UNDECIDED, f"{why}; {direction}", effect, low, high, sd, agree)
    return Decision(OUTCOME_OF[kind][where], where, _region_reason(where, kind, delta, scale), effect, low, high, sd,
                    agree)


# ------------------------------------------------------------------ power
def power(effect: float, sd: float, n: int, delta: float, confidence: float = CONFIDENCE) -> float:
    """Probability that ``n`` pairs reach the decision the effect points to, if ``effect`` and ``sd`` are true.

    ``|effect| >= delta``: the interval excludes zero (two-sided t test, noncentral t);
    ``|effect| < delta``: the interval lies inside (-delta, delta) (two one-sided tests),
    computed exactly by integrating over the chi-square distribution of the sample variance
    (Gauss-Legendre, 256 nodes).
    """
    from scipy import special  # see t_quantile; the special functions keep a search over n fast

    if n < MIN_PAIRS or not (math.isfinite(effect) and math.isfinite(sd)):
        return 0.0
    df = n - 1
    tc = float(special.stdtrit(df, 0.5 + confidence / 2))
    if abs(effect) >= delta:
        if sd == 0:
            return 1.0 if effect != 0 else 0.0
        nc = math.sqrt(n) * abs(effect) / sd
        p = float(1 - special.nctdtr(df, nc, tc) + special.nctdtr(df, nc, -tc))
        if not math.isfinite(p):  # the noncentral t gives NaN far in its tail (large n and nc): the normal limit
            p = float(special.ndtr(nc - tc) + special.ndtr(-tc - nc))
        return min(max(p, 0.0), 1.0)
    if sd == 0:
        return 1.0
    se = sd / math.sqrt(n)
    # the half-width is tc * se * sqrt(V / df) with V ~ chi2(df); inside (-delta, delta) needs it below delta
    v_max = df * (delta / (tc * se)) ** 2
    lo_v, hi_v = float(special.chdtri(df, 1 - 1e-12)), min(v_max, float(special.chdtri(df, 1e-12)))
    if hi_v <= lo_v:
        return 0.0
    x, w = _legendre()
    v = lo_v + (hi_v - lo_v) * (x + 1) / 2
    half = tc * se * np.sqrt(v / df)
    inside = np.clip(special.ndtr((delta - half - effect) / se) - special.ndtr((-delta + half - effect) / se), 0, None)
    log_pdf = (df / 2 - 1) * np.log(v) - v / 2 - df / 2 * math.log(2) - special.gammaln(df / 2)
    return float(min(max(np.sum(w * inside * np.exp(log_pdf)) * (hi_v - lo_v) / 2, 0.0), 1.0))


_NODES: list = []


def _legendre():
    if not _NODES:
        _NODES.extend(np.polynomial.legendre.leggauss(256))
    return _NODES


def n_needed(effect: float, sd: float, delta: float, target: float, cap: int = N_CAP) -> Optional[int]:
    """The fewest pairs (at least ``MIN_PAIRS``) whose :func:`power` reaches ``target``; None beyond ``cap``."""
    if not (math.isfinite(effect) and math.isfinite(sd)):
        return None
    if power(effect, sd, MIN_PAIRS, delta) >= target:
        return MIN_PAIRS
    if power(effect, sd, cap, delta) < target:
        return None
    lo, hi = MIN_PAIRS, cap  # power(lo) < target <= power(hi); power rises with n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if power(effect, sd, mid, delta) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def _n_text(n: Optional[int], spread_known: bool) -> str:
    if not spread_known:
        return "unknown (no spread)"
    return f"> {N_CAP}" if n is None else str(n)


# ------------------------------------------------------------------ one check
@dataclass
class Claim:
    id: str
    statement: str
    outcome: str           # "held", "not held" or "inconclusive"
    reason: str            # why, in words
    effect: float          # mean paired difference on the metric's scale, positive = the claimed direction
    low: float             # interval of the effect
    high: float
    n: int                 # pairs (usually seeds)
    n_agree: int           # greater: pairs pointing the claimed way; equal: pairs within ±delta
    setting: str = ""      # where it was checked, e.g. "2-D" (default: the statement)
    metric: str = ""       # the compared metric (its EFFECTS entry), "" when none was declared
    scale: str = ABSOLUTE  # "absolute" or "log" (effect, low, high, delta are log ratios)
    delta: float = 0.0     # smallest effect of interest on that scale
    kind: str = GREATER    # "greater" or "equal"
    decision: str = ""     # region of the interval: positive, no effect, negative, undecided
    sd: float = math.nan   # sample sd of the paired differences (NaN: unknown)
    n_80: Optional[int] = None   # pairs needed to decide with 80% / 95% probability (None: > N_CAP or unknown)
    n_95: Optional[int] = None
    labels: tuple = ()     # the pairs' labels (seeds), when given
    converged: bool = True
    drift: float = math.nan  # change of the effect over the last quarter of the final stage (NaN: no checkpoint)
    settled: Optional[bool] = None  # whether one more such quarter would leave the outcome as it is (None: unknown)
    unit: str = "pair"     # what a pair is, in words ("seed")
    convergence: Optional[dict] = None  # Convergence.as_dict() of the runs behind it, when judged

    def __post_init__(self):
        self.setting = self.setting or self.statement

    @classmethod
    def from_dict(cls, d: dict) -> "Claim":
        """The claim back from its :meth:`as_dict` (e.g. read from a results JSON)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["labels"] = tuple(tuple(x) if isinstance(x, list) else x for x in kw.get("labels", ()))
        for k in ("effect", "low", "high", "sd"):  # JSON writes inf/nan as null or strings
            if k in kw:
                kw[k] = _float_or_nan(kw[k])
        return cls(**kw)

    @property
    def held(self) -> bool:
        return self.outcome == HELD

    @property
    def decided(self) -> bool:
        return self.outcome != INCONCLUSIVE

    @property
    def spread_known(self) -> bool:
        return math.isfinite(self.sd)

    @property
    def margin(self) -> float:
        """How far the interval lies inside its region, in half-widths (inf: zero width, strictly inside).

        Decided: the distance from the nearest boundary of the region (0 = on it, a verdict at
        its threshold; 1 = a whole half-width inside). Undecided: the near end's distance from
        zero, negative or 0 (the interval straddles zero); -inf without an interval.
        """
        half = (self.high - self.low) / 2
        if not math.isfinite(half):
            return -math.inf
        d = self.delta
        distance = {POSITIVE: min(self.low, self.high - d), NO_EFFECT: min(self.low + d, d - self.high),
                    NEGATIVE: min(-self.high, -d - self.low)}.get(
            self.decision, self.low if self.effect > 0 else -self.high)
        if half == 0:
            return math.inf if distance > 0 else (0.0 if distance == 0 else -math.inf)
        return distance / half

    @property
    def decision_text(self) -> str:
        """The region in words: "the claimed way", "no effect", "the other way" (sameness claims:
        "no difference", "larger", "smaller"), or "undecided"."""
        words = ({POSITIVE: "larger", NO_EFFECT: "no difference", NEGATIVE: "smaller"} if self.kind == EQUAL else
                 {POSITIVE: "the claimed way", NO_EFFECT: "no effect", NEGATIVE: "the other way"})
        return words.get(self.decision, UNDECIDED)

    @property
    def effect_text(self) -> str:
        return _scaled(self.effect, self.scale)

    @property
    def interval_text(self) -> str:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "no interval (spread unknown)"
        return (f"{int(CONFIDENCE * 100)}% CI [{_scaled(self.low, self.scale, signed=False)}, "
                f"{_scaled(self.high, self.scale, signed=False)}]")

    @property
    def direction(self) -> str:
        """Which way the pairs point, with the interval: "points the claimed way in 3 of 3 seeds, 95% CI [...]"."""
        units = f"{self.unit}{'s' if self.n != 1 else ''}"
        if self.kind == EQUAL:
            way = f"{self.n_agree} of {self.n} {units} differ by less than δ = {_scaled(self.delta, self.scale, False)}"
        else:
            way = f"points the claimed way in {self.n_agree} of {self.n} {units}"
        return f"{way}, {self.interval_text}"

    @property
    def verdict(self) -> str:
        """One line for the book: outcome, effect, interval and the reason."""
        return (f"{self.outcome}: effect {self.effect_text}, {self.interval_text} "
                f"over {self.n} pair{'s' if self.n != 1 else ''} ({self.reason})")

    def n_needed_text(self, target: float) -> str:
        """Pairs needed to decide with probability ``target`` (one of ``POWERS``), in words."""
        n = {0.80: self.n_80, 0.95: self.n_95}[target]
        return _n_text(n, self.spread_known)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = [list(x) if isinstance(x, tuple) else x for x in self.labels]
        return {**d, "margin": self.margin, "verdict": self.verdict}


def _float_or_nan(x) -> float:
    """A recorded number back as a float: None (JSON null) is NaN, "Infinity" strings are read."""
    return math.nan if x is None else float(x)


def _num(x: float, signed: bool = False) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:+.3g}" if signed else f"{x:.3g}"


@dataclass
class Convergence:
    """Whether runs converged, the per-run and per-stage numbers behind it, and why not.

    ``stages``: one row per run and stage (:func:`convergence_report` plus the run's group and
    seed); ``drift``: one row per group of runs and compared metric (:func:`metric_drift`).
    It is truthy when every stage and every metric checked has converged.
    """

    converged: bool
    reason: str = ""
    stages: list = field(default_factory=list)
    drift: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.converged

    def as_dict(self) -> dict:
        return asdict(self)


def paired(claim_id: str, statement: str, better: Sequence[float], worse: Sequence[float],
           higher_is_better: bool = True, converged: Union[bool, Convergence, None] = True, setting: str = "", *,
           metric: Optional[str] = None, codebook_size: Optional[int] = None, kind: str = GREATER,
           labels: Optional[Sequence] = None, unit: str = "pair", checkpoint: Optional[tuple] = None) -> Claim:
    """Claim "``better`` beats ``worse``" pair by pair (``better[i]`` vs ``worse[i]``, usually seeds).

    ``metric`` names the compared metric's :data:`EFFECTS` entry (scale and smallest effect;
    ``codebook_size`` for a per-codebook one); without it δ = 0 and "no effect" cannot be
    decided (the reason says so). ``kind="equal"``: the claim is that the two are the same.
    ``labels`` (e.g. the seeds) must all differ: a repeated seed is the same run twice, not a
    second pair. ``converged`` false (or a false :class:`Convergence`) makes the outcome
    inconclusive whatever the numbers say; ``None`` counts as converged. A :class:`Convergence`
    is kept with the claim (``Claim.convergence``: per run and stage, recorded in the results).
    ``unit`` names a pair in the reason ("points the claimed way in 3 of 3 seeds").

    ``checkpoint``: ``(better, worse)`` of the same pairs at 3/4 of the final stage (the runs'
    ``checkpoint``). The effect's change since then is its ``drift``; the check is *settled* when
    one more quarter of training at that rate, the interval shifted by the drift, would give the
    same outcome (:func:`settled`). An unsettled check is inconclusive: it is still moving.
    """
    if len(better) != len(worse) or not len(better):
        raise ValueError(f"claim {claim_id}: need two equally long, non-empty lists, got {len(better)} and {len(worse)}")
    if labels is not None:
        labels = tuple(tuple(x) if isinstance(x, list) else x for x in labels)
        if len(labels) != len(better):
            raise ValueError(f"claim {claim_id}: {len(labels)} labels for {len(better)} pairs; give one label "
                             f"(seed) per pair")
        repeated = sorted({x for x in labels if labels.count(x) > 1}, key=repr)
        if repeated:
            raise ValueError(f"claim {claim_id}: pair labels (seeds) must all differ, got {list(labels)} with "
                             f"{repeated} repeated; a repeated seed is the same run again, not another pair")
    eff = effect_for(metric, codebook_size) if metric is not None else Effect(ABSOLUTE, 0.0, "none declared")
    sign = 1.0 if higher_is_better else -1.0

    def differences(better_, worse_):
        b = [float(x) for x in better_]
        w = [float(x) for x in worse_]
        if eff.scale == LOG:
            bad = [x for x in b + w if not math.isnan(x) and x <= 0]
            if bad:
                raise ValueError(f"claim {claim_id}: metric {metric!r} is compared as a ratio (log scale), so its "
                                 f"values must be positive, got {bad[:3]}")
            b, w = [math.log(x) for x in b], [math.log(x) for x in w]
        return [sign * (x - y) for x, y in zip(b, w)]

    diffs = differences(better, worse)
    ok = converged is None or bool(converged)
    why_not = "the runs had not converged"
    if isinstance(converged, Convergence) and not converged.converged and converged.reason:
        why_not += f" ({converged.reason})"
    d = decide(diffs, delta=eff.delta, kind=kind, converged=ok, scale=eff.scale, not_converged=why_not, unit=unit)
    drift, steady = math.nan, None
    if checkpoint is not None:
        if len(checkpoint[0]) != len(better) or len(checkpoint[1]) != len(worse):
            raise ValueError(f"claim {claim_id}: the checkpoint needs one value per pair on each side")
        drift = d.effect - math.fsum(differences(*checkpoint)) / len(diffs)
        steady = settled(d, drift, eff.delta, kind)
        if d.outcome != INCONCLUSIVE and steady is False:
            moved = region(d.low + drift, d.high + drift, eff.delta)
            d = Decision(INCONCLUSIVE, UNDECIDED,
                         f"{STILL_MOVING}: the effect changed by {_scaled(drift, eff.scale)} over the last quarter of "
                         f"training; one more such quarter would put the interval at "
                         f"[{_scaled(d.low + drift, eff.scale, signed=False)}, "
                         f"{_scaled(d.high + drift, eff.scale, signed=False)}] ({moved}); {d.reason}",
                         d.effect, d.low, d.high, d.sd, d.n_agree)
    n_80, n_95 = (n_needed(d.effect, d.sd, eff.delta, p) for p in POWERS)
    return Claim(claim_id, statement, d.outcome, d.reason, d.effect, d.low, d.high, len(diffs), d.n_agree, setting,
                 metric=metric or "", scale=eff.scale, delta=eff.delta, kind=kind, decision=d.decision, sd=d.sd,
                 n_80=n_80, n_95=n_95, labels=labels or (), converged=ok, unit=unit,
                 convergence=converged.as_dict() if isinstance(converged, Convergence) else None, drift=drift,
                 settled=steady)


def settled(d: "Decision", drift: float, delta: float, kind: str = GREATER) -> Optional[bool]:
    """Whether a decided check would keep its outcome after one more quarter of training at the rate
    of the last: its interval shifted by ``drift`` (the effect's change from 3/4 of the final stage
    to the end) lies in a region of the same outcome. None when it cannot be judged (no interval
    or no drift). For an effect that approaches its limit, a longer run drifts less, so a check
    settled at one length stays settled at a longer one.
    """
    if not (math.isfinite(drift) and math.isfinite(d.low) and math.isfinite(d.high)):
        return None
    return OUTCOME_OF[kind][region(d.low + drift, d.high + drift, delta)] == d.outcome


def log_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` over ``log x`` (e.g. log perplexity over log K: 1 = grows as K)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if lx.size < 2 or np.ptp(lx) == 0:
        raise ValueError(f"log_slope needs at least two distinct x, got {list(x)}")
    return float(np.polyfit(lx, ly, 1)[0])


# ------------------------------------------------------------------ convergence
def _curve_mean(losses: Sequence[float], a: float, b: float) -> float:
    """Mean over epochs [a, b] of the curve through (i, losses[i - 1]), straight between epochs."""
    xs = np.arange(1, len(losses) + 1, dtype=float)
    grid = np.concatenate([[a], xs[(xs > a) & (xs < b)], [b]])
    ys = np.interp(grid, xs, np.asarray(losses, dtype=float))
    return float(np.sum((ys[1:] + ys[:-1]) * np.diff(grid)) / 2 / (b - a))


def stage_change(losses: Sequence[float], tol: float = CONVERGENCE_TOL) -> dict:
    """One stage's convergence: ``{epochs, first, before, last, change, threshold, converged, why}``.

    ``change = (before - last) / (first - last)`` (module docstring); a stage whose loss ended
    above its first epoch is measured against the size of that rise, so a loss that keeps
    rising gives a negative change. NaN with fewer than ``CONVERGENCE_MIN_EPOCHS`` epochs.
    """
    losses = [float(v) for v in losses]
    e = len(losses)
    row = {"epochs": e, "first": losses[0] if losses else math.nan, "before": math.nan, "last": math.nan,
           "change": math.nan, "threshold": tol, "converged": False}
    if e < CONVERGENCE_MIN_EPOCHS:
        return {**row, "why": f"too short to judge ({e} epoch{'s' if e != 1 else ''}, need "
                              f"{CONVERGENCE_MIN_EPOCHS})"}
    if any(not math.isfinite(v) for v in losses):
        return {**row, "why": "a loss is not finite"}
    mid, three_q = 1 + (e - 1) / 2, 1 + 3 * (e - 1) / 4
    # measured from the final epoch's loss, so that a flat stretch gives exact zeros, not round-off
    offsets = [v - losses[-1] for v in losses]
    before, last = _curve_mean(offsets, mid, three_q), _curve_mean(offsets, three_q, e)
    fall = offsets[0] - last
    if fall != 0:
        change = (before - last) / abs(fall)
    else:
        change = 0.0 if before == last else math.copysign(math.inf, before - last)
    before, last = before + losses[-1], last + losses[-1]
    ok = -tol <= change < tol
    if ok:
        why = "flattened"
    elif change > 0:
        why = f"still falling: the last quarter brought {change:.0%} of the stage's fall (threshold {tol:.0%})"
    else:
        why = f"rising: the loss rose by {-change:.0%} of the stage's fall in the last quarter (threshold {tol:.0%})"
    return {**row, "before": before, "last": last, "change": change, "converged": ok, "why": why}


def _stages(history: Sequence[dict]) -> dict:
    """``{stage: [losses]}`` in the order the stages ran."""
    out: dict = {}
    for r in history:
        out.setdefault(r.get("stage"), []).append(r["loss"])
    return out


def convergence_report(run_or_history, tol: float = CONVERGENCE_TOL) -> list[dict]:
    """Per stage of a run (or of its ``history``): ``{stage, epochs, change, threshold, converged, why, ...}``."""
    history = getattr(run_or_history, "history", run_or_history)
    return [{"stage": stage, **stage_change(losses, tol)} for stage, losses in _stages(history or []).items()]


def loss_change(history: Sequence[dict], stage: Optional[str] = None) -> float:
    """The ``change`` of one stage (default: the final one) of a run's ``history``; NaN when it cannot be judged."""
    stages = _stages(history or [])
    if not stages:
        return math.nan
    if stage is None:
        stage = list(stages)[-1]
    if stage not in stages:
        raise ValueError(f"stage {stage!r} not in the history (stages: {list(stages)})")
    return stage_change(stages[stage])["change"]


def converged(history: Sequence[dict], tol: float = CONVERGENCE_TOL) -> bool:
    """Whether every stage of a run's training loss has converged; an empty history has not."""
    report = convergence_report(history, tol)
    return bool(report) and all(r["converged"] for r in report)


def metric_drift(runs: Sequence, metric: str, codebook_size: Optional[int] = None) -> dict:
    """Whether a group of runs (the seeds of one setting) has settled on ``metric`` over the last quarter.

    Reads each run's ``checkpoint`` (``{"epoch", "fraction", "metrics"}``, recorded at 3/4 of
    the final stage): ``drift`` is the mean over the runs of ``metric`` at the end minus at the
    checkpoint, on the metric's scale; settled when ``|drift| < delta``. ``converged`` is None,
    with the reason, when a run has no checkpoint of ``metric`` (the loss rule alone applies).
    """
    if codebook_size is None:
        sizes = {r.config.get("codebook_size") for r in runs}
        codebook_size = sizes.pop() if len(sizes) == 1 else None
    eff = effect_for(metric, codebook_size)
    row = {"metric": metric, "scale": eff.scale, "delta": eff.delta, "n": len(runs), "drift": math.nan,
           "converged": None}
    points = []
    for r in runs:
        cp = getattr(r, "checkpoint", None)
        if not cp or metric not in cp.get("metrics", {}) or metric not in r.metrics:
            return {**row, "why": f"no checkpoint of {metric} recorded: the loss rule only"}
        points.append((float(cp["metrics"][metric]), float(r.metrics[metric]), cp.get("fraction")))
    if not points:
        return {**row, "why": "no runs"}
    if eff.scale == LOG:
        if any(x <= 0 for p in points for x in p[:2]):
            return {**row, "converged": False, "why": f"{metric} is not positive, cannot compare as a ratio"}
        moves = [math.log(end) - math.log(cp) for cp, end, _ in points]
    else:
        moves = [end - cp for cp, end, _ in points]
    drift = math.fsum(moves) / len(moves)
    ok = bool(abs(drift) < eff.delta)  # NaN -> False
    since = {p[2] for p in points}
    frm = f"{since.pop():.0%} of the final stage" if len(since) == 1 and None not in since else "the checkpoint"
    why = (f"settled: mean change {_scaled(drift, eff.scale)} from {frm} to the end, within δ = "
           f"{_scaled(eff.delta, eff.scale, signed=False)}" if ok else
           f"still drifting: mean change {_scaled(drift, eff.scale)} from {frm} to the end, δ = "
           f"{_scaled(eff.delta, eff.scale, signed=False)}")
    return {**row, "drift": drift, "converged": ok, "why": why}


def convergence(*groups: Sequence, metric: Optional[str] = None, tol: float = CONVERGENCE_TOL,
                names: Optional[Sequence[str]] = None, stages: Optional[Sequence[str]] = None) -> Convergence:
    """Convergence of the runs behind a check: each group is the seeds of one compared setting.

    Every stage before the final one by the loss rule (:func:`stage_change`: flattened, not
    rising): those stages feed the final one (pretraining feeds the K-means initialisation). The
    final stage of a run that recorded a checkpoint must not be rising; whether it still moves
    the compared metric is judged on the check's own effect (``paired(checkpoint=...)``,
    :func:`settled`), since that is what a longer run could change. Without a checkpoint the
    final stage is judged by the loss rule too. With ``metric``, each group's own drift on it
    (:func:`metric_drift`) is recorded for the reader (not a criterion). ``names`` label the
    groups in the report (e.g. ``"pretrained, 2-D"``; default: their index). ``stages`` limits
    the loss rule to the stages that feed the check (Fig. 2 reads the encoder after its
    ``"pretrain"`` stage: the VQ epochs after it change nothing the check compares); a run
    without any of them has not converged.
    """
    if names is not None and len(names) != len(groups):
        raise ValueError(f"convergence: {len(names)} names for {len(groups)} groups; give one name per group")
    rows, drift, notes, failed = [], [], [], []
    for g, runs in enumerate(groups):
        name = names[g] if names is not None else g
        for run in runs:
            seed = run.config.get("seed")
            report = convergence_report(run, tol)
            if stages is not None:
                report = [r for r in report if r["stage"] in stages]
            if not report:
                why = "no training history" if stages is None else f"no stage {' or '.join(stages)} in its history"
                report = [{"stage": None, **stage_change([], tol), "why": why}]
            elif getattr(run, "checkpoint", None) and stages is None and math.isfinite(report[-1]["change"]):
                last = report[-1]
                rising = last["change"] < -tol
                report[-1] = {**last, "converged": not rising, "rule": "final stage: not rising (the check's "
                              "effect is judged on its drift since the checkpoint)",
                              "why": last["why"] if rising else f"not rising ({last['why']})"}
            for row in report:
                rows.append({"group": name, "seed": seed, **row})
                if not row["converged"]:
                    who = f"{name}, seed {seed}" if names is not None else f"seed {seed}"
                    failed.append(f"{who}, {row['stage'] or 'training'}: {row['why']}")
        if metric is not None and runs:
            row = {"group": name, **metric_drift(runs, metric)}
            drift.append(row)
            if row["converged"] is None:
                notes.append(row["why"])
    return Convergence(not failed, "; ".join(failed), rows, drift, sorted(set(notes)))


# ------------------------------------------------------------------ one sentence of the paper
#: A claim of the paper names a section or figure of Zhao et al. ("§3.1.1, Fig. 3"); every other
#: family says whose it is with one of ``COMPANION_SOURCES`` and is never counted among the
#: paper's claims ("N of M claims of the paper").
PAPER_SOURCE = "§"
COMPANION_SOURCES = ("companion measure of ", "companion ablation of ", "companion variant", "companion question",
                     "SimVQ (Zhu, Li et al. 2024)")
#: The outcome of a family that these parameters cannot test (e.g. a trend over one codebook size).
NOT_TESTED = "not tested"


def is_paper_source(source: str) -> bool:
    """Whether ``source`` is a section or figure of the paper (not a companion measure, variant or question)."""
    return source.startswith(PAPER_SOURCE)


def _check_source(fid: str, source: str, quote: str) -> None:
    if not (is_paper_source(source) or source.startswith(COMPANION_SOURCES)):
        raise ValueError(f"family {fid}: source {source!r} must be a section of the paper (starting with "
                         f"{PAPER_SOURCE!r}, e.g. '§3.1.1, Fig. 3') or start with one of {COMPANION_SOURCES}")
    if is_paper_source(source) and not quote.strip():
        raise ValueError(f"family {fid}: a claim of the paper ({source}) needs the sentence it tests as its quote")


@dataclass
class Family:
    """One sentence of the paper (one claim, one direction), checked in one or more settings.

    ``quote`` is the paper's sentence (short), ``paper`` the claim in our words, ``source``
    where it is (:data:`PAPER_SOURCE`) or whose it is (:data:`COMPANION_SOURCES`). ``checks``
    all point the way the sentence does, so they are never summed against checks of the
    opposite direction. The family **holds** when every check holds, is **not held** when any
    check is not held, and is **inconclusive** otherwise. ``phrases`` give the book's sentence
    for each outcome (``held``, ``not held``: the other way, ``inconclusive``, and optionally
    ``no effect``: not held because no effect larger than δ was found), so prose is computed
    from the verdict, never typed next to it.
    """

    id: str                   # no parameter values in it: the book and the results page name it
    source: str               # where in the paper, e.g. "§3.1.1, Fig. 3", or "companion question"
    paper: str                # the claim, in our words
    checks: Sequence[Claim]
    phrases: dict             # outcome (and optionally "no effect") -> sentence
    quote: str = ""           # the paper's sentence, short

    def __post_init__(self):
        missing = [o for o in OUTCOMES if o not in self.phrases]
        if missing:
            raise ValueError(f"family {self.id}: phrases for {missing} missing; give one per outcome {OUTCOMES}")
        unknown = sorted(set(self.phrases) - set(OUTCOMES) - {NO_EFFECT})
        if unknown:
            raise ValueError(f"family {self.id}: phrases for unknown outcomes {unknown}; allowed: "
                             f"{OUTCOMES + (NO_EFFECT,)}")
        if not self.checks:
            raise ValueError(f"family {self.id}: no checks")
        _check_source(self.id, self.source, self.quote)

    @property
    def is_paper(self) -> bool:
        """A claim of the paper (counted in "N of M claims of the paper"), not a companion's."""
        return is_paper_source(self.source)

    @property
    def metric(self) -> str:
        """The metric(s) the checks compare, e.g. ``"perplexity"``."""
        return ", ".join(dict.fromkeys(c.metric or "undeclared" for c in self.checks))

    @property
    def kind(self) -> str:
        return ", ".join(dict.fromkeys(c.kind for c in self.checks))

    @property
    def outcome(self) -> str:
        outcomes = [c.outcome for c in self.checks]
        if all(o == HELD for o in outcomes):
            return HELD
        if NOT_HELD in outcomes:
            return NOT_HELD
        return INCONCLUSIVE

    @property
    def decision(self) -> str:
        """Held / inconclusive: the outcome. Not held: the regions of the failing checks, e.g. "no effect"."""
        if self.outcome != NOT_HELD:
            return self.outcome
        found = {c.decision for c in self.checks if c.outcome == NOT_HELD}
        return " and ".join(d for d in DECISIONS if d in found)

    @property
    def reason(self) -> str:
        n = len(self.checks)
        if self.outcome == HELD:
            return f"held in {'the one setting' if n == 1 else f'all {n} settings'}"
        if self.outcome == NOT_HELD:
            bad = [c for c in self.checks if c.outcome == NOT_HELD]
            return f"not held in {len(bad)} of {n} setting{'s' if n != 1 else ''}: " + "; ".join(
                f"{c.setting} ({c.decision_text})" for c in bad)
        open_ = [c for c in self.checks if c.outcome == INCONCLUSIVE]
        return f"undecided in {len(open_)} of {n}: " + "; ".join(f"{c.setting} ({c.reason})" for c in open_)

    @property
    def directions(self) -> str:
        """Where undecided, which way each undecided check points, with its interval."""
        return "; ".join(f"{c.setting}: {'the runs had not converged; ' if not c.converged else ''}{c.direction}"
                         for c in self.checks if c.outcome == INCONCLUSIVE)

    @property
    def phrase(self) -> str:
        """The sentence of the outcome; "no effect" has its own where given; an undecided one says where it points."""
        if self.outcome == NOT_HELD and self.decision == NO_EFFECT and NO_EFFECT in self.phrases:
            return self.phrases[NO_EFFECT]
        if self.outcome == INCONCLUSIVE:
            return f"{self.phrases[INCONCLUSIVE].rstrip('.')} ({self.directions})."
        return self.phrases[self.outcome]

    @property
    def verdict(self) -> str:
        return f"{self.outcome} ({self.reason})"

    @property
    def n(self) -> int:
        """The fewest pairs of any check."""
        return min(c.n for c in self.checks)

    def n_needed(self, target: float) -> Optional[int]:
        """Pairs that would decide every check with probability ``target`` (one of ``POWERS``): the most any
        check needs; None when one needs more than ``N_CAP`` or its spread is unknown."""
        needed = [{0.80: c.n_80, 0.95: c.n_95}[target] for c in self.checks]
        return None if any(n is None for n in needed) else max(needed)

    def as_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "is_paper": self.is_paper, "quote": self.quote,
                "paper": self.paper, "metric": self.metric, "kind": self.kind, "outcome": self.outcome,
                "decision": self.decision, "n": self.n, "n_80": self.n_needed(0.80), "n_95": self.n_needed(0.95),
                "phrase": self.phrase, "phrases": dict(self.phrases),
                "verdict": self.verdict, "checks": {c.id: c.as_dict() for c in self.checks}}

    @classmethod
    def from_dict(cls, d: dict) -> "Family":
        """The family back from its :meth:`as_dict` (its phrase becomes the phrase of its outcome)."""
        checks = [Claim.from_dict(c) for c in d["checks"].values()]
        phrases = d.get("phrases") or {o: d.get("phrase", "") for o in OUTCOMES}
        return cls(d["id"], d["source"], d.get("paper", ""), checks, phrases, d.get("quote", ""))


@dataclass
class LeftOut:
    """A family these parameters cannot test (e.g. a trend over one codebook size), and why.

    Published like a family (its glue keys exist, its outcome is :data:`NOT_TESTED`) so the
    book says what would test it instead of comparing a setting with itself.
    """

    id: str
    source: str
    paper: str
    why: str                  # a sentence: what is missing and which parameters would test it
    quote: str = ""
    outcome: str = field(default=NOT_TESTED, init=False)

    def __post_init__(self):
        _check_source(self.id, self.source, self.quote)

    @property
    def is_paper(self) -> bool:
        return is_paper_source(self.source)

    @property
    def phrase(self) -> str:
        return self.why

    @property
    def verdict(self) -> str:
        return f"{NOT_TESTED} ({self.why.rstrip('.')})"

    def as_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "is_paper": self.is_paper, "quote": self.quote,
                "paper": self.paper, "outcome": NOT_TESTED, "why": self.why, "verdict": self.verdict}

    @classmethod
    def from_dict(cls, d: dict) -> "LeftOut":
        return cls(d["id"], d["source"], d.get("paper", ""), d["why"], d.get("quote", ""))


class Families(list):
    """The families of a notebook (a list of :class:`Family`) and those it left out (``left_out``)."""

    def __init__(self, families=(), left_out=()):
        super().__init__(families)
        self.left_out: list = list(left_out)

    def __add__(self, other):
        return Families(list(self) + list(other), self.left_out + list(getattr(other, "left_out", [])))


def _items(items) -> list:
    """Families and left-out families (also read back from recorded dicts)."""
    out = []
    for item in list(items) + list(getattr(items, "left_out", [])):
        if isinstance(item, dict):
            item = Family.from_dict(item) if "checks" in item else LeftOut.from_dict(item)
        out.append(item)
    return out


# ------------------------------------------------------------------ counts and tables
def count(checks: Sequence) -> str:
    """"4 held, 1 not held, 2 inconclusive" (zero counts left out)."""
    parts = [f"{sum(c.outcome == o for c in checks)} {o}" for o in OUTCOMES
             if any(c.outcome == o for c in checks)]
    return ", ".join(parts) if parts else "no checks"


def paper_count(items) -> dict:
    """The paper's claims among ``items`` (families, left-out ones, or their recorded dicts), by outcome.

    ``{"claims", "held", "not held", "undecided", "not tested", "text"}``; ``text`` reads "3 of 5
    claims of the paper held, 1 not held, 1 undecided" (and how many these parameters left untested).
    """
    paper = [f for f in _items(items) if f.is_paper]
    n = {o: sum(f.outcome == o for f in paper) for o in (HELD, NOT_HELD, INCONCLUSIVE, NOT_TESTED)}
    out = {"claims": len(paper), HELD: n[HELD], NOT_HELD: n[NOT_HELD], "undecided": n[INCONCLUSIVE],
           NOT_TESTED: n[NOT_TESTED]}
    if not paper:
        return {**out, "text": "no claim of the paper is checked here"}
    text = (f"{n[HELD]} of {len(paper)} claim{'s' if len(paper) != 1 else ''} of the paper held, "
            f"{n[NOT_HELD]} not held, {n[INCONCLUSIVE]} undecided")
    if n[NOT_TESTED]:
        text += f", {n[NOT_TESTED]} not tested at these parameters"
    return {**out, "text": text}


def _joined(checks: Sequence[Claim], text) -> str:
    if len(checks) == 1:
        return text(checks[0])
    return "; ".join(f"{c.setting}: {text(c)}" for c in checks)


def _what_would_decide(f: Family) -> str:
    """For an undecided family: why, and what would decide it (more seeds, longer training)."""
    out = []
    for c in f.checks:
        if c.outcome != INCONCLUSIVE:
            continue
        needs = []
        moving = c.reason.startswith(STILL_MOVING)
        if not c.converged:
            needs.append("train longer: a run had not converged")
        elif moving:
            needs.append("train longer: the effect was still moving")
        if not c.spread_known:
            needs.append(f"{c.n} {c.unit}{'s' if c.n != 1 else ''}: run at least {MIN_PAIRS} to know the spread")
        elif c.n_80 is None:
            needs.append(f"more than {N_CAP} {c.unit}s would be needed at this effect and spread")
        elif c.converged:
            needs.append(f"about {c.n_80} {c.unit}s would decide it with 80% probability ({c.n_95} for 95%)"
                         f"{' at this spread' if moving else ''}")
        need = " and ".join(needs)
        out.append(f"{c.setting}: {need}" if len(f.checks) > 1 else need)
    return "; ".join(out)


def overview_row(item) -> dict:
    """One row of the claims overview: claim, source, quote, outcome, numbers, what would decide it."""
    if isinstance(item, LeftOut):
        return {"claim": item.id, "source": item.source, "quote": item.quote or item.paper, "outcome": NOT_TESTED,
                "decision": NOT_TESTED, "effect": "", "interval": "", "n": "", "n for 80%": "", "n for 95%": "",
                "why undecided / what would decide it": item.why}
    checks = list(item.checks)
    return {"claim": item.id, "source": item.source, "quote": item.quote or item.paper, "outcome": item.outcome,
            "decision": item.decision, "effect": _joined(checks, lambda c: c.effect_text),
            "interval": _joined(checks, lambda c: c.interval_text),
            "n": ", ".join(dict.fromkeys(str(c.n) for c in checks)),
            "n for 80%": _joined(checks, lambda c: c.n_needed_text(0.80)),
            "n for 95%": _joined(checks, lambda c: c.n_needed_text(0.95)),
            "why undecided / what would decide it": _what_would_decide(item)}


def overview(items):
    """:func:`overview_row` of every family and left-out family (or their recorded dicts), as a DataFrame."""
    import pandas as pd  # heavy: only notebooks and the book show tables

    return pd.DataFrame([overview_row(f) for f in _items(items)])


def _rows(items: Sequence):
    """``(family or None, check)`` for claims or families of claims."""
    for item in items:
        for c in (item.checks if isinstance(item, Family) else [item]):
            yield (item if isinstance(item, Family) else None), c


def table(items: Sequence):
    """Claims, or families of claims, as a DataFrame for display: one row per check."""
    import pandas as pd  # heavy: only notebooks show tables

    return pd.DataFrame([{**({"family": f.id, "family outcome": f.outcome} if f is not None else {}),
                          "check": c.statement, "outcome": c.outcome, "effect": c.effect_text,
                          "interval": c.interval_text, "δ": _scaled(c.delta, c.scale, signed=False),
                          "pairs": c.n, "why": c.reason} for f, c in _rows(items)])


def power_table(items: Sequence):
    """The power analysis of every check (claims, or families of claims), for the results page.

    Columns: claim (the family), check, outcome, effect, interval, sd of the paired
    difference, n used, and the pairs that would decide it with 80% and 95% probability.
    """
    import pandas as pd

    return pd.DataFrame([{"claim": f.id if f is not None else c.id, "check": c.setting, "outcome": c.outcome,
                          "effect": c.effect_text, "interval": c.interval_text,
                          "sd": _num(c.sd) if c.spread_known else "unknown", "n": c.n,
                          "n for 80%": c.n_needed_text(0.80), "n for 95%": c.n_needed_text(0.95)}
                         for f, c in _rows(items)])


def convergence_rows(items: Sequence) -> list[dict]:
    """Every run and stage behind the checks (each once), then each group's checkpoint drift where recorded.

    Columns: run (the compared setting), seed, stage, epochs, change, threshold, converged, why;
    a drift row has the metric's name as its stage, its mean drift as change and δ as threshold.
    """
    seen, stages, drift = set(), [], []
    for _, c in _rows(items):
        conv = c.convergence or {}
        for r in conv.get("stages", []):
            key = (r["group"], r["seed"], r["stage"])
            if key not in seen:
                seen.add(key)
                stages.append({"run": r["group"], "seed": r["seed"], "stage": r["stage"] or "training",
                               "epochs": r["epochs"], "change": r["change"], "threshold": r["threshold"],
                               "converged": r["converged"], "why": r["why"]})
        for r in conv.get("drift", []):
            key = (r["group"], "drift", r["metric"])
            if key not in seen and r["converged"] is not None:
                seen.add(key)
                drift.append({"run": r["group"], "seed": f"all {r['n']}", "stage": f"{r['metric']} at the end "
                              f"against the checkpoint", "epochs": math.nan, "change": r["drift"],
                              "threshold": r["delta"], "converged": r["converged"], "why": r["why"]})
    return stages + drift


def convergence_table(items: Sequence):
    """:func:`convergence_rows` as a DataFrame (numbers rounded for display)."""
    import pandas as pd

    frame = pd.DataFrame(convergence_rows(items), columns=["run", "seed", "stage", "epochs", "change", "threshold",
                                                           "converged", "why"])
    return frame.round({"change": 3, "threshold": 3})


def family_table(families: Sequence) -> "object":
    """One row per family (and left-out family): the claim, where the paper makes it, the verdict."""
    import pandas as pd  # heavy: only notebooks show tables

    return pd.DataFrame([{"claim (paper)": f"{f.paper} ({f.source})", "verdict": f.verdict}
                         for f in _items(families)])


def left_out_sentence(families) -> str:
    """What these parameters could not test, and why (or that every family was tested)."""
    left = list(getattr(families, "left_out", []))
    if not left:
        return "Every family of this notebook was tested at these parameters."
    return "Not tested at these parameters: " + "; ".join(f"{f.id}: {f.why.rstrip('.')}" for f in left) + "."


def publish(cfg, families: Sequence[Family], figure_id: str, prefix: str):
    """Glue and record a notebook's verdicts; returns the table of checks to display.

    Glues ``claim.<family id>`` (the verdict line), ``claim.<family id>.phrase`` (the sentence
    of its outcome), ``claim.<family id>.outcome``, ``claim.<check id>`` for every check (a
    left-out family, :class:`LeftOut`, gets the first three, its outcome "not tested");
    ``<prefix>.claims.summary`` (outcomes counted over families, never over checks),
    ``<prefix>.claims.table`` (one row per family), ``<prefix>.claims.overview`` (:func:`overview`),
    ``<prefix>.claims.paper_count`` (:func:`paper_count`'s text), ``<prefix>.claims.left_out``
    (:func:`left_out_sentence`), ``<prefix>.claims.power`` (:func:`power_table`) and
    ``<prefix>.claims.convergence`` (:func:`convergence_table`); records every family (with
    its checks' convergence per run and stage) and every left-out one under ``figure_id`` with
    ``cfg``'s provenance (``config.NotebookParams.provenance``).
    """
    left = list(getattr(families, "left_out", []))
    ids = [f.id for f in families] + [c.id for f in families for c in f.checks] + [f.id for f in left]
    if len(set(ids)) != len(ids):  # each is a glue key: a repeat is a book-build warning
        raise ValueError(f"publish: family and check ids must all differ, got {sorted(ids)}")
    for f in list(families) + left:
        book.glue_text(f"claim.{f.id}", f.verdict)
        book.glue_text(f"claim.{f.id}.phrase", f.phrase)
        book.glue_text(f"claim.{f.id}.outcome", f.outcome)
        for c in getattr(f, "checks", []):
            book.glue_text(f"claim.{c.id}", c.verdict)
    book.glue_text(f"{prefix}.claims.summary", count(families) + (f"; {len(left)} not tested" if left else ""))
    book.glue_table(f"{prefix}.claims.table", family_table(families))
    book.glue_table(f"{prefix}.claims.overview", overview(families))
    book.glue_text(f"{prefix}.claims.paper_count", paper_count(families)["text"])
    book.glue_text(f"{prefix}.claims.left_out", left_out_sentence(families))
    book.glue_table(f"{prefix}.claims.power", power_table(families))
    book.glue_table(f"{prefix}.claims.convergence", convergence_table(families))
    results.record(figure_id, {f.id: f.as_dict() for f in list(families) + left}, **cfg.provenance())
    return table(families)
