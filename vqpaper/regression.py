"""Compare recorded figure numbers with committed references (SPEC §6).

A figure's record (see ``vqpaper.results``) is flattened to ``key -> scalar`` pairs such as
``values.summary.2/scratch.perplexity.mean``, ``values.per_seed[0].mse``,
``params.codebook_sizes[1]`` or ``profile``. Parameters, profile and seeds are always
compared exactly: a changed parameter is a different experiment, not a moved number.
Provenance (commit, versions, device, wall time, creation date) never counts as a difference,
but its ``environment`` decides *how* the numbers are compared:

* **same environment** (device, CPU model, ATen CPU kernels, BLAS, thread count, torch and
  numpy versions all equal): the run is bit-reproducible (one fixed thread count per run,
  fixed seeds), so every number must match within ``TOLERANCES``;
* **cross environment** (anything else, or a reference without an environment): training
  amplifies float differences of 1e-7 into differences of tens of percent in a single seed's
  numbers, so we compare what the science says instead: each metric's mean over seeds within
  a band derived from the seed-to-seed spread (``CROSS``), and each *decided* verdict (see
  ``vqpaper.claims``) must keep its outcome. The rule is written out in :func:`_cross_compare`.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

# ----------------------------------------------------------------- the one place
# Same environment. Pattern -> (absolute, relative) tolerance; a number passes when
#   |new - reference| <= abs + rel * |reference|.
# The FIRST matching pattern wins, so put specific patterns above general ones.
# A pattern containing "/" is matched against "<figure_id>/<key>", otherwise against
# the key alone. Only "*" (any text, dots and brackets included) and "?" (one
# character) are special; brackets are literal, so "values.per_seed[0].mse" can be
# written as it is printed.
# CPU runs with a fixed seed and thread count are deterministic, hence the tight default.
TOLERANCES: dict[str, tuple[float, float]] = {
    "*": (1e-6, 1e-5),
}

# What must be equal for the same-environment comparison (``provenance.environment``).
# ("executor" is recorded but not compared: Ray and in-process runs are bit-identical.)
ENVIRONMENT_KEYS: tuple[str, ...] = ("device", "cpu", "cpu_capability", "blas", "threads", "precision",
                                     "torch", "numpy")
# The value of a key that records made before it existed had (they all ran in float32).
ENVIRONMENT_DEFAULTS: dict[str, str] = {"precision": "float32"}


@dataclass(frozen=True)
class CrossRule:
    """The cross-environment rule's numbers; see :func:`_cross_compare` for how they are used."""

    # A mean over n seeds moves by chance with the standard error of a difference of two
    # means, s * sqrt(2 / n) (s: the larger of the two seed-to-seed standard deviations);
    # the band is z of those. z = 4 keeps a false alarm below ~1 in 10,000 per metric under a
    # normal model, and the t-distribution of 3 seeds is covered by the floors below.
    z: float = 4.0
    # ... but never tighter than this fraction of the reference mean: with 3 seeds the
    # spread itself is poorly known, and a metric can sit at the same value in every seed of
    # one environment (std 0) and not in another.
    rel_floor: float = 0.10
    # ... nor than this absolute amount (metrics near 0, e.g. a coverage of 0.01).
    abs_floor: float = 0.02
    # A number with no seed spread to judge it by (a single seed's value) moves across
    # environments by up to ~40% (issue 9: 3d/pretrained.mse 0.00066 -> 0.00040) and more
    # for counts near zero: it is compared on a log scale, within this factor either way,
    # plus the absolute floor. A change of method (K-means on/off, pretraining) moves such
    # numbers by far more (perplexity 14 vs 2,366 at K = 4,096).
    single_factor: float = 3.0
    # A reference verdict is "decided with margin" when zero lies at least this many
    # half-widths of its interval beyond the interval's end (``Claim.margin``). Such a
    # verdict must keep its outcome in another environment; one closer to its threshold is
    # reported, not failed (its outcome is within the run-to-run noise).
    verdict_margin: float = 0.5


CROSS = CrossRule()

# Keys that describe how and where a record was made, not what it says.
IGNORED: tuple[str, ...] = ("provenance", "provenance.*", "provenance[*")

# Keys that say what was run: compared exactly, numbers included (a changed
# parameter is a different experiment, not a moved number).
EXACT: tuple[str, ...] = ("figure_id", "notebook", "profile", "params", "params.*",
                          "params[*", "seeds", "seeds.*", "seeds[*")

# Derived words (05's "eases but does not cure", from majorities of verdicts): across
# environments a change is reported, not failed; the verdicts they come from are checked.
DERIVED_WORDS: tuple[str, ...] = ("values.verdicts.*",)

# Reasons a key is reported.
MOVED = "moved beyond tolerance"
OUT_OF_BAND = "mean moved beyond its band"
SINGLE_OUT_OF_BAND = "single value moved beyond its band"
VERDICT_CHANGED = "decided verdict changed"
VERDICT_NEAR = "verdict near its threshold changed (reported, not failed)"
WORDS_CHANGED = "derived words changed (reported, not failed)"
MISSING = "missing in new"
NEW_KEY = "not in reference"
TYPE_CHANGED = "type changed"
DIFFERS = "differs"
FIGURE_MISSING = "figure missing in new"
NEW_FIGURE = "figure not in reference"

SAME, CROSS_ENV = "same environment", "cross environment"


@dataclass(frozen=True)
class Mismatch:
    """One difference between a reference record and a new one."""

    figure: str
    key: str
    reference: Any
    new: Any
    tolerance: tuple[float, float] | None
    reason: str
    band: float | None = None   # cross environment: the allowed move of this number
    fails: bool = True          # False: reported only

    @property
    def ratio(self) -> float | None:
        """How far the number moved, in units of what was allowed."""
        if not isinstance(self.reference, (int, float)) or not isinstance(self.new, (int, float)):
            return None
        if self.band is not None:
            if self.reason == SINGLE_OUT_OF_BAND:
                return _log_move(self.reference, self.new) / math.log(CROSS.single_factor)
            return abs(self.new - self.reference) / self.band if self.band else math.inf
        if self.tolerance is not None:
            allowed = self.tolerance[0] + self.tolerance[1] * abs(self.reference)
            return abs(self.new - self.reference) / allowed if allowed else math.inf
        return None


@dataclass
class Report:
    """The outcome of comparing folders: differences, and the mode used for each figure."""

    mismatches: list[Mismatch] = field(default_factory=list)
    modes: dict[str, tuple[str, str]] = field(default_factory=dict)  # figure -> (mode, why)

    @property
    def failures(self) -> list[Mismatch]:
        return [m for m in self.mismatches if m.fails]

    @property
    def ok(self) -> bool:
        return not self.failures


# ------------------------------------------------------------------------ flatten

def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> ``{"values.a[0].b": scalar}``; empty containers kept as such."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        if not obj and prefix:
            out[prefix] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(obj, (list, tuple)):
        if not obj and prefix:
            out[prefix] = []
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


@lru_cache(maxsize=512)
def _pattern(pattern: str) -> re.Pattern:
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def matches(pattern: str, text: str) -> bool:
    """Glob match where only ``*`` and ``?`` are special."""
    return _pattern(pattern).match(text) is not None


def tolerance_for(figure: str, key: str, tolerances: Mapping[str, tuple[float, float]] | None = None
                  ) -> tuple[float, float]:
    """The (abs, rel) tolerance of ``key`` in ``figure``: the first matching pattern."""
    tolerances = TOLERANCES if tolerances is None else tolerances
    for pattern, tol in tolerances.items():
        target = f"{figure}/{key}" if "/" in pattern else key
        if matches(pattern, target):
            return (float(tol[0]), float(tol[1]))
    return TOLERANCES.get("*", (1e-6, 1e-5))


def is_ignored(key: str) -> bool:
    return any(matches(p, key) for p in IGNORED)


def is_exact(key: str) -> bool:
    return any(matches(p, key) for p in EXACT)


# ------------------------------------------------------------------------ compare

def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "empty dict"
    if isinstance(value, list):
        return "empty list"
    return type(value).__name__


def _close(reference: float, new: float, tol: tuple[float, float]) -> bool:
    if math.isnan(reference) or math.isnan(new):
        return math.isnan(reference) and math.isnan(new)
    if math.isinf(reference) or math.isinf(new):
        return reference == new
    return abs(new - reference) <= tol[0] + tol[1] * abs(reference)


def environment_of(record: Mapping) -> dict | None:
    env = (record.get("provenance") or {}).get("environment")
    return dict(env) if isinstance(env, Mapping) else None


def environment_differences(reference: Mapping, new: Mapping) -> list[str]:
    """What differs between the environments of two records ("threads 1 -> 2"); [] if none."""
    ref_env, new_env = environment_of(reference), environment_of(new)
    if ref_env is None:
        return ["the reference records no environment"]
    if new_env is None:
        return ["the new record has no environment"]
    ref_env, new_env = ({**ENVIRONMENT_DEFAULTS, **ref_env}, {**ENVIRONMENT_DEFAULTS, **new_env})
    return [f"{k} {ref_env.get(k)!r} -> {new_env.get(k)!r}" for k in ENVIRONMENT_KEYS
            if ref_env.get(k) != new_env.get(k)]


def choose_mode(reference: Mapping, new: Mapping, mode: str = "auto") -> tuple[str, str]:
    """``(mode, why)``: the same-environment mode when the environments match, else cross."""
    if mode == "same":
        return SAME, "asked for (--mode same)"
    if mode == "cross":
        return CROSS_ENV, "asked for (--mode cross)"
    if mode != "auto":
        raise ValueError(f"mode must be 'auto', 'same' or 'cross', got {mode!r}")
    diffs = environment_differences(reference, new)
    if not diffs:
        return SAME, "device, CPU, kernels, BLAS, threads and versions all match"
    return CROSS_ENV, "; ".join(diffs)


def _exact_or_tolerance(figure, key, ref_value, new_value, tolerances) -> Mismatch | None:
    """The same-environment comparison of one key."""
    ref_kind, new_kind = _kind(ref_value), _kind(new_value)
    if ref_kind != new_kind:
        return Mismatch(figure, key, ref_value, new_value, None, TYPE_CHANGED)
    if ref_kind == "number" and not is_exact(key):
        tol = tolerance_for(figure, key, tolerances)
        if not _close(float(ref_value), float(new_value), tol):
            return Mismatch(figure, key, ref_value, new_value, tol, MOVED)
    elif ref_value != new_value and not (ref_kind == "number" and _close(
            float(ref_value), float(new_value), (0.0, 0.0))):
        return Mismatch(figure, key, ref_value, new_value, None, DIFFERS)
    return None


def compare(reference: Mapping, new: Mapping, tolerances: Mapping | None = None,
            figure: str | None = None, mode: str = "auto") -> list[Mismatch]:
    """Every key of one figure's record that differs between ``reference`` and ``new``.

    ``mode``: "auto" (same-environment comparison when the environments match, else the
    cross-environment one), "same" or "cross".
    """
    figure = figure or str(reference.get("figure_id") or new.get("figure_id") or "?")
    ref_flat = {k: v for k, v in flatten(reference).items() if not is_ignored(k)}
    new_flat = {k: v for k, v in flatten(new).items() if not is_ignored(k)}
    out: list[Mismatch] = []
    for key in ref_flat.keys() - new_flat.keys():
        out.append(Mismatch(figure, key, ref_flat[key], None, None, MISSING))
    for key in new_flat.keys() - ref_flat.keys():
        out.append(Mismatch(figure, key, None, new_flat[key], None, NEW_KEY))
    shared = [k for k in ref_flat if k in new_flat]
    if choose_mode(reference, new, mode)[0] == SAME:
        for key in shared:
            m = _exact_or_tolerance(figure, key, ref_flat[key], new_flat[key], tolerances)
            if m is not None:
                out.append(m)
    else:
        out.extend(_cross_compare(figure, ref_flat, new_flat, shared))
    order = {k: i for i, k in enumerate(list(ref_flat) + list(new_flat))}
    return sorted(out, key=lambda m: order.get(m.key, 0))


# ---------------------------------------------------------- cross environment

_PER_SEED = re.compile(r"^(?P<prefix>.*)\.per_seed\[(?P<i>\d+)\]$")
_CLAIM_FIELDS = ("outcome", "reason", "effect", "low", "high", "n", "n_agree", "margin", "verdict",
                 "statement", "id", "decision", "sd", "n_80", "n_95", "converged")


def _sd(values: list[float]) -> float:
    n = len(values)
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def _log_move(reference: float, new: float) -> float:
    """|log(new / reference)| for two positive numbers; inf when their signs differ."""
    if reference == new:
        return 0.0
    if reference <= 0 or new <= 0:
        return math.inf
    return abs(math.log(new / reference))


def _cross_compare(figure: str, ref: Mapping[str, Any], new: Mapping[str, Any],
                   keys: list[str]) -> list[Mismatch]:
    """The cross-environment rule, in one place (numbers in ``CROSS``).

    1. Parameters, profile, seeds, booleans and strings: exactly, as in the same
       environment (derived verdict words are reported, not failed).
    2. A metric recorded over seeds (``X.mean`` with ``X.per_seed[i]``, 2 or more seeds):
       its new mean must lie within ``max(z * s * sqrt(2/n), rel_floor * |ref|, abs_floor)``
       of the reference mean, ``s`` the larger seed-to-seed standard deviation of the two
       runs. ``X.std`` and the single seeds are not compared one by one: a seed is a draw.
    3. A verdict (``X.outcome`` of a ``vqpaper.claims.Claim``): where the reference is
       decided (held / not held) with ``Claim.margin >= verdict_margin``, the new outcome
       must be the same; any other change of outcome is reported, not failed. The claim's
       effect and interval are not compared as numbers: the outcome is what they decide.
    4. Any other number (one seed, no spread to judge it by): within ``single_factor``
       either way on a log scale, or within ``abs_floor``.
    """
    keyset = set(keys)
    handled: set[str] = set()
    out: list[Mismatch] = []

    # 2. metrics over seeds
    groups: dict[str, list[str]] = {}
    for key in keys:
        m = _PER_SEED.match(key)
        if m:
            groups.setdefault(m.group("prefix"), []).append(key)
    for prefix, seed_keys in groups.items():
        mean_key = f"{prefix}.mean"
        if len(seed_keys) < 2 or mean_key not in keyset:
            continue
        seed_keys = sorted(seed_keys, key=lambda k: int(_PER_SEED.match(k).group("i")))
        ref_seeds, new_seeds = [ref[k] for k in seed_keys], [new[k] for k in seed_keys]
        if not all(_kind(v) == "number" for v in ref_seeds + new_seeds + [ref[mean_key], new[mean_key]]):
            continue
        handled.update(seed_keys + [mean_key] + ([f"{prefix}.std"] if f"{prefix}.std" in keyset else []))
        r_mean, n_mean = float(ref[mean_key]), float(new[mean_key])
        if math.isnan(r_mean) or math.isnan(n_mean):
            if math.isnan(r_mean) != math.isnan(n_mean):
                out.append(Mismatch(figure, mean_key, r_mean, n_mean, None, OUT_OF_BAND, band=math.nan))
            continue
        n = len(seed_keys)
        s = max(_sd([float(v) for v in ref_seeds]), _sd([float(v) for v in new_seeds]))
        band = max(CROSS.z * s * math.sqrt(2 / n), CROSS.rel_floor * abs(r_mean), CROSS.abs_floor)
        if not abs(n_mean - r_mean) <= band:
            out.append(Mismatch(figure, mean_key, r_mean, n_mean, None, OUT_OF_BAND, band=band))

    # 3. verdicts
    for key in keys:
        if not key.endswith(".outcome"):
            continue
        prefix = key[: -len(".outcome")]
        fields = [f"{prefix}.{f}" for f in _CLAIM_FIELDS if f"{prefix}.{f}" in keyset]
        handled.update(f for f in fields if not f.endswith((".statement", ".id", ".n")))
        if ref[key] == new[key]:
            continue
        margin = ref.get(f"{prefix}.margin")
        decided = ref[key] in ("held", "not held")
        firm = decided and isinstance(margin, (int, float)) and margin >= CROSS.verdict_margin
        out.append(Mismatch(figure, key, ref[key], new[key], None,
                            VERDICT_CHANGED if firm else VERDICT_NEAR, fails=firm))

    # 1 and 4. everything else
    for key in keys:
        if key in handled:
            continue
        r, v = ref[key], new[key]
        if _kind(r) == _kind(v) == "number" and not is_exact(key):
            r, v = float(r), float(v)
            if math.isnan(r) or math.isnan(v):
                ok = math.isnan(r) and math.isnan(v)
            else:
                ok = abs(v - r) <= CROSS.abs_floor or _log_move(r, v) <= math.log(CROSS.single_factor)
            if not ok:
                out.append(Mismatch(figure, key, r, v, None, SINGLE_OUT_OF_BAND, band=CROSS.single_factor))
            continue
        m = _exact_or_tolerance(figure, key, r, v, None)
        if m is not None and any(matches(p, key) for p in DERIVED_WORDS):
            m = Mismatch(figure, key, r, v, None, WORDS_CHANGED, fails=False)
        if m is not None:
            out.append(m)
    return out


def _load_dir(directory: str | os.PathLike) -> dict[str, dict]:
    from .results import load_results

    return load_results(directory)


def check_dirs(ref_dir: str | os.PathLike, new_dir: str | os.PathLike,
               tolerances: Mapping | None = None, notebooks: Iterable[str] | None = None,
               mode: str = "auto") -> Report:
    """Compare every ``<figure_id>.json`` of two folders (optionally of some notebooks only)."""
    refs, news = _load_dir(ref_dir), _load_dir(new_dir)
    if notebooks is not None:
        wanted = set(notebooks)
        refs = {k: v for k, v in refs.items() if v.get("notebook") in wanted}
        news = {k: v for k, v in news.items() if v.get("notebook") in wanted}
    report = Report()
    for figure in sorted(set(refs) | set(news)):
        if figure not in news:
            report.mismatches.append(Mismatch(figure, "*", refs[figure].get("notebook", ""), None, None,
                                              FIGURE_MISSING))
        elif figure not in refs:
            report.mismatches.append(Mismatch(figure, "*", None, news[figure].get("notebook", ""), None,
                                              NEW_FIGURE))
        else:
            report.modes[figure] = choose_mode(refs[figure], news[figure], mode)
            report.mismatches.extend(compare(refs[figure], news[figure], tolerances, figure, mode))
    return report


def compare_dirs(ref_dir: str | os.PathLike, new_dir: str | os.PathLike,
                 tolerances: Mapping | None = None, notebooks: Iterable[str] | None = None,
                 mode: str = "auto") -> list[Mismatch]:
    """The differences of :func:`check_dirs` that fail the check."""
    return check_dirs(ref_dir, new_dir, tolerances, notebooks, mode).failures


# -------------------------------------------------------------------------- table

def _fmt_value(value: Any, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = str(value)
    elif isinstance(value, float):
        text = repr(value)  # shortest exact form: tolerances are tight
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt_allowed(m: Mismatch) -> str:
    if m.tolerance is not None:
        return f"abs {m.tolerance[0]:g} + rel {m.tolerance[1]:g}"
    if m.band is not None:
        return f"×/÷ {m.band:g}" if m.reason == SINGLE_OUT_OF_BAND else f"± {m.band:.3g}"
    return "-"


def _fmt_ratio(m: Mismatch) -> str:
    r = m.ratio
    return "-" if r is None else (f"{r:.1f}" if math.isfinite(r) else str(r))


def format_table(mismatches: Iterable[Mismatch], max_width: int = 48) -> str:
    """A fixed-width table: figure | key | reference | new | allowed | moved/allowed | reason."""
    mismatches = list(mismatches)
    if not mismatches:
        return "no differences"
    header = ("figure", "key", "reference", "new", "allowed", "moved/allowed", "reason")
    rows = [header] + [
        (m.figure, m.key, _fmt_value(m.reference, max_width), _fmt_value(m.new, max_width),
         _fmt_allowed(m), _fmt_ratio(m), m.reason)
        for m in mismatches
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    failing = [m for m in mismatches if m.fails]
    figures = sorted({m.figure for m in failing})
    lines.append(f"{len(failing)} difference(s) in {len(figures)} figure(s)"
                 + (f": {', '.join(figures)}" if figures else "")
                 + (f"; {len(mismatches) - len(failing)} reported only" if len(failing) < len(mismatches) else ""))
    return "\n".join(lines)


def format_modes(report: Report) -> str:
    """One line per mode: which figures were compared how, and why."""
    lines = []
    by_mode: dict[tuple[str, str], list[str]] = {}
    for figure, mode_why in sorted(report.modes.items()):
        by_mode.setdefault(mode_why, []).append(figure)
    for (mode, why), figures in by_mode.items():
        rule = ("every number within TOLERANCES" if mode == SAME else
                "means within seed-spread bands, decided verdicts kept (regression.CROSS)")
        lines.append(f"{mode} mode for {len(figures)} figure(s) ({rule}): {why}")
    return "\n".join(lines)
