"""Fig. 2's claims (01_preliminaries §6) from fabricated encoder outputs: each can hold and fail."""
import pytest

from vqpaper.experiments import encoder_output_families, range_text, unused_token_positions
from vqpaper.errors import ConfigError


def _rows(u_peaks, t_peaks, input_peaks=4, u_range=0.3, t_range=6.0):
    """Per-run and per-coordinate rows for len(u_peaks) // 2 seeds of 2 coordinates."""
    seeds = len(u_peaks) // 2
    per_run = [{"seed": s, "encoder": e, "range": r} for s in range(seeds)
               for e, r in (("untrained", u_range + 0.01 * s), ("trained", t_range + 0.1 * s))]
    per_coord = [{"seed": i // 2, "encoder": e, "coordinate": i % 2 + 1, "peaks": p, "input peaks": input_peaks}
                 for e, peaks in (("untrained", u_peaks), ("trained", t_peaks)) for i, p in enumerate(peaks)]
    return per_run, per_coord


def _outcomes(*args, **kwargs):
    return {f.id: f.outcome for f in encoder_output_families(*_rows(*args, **kwargs))}


def test_fig2_claims_hold_when_the_data_look_like_the_paper():
    assert _outcomes([2, 3, 2, 2, 3, 1], [4, 4, 5, 4, 4, 4]) == {
        "pre-range-narrower": "held", "pre-untrained-fewer-peaks": "held", "pre-trained-peaks-match-input": "held"}


def test_fig2_peak_claims_fail_when_the_counts_point_the_other_way():
    out = _outcomes([5, 5, 6, 5, 5, 6], [2, 2, 1, 2, 3, 2])
    assert out["pre-untrained-fewer-peaks"] == "not held"      # more peaks than the input
    assert out["pre-trained-peaks-match-input"] == "not held"  # the trained encoder merged modes


def test_fig2_range_claim_fails_when_the_ranges_are_alike():
    assert _outcomes([2] * 6, [4] * 6, u_range=2.0, t_range=3.0)["pre-range-narrower"] == "not held"


def test_fig2_one_seed_decides_nothing_about_the_range():
    assert _outcomes([2, 2], [4, 4])["pre-range-narrower"] == "inconclusive"


def test_range_text():
    assert range_text([3, 3]) == "3" and range_text([5, 2, 4]) == "2 to 5"


def test_unused_token_positions_refuses_tokens_that_win():
    with pytest.raises(ConfigError, match="won an embedding"):
        unused_token_positions(used=[2.5], unused=[2.9], data=(2.0, 3.0), record_at=[0, 5])
