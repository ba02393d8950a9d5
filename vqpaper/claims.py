"""The paper's claims as checks on recorded numbers (SPEC §5): each says whether it held.

A claim compares two settings seed by seed, e.g. "pretrained alloc_entropy > scratch in
every seed". The verdict is computed, and the book quotes it through ``glue``: a claim that
does not hold at a profile is reported as such, not hidden.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence


@dataclass
class Claim:
    id: str
    statement: str
    held: bool
    n_held: int
    n_total: int
    required: int

    @property
    def verdict(self) -> str:
        word = "held" if self.held else "did not hold"
        return f"{word} ({self.n_held} of {self.n_total} comparisons)"

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


def paired(claim_id: str, statement: str, better: Sequence[float], worse: Sequence[float],
           higher_is_better: bool = True, required: int | None = None) -> Claim:
    """``better[i]`` beats ``worse[i]`` (pairs, usually seeds) in at least ``required`` pairs (default: all)."""
    if len(better) != len(worse) or not len(better):
        raise ValueError(f"claim {claim_id}: need two equally long, non-empty lists, got {len(better)} and {len(worse)}")
    wins = sum((b > w) if higher_is_better else (b < w) for b, w in zip(better, worse))
    required = len(better) if required is None else required
    return Claim(claim_id, statement, bool(wins >= required), int(wins), len(better), int(required))


def table(claims: Sequence[Claim]):
    """The claims as a DataFrame for display in a notebook."""
    import pandas as pd

    return pd.DataFrame([{"claim": c.statement, "verdict": c.verdict} for c in claims])
