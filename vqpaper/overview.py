"""The results page at a glance, read from the recorded claims (``BUILD/results/*.json``).

Each notebook records its families of checks (``claims.publish``: one family per sentence of a
paper, one check per setting) in a results file. This module reads every such file of a build and
returns what the results page shows, as plain rows (``vqpaper.sphinxext`` turns them into tables):

* :func:`count_sentence`: "3 of 19 claims of the paper held, 2 not held, 14 inconclusive";
* :func:`overview_rows`: one row per family: the claim, where it is made, the outcome, the
  effect and its 95% interval per setting, and for an undecided family why and what would decide it;
* :func:`power_rows`: one row per check: effect, interval, spread and the pairs (seeds) that would
  decide it with 80% and 95% probability;
* :func:`parameter_changes`: the notebooks that ran with parameters other than their profile's.

Reading the files rather than gluing across notebooks keeps the page in step with what was
recorded, whichever notebooks ran. It is tolerant: a field a family does not record (yet) is left
out of its cell, and :func:`missing_fields` names what was missing, for the page to say so.

**Which claims are the paper's** (:func:`is_paper`): a family's ``is_paper`` when it records one;
else those whose ``source`` is a section or figure of the paper ("§3.1.1, Fig. 3", "Fig. 4").
Sources that start with "companion" or "beyond the paper", or name another paper ("SimVQ (…)"),
are the companion's questions, shown apart and not counted among the paper's claims.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from .results import load_results

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
#: A family these parameters cannot test (``claims.LeftOut``: a trend over one codebook size); it
#: records ``why`` and what would test it instead of checks.
NOT_TESTED = "not tested"
#: Between the parts of one number ("[0.1, 0.5]", "n = 3"): a narrow column breaks a line between
#: numbers, never inside one.
NBSP = "\u00a0"
#: Outcomes in the order the count and the tables give them (an unknown outcome comes last, as recorded).
OUTCOME_ORDER = (HELD, NOT_HELD, INCONCLUSIVE)
#: Named in the count only when some family has it ("..., 1 not tested"), after OUTCOME_ORDER.
OPTIONAL_OUTCOMES = (NOT_TESTED,)
#: What the page reads from each family and each check; absent ones are reported by missing_fields.
FAMILY_FIELDS = ("id", "source", "outcome", "verdict", "checks", "quote")
CHECK_FIELDS = ("setting", "outcome", "reason", "effect", "low", "high", "n", "sd", "n_80", "n_95", "decision")
#: A check's reason that says its runs had not converged: more seeds cannot decide it, longer training can.
NOT_CONVERGED = "converge"
#: A check's reason that says its effect was still moving over the last quarter of training
#: (``claims.STILL_MOVING``): longer training first, then the seeds its power analysis asks for.
STILL_MOVING = "still moving"


def _number(x: Any) -> Optional[float]:
    """A finite float, or None (absent, None, NaN, infinite)."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------- reading

def families(directory=None) -> list[dict]:
    """Every recorded family, in the order of the notebooks and their files, each with ``notebook``,
    ``profile`` and ``record`` (the results file's figure id) added. A family left out at these
    parameters (outcome "not tested", with ``why`` instead of checks) is one of them: the page counts
    it and says what would test it."""
    found = []
    records = sorted(load_results(directory).items(), key=lambda item: (str(item[1].get("notebook")), item[0]))
    for figure_id, data in records:
        values = data.get("values")
        if not isinstance(values, dict):
            continue
        for family in values.values():
            tested = isinstance(family, dict) and isinstance(family.get("checks"), dict)
            left_out = isinstance(family, dict) and family.get("outcome") == NOT_TESTED and "why" in family
            if (tested or left_out) and "outcome" in family:
                found.append({**family, "notebook": data.get("notebook", ""), "profile": data.get("profile", ""),
                              "record": figure_id})
    return found


def is_paper(family: dict) -> bool:
    """Whether a family tests a sentence of the paper (see the module docstring)."""
    if isinstance(family.get("is_paper"), bool):
        return family["is_paper"]
    return str(family.get("source", "")).lstrip().startswith(("§", "Fig."))


def missing_fields(found: Iterable[dict]) -> dict[str, list[str]]:
    """``{"family": [...], "check": [...]}``: the fields of FAMILY_FIELDS / CHECK_FIELDS that at least
    one family (or check) does not record."""
    found = list(found)
    checks = [c for f in found for c in f.get("checks", {}).values()]
    # a family left out at these parameters records why instead of checks
    needs = {id(f): [k for k in FAMILY_FIELDS if not (k == "checks" and f.get("outcome") == NOT_TESTED)]
             for f in found}
    return {"family": [k for k in FAMILY_FIELDS if any(k in needs[id(f)] and k not in f for f in found)],
            "check": [k for k in CHECK_FIELDS if any(k not in c for c in checks)]}


# ---------------------------------------------------------------------- formatting

def _scaled(x: Optional[float], scale: str, signed: bool = True) -> str:
    """An effect as ``claims`` states it: a ratio (×1.5) on the log scale, else a signed number."""
    if x is None:
        return "?"
    if scale == "log":
        return f"×{math.exp(x):.3g}"
    return f"{x:+.3g}" if signed else f"{x:.3g}"


def effect_text(check: dict) -> str:
    """"+0.334" or "×2.1" (the check's own ``effect_text`` when it records one)."""
    if check.get("effect_text"):
        return str(check["effect_text"])
    return _scaled(_number(check.get("effect")), str(check.get("scale", "absolute")))


def interval_text(check: dict) -> str:
    """"[0.156, 0.512]", or "no interval" when the spread is unknown (one pair)."""
    if check.get("interval_text"):
        return str(check["interval_text"])
    low, high = _number(check.get("low")), _number(check.get("high"))
    if low is None or high is None:
        return "no interval"
    scale = str(check.get("scale", "absolute"))
    return f"[{_scaled(low, scale, signed=False)},{NBSP}{_scaled(high, scale, signed=False)}]"


def _needed(check: dict, key: str) -> str:
    """Pairs needed for 80% / 95% power, in words: a number, "> 1000" or "unknown"."""
    if key not in check:
        return "not recorded"
    n = check.get(key)
    if n is not None:
        return str(n)
    return "unknown" if _number(check.get("sd")) is None else "> 1000"


def _n_is(check: dict, key: str) -> str:
    """"n = 5" or "n > 1000": the pairs needed, as the start of a phrase."""
    needed = _needed(check, key)
    return f"n {needed}" if needed.startswith(">") else f"n = {needed}"


def _undecided(family: dict) -> list[dict]:
    return [c for c in family.get("checks", {}).values() if c.get("outcome") == INCONCLUSIVE]


def why_undecided(family: dict) -> str:
    """For an inconclusive family: which settings are open and why, e.g. "8-D: the runs had not converged"."""
    if family.get("why_undecided"):
        return str(family["why_undecided"])
    return "; ".join(f"{c.get('setting') or c.get('id', '?')}: {c.get('reason', 'no reason recorded')}"
                     for c in _undecided(family))


def what_would_decide(family: dict) -> str:
    """What budget would decide an inconclusive family, setting by setting: longer training where its
    runs had not converged, else the pairs (seeds) the power analysis asks for, e.g.
    "3-D: n = 5 (80% power), 6 (95%); 8-D: longer training"."""
    if family.get("what_would_decide"):
        return str(family["what_would_decide"])
    parts = []
    for c in _undecided(family):
        setting = c.get("setting") or c.get("id", "?")
        longer = NOT_CONVERGED in str(c.get("reason", ""))
        moving = str(c.get("reason", "")).startswith(STILL_MOVING)
        one_pair = "sd" in c and _number(c.get("sd")) is None
        if one_pair:  # no spread to plan with: a second pair first
            parts.append(f"{setting}: {'longer training and ' if longer else ''}two or more seeds (one pair has no "
                         "spread to plan with)")
        elif longer:
            parts.append(f"{setting}: longer training")
        elif moving:
            parts.append(f"{setting}: longer training (the effect was still moving), then {_n_is(c, 'n_80')} "
                         f"(80% power), {_needed(c, 'n_95')} (95%) at this spread")
        elif "n_80" in c:
            parts.append(f"{setting}: {_n_is(c, 'n_80')} (80% power), {_needed(c, 'n_95')} (95%)")
        else:
            parts.append(f"{setting}: more pairs (the power analysis is not recorded)")
    return "; ".join(parts)


# ---------------------------------------------------------------------- the page's rows

def _order(outcome: str) -> int:
    order = OUTCOME_ORDER + OPTIONAL_OUTCOMES
    return order.index(outcome) if outcome in order else len(order)


def count_sentence(found: Iterable[dict], what: str = "claims of the paper") -> str:
    """"3 of 19 claims of the paper held, 2 not held, 14 inconclusive" (every outcome named, zeros too)."""
    found = list(found)
    outcomes = sorted({f.get("outcome", "?") for f in found} | set(OUTCOME_ORDER), key=_order)
    counts = [(o, sum(f.get("outcome") == o for f in found)) for o in outcomes]
    first, rest = counts[0], counts[1:]
    return f"{first[1]} of {len(found)} {what} {first[0]}" + "".join(f", {n} {o}" for o, n in rest)


def overview_rows(found: Iterable[dict]) -> list[dict]:
    """One row per family: ``id``, ``claim`` (the paper's words when recorded as ``quote``, else ours),
    ``quoted`` (whether it is a quote), ``source``, ``outcome``, ``effects`` (one line per check:
    setting, effect, interval, pairs) and, for an undecided family, ``why`` and ``decide``."""
    rows = []
    for f in found:
        checks = list(f.get("checks", {}).values())
        effects = [(f"{c['setting']}: " if len(checks) > 1 and c.get("setting") else "")
                   + f"{effect_text(c)} {interval_text(c)}" + (f", n{NBSP}={NBSP}{c['n']}" if c.get("n") is not None else "")
                   for c in checks]
        undecided = f.get("outcome") == INCONCLUSIVE
        left_out = f.get("outcome") == NOT_TESTED
        why = why_undecided(f) if undecided else ("not tested at these parameters" if left_out else "")
        decide = what_would_decide(f) if undecided else (str(f.get("why", "")).rstrip(".") if left_out else "")
        rows.append({"id": f.get("id", "?"), "claim": f.get("quote") or f.get("paper") or f.get("id", "?"),
                     "quoted": bool(f.get("quote")), "source": f.get("source", ""), "outcome": f.get("outcome", "?"),
                     "decision": f.get("decision", ""), "effects": effects,
                     "why": why, "decide": decide,
                     "notebook": f.get("notebook", "")})
    return rows


def power_rows(found: Iterable[dict]) -> list[dict]:
    """One row per check: claim (family id), setting, outcome, effect [interval], sd, n, n for 80% and 95%."""
    rows = []
    for f in found:
        for c in f.get("checks", {}).values():
            sd = _number(c.get("sd"))
            rows.append({"claim": f.get("id", "?"), "setting": c.get("setting") or c.get("id", "?"),
                         "outcome": c.get("outcome", "?"), "effect [95% interval]": f"{effect_text(c)} {interval_text(c)}",
                         "sd": "not recorded" if "sd" not in c else (f"{sd:.3g}" if sd is not None else "unknown"),
                         "n": c.get("n", "?"), "n for 80%": _needed(c, "n_80"), "n for 95%": _needed(c, "n_95")})
    return rows


# ---------------------------------------------------------------------- parameters

def parameter_changes(directory=None) -> tuple[list[dict], list[str]]:
    """``(changes, profiles)``: per notebook whose recorded parameters differ from its profile's preset,
    ``{"notebook", "profile", "changes": [(name, value, preset value), ...]}``, and the profiles the
    notebooks ran at. A preset device ``"auto"`` matches whatever device it resolved to; a recorded name the
    preset does not have (a record older than the notebook's parameters) is not compared."""
    from .config import PRESETS  # heavy (torch): only the results page asks

    by_notebook: dict[str, dict] = {}
    for data in load_results(directory).values():
        by_notebook.setdefault(str(data.get("notebook", "")), data)
    changes, profiles = [], set()
    for notebook, data in sorted(by_notebook.items()):
        profile = str(data.get("profile", ""))
        if notebook not in PRESETS or profile not in PRESETS[notebook]:
            continue
        profiles.add(profile)
        preset = PRESETS[notebook][profile].parameters()
        diffs = [(name, value, preset.get(name)) for name, value in (data.get("params") or {}).items()
                 if name in preset and name != "profile" and value != preset[name]
                 and not (name == "device" and preset.get(name) == "auto")]
        if diffs:
            changes.append({"notebook": notebook, "profile": profile, "changes": diffs})
    return changes, sorted(profiles)
