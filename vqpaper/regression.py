"""Compare recorded figure numbers with committed references (SPEC §6).

A figure's record (see ``vqpaper.results``) is flattened to ``key -> scalar`` pairs
such as ``values.scratch.perplexity.mean``, ``values.per_seed[0].mse``,
``params.codebook_sizes[1]`` or ``profile``; each number is compared within the
tolerance of the first pattern in ``TOLERANCES`` that matches it. Provenance
(commit, versions, device, wall time, creation date) never counts.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

# ----------------------------------------------------------------- the one place
# Pattern -> (absolute, relative) tolerance; a number passes when
#   |new - reference| <= abs + rel * |reference|.
# The FIRST matching pattern wins, so put specific patterns above general ones.
# A pattern containing "/" is matched against "<figure_id>/<key>", otherwise against
# the key alone. Only "*" (any text, dots and brackets included) and "?" (one
# character) are special; brackets are literal, so "values.per_seed[0].mse" can be
# written as it is printed.
# CPU runs with a fixed seed are deterministic, hence the tight default; loosen a
# figure's keys here (with a comment saying why) when a notebook needs it, e.g.
#   "fig-tokens-collapse-cifar10/values.*.mse*": (1e-5, 1e-3),  # conv kernels
TOLERANCES: dict[str, tuple[float, float]] = {
    "*": (1e-6, 1e-5),
}

# Keys that describe how and where a record was made, not what it says.
IGNORED: tuple[str, ...] = ("provenance", "provenance.*", "provenance[*")

# Keys that say what was run: compared exactly, numbers included (a changed
# parameter is a different experiment, not a moved number).
EXACT: tuple[str, ...] = ("figure_id", "notebook", "profile", "params", "params.*",
                          "params[*", "seeds", "seeds.*", "seeds[*")

# Reasons a key is reported.
MOVED = "moved beyond tolerance"
MISSING = "missing in new"
NEW_KEY = "not in reference"
TYPE_CHANGED = "type changed"
DIFFERS = "differs"
FIGURE_MISSING = "figure missing in new"
NEW_FIGURE = "figure not in reference"


@dataclass(frozen=True)
class Mismatch:
    """One difference between a reference record and a new one."""

    figure: str
    key: str
    reference: Any
    new: Any
    tolerance: tuple[float, float] | None
    reason: str


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


def compare(reference: Mapping, new: Mapping, tolerances: Mapping | None = None,
            figure: str | None = None) -> list[Mismatch]:
    """Every key of one figure's record that differs between ``reference`` and ``new``."""
    figure = figure or str(reference.get("figure_id") or new.get("figure_id") or "?")
    ref_flat = {k: v for k, v in flatten(reference).items() if not is_ignored(k)}
    new_flat = {k: v for k, v in flatten(new).items() if not is_ignored(k)}
    out: list[Mismatch] = []
    for key, ref_value in ref_flat.items():
        if key not in new_flat:
            out.append(Mismatch(figure, key, ref_value, None, None, MISSING))
            continue
        new_value = new_flat[key]
        ref_kind, new_kind = _kind(ref_value), _kind(new_value)
        if ref_kind != new_kind:
            out.append(Mismatch(figure, key, ref_value, new_value, None, TYPE_CHANGED))
        elif ref_kind == "number" and not is_exact(key):
            tol = tolerance_for(figure, key, tolerances)
            if not _close(float(ref_value), float(new_value), tol):
                out.append(Mismatch(figure, key, ref_value, new_value, tol, MOVED))
        elif ref_value != new_value and not (ref_kind == "number" and _close(
                float(ref_value), float(new_value), (0.0, 0.0))):
            out.append(Mismatch(figure, key, ref_value, new_value, None, DIFFERS))
    for key, new_value in new_flat.items():
        if key not in ref_flat:
            out.append(Mismatch(figure, key, None, new_value, None, NEW_KEY))
    return out


def _load_dir(directory: str | os.PathLike) -> dict[str, dict]:
    out = {}
    directory = Path(directory)
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            data = json.loads(path.read_text())
            out[str(data.get("figure_id", path.stem))] = data
    return out


def compare_dirs(ref_dir: str | os.PathLike, new_dir: str | os.PathLike,
                 tolerances: Mapping | None = None,
                 notebooks: Iterable[str] | None = None) -> list[Mismatch]:
    """Compare every ``<figure_id>.json`` of two folders (optionally of some notebooks only)."""
    refs, news = _load_dir(ref_dir), _load_dir(new_dir)
    if notebooks is not None:
        wanted = set(notebooks)
        refs = {k: v for k, v in refs.items() if v.get("notebook") in wanted}
        news = {k: v for k, v in news.items() if v.get("notebook") in wanted}
    out: list[Mismatch] = []
    for figure in sorted(set(refs) | set(news)):
        if figure not in news:
            out.append(Mismatch(figure, "*", refs[figure].get("notebook", ""), None, None,
                                FIGURE_MISSING))
        elif figure not in refs:
            out.append(Mismatch(figure, "*", None, news[figure].get("notebook", ""), None,
                                NEW_FIGURE))
        else:
            out.extend(compare(refs[figure], news[figure], tolerances, figure))
    return out


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


def _fmt_tol(tol: tuple[float, float] | None) -> str:
    return "-" if tol is None else f"abs {tol[0]:g} + rel {tol[1]:g}"


def format_table(mismatches: Iterable[Mismatch], max_width: int = 48) -> str:
    """A fixed-width table: figure | key | reference | new | tolerance | reason."""
    mismatches = list(mismatches)
    if not mismatches:
        return "no differences"
    header = ("figure", "key", "reference", "new", "tolerance", "reason")
    rows = [header] + [
        (m.figure, m.key, _fmt_value(m.reference, max_width), _fmt_value(m.new, max_width),
         _fmt_tol(m.tolerance), m.reason)
        for m in mismatches
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    figures = len({m.figure for m in mismatches})
    lines.append(f"{len(mismatches)} difference(s) in {figures} figure(s)")
    return "\n".join(lines)
