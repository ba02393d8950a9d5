"""Three-valued verdicts: every outcome is reachable, and the interval decides it."""
import math

import pytest

from vqpaper import claims


def test_held_when_the_interval_lies_above_zero():
    c = claims.paired("c", "pretrained beats scratch", [0.97, 0.96, 0.98], [0.58, 0.61, 0.55])
    assert c.outcome == claims.HELD and c.held and c.decided
    assert c.effect == pytest.approx(0.39)
    assert 0 < c.low < c.effect < c.high
    assert c.n == 3 and c.n_agree == 3
    assert c.margin > 1
    assert c.verdict.startswith("held: effect +0.39, 95% CI [")


def test_not_held_when_the_data_point_the_other_way():
    c = claims.paired("c", "pretrained beats scratch", [0.58, 0.61, 0.55], [0.97, 0.96, 0.98])
    assert c.outcome == claims.NOT_HELD and not c.held and c.decided
    assert c.high < 0 and c.n_agree == 0


def test_lower_is_better_flips_the_sign():
    c = claims.paired("c", "lower MSE", [0.010, 0.011, 0.012], [0.020, 0.021, 0.019], higher_is_better=False)
    assert c.outcome == claims.HELD and c.effect == pytest.approx(0.009)


def test_three_of_three_by_a_hair_is_inconclusive():
    # every seed points the claimed way, but the spread dwarfs the effect
    c = claims.paired("c", "a beats b", [1.001, 1.5, 1.0001], [1.0, 1.0, 1.0])
    assert c.n_agree == 3
    assert c.outcome == claims.INCONCLUSIVE and c.reason == "the interval straddles zero"
    assert c.margin < 0


def test_one_pair_is_inconclusive_however_large_the_effect():
    c = claims.paired("c", "a beats b", [2366.0], [14.0])
    assert c.outcome == claims.INCONCLUSIVE and "too few" in c.reason
    assert c.interval_text == "no interval" and c.margin == -math.inf


def test_no_difference_at_all_is_not_held():
    c = claims.paired("c", "a beats b", [256, 256, 256], [256, 256, 256])
    assert c.outcome == claims.NOT_HELD and c.reason == "no difference in any pair"


def test_identical_positive_differences_are_held_with_infinite_margin():
    c = claims.paired("c", "a beats b", [3, 4, 5], [1, 2, 3])
    assert c.outcome == claims.HELD and c.margin == math.inf


def test_not_converged_and_nan_are_inconclusive():
    c = claims.paired("c", "a beats b", [2, 3, 4], [0, 0, 0], converged=False)
    assert c.outcome == claims.INCONCLUSIVE and "converged" in c.reason
    c = claims.paired("c", "a beats b", [2, float("nan"), 4], [0, 0, 0])
    assert c.outcome == claims.INCONCLUSIVE and "NaN" in c.reason


def test_interval_matches_the_t_distribution():
    mean, low, high = claims.paired_interval([1.0, 2.0, 3.0])
    # sd 1, se 1/sqrt(3), t(0.975, 2) = 4.303
    assert mean == 2.0 and high - mean == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    assert low == pytest.approx(2 * mean - high)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="equally long"):
        claims.paired("c", "s", [1, 2], [1])
    with pytest.raises(ValueError, match="non-empty"):
        claims.paired("c", "s", [], [])


def test_count_and_record():
    checks = [claims.paired("a", "s", [3, 4, 5], [1, 2, 3]), claims.paired("b", "s", [1], [0]),
              claims.paired("c", "s", [1, 1, 1], [2, 2, 2])]
    assert claims.count(checks) == "1 held, 1 not held, 1 inconclusive"
    d = checks[0].as_dict()
    assert d["outcome"] == "held" and d["margin"] == math.inf and d["verdict"].startswith("held")
    assert list(claims.table(checks)["outcome"]) == ["held", "inconclusive", "not held"]


PHRASES = {"held": "it holds", "not held": "it fails", "inconclusive": "cannot tell"}


def _family(*checks):
    return claims.Family("fam", "§3.1.1, Fig. 3", "pretraining spreads the tokens", list(checks), PHRASES)


def test_family_holds_only_when_every_setting_holds():
    held = claims.paired("a", "2-D", [3, 4, 5], [1, 2, 3], setting="2-D")
    fails = claims.paired("b", "8-D", [1, 2, 3], [3, 4, 5], setting="8-D")
    open_ = claims.paired("c", "3-D", [5], [1], setting="3-D")
    assert _family(held).outcome == claims.HELD and _family(held).phrase == "it holds"
    f = _family(held, fails, open_)
    assert f.outcome == claims.NOT_HELD and f.phrase == "it fails" and "8-D" in f.reason
    f = _family(held, open_)
    assert f.outcome == claims.INCONCLUSIVE and f.phrase == "cannot tell" and "3-D" in f.reason
    d = f.as_dict()
    assert d["outcome"] == "inconclusive" and set(d["checks"]) == {"a", "c"}


def test_family_needs_a_phrase_per_outcome_and_a_check():
    with pytest.raises(ValueError, match="phrases"):
        claims.Family("f", "s", "p", [claims.paired("a", "s", [2, 3], [0, 0])], {"held": "x"})
    with pytest.raises(ValueError, match="no checks"):
        claims.Family("f", "s", "p", [], PHRASES)


def _history(losses, stage="finetune"):
    return [{"stage": "pretrain", "loss": 9.0}] + [{"stage": stage, "loss": v} for v in losses]


def test_convergence_reads_the_last_stage_loss():
    flat = _history([1.0, 0.5, 0.3] + [0.2] * 17)
    assert claims.converged(flat) and claims.loss_change(flat) == pytest.approx(0.0)
    falling = _history([1.0 - 0.04 * i for i in range(20)])   # a straight line: still falling
    # last two epochs: 0.08 of a 0.78 fall, more than 10%
    assert claims.loss_change(falling) == pytest.approx(0.08 / 0.74) and not claims.converged(falling)
    decayed = _history([1.0 * 0.7 ** i for i in range(20)])   # near its floor: the tail adds little
    assert claims.converged(decayed)
    assert claims.converged(_history([0.2] * 10)) and claims.loss_change(_history([0.2, 0.3, 0.4, 0.5])) == 0.0
    assert not claims.converged(_history([0.3]))               # one epoch: cannot tell, so not converged
    assert not claims.converged([])
