"""Verdicts: every region of the interval is reachable, the smallest effect decides "no effect",
pairs are real pairs, power numbers are right, and convergence is judged per stage, monotone in length."""
import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest

from vqpaper import claims

DELTA = 0.05


# ------------------------------------------------------------------ regions of the interval
def _regions_by_definition(low, high, d):
    """The module docstring's table, written out independently of ``claims.region``."""
    return [name for name, holds in ((claims.POSITIVE, low > 0 and high >= d),
                                     (claims.NO_EFFECT, -d < low and high < d),
                                     (claims.NEGATIVE, high < 0 and low <= -d),
                                     (claims.UNDECIDED, low <= 0 <= high and (low <= -d or high >= d)))
            if holds]


@pytest.mark.parametrize("d", [0.0, DELTA])
def test_regions_are_exhaustive_and_disjoint(d):
    points = sorted({-math.inf, -1, -d - 1e-9, -d, -d / 2, -1e-9, 0.0, 1e-9, d / 2, d, d + 1e-9, 1, math.inf})
    for low, high in itertools.combinations_with_replacement(points, 2):
        found = _regions_by_definition(low, high, d)
        assert len(found) == 1, (low, high, d, found)
        assert claims.region(low, high, d) == found[0], (low, high, d)


def test_held_when_significantly_the_claimed_way_and_not_negligible():
    c = claims.paired("c", "pretrained beats scratch", [0.97, 0.96, 0.98], [0.58, 0.61, 0.55], metric="alloc_entropy")
    assert c.outcome == claims.HELD and c.held and c.decided and c.decision == claims.POSITIVE
    assert c.effect == pytest.approx(0.39) and c.delta == DELTA and c.scale == "absolute"
    assert 0 < c.low < c.effect < c.high
    assert c.n == 3 and c.n_agree == 3 and c.margin > 1
    assert c.verdict.startswith("held: effect +0.39, 95% CI [")


def test_an_interval_inside_delta_is_no_effect_even_when_significant():
    tight = claims.decide([0.010, 0.011, 0.009], delta=DELTA)            # above zero, but negligible
    assert tight.outcome == claims.NOT_HELD and tight.decision == claims.NO_EFFECT and tight.low > 0
    assert "no effect larger than δ = 0.05" in tight.reason
    around = claims.decide([0.01, -0.01, 0.0, 0.005], delta=DELTA)        # around zero
    assert around.outcome == claims.NOT_HELD and around.decision == claims.NO_EFFECT
    below = claims.decide([-0.010, -0.011, -0.009], delta=DELTA)          # below zero, but by less than delta
    assert below.decision == claims.NO_EFFECT and below.high < 0


def test_the_other_way_is_not_held_and_says_so():
    c = claims.paired("c", "pretrained beats scratch", [0.58, 0.61, 0.55], [0.97, 0.96, 0.98], metric="coverage")
    assert c.outcome == claims.NOT_HELD and c.decision == claims.NEGATIVE and not c.held and c.decided
    assert c.high < 0 and c.n_agree == 0 and c.reason.startswith("the other way")


def test_straddling_beyond_delta_is_inconclusive_and_states_its_direction():
    # every seed points the claimed way, but the spread dwarfs the effect
    c = claims.paired("c", "a beats b", [0.101, 0.5, 0.1001], [0.1, 0.1, 0.1], metric="usage")
    assert c.n_agree == 3 and c.outcome == claims.INCONCLUSIVE and c.decision == claims.UNDECIDED
    assert "straddles zero" in c.reason and "points the claimed way in 3 of 3 pairs" in c.reason
    assert c.margin < 0


def test_no_declared_metric_means_no_effect_cannot_be_decided():
    c = claims.paired("c", "a beats b", [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert c.delta == 0 and c.metric == ""
    assert c.outcome == claims.INCONCLUSIVE and "no smallest effect" in c.reason
    same = claims.paired("c", "a beats b", [256, 256, 256], [256, 256, 256], metric="codes_used")
    assert same.outcome == claims.NOT_HELD and same.decision == claims.NO_EFFECT


def test_equality_claims():
    equal = claims.paired("c", "as many peaks", [4, 4, 4], [4, 4, 4], metric="peaks", kind="equal")
    assert equal.outcome == claims.HELD and equal.decision == claims.NO_EFFECT and equal.n_agree == 3
    assert "no difference larger than δ = 0.5" in equal.reason
    fewer = claims.paired("c", "as many peaks", [2, 2, 3], [4, 4, 4], metric="peaks", kind="equal")
    assert fewer.outcome == claims.NOT_HELD and fewer.decision == claims.NEGATIVE and "a difference" in fewer.reason
    assert fewer.decision_text == "smaller" and equal.decision_text == "no difference"
    more = claims.paired("c", "as many peaks", [6, 6, 7], [4, 4, 4], metric="peaks", kind="equal")
    assert more.outcome == claims.NOT_HELD and more.decision == claims.POSITIVE
    unsure = claims.paired("c", "as many peaks", [4, 4, 5], [4, 4, 4], metric="peaks", kind="equal")
    assert unsure.outcome == claims.INCONCLUSIVE and "2 of 3 pairs differ by less than δ" in unsure.reason
    with pytest.raises(ValueError, match="kind"):
        claims.paired("c", "s", [1, 2], [1, 2], metric="peaks", kind="same")


def test_log_scale_metrics_compare_ratios():
    c = claims.paired("c", "pretraining gives a higher perplexity", [2400, 2200, 2600], [15, 14, 16],
                      metric="perplexity")
    assert c.scale == "log" and c.delta == pytest.approx(math.log(1.1))
    assert c.effect == pytest.approx(np.mean(np.log([2400 / 15, 2200 / 14, 2600 / 16])))
    assert c.outcome == claims.HELD and c.effect_text.startswith("×1") and "[×" in c.interval_text
    # lower is better: scratch / pretrained
    mse = claims.paired("c", "lower MSE", [0.010, 0.011, 0.012], [0.020, 0.021, 0.019], metric="test_mse",
                        higher_is_better=False)
    assert mse.outcome == claims.HELD and mse.effect == pytest.approx(np.mean(np.log([2.0, 21 / 11, 19 / 12])))
    # a 2% ratio, measured tightly, is no effect on a 10% scale, whatever the absolute size
    near = claims.paired("c", "more codes", [1020, 2040, 3060], [1000, 2000, 3000], metric="codes_used")
    assert near.outcome == claims.NOT_HELD and near.decision == claims.NO_EFFECT
    with pytest.raises(ValueError, match="positive"):
        claims.paired("c", "s", [1.0, 0.0], [1.0, 1.0], metric="mse")


def test_unknown_metric_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"'alloc_entropie'.*known metrics.*alloc_entropy"):
        claims.paired("c", "s", [1, 2], [0, 1], metric="alloc_entropie")


def test_per_codebook_delta_needs_the_codebook_size():
    with pytest.raises(ValueError, match="codebook_size"):
        claims.paired("c", "s", [5, 6], [1, 2], metric="min_tokens_per_cluster")
    c = claims.paired("c", "s", [5, 6, 7], [1, 2, 3], metric="min_tokens_per_cluster", codebook_size=128)
    assert c.delta == pytest.approx(1.28) and c.outcome == claims.HELD
    # an effect of one token on a 1,024 codebook is below a hundredth of it
    c = claims.paired("c", "s", [11, 12, 13], [10, 11, 12], metric="min_tokens_per_cluster", codebook_size=1024)
    assert c.outcome == claims.NOT_HELD and c.decision == claims.NO_EFFECT


def test_effects_registry_gives_every_delta_a_reason():
    for metric, e in claims.EFFECTS.items():
        assert e.reason and e.scale in claims.SCALES and e.delta > 0, metric
    assert claims.EFFECTS["test_mse"].delta == pytest.approx(math.log(1.1))
    assert claims.EFFECTS["alloc_entropy"].delta == 0.05 and claims.EFFECTS["embedding_peaks"].delta == 0.5
    table = claims.effects_table()
    assert set(table["metric"]) == set(claims.EFFECTS) and "0.01 × K" in set(table["δ"])


# ------------------------------------------------------------------ pairs are real pairs
def test_duplicated_seeds_are_refused():
    with pytest.raises(ValueError, match=r"must all differ.*\[0\] repeated"):
        claims.paired("c", "s", [0.9, 0.9], [0.5, 0.5], metric="usage", labels=[0, 0])
    with pytest.raises(ValueError, match="one label"):
        claims.paired("c", "s", [0.9, 0.8], [0.5, 0.4], metric="usage", labels=[0])
    c = claims.paired("c", "s", [0.9, 0.8, 0.85], [0.5, 0.4, 0.45], metric="usage", labels=[(0, 1), (0, 2), (1, 1)])
    assert c.labels == ((0, 1), (0, 2), (1, 1)) and c.as_dict()["labels"] == [[0, 1], [0, 2], [1, 1]]


def test_one_pair_has_an_unknown_spread_never_plus_minus_zero():
    c = claims.paired("c", "a beats b", [2366.0], [14.0], metric="perplexity")
    assert c.outcome == claims.INCONCLUSIVE and "spread is unknown" in c.reason
    assert math.isnan(c.sd) and not c.spread_known and c.n_80 is None and c.n_95 is None
    assert c.interval_text == "no interval (spread unknown)" and c.margin == -math.inf
    for text in (c.verdict, claims.table([c]).to_string(), claims.power_table([c]).to_string()):
        assert "± 0" not in text and "+-0" not in text
    assert claims.power_table([c])["n for 80%"][0] == "unknown (no spread)"
    with pytest.raises(ValueError):  # one value has no sample sd (spread.sample_sd): never 0
        claims.sample_sd([3.0])


def test_identical_differences_over_distinct_seeds_decide():
    c = claims.paired("c", "a beats b", [0.75, 0.875, 1.0], [0.25, 0.375, 0.5], metric="usage", labels=[0, 1, 2])
    assert c.sd == 0 and c.outcome == claims.HELD and c.margin == math.inf


def test_not_converged_and_nan_are_inconclusive():
    c = claims.paired("c", "a beats b", [0.2, 0.3, 0.4], [0, 0, 0], converged=False, metric="usage")
    assert c.outcome == claims.INCONCLUSIVE and "converged" in c.reason and not c.converged
    why = claims.Convergence(False, "seed 1, finetune: still falling")
    c = claims.paired("c", "a beats b", [0.2, 0.3, 0.4], [0, 0, 0], converged=why, metric="usage")
    assert c.outcome == claims.INCONCLUSIVE and "seed 1, finetune: still falling" in c.reason
    c = claims.paired("c", "a beats b", [0.2, float("nan"), 0.4], [0, 0, 0], metric="usage")
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


def test_margin_is_the_distance_from_the_region_boundary():
    by_a_hair = claims.paired("c", "s", [0.11, 0.2, 0.3], [0.1, 0.1, 0.1], metric="usage")
    firm = claims.paired("c", "s", [0.5, 0.55, 0.6], [0.1, 0.1, 0.1], metric="usage")
    assert by_a_hair.outcome == claims.INCONCLUSIVE and firm.outcome == claims.HELD
    assert firm.margin == pytest.approx(firm.low / ((firm.high - firm.low) / 2))
    none = claims.paired("c", "s", [0.101, 0.102, 0.1], [0.1, 0.1, 0.1], metric="usage")
    assert none.decision == claims.NO_EFFECT
    assert none.margin == pytest.approx(min(none.low + DELTA, DELTA - none.high) / ((none.high - none.low) / 2))


# ------------------------------------------------------------------ power
@pytest.mark.parametrize("d, n80, n95", [(0.5, 34, 54), (0.8, 15, 23), (1.0, 10, 16)])
def test_power_matches_the_one_sample_t_test_tables(d, n80, n95):
    # paired t test, two-sided alpha 0.05, effect size d = effect / sd (G*Power, Cohen 1988)
    assert claims.n_needed(d, 1.0, 0.0, 0.80) == n80
    assert claims.n_needed(d, 1.0, 0.0, 0.95) == n95
    assert claims.power(d, 1.0, n80, 0.0) >= 0.80 > claims.power(d, 1.0, n80 - 1, 0.0)


@pytest.mark.parametrize("effect, sd, n, delta", [(0.01, 0.03, 7, 0.05), (0.04, 0.03, 50, 0.05), (0.0, 0.5, 10, 0.5),
                                                  (0.3, 1.0, 8, 0.0)])
def test_power_agrees_with_a_simulation(effect, sd, n, delta):
    rng = np.random.default_rng(0)
    x = rng.normal(effect, sd, (100_000, n))
    mean, half = x.mean(1), claims.t_quantile(n) * x.std(1, ddof=1) / math.sqrt(n)
    low, high = mean - half, mean + half
    decided = (low > 0) | (high < 0) if abs(effect) >= delta else (low > -delta) & (high < delta)
    assert claims.power(effect, sd, n, delta) == pytest.approx(decided.mean(), abs=0.006)


def test_pairs_needed_floor_cap_and_unknown():
    assert claims.n_needed(10.0, 0.1, 0.05, 0.95) == claims.MIN_PAIRS       # huge effect: the floor
    assert claims.n_needed(0.0, 1.0, 0.0, 0.80) is None                     # no effect, no delta: never
    assert claims.n_needed(0.049, 0.1, 0.05, 0.80) is None                  # at the edge of delta: beyond the cap
    assert claims.n_needed(1.0, math.nan, 0.05, 0.80) is None               # spread unknown
    c = claims.paired("c", "s", [0.61, 0.52, 0.70], [0.5, 0.5, 0.5], metric="usage")
    assert c.n_80 == claims.n_needed(c.effect, c.sd, DELTA, 0.80) and c.n_80 <= c.n_95
    table = claims.power_table([c])
    assert list(table.columns) == ["claim", "check", "outcome", "effect", "interval", "sd", "n", "n for 80%",
                                   "n for 95%"]
    assert table["n for 80%"][0] == str(c.n_80)


# ------------------------------------------------------------------ families
def test_count_and_record():
    checks = [claims.paired("a", "s", [0.75, 0.875, 1.0], [0.25, 0.375, 0.5], metric="usage"),
              claims.paired("b", "s", [0.1], [0.0], metric="usage"),
              claims.paired("c", "s", [0.1, 0.1, 0.1], [0.2, 0.2, 0.2], metric="usage")]
    assert claims.count(checks) == "1 held, 1 not held, 1 inconclusive"
    d = checks[0].as_dict()
    assert d["outcome"] == "held" and d["margin"] == math.inf and d["verdict"].startswith("held")
    assert d["decision"] == "positive" and d["metric"] == "usage" and d["n_80"] == 2
    assert list(claims.table(checks)["outcome"]) == ["held", "inconclusive", "not held"]


PHRASES = {"held": "it holds", "not held": "it fails", "inconclusive": "cannot tell"}


def _family(*checks, phrases=PHRASES):
    return claims.Family("fam", "§3.1.1, Fig. 3", "pretraining spreads the tokens", list(checks), phrases,
                         quote="the distribution of tokens is more uniform")


def test_family_holds_only_when_every_setting_holds():
    held = claims.paired("a", "2-D", [0.3, 0.4, 0.5], [0.1, 0.2, 0.3], setting="2-D", metric="usage")
    fails = claims.paired("b", "8-D", [0.1, 0.2, 0.3], [0.3, 0.4, 0.5], setting="8-D", metric="usage")
    none = claims.paired("n", "4-D", [0.30, 0.31, 0.29], [0.30, 0.30, 0.30], setting="4-D", metric="usage")
    open_ = claims.paired("c", "3-D", [0.5], [0.1], setting="3-D", metric="usage")
    assert _family(held).outcome == claims.HELD and _family(held).phrase == "it holds"
    assert _family(held).decision == claims.HELD
    f = _family(held, fails, open_)
    assert f.outcome == claims.NOT_HELD and f.phrase == "it fails" and "8-D (the other way)" in f.reason
    assert f.decision == claims.NEGATIVE
    f = _family(held, none)
    assert f.outcome == claims.NOT_HELD and f.decision == claims.NO_EFFECT and "4-D (no effect)" in f.reason
    assert _family(fails, none).decision == "no effect and negative"
    f = _family(held, open_)
    # an undecided family says which way its undecided checks point, with their interval
    assert f.outcome == claims.INCONCLUSIVE and f.phrase.startswith("cannot tell (3-D: points the claimed way in 1 "
                                                                    "of 1 pair, no interval") and "3-D" in f.reason
    d = f.as_dict()
    assert d["outcome"] == "inconclusive" and d["decision"] == "inconclusive" and set(d["checks"]) == {"a", "c"}
    assert d["quote"] and d["is_paper"] and d["metric"] == "usage" and d["kind"] == "greater"
    assert d["n"] == 1 and d["n_80"] is None                      # one check has an unknown spread
    both = _family(held, fails).as_dict()
    assert both["n"] == 3 and both["n_80"] == max(held.n_80, fails.n_80) and both["n_95"] >= both["n_80"]
    assert list(claims.power_table([f])["claim"]) == ["fam", "fam"]


def test_no_effect_has_its_own_phrase_chosen_by_the_decision():
    none = claims.paired("n", "4-D", [0.30, 0.31, 0.29], [0.30, 0.30, 0.30], setting="4-D", metric="usage")
    other = claims.paired("b", "8-D", [0.1, 0.2, 0.3], [0.3, 0.4, 0.5], setting="8-D", metric="usage")
    four = {**PHRASES, claims.NO_EFFECT: "no effect"}
    assert _family(none, phrases=four).phrase == "no effect"
    assert _family(other, phrases=four).phrase == "it fails"             # the other way
    assert _family(none, other, phrases=four).phrase == "it fails"       # mixed: the other way is named
    assert _family(none).phrase == "it fails"                            # no fourth phrase: the not-held one
    with pytest.raises(ValueError, match="unknown outcomes"):
        _family(none, phrases={**PHRASES, "maybe": "x"})


def test_family_needs_a_phrase_per_outcome_and_a_check():
    with pytest.raises(ValueError, match="phrases"):
        claims.Family("f", "s", "p", [claims.paired("a", "s", [2, 3], [0, 0])], {"held": "x"})
    with pytest.raises(ValueError, match="no checks"):
        claims.Family("f", "s", "p", [], PHRASES)


def test_a_family_says_whose_claim_it_is():
    check = claims.paired("a", "s", [0.3, 0.4, 0.5], [0.1, 0.2, 0.3], metric="usage")
    paper = claims.Family("f", "§3.2, Fig. 6", "p", [check], PHRASES, quote="increased MSE")
    assert paper.is_paper
    for source in ("companion measure of §3.2", "companion ablation of §3.1.1", "companion variant",
                   "companion question", "SimVQ (Zhu, Li et al. 2024), abstract"):
        assert not claims.Family("f", source, "p", [check], PHRASES).is_paper, source
    with pytest.raises(ValueError, match="must be a section of the paper"):
        claims.Family("f", "beyond the paper", "p", [check], PHRASES)
    with pytest.raises(ValueError, match="needs the sentence it tests"):
        claims.Family("f", "§3.2", "p", [check], PHRASES)           # a claim of the paper without its quote


def _fams():
    held = claims.paired("a", "2-D", [0.3, 0.4, 0.5], [0.1, 0.2, 0.3], setting="2-D", metric="usage", unit="seed")
    none = claims.paired("n", "2-D", [0.30, 0.31, 0.29], [0.30, 0.30, 0.30], setting="2-D", metric="usage",
                         unit="seed")
    spread = claims.paired("c", "2-D", [0.5, 0.1, 0.45], [0.1, 0.3, 0.2], setting="2-D", metric="usage", unit="seed")
    q = dict(quote="a sentence")
    fams = claims.Families([claims.Family("p-held", "§3.1.1", "p", [held], PHRASES, **q),
                            claims.Family("p-none", "§3.1.1", "p", [none], PHRASES, **q),
                            claims.Family("p-open", "§3.1.1", "p", [spread], PHRASES, **q),
                            claims.Family("c-held", "companion question", "c",
                                          [claims.paired("a2", "2-D", [0.3, 0.4, 0.5], [0.1, 0.2, 0.3],
                                                         metric="usage")], PHRASES)],
                           [claims.LeftOut("p-left", "§3.1.2, Fig. 4", "a trend", "Needs three sizes.", quote="x")])
    return fams


def test_paper_count_counts_the_paper_s_claims_only_and_says_what_was_not_tested():
    fams = _fams()
    count = claims.paper_count(fams)
    assert count["text"] == ("1 of 4 claims of the paper held, 1 not held, 1 undecided, 1 not tested at these "
                             "parameters")
    assert (count["claims"], count["held"], count["not held"], count["undecided"], count["not tested"]) == (4, 1, 1, 1, 1)
    assert claims.paper_count([fams[3]])["text"] == "no claim of the paper is checked here"
    # the families of two notebooks add up, left-out ones included
    both = fams + claims.Families([fams[0]], [claims.LeftOut("q", "§3.2", "p", "Needs two widths.", quote="y")])
    assert claims.paper_count(both)["claims"] == 6 and len(both.left_out) == 2


def test_overview_says_what_would_decide_an_undecided_claim():
    frame = claims.overview(_fams())
    assert list(frame.columns) == ["claim", "source", "quote", "outcome", "decision", "effect", "interval", "n",
                                   "n for 80%", "n for 95%", "why undecided / what would decide it"]
    rows = {r["claim"]: r for r in frame.to_dict("records")}
    assert rows["p-open"]["outcome"] == "inconclusive" and rows["p-open"]["n"] == "3"
    assert rows["p-open"]["why undecided / what would decide it"].startswith("about ")
    assert "seeds would decide it with 80% probability" in rows["p-open"]["why undecided / what would decide it"]
    assert rows["p-none"]["decision"] == "no effect" and rows["p-none"]["why undecided / what would decide it"] == ""
    assert rows["p-left"]["outcome"] == "not tested" and rows["p-left"]["why undecided / what would decide it"] == \
        "Needs three sizes."
    # an undecided check of one seed, and one whose runs had not converged
    one = claims.paired("o", "3-D", [0.5], [0.1], setting="3-D", metric="usage", unit="seed")
    slow = claims.paired("s", "8-D", [0.5, 0.6], [0.1, 0.1], setting="8-D", metric="usage", converged=False)
    both = claims.paired("b", "2-D", [0.5], [0.1], setting="2-D", metric="usage", converged=False, unit="seed")
    row = claims.overview_row(_family(one, slow, both))
    assert row["why undecided / what would decide it"] == (
        "3-D: 1 seed: run at least 2 to know the spread; 8-D: train longer: a run had not converged; "
        "2-D: train longer: a run had not converged and 1 seed: run at least 2 to know the spread")
    assert row["effect"].startswith("3-D: +0.4; 8-D: ")


def test_a_recorded_family_reads_back_into_the_same_overview():
    import json

    fams = _fams()
    recorded = json.loads(json.dumps({f.id: f.as_dict() for f in list(fams) + fams.left_out}))
    again = claims.overview(list(recorded.values()))
    assert again.to_dict("records") == claims.overview(fams).to_dict("records")
    assert claims.paper_count(list(recorded.values()))["text"] == claims.paper_count(fams)["text"]
    back = claims.Family.from_dict(recorded["p-open"])
    assert back.phrase == fams[2].phrase and back.checks[0].interval_text == fams[2].checks[0].interval_text


def test_publish_glues_every_key_and_records_left_out_families(monkeypatch):
    glued, recorded = {}, {}
    monkeypatch.setattr(claims.book, "glue_text", lambda k, v: glued.__setitem__(k, v))
    monkeypatch.setattr(claims.book, "glue_table", lambda k, v: glued.__setitem__(k, v))
    monkeypatch.setattr(claims.results, "record", lambda fig, values, **kw: recorded.update(values))
    cfg = SimpleNamespace(provenance=lambda seeds=None: {})
    fams = _fams()
    claims.publish(cfg, fams, "fig-x", "pre")
    for key in ("pre.claims.summary", "pre.claims.table", "pre.claims.overview", "pre.claims.paper_count",
                "pre.claims.left_out", "pre.claims.power", "pre.claims.convergence", "claim.p-left.phrase",
                "claim.p-left.outcome", "claim.p-held.phrase", "claim.a"):
        assert key in glued, key
    assert glued["claim.p-left.outcome"] == "not tested" and glued["claim.p-left.phrase"] == "Needs three sizes."
    assert glued["pre.claims.left_out"] == "Not tested at these parameters: p-left: Needs three sizes."
    assert recorded["p-left"]["outcome"] == "not tested" and "checks" in recorded["p-held"]
    assert glued["pre.claims.paper_count"].startswith("1 of 4 claims of the paper held")


# ------------------------------------------------------------------ convergence
def _history(losses, stage="finetune", pretrain=(1.0, 0.5, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2)):
    return [{"stage": "pretrain", "loss": v} for v in pretrain] + [{"stage": stage, "loss": v} for v in losses]


CURVES = ([(f"exp {r:.2f}", lambda t, r=r: r ** t) for r in np.linspace(0.5, 0.99, 15)]
          + [(f"power {p} {t0}", lambda t, p=p, t0=t0: (t + t0) ** -p)
             for p in (0.3, 0.7, 1.0, 2.0, 4.0) for t0 in (0.1, 1.0, 10.0)])


@pytest.mark.parametrize("name, curve", CURVES, ids=[n for n, _ in CURVES])
def test_convergence_is_monotone_in_training_length(name, curve):
    """A longer run of the same decaying curve is never judged less converged (nor its change larger)."""
    losses = [curve(t) for t in range(1, 241)]
    changes = [claims.stage_change(losses[:e])["change"] for e in range(claims.CONVERGENCE_MIN_EPOCHS, 241)]
    verdicts = [claims.stage_change(losses[:e])["converged"] for e in range(claims.CONVERGENCE_MIN_EPOCHS, 241)]
    assert all(b <= a + 1e-12 for a, b in zip(changes, changes[1:])), name
    if True in verdicts:
        assert all(verdicts[verdicts.index(True):]), name


def test_convergence_reads_every_stage():
    flat = _history([1.0, 0.5, 0.3] + [0.2] * 17)
    assert claims.converged(flat) and claims.loss_change(flat) == pytest.approx(0.0)
    falling = _history([1.0 - 0.04 * i for i in range(20)])   # a straight line: still falling
    assert not claims.converged(falling)
    # a straight line: the quarter before lies a quarter of the stage above the last one
    assert claims.loss_change(falling) == pytest.approx(0.04 * 19 / 4 / (0.04 * 19 * 7 / 8))
    assert claims.converged(_history([0.7 ** i for i in range(20)]))      # near its floor: the tail adds little
    assert claims.converged(_history([0.2] * 10))
    # the pretraining stage is checked too: still falling there, so not converged, however flat the fine-tune
    pre_falling = _history([0.2] * 10, pretrain=[1.0 - 0.05 * i for i in range(10)])
    report = claims.convergence_report(pre_falling)
    assert [r["stage"] for r in report] == ["pretrain", "finetune"]
    assert not report[0]["converged"] and report[1]["converged"] and not claims.converged(pre_falling)
    assert claims.loss_change(pre_falling, stage="pretrain") == report[0]["change"]
    assert set(report[0]) >= {"stage", "epochs", "change", "threshold", "converged", "why"}
    assert report[0]["threshold"] == claims.CONVERGENCE_TOL and report[0]["epochs"] == 10


def test_a_rising_loss_has_not_converged():
    rising_end = [1.0, 0.5, 0.3, 0.2, 0.2, 0.2, 0.25, 0.3, 0.35, 0.4]      # fell, then rises in the last quarter
    row = claims.stage_change(rising_end)
    assert row["change"] < -claims.CONVERGENCE_TOL and not row["converged"] and row["why"].startswith("rising")
    assert not claims.stage_change([0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55])["converged"]  # rose throughout
    assert claims.stage_change([0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])["converged"]          # rose, then flat


def test_too_short_a_stage_cannot_be_judged():
    assert not claims.converged(_history([0.3, 0.2, 0.2]))
    row = claims.convergence_report(_history([0.3]))[1]
    assert not row["converged"] and "too short" in row["why"] and math.isnan(row["change"])
    assert not claims.converged([])


def _run(seed, end, at_checkpoint=None, metric="perplexity", losses=(1.0, 0.5, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2),
         codebook_size=128):
    cp = None if at_checkpoint is None else {"epoch": 6, "fraction": 0.75, "metrics": {metric: at_checkpoint}}
    return SimpleNamespace(config={"seed": seed, "codebook_size": codebook_size}, metrics={metric: end},
                           history=[{"stage": "scratch", "loss": v} for v in losses], checkpoint=cp)


def test_checkpoint_drift_rule():
    settled = [_run(s, 50 + s, 49 + s) for s in range(3)]            # ~2% in the last quarter, delta 10%
    drifting = [_run(s, 60 + s, 40 + s) for s in range(3)]           # ~45%
    assert claims.metric_drift(settled, "perplexity")["converged"] is True
    row = claims.metric_drift(drifting, "perplexity")
    assert row["converged"] is False and row["drift"] == pytest.approx(np.mean(np.log([60 / 40, 61 / 41, 62 / 42])))
    assert row["scale"] == "log" and "still drifting" in row["why"] and "75% of the final stage" in row["why"]
    falling = [_run(s, 40 + s, 60 + s) for s in range(3)]            # a metric falling is drifting too
    assert claims.metric_drift(falling, "perplexity")["converged"] is False
    # each group's own drift is recorded for the reader; a check is judged on its effect's drift (paired)
    c = claims.convergence(settled, drifting, metric="perplexity")
    assert len(c.drift) == 2 and len(c.stages) == 6 and [r["converged"] for r in c.drift] == [True, False]
    # absolute metrics on their own scale; a per-codebook delta from the runs' codebook size
    tokens = [_run(s, 30.0, 28.0, metric="min_tokens_per_cluster", codebook_size=1024) for s in range(3)]
    assert claims.metric_drift(tokens, "min_tokens_per_cluster")["converged"] is True     # 2 < 10.24
    tokens = [_run(s, 30.0, 28.0, metric="min_tokens_per_cluster", codebook_size=128) for s in range(3)]
    assert claims.metric_drift(tokens, "min_tokens_per_cluster")["converged"] is False    # 2 >= 1.28


def test_a_check_whose_effect_still_moves_is_inconclusive_and_one_that_settled_is_decided():
    better, worse = [10.0, 10.2, 9.9], [5.0, 5.1, 4.8]          # effect +5, tight
    # the effect grew from +1 to +5 over the last quarter: one more quarter keeps it positive
    grew = claims.paired("c", "s", better, worse, metric="usage", checkpoint=([6.0, 6.2, 5.9], worse))
    assert grew.outcome == claims.HELD and grew.settled is True and grew.drift == pytest.approx(4.0)
    # the effect shrank from +10 to +5: one more such quarter brings it to about 0, not decided
    shrank = claims.paired("c", "s", better, worse, metric="usage", checkpoint=([15.0, 15.2, 14.9], worse))
    assert shrank.outcome == claims.INCONCLUSIVE and shrank.settled is False
    assert shrank.reason.startswith(claims.STILL_MOVING) and shrank.drift == pytest.approx(-5.0)
    # what would decide it: longer training first, more seeds alone would not
    decide = claims.overview_row(_family(shrank))["why undecided / what would decide it"]
    assert decide.startswith("train longer: the effect was still moving and about ") and "at this spread" in decide
    # shrinking more slowly (from +9 to +5), it stays above zero after another quarter: decided
    slower = claims.paired("c", "s", better, worse, metric="usage", checkpoint=([14.0, 14.2, 13.9], worse))
    assert slower.outcome == claims.HELD and slower.settled is True
    # a no-effect check that is drifting out of (-delta, delta)
    same = [0.50, 0.51, 0.49]
    out = claims.paired("c", "s", same, [0.50, 0.50, 0.50], metric="usage",
                        checkpoint=([0.40, 0.41, 0.39], [0.50, 0.50, 0.50]))
    assert out.outcome == claims.INCONCLUSIVE and out.settled is False
    # without a checkpoint nothing is known about the drift
    assert claims.paired("c", "s", better, worse, metric="usage").settled is None


def test_without_a_checkpoint_the_loss_rule_alone_decides_and_says_so():
    old = [_run(s, 50 + s) for s in range(3)]
    row = claims.metric_drift(old, "perplexity")
    assert row["converged"] is None and "loss rule only" in row["why"]
    c = claims.convergence(old, metric="perplexity")
    assert c and c.notes == ["no checkpoint of perplexity recorded: the loss rule only"]
    falling = [_run(s, 50.0, losses=[1.0 - 0.05 * i for i in range(10)]) for s in range(2)]
    c = claims.convergence(old, falling, metric="perplexity")
    assert not c and "seed 0, scratch: still falling" in c.reason
    assert [r["converged"] for r in c.stages] == [True] * 3 + [False] * 2


def test_convergence_names_its_groups_limits_its_stages_and_is_kept_with_the_claim():
    pre_falling = SimpleNamespace(config={"seed": 3}, metrics={},
                                  history=_history([0.2] * 10, pretrain=[1.0 - 0.05 * i for i in range(10)]))
    c = claims.convergence([pre_falling], names=["pretrained, 2-D"])
    assert not c and c.reason.startswith("pretrained, 2-D, seed 3, pretrain: still falling")
    assert claims.convergence([pre_falling], stages=("finetune",)).converged        # only the stage that feeds it
    assert not claims.convergence([pre_falling], stages=("pretrain",)).converged
    none = claims.convergence([pre_falling], stages=("scratch",))
    assert not none and "no stage scratch" in none.reason
    with pytest.raises(ValueError, match="one name per group"):
        claims.convergence([pre_falling], [pre_falling], names=["a"])
    check = claims.paired("x", "s", [0.5, 0.6], [0.1, 0.2], metric="usage", converged=c)
    assert check.outcome == claims.INCONCLUSIVE and check.convergence["stages"][0]["group"] == "pretrained, 2-D"
    table = claims.convergence_table([check, check])                 # each run and stage once
    assert list(table["stage"]) == ["pretrain", "finetune"] and list(table["converged"]) == [False, True]
    assert list(table.columns) == ["run", "seed", "stage", "epochs", "change", "threshold", "converged", "why"]


def test_convergence_table_shows_the_checkpoint_drift_where_recorded():
    drifting = [_run(s, 60 + s, 40 + s) for s in range(3)]
    settled = [_run(s, 50 + s, 49 + s) for s in range(3)]
    check = claims.paired("x", "s", [60, 61, 62], [50, 51, 52], metric="perplexity",
                          converged=claims.convergence(drifting, settled, metric="perplexity", names=["a", "b"]))
    rows = claims.convergence_rows([check])
    drift = [r for r in rows if r["stage"].startswith("perplexity")]
    assert [r["run"] for r in drift] == ["a", "b"] and [r["converged"] for r in drift] == [False, True]
    assert drift[0]["seed"] == "all 3" and drift[0]["threshold"] == pytest.approx(math.log(1.1))


def test_the_book_shows_the_effects_table_from_the_code():
    from docutils.core import publish_string
    from docutils.parsers.rst import directives

    from vqpaper import sphinxext

    directives.register_directive("vqpaper-effects", sphinxext._effects_directive())
    html = publish_string(".. vqpaper-effects::\n", writer_name="html").decode()
    assert html.count("<tr>") == len(claims.EFFECTS) + 1
    for metric, e in claims.EFFECTS.items():
        assert f"<tt class=\"docutils literal\">{metric}</tt>" in html or f">{metric}<" in html, metric
    assert "a hundredth of the codebook" in html and "0.01 × K" in html
