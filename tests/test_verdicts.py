"""Every family of the book can hold, fail the other way, find no effect and stay undecided.

Each family is fed fabricated runs in four scenarios (the paired differences, in units of the
metric's smallest effect δ, are the same in every test): ``held`` (4, 5, 6 δ the claimed way),
``other`` (the other way), ``none`` (within ±0.1 δ: "no effect") and ``open`` (6, -5, 4 δ: the
interval straddles zero). A claim of sameness (``kind="equal"``) holds in ``none`` and fails in
``held``/``other``. Sweeps of one, two and three sizes (widths, dims, seeds) never compare a
setting with itself: what they cannot test is left out, with what would test it.
"""
import math
from types import SimpleNamespace

import pytest

from vqpaper import claims, verdicts
from vqpaper.train import RunResult

FLAT = [{"stage": "scratch", "loss": 0.2}] * 10          # converged
FALLING = [{"stage": "scratch", "loss": 1.0 - 0.05 * i} for i in range(10)]  # a straight line: still falling
PRETRAINED = ([{"stage": "pretrain", "loss": 0.2}] * 10) + ([{"stage": "finetune", "loss": 0.2}] * 10)


def run(metrics, history=FLAT, **config):
    return RunResult(config=config, history=list(history), metrics=dict(metrics))


SEEDS = (0, 1, 2)
K = 128  # codebook size of the synthetic runs (min_tokens_per_cluster's δ is a hundredth of it)
MULT = {"held": (4, 5, 6), "other": (-4, -5, -6), "none": (0.1, 0.0, -0.1), "open": (6, -5, 4)}
SCENARIOS = tuple(MULT)
GREATER = {"held": (claims.HELD, claims.HELD), "other": (claims.NOT_HELD, claims.NEGATIVE),
           "none": (claims.NOT_HELD, claims.NO_EFFECT), "open": (claims.INCONCLUSIVE, claims.INCONCLUSIVE)}
EQUAL = {"held": (claims.NOT_HELD, claims.POSITIVE), "other": (claims.NOT_HELD, claims.NEGATIVE),
         "none": (claims.HELD, claims.HELD), "open": (claims.INCONCLUSIVE, claims.INCONCLUSIVE)}


def value(metric, steps, seed, scenario, sign=1, codebook_size=K):
    """``metric`` ``steps`` paired differences (the scenario's, for ``seed``) above its base, on its own scale.

    ``sign=-1``: lower is the claimed way (MSE), so the difference is taken downwards.
    """
    e = claims.effect_for(metric, codebook_size)
    d = sign * MULT[scenario][seed] * e.delta * steps
    if e.scale == claims.LOG:
        return 20.0 * math.exp(d)
    return (0.4 if e.delta <= 0.05 else 20.0) + d


def outcome(family):
    return family.outcome, family.decision


def by_id(families):
    return {f.id: f for f in families}


# ------------------------------------------------------------------ 01: Fig. 2, seeds as units
def fig2(untrained_range, trained_range, untrained_peaks, trained_peaks, input_peaks=4, history=PRETRAINED):
    """Runs and tables for three seeds of two coordinates; peaks are per seed [coordinate 1, coordinate 2]."""
    runs, per_run, per_coord = [], [], []
    for s in SEEDS:
        runs += [run({}, history=[{"stage": "scratch", "loss": 1.0}], method="scratch", seed=s),
                 run({}, history=history, method="pretrained", seed=s)]
        per_run += [{"seed": s, "encoder": "untrained", "range": untrained_range[s]},
                    {"seed": s, "encoder": "trained", "range": trained_range[s]}]
        for encoder, peaks in (("untrained", untrained_peaks), ("trained", trained_peaks)):
            per_coord += [{"seed": s, "encoder": encoder, "coordinate": c + 1, "peaks": peaks[s][c],
                           "input peaks": input_peaks} for c in range(2)]
    return by_id(verdicts.encoder_output_families(runs, per_run, per_coord))


def _ranges(scenario):
    """Untrained range 1.0, trained range 1.0 × exp(scenario): the log ratio is the paired difference."""
    return [1.0] * 3, [value("range", 1, s, scenario) / 20.0 for s in SEEDS]


def _peaks(scenario, base=4):
    """Per seed two coordinates whose mean is ``base`` + the scenario's difference (δ = half a peak)."""
    return [[base + MULT[scenario][s] * 0.5 - 0.5, base + MULT[scenario][s] * 0.5 + 0.5] for s in SEEDS]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_fig2_range_goes_every_way(scenario):
    u, t = _ranges(scenario)
    f = fig2(u, t, _peaks("other"), _peaks("none"))["pre-range-narrower"]
    assert outcome(f) == GREATER[scenario] and f.checks[0].metric == "range" and f.checks[0].scale == "log"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_fig2_untrained_fewer_peaks_goes_every_way(scenario):
    # the claim: the input shows more peaks than the untrained encoder, so the untrained peaks go the other way
    mirror = {"held": "other", "other": "held"}.get(scenario, scenario)   # "open" mirrored straddles too
    f = fig2(*_ranges("held"), untrained_peaks=_peaks(mirror), trained_peaks=_peaks("none"))
    assert outcome(f["pre-untrained-fewer-peaks"]) == GREATER[scenario]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_fig2_trained_peaks_the_same_as_the_input_is_a_claim_of_sameness(scenario):
    f = fig2(*_ranges("held"), untrained_peaks=_peaks("other"), trained_peaks=_peaks(scenario))
    f = f["pre-trained-peaks-match-input"]
    assert outcome(f) == EQUAL[scenario] and f.checks[0].kind == claims.EQUAL
    # "more peaks than the input" is not "the same" (the old check, peaks > input - 1, passed it)
    if scenario == "held":
        assert f.decision == claims.POSITIVE


def test_fig2_pairs_are_seeds_each_the_mean_over_its_coordinates():
    # coordinates disagree within every seed (3 and 5 peaks against the input's 4), their mean does not:
    # pooled as 6 coordinate pairs this would be a spread of ±1 peak; as seeds it is exactly the input's 4
    fams = fig2(*_ranges("held"), untrained_peaks=_peaks("other"), trained_peaks=[[3, 5]] * 3)
    check = fams["pre-trained-peaks-match-input"].checks[0]
    assert check.n == 3 and check.labels == SEEDS and check.unit == "seed"
    assert fams["pre-trained-peaks-match-input"].outcome == claims.HELD
    assert all(f.checks[0].n == 3 for f in fams.values())


def test_fig2_checks_on_the_trained_encoder_need_its_pretraining_to_have_converged():
    falling = [{"stage": "pretrain", "loss": 1.0 - 0.05 * i} for i in range(10)] + [{"stage": "finetune",
                                                                                   "loss": 0.2}]
    fams = fig2(*_ranges("held"), untrained_peaks=_peaks("other"), trained_peaks=_peaks("none"), history=falling)
    assert fams["pre-range-narrower"].outcome == claims.INCONCLUSIVE
    assert "trained encoder (autoencoder pretraining), seed 0, pretrain: still falling" in fams[
        "pre-range-narrower"].reason
    assert fams["pre-trained-peaks-match-input"].outcome == claims.INCONCLUSIVE
    assert fams["pre-untrained-fewer-peaks"].outcome == claims.HELD   # the untrained encoder is not trained
    # the one VQ epoch after pretraining is too short to judge, and feeds nothing the checks compare
    one_vq_epoch = [{"stage": "pretrain", "loss": 0.2}] * 10 + [{"stage": "finetune", "loss": 0.2}]
    fams = fig2(*_ranges("held"), untrained_peaks=_peaks("other"), trained_peaks=_peaks("none"),
                history=one_vq_epoch)
    assert fams["pre-range-narrower"].outcome == claims.HELD


def test_fig2_families_are_the_paper_s_with_their_quotes():
    fams = fig2(*_ranges("held"), untrained_peaks=_peaks("other"), trained_peaks=_peaks("none"))
    assert all(f.is_paper and f.source.startswith("§3.1, Fig. 2") and f.quote for f in fams.values())
    assert "the same as the input" in fams["pre-trained-peaks-match-input"].quote


# ------------------------------------------------------------------ 02: tokens collapse, synthetic
TCS = {"tcs-uniform": "perplexity", "tcs-worst-cluster": "min_tokens_per_cluster",
       "tcs-narrower-recon": "min_spread_ratio", "tcs-coverage": "coverage", "tcs-alloc-entropy": "alloc_entropy"}


def tcs_runs(scenario, dims=(2, 8), history=FLAT):
    """Pretrained runs one scenario difference above scratch on every metric of notebook 02."""
    return [run({m: value(m, int(method == "pretrained"), s, scenario) for m in TCS.values()}, history=history,
                dim=d, seed=s, codebook_size=K, method=method)
            for d in dims for s in SEEDS for method in ("pretrained", "scratch")]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_tokens_collapse_synthetic_goes_every_way(scenario):
    fams = verdicts.tokens_collapse_synthetic(tcs_runs(scenario), [2, 8])
    assert [f.id for f in fams] == list(TCS) and not fams.left_out
    for f in fams:
        assert outcome(f) == GREATER[scenario], f.id
        assert f.metric == TCS[f.id] and len(f.checks) == 2
        assert f.phrase == (f.phrases[claims.NO_EFFECT] if scenario == "none" else
                            f"{f.phrases[claims.INCONCLUSIVE][:-1]} ({f.directions})." if scenario == "open" else
                            f.phrases[GREATER[scenario][0]])
        if scenario == "open":   # an undecided family states its direction and interval
            assert "points the claimed way in 2 of 3 seeds, 95% CI [" in f.phrase


def test_tokens_collapse_synthetic_decides_on_perplexity_and_shows_allocation_entropy_as_a_companion():
    fams = by_id(verdicts.tokens_collapse_synthetic(tcs_runs("held"), [2]))
    assert fams["tcs-uniform"].metric == "perplexity" and fams["tcs-uniform"].is_paper
    assert not fams["tcs-alloc-entropy"].is_paper and fams["tcs-alloc-entropy"].source == "companion measure of §3.1.1"
    assert fams["tcs-narrower-recon"].quote.endswith("reconstructed distribution being narrower")
    assert all(f.quote for f in fams.values() if f.is_paper)


def test_the_laplace_ablation_is_the_companion_s():
    fams = verdicts.tokens_collapse_synthetic(tcs_runs("held"), [2], suffix="-laplace", note=" (Laplace)")
    assert all(f.id.endswith("-laplace") and f.source == "companion ablation of §3.1.1" and not f.is_paper
               for f in fams)


def test_tokens_collapse_synthetic_not_converged_is_inconclusive():
    runs = tcs_runs("held", dims=[2])
    runs[0].history = FALLING
    assert {f.outcome for f in verdicts.tokens_collapse_synthetic(runs, [2])} == {claims.INCONCLUSIVE}


def test_one_dimension_is_enough_and_one_seed_decides_nothing():
    assert {f.outcome for f in verdicts.tokens_collapse_synthetic(tcs_runs("held", dims=[3]), [3])} == {claims.HELD}
    one = [r for r in tcs_runs("held", dims=[3]) if r.config["seed"] == 0]
    fams = verdicts.tokens_collapse_synthetic(one, [3])
    assert {f.outcome for f in fams} == {claims.INCONCLUSIVE}
    assert all("1 seed: the spread is unknown" in f.reason for f in fams)


def test_paired_checks_refuse_repeated_or_unmatched_seeds_and_self_comparisons():
    runs = tcs_runs("held", dims=[2])
    for r in runs:
        r.config["seed"] = min(r.config["seed"], 1)          # seeds 0, 1, 1: the same run twice
    with pytest.raises(ValueError, match="must all differ"):
        verdicts.tokens_collapse_synthetic(runs, [2])
    runs = tcs_runs("held", dims=[2])
    runs[1].config["seed"] = 7                                 # a scratch seed with no pretrained partner
    with pytest.raises(ValueError, match="same seeds on both sides"):
        verdicts.tokens_collapse_synthetic(runs, [2])
    with pytest.raises(ValueError, match="compared with itself"):
        verdicts.paired_checks(tcs_runs("held", dims=[2]), "coverage", better={"method": "scratch"},
                               worse={"method": "scratch"}, over="dim", values=[2], label="{}-D", claim="x")
    with pytest.raises(ValueError, match="no runs to compare"):
        verdicts.paired_checks(tcs_runs("held", dims=[2]), "coverage", better={"method": "pretrained"},
                               worse={"method": "scratch"}, over="dim", values=[3], label="{}-D", claim="x")


def test_a_metric_still_drifting_at_the_checkpoint_is_inconclusive():
    runs = tcs_runs("held", dims=[2])
    for r in runs:   # recorded at 3/4 of the final stage: the pretrained runs' coverage has fallen by 0.38 since
        shift = 0.38 if r.config["method"] == "pretrained" else 0.0
        r.checkpoint = {"epoch": 8, "fraction": 0.75,
                        "metrics": {**r.metrics, "coverage": r.metrics["coverage"] + shift}}
    fams = by_id(verdicts.tokens_collapse_synthetic(runs, [2]))
    assert fams["tcs-coverage"].outcome == claims.INCONCLUSIVE and "still moving" in fams["tcs-coverage"].reason
    assert fams["tcs-uniform"].outcome == fams["tcs-worst-cluster"].outcome == claims.HELD


def test_convergence_is_recorded_per_run_and_stage_with_the_settings_named():
    [check] = by_id(verdicts.tokens_collapse_synthetic(tcs_runs("held", dims=[2]), [2]))["tcs-coverage"].checks
    groups = {r["group"] for r in check.convergence["stages"]}
    assert groups == {"pretrained, 2-D", "scratch, 2-D"} and len(check.convergence["stages"]) == 6
    table = claims.convergence_table(verdicts.tokens_collapse_synthetic(tcs_runs("held", dims=[2]), [2]))
    assert len(table) == 6 and set(table["converged"]) == {True}        # each run and stage once


def test_ablation_sentence_reports_decided_evidence_check_by_check():
    eq5 = verdicts.tokens_collapse_synthetic(tcs_runs("held", dims=[3]), [3])
    same = verdicts.tokens_collapse_synthetic(tcs_runs("held", dims=[3]), [3], suffix="-laplace")
    text = verdicts.ablation_sentence(eq5, same, "the Laplace-smoothed update")
    assert text.startswith("Every one of the 5 checks is decided alike") and "do not depend on the update" in text
    # one check moves: named with both outcomes
    runs = tcs_runs("held", dims=[3])
    for r in runs:
        if r.config["method"] == "pretrained":
            r.metrics["min_tokens_per_cluster"] = value("min_tokens_per_cluster", 1, r.config["seed"], "open")
    moved = verdicts.tokens_collapse_synthetic(runs, [3], suffix="-laplace")
    text = verdicts.ablation_sentence(eq5, moved, "the Laplace-smoothed update")
    assert "3-D worst-cluster: held with eq. (5), inconclusive with the Laplace-smoothed update" in text
    assert "4 of 5 decided alike" in text and "do not depend" not in text
    # a check undecided because its runs had not converged says so
    slow = tcs_runs("held", dims=[3])
    slow[0].history = FALLING
    text = verdicts.ablation_sentence(eq5, verdicts.tokens_collapse_synthetic(slow, [3], suffix="-laplace"), "x")
    assert "3-D coverage: held with eq. (5), inconclusive (not converged) with x" in text
    assert "the runs had not converged; points the claimed way in 3 of 3 seeds" in by_id(
        verdicts.tokens_collapse_synthetic(slow, [3]))["tcs-coverage"].phrase
    # both undecided: nothing is claimed about the update
    open_ = verdicts.tokens_collapse_synthetic(tcs_runs("open", dims=[3]), [3])
    text = verdicts.ablation_sentence(open_, verdicts.tokens_collapse_synthetic(tcs_runs("open", dims=[3]), [3],
                                                                                suffix="-laplace"), "x")
    assert "0 of 5 decided alike" in text and "5 undecided under both" in text and "do not depend" not in text


# ------------------------------------------------------------------ 03: tokens collapse, CIFAR-10
def cifar(sizes, pre_ppl, scr_ppl, pre_mse, scr_mse, seeds=SEEDS):
    """Runs of both recipes at every size; each quantity is a function of (K, seed)."""
    out = []
    for k in sizes:
        for s in seeds:
            out += [run({"perplexity": pre_ppl(k, s), "test_mse": pre_mse(k, s)}, codebook_size=k, method="pretrained",
                        seed=s),
                    run({"perplexity": scr_ppl(k, s), "test_mse": scr_mse(k, s)}, codebook_size=k, method="scratch",
                        seed=s)]
    return out


def _d(metric, scenario, s):
    return MULT[scenario][s] * claims.effect_for(metric).delta


def _flat(k, s):
    return 20.0


def _mse(k, s):
    return 0.02


TCC_CASES = {  # family -> (kind, runs for a scenario)
    "tcc-smallest-mse": (GREATER, lambda sc: dict(pre_mse=lambda k, s: 0.02 * math.exp(_d("test_mse", sc, s))
                                                  if k == 16 else 0.01)),
    "tcc-large-perplexity": (GREATER, lambda sc: dict(pre_ppl=lambda k, s: 20 * math.exp(_d("perplexity", sc, s)))),
    "tcc-large-mse": (GREATER, lambda sc: dict(pre_mse=lambda k, s: 0.02 * math.exp(-_d("test_mse", sc, s)))),
    "tcc-pretrained-perplexity-rising": (GREATER, lambda sc: dict(
        pre_ppl=lambda k, s: 20 * k ** _d("log_perplexity_slope", sc, s))),
    "tcc-pretrained-mse-falling": (GREATER, lambda sc: dict(
        pre_mse=lambda k, s: 0.02 * k ** -_d("log_test_mse_slope", sc, s))),
    "tcc-scratch-stagnates": (EQUAL, lambda sc: dict(
        scr_ppl=lambda k, s: 20 * k ** _d("log_perplexity_slope", sc, s))),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("family", list(TCC_CASES))
def test_tokens_collapse_cifar_goes_every_way(family, scenario):
    expected, make = TCC_CASES[family]
    sizes = [16, 256, 4096, 16384]
    quantities = {"pre_ppl": _flat, "scr_ppl": _flat, "pre_mse": _mse, "scr_mse": _mse, **make(scenario)}
    fams = by_id(verdicts.tokens_collapse_cifar(cifar(sizes, **quantities), sizes))
    assert set(fams) == set(TCC_CASES) and all(f.is_paper for f in fams.values())
    assert outcome(fams[family]) == expected[scenario], fams[family].verdict


def test_cifar_trends_use_every_size_and_stagnation_the_sizes_from_2_to_the_12():
    sizes = [16, 256, 4096, 16384]
    fams = by_id(verdicts.tokens_collapse_cifar(cifar(sizes, _flat, _flat, _mse, _mse), sizes))
    assert fams["tcc-pretrained-perplexity-rising"].checks[0].setting == "K = 16, 256, 4,096 and 16,384"
    assert fams["tcc-scratch-stagnates"].checks[0].setting == "K = 4,096 and 16,384"
    assert [c.setting for c in fams["tcc-large-perplexity"].checks] == ["K = 4,096", "K = 16,384"]
    assert fams["tcc-smallest-mse"].checks[0].setting == "K = 16"
    # a pretrained perplexity that rises only between two sizes is not "continually increasing"
    step = cifar(sizes, lambda k, s: 20 * (8 if k >= 4096 else 1) * (1 + 0.01 * s), _flat, _mse, _mse)
    rising = by_id(verdicts.tokens_collapse_cifar(step, sizes))["tcc-pretrained-perplexity-rising"]
    assert rising.checks[0].effect == pytest.approx(verdicts.log_slope(sizes, [20, 20, 160, 160]), rel=1e-6)


@pytest.mark.parametrize("sizes, tested, left_out", [
    ([256], set(), {"tcc-smallest-mse", "tcc-large-perplexity", "tcc-large-mse", "tcc-pretrained-perplexity-rising",
                    "tcc-pretrained-mse-falling", "tcc-scratch-stagnates"}),
    ([4096], {"tcc-large-perplexity", "tcc-large-mse"},
     {"tcc-smallest-mse", "tcc-pretrained-perplexity-rising", "tcc-pretrained-mse-falling", "tcc-scratch-stagnates"}),
    ([32, 512], {"tcc-smallest-mse", "tcc-large-perplexity", "tcc-large-mse"},
     {"tcc-pretrained-perplexity-rising", "tcc-pretrained-mse-falling", "tcc-scratch-stagnates"}),
    ([16, 256, 4096], {"tcc-smallest-mse", "tcc-large-perplexity", "tcc-large-mse",
                       "tcc-pretrained-perplexity-rising", "tcc-pretrained-mse-falling"}, {"tcc-scratch-stagnates"}),
])
def test_any_number_of_sizes_gives_meaningful_comparisons(sizes, tested, left_out):
    fams = verdicts.tokens_collapse_cifar(cifar(sizes, _flat, _flat, _mse, _mse), sizes)
    assert {f.id for f in fams} == tested and {f.id for f in fams.left_out} == left_out
    for f in fams:                         # no check compares a size with itself
        for c in f.checks:
            assert "to" not in c.setting or len(set(c.setting.split(" to "))) == 2
            if len(sizes) >= 2 and f.id.startswith("tcc-large"):
                assert c.setting != f"K = {min(sizes):,}"
    for f in fams.left_out:                # each says which sizes would test it
        assert "codebook_sizes" in f.why and f.outcome == claims.NOT_TESTED and f.is_paper
    stag = next(f for f in fams.left_out if f.id == "tcc-scratch-stagnates")
    assert stag.why.endswith("add 8,192 to codebook_sizes.") if max(sizes) == 4096 else "add" in stag.why
    # the trend sentence never speaks of a growth from a size to itself
    text = verdicts.cifar_trend_sentence(cifar(sizes, _flat, _flat, _mse, _mse), sizes)
    assert ("no trend" in text) == (len(sizes) == 1) and ("two-point slope" in text) == (len(sizes) == 2)


def test_cifar_one_seed_decides_nothing():
    sizes = [16, 256, 4096]
    fams = verdicts.tokens_collapse_cifar(cifar(sizes, _flat, _flat, _mse, _mse, seeds=(0,)), sizes)
    assert {f.outcome for f in fams} == {claims.INCONCLUSIVE}


# ------------------------------------------------------------------ 04: embeddings collapse
#: metric -> (the encoder width the claim says is higher, sign: -1 when lower is the claimed way)
EC = {"precision": (32, 1), "embedding_peaks": (32, 1), "tokens_outside": (4, 1), "participation_ratio": (32, 1),
      "mse": (32, -1)}
EC_IDS = {"ec-outside-data": "precision", "ec-merged-peaks": "embedding_peaks", "ec-tokens-outside": "tokens_outside",
          "ec-participation": "participation_ratio", "ec-mse": "mse"}


def ec_runs(scenario, dims=(2, 8), widths=(4, 32)):
    return [run({m: value(m, int(h == side), s, scenario, sign) for m, (side, sign) in EC.items()}, dim=d, seed=s,
                encoder_hidden=h, codebook_size=K)
            for d in dims for s in SEEDS for h in widths]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_embeddings_collapse_goes_every_way(scenario):
    fams = verdicts.embeddings_collapse(ec_runs(scenario), [2, 8], [1, 4], narrow=4, wide=32)
    assert [f.id for f in fams] == list(EC_IDS)
    for f in fams:
        assert outcome(f) == GREATER[scenario], f.id
        assert f.metric == EC_IDS[f.id]
    ids = by_id(fams)
    assert [c.setting for c in ids["ec-merged-peaks"].checks] == ["2-D"]      # peaks only for 1-D tokens
    assert [c.setting for c in ids["ec-tokens-outside"].checks] == ["2-D"]    # as in Fig. 5: 1-D tokens
    assert {f.id for f in fams if f.is_paper} == {"ec-outside-data", "ec-merged-peaks", "ec-tokens-outside"}
    assert ids["ec-participation"].source == ids["ec-mse"].source == "companion measure of §3.2"


def test_embeddings_collapse_with_one_width_or_no_1d_tokens_leaves_out_what_it_cannot_test():
    one = verdicts.embeddings_collapse(ec_runs("held", widths=(32,)), [2, 8], [1, 4], narrow=32, wide=32)
    assert not list(one) and len(one.left_out) == 5 and all("two encoder widths" in f.why for f in one.left_out)
    no_peaks = verdicts.embeddings_collapse(ec_runs("held", dims=(8,)), [8], [4], narrow=4, wide=32)
    assert [f.id for f in no_peaks.left_out] == ["ec-merged-peaks", "ec-tokens-outside"]
    assert "token dimension 1" in no_peaks.left_out[0].why


def ec_cifar_runs(scenario, widths=(32, 8, 2)):
    return [run({"test_mse": value("test_mse", int(w == min(widths)), s, scenario)}, encoder_channels=w, seed=s,
                codebook_size=512) for w in widths for s in SEEDS]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_embeddings_collapse_cifar_goes_every_way(scenario):
    [f] = verdicts.embeddings_collapse_cifar(ec_cifar_runs(scenario), [32, 8, 2])
    assert f.id == "ec-cifar-mse" and f.source == "§3.2, Fig. 6" and outcome(f) == GREATER[scenario]


@pytest.mark.parametrize("widths", [(32,), (32, 2)])
def test_embeddings_collapse_cifar_with_one_or_two_widths(widths):
    fams = verdicts.embeddings_collapse_cifar(ec_cifar_runs("held", widths), list(widths))
    assert (len(fams), len(fams.left_out)) == ((0, 1) if len(widths) == 1 else (1, 0))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_embeddings_variant_goes_every_way(scenario):
    runs = [run({"min_spread_ratio": value("min_spread_ratio", int(h == 32), s, scenario),
                 "mse": value("mse", int(h == 32), s, scenario, -1)}, dim=2, seed=s, encoder_hidden=h)
            for s in SEEDS for h in (4, 32)]
    fams = verdicts.embeddings_collapse_pretrained(runs, [2], narrow=4, wide=32)
    assert all(outcome(f) == GREATER[scenario] and f.source == "companion variant" for f in fams)
    assert len(verdicts.embeddings_collapse_pretrained(runs, [2], narrow=32, wide=32).left_out) == 2


# ------------------------------------------------------------------ 05: SimVQ
def simvq_runs(scenario, sizes=(256, 1024), widths=(4, 32), usage=(0.95, 0.96, 0.97)):
    """Synthetic and CIFAR-10 runs where SimVQ beats EMA-VQ from scratch (and pretraining SimVQ) by the scenario."""
    syn = []
    for d in (2, 8):
        for s in SEEDS:
            ppl = lambda steps: value("perplexity", steps, s, scenario)  # noqa: E731
            syn += [run({"usage": usage[s], "perplexity": ppl(1),
                         "participation_ratio": value("participation_ratio", int(h == 32), s, scenario)},
                        dim=d, seed=s, quantizer="simvq", method="scratch", encoder_hidden=h) for h in widths]
            syn += [run({"usage": 1.0, "perplexity": ppl(2)}, dim=d, seed=s, quantizer="simvq", method="pretrained",
                        encoder_hidden=32),
                    run({"usage": 1.0, "perplexity": ppl(0)}, dim=d, seed=s, quantizer="ema", method="scratch",
                        encoder_hidden=32)]
    cif = []
    for k in sizes:
        for s in SEEDS:
            # codes used grow with K for both; SimVQ's growth exceeds EMA's by the scenario's factor
            grow = math.exp(_d("codes_used_growth", scenario, s)) if k == max(sizes) else 1.0
            cif += [run({"usage": usage[s], "perplexity": value("perplexity", 1, s, scenario),
                         "codes_used": 40.0 * (1.2 if k == max(sizes) else 1.0) * grow}, codebook_size=k, seed=s,
                        quantizer="simvq", method="scratch"),
                    run({"usage": 0.1, "perplexity": value("perplexity", 0, s, scenario),
                         "codes_used": 40.0 * (1.2 if k == max(sizes) else 1.0)}, codebook_size=k, seed=s,
                        quantizer="ema", method="scratch")]
    return syn, cif


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_simvq_families_go_every_way(scenario):
    syn, cif = simvq_runs(scenario)
    fams = verdicts.simvq(syn, cif, [2, 8], [256, 1024], narrow=4, wide=32)
    assert [f.id for f in fams] == ["svq-own-usage", "svq-own-rising", "svq-eases-tokens", "svq-plus-pretraining",
                                    "svq-embeddings-persist"]
    for f in fams[1:]:
        assert outcome(f) == GREATER[scenario], f.id
    assert by_id(fams)["svq-eases-tokens"].metric == by_id(fams)["svq-plus-pretraining"].metric == "perplexity"
    assert [f.is_paper for f in fams] == [False] * 5
    assert {f.source for f in fams[:2]} == {"SimVQ (Zhu, Li et al. 2024), abstract"}


def test_simvq_own_rising_does_not_pass_a_collapsing_quantizer():
    # SimVQ and EMA-VQ from scratch both use 34 -> 39 codes from the smallest to the largest K: no faster rise
    syn, cif = simvq_runs("held")
    for r in cif:
        r.metrics["codes_used"] = (39.0 if r.config["codebook_size"] == 1024 else 34.0) + 0.01 * r.config["seed"]
    rising = by_id(verdicts.simvq(syn, cif, [2, 8], [256, 1024], narrow=4, wide=32))["svq-own-rising"]
    assert rising.outcome == claims.NOT_HELD and rising.decision == claims.NO_EFFECT


@pytest.mark.parametrize("usage, expected", [((0.95, 0.96, 0.97), claims.HELD), ((0.5, 0.6, 0.55), claims.NOT_HELD),
                                             ((0.99, 0.5, 0.95), claims.INCONCLUSIVE)])
def test_simvq_own_usage_against_the_threshold(usage, expected):
    syn, cif = simvq_runs("held", usage=usage)
    assert by_id(verdicts.simvq(syn, cif, [2, 8], [256, 1024], narrow=4, wide=32))["svq-own-usage"].outcome == expected


def test_simvq_with_one_size_or_one_width_leaves_out_what_it_cannot_test():
    syn, cif = simvq_runs("held", sizes=(256,), widths=(32,))
    fams = verdicts.simvq(syn, cif, [2, 8], [256], narrow=32, wide=32)
    assert {f.id for f in fams.left_out} == {"svq-own-rising", "svq-embeddings-persist"}
    assert {f.id for f in fams} == {"svq-own-usage", "svq-eases-tokens", "svq-plus-pretraining"}


# ------------------------------------------------------------------ the results page
def test_claims_overview_and_the_paper_s_count_over_notebooks():
    fig2_fams = verdicts.encoder_output_families(*_fig2_inputs())
    tcc = verdicts.tokens_collapse_cifar(cifar([16, 256], _flat, _flat, _mse, _mse), [16, 256])
    syn = verdicts.tokens_collapse_synthetic(tcs_runs("held"), [2, 8])
    book = {"01": fig2_fams, "02": syn, "03": tcc}
    frame = verdicts.claims_overview(book)
    assert list(frame["notebook"]).count("03") == len(tcc) + len(tcc.left_out)
    assert set(frame.columns) >= {"claim", "source", "quote", "outcome", "effect", "interval", "n", "n for 80%",
                                  "n for 95%", "why undecided / what would decide it"}
    count = verdicts.paper_claims_count(book)
    paper = [f for fs in book.values() for f in list(fs) + fs.left_out if f.is_paper]
    assert count["claims"] == len(paper) == 3 + 4 + 6
    assert count["not tested"] == 3 and count["held"] == 3 + 4
    assert count["text"].startswith(f"{count['held']} of 13 claims of the paper held")
    # the same from recorded dicts (a results JSON's values)
    recorded = {nb: {f.id: f.as_dict() for f in list(fs) + fs.left_out} for nb, fs in book.items()}
    assert verdicts.paper_claims_count(recorded)["text"] == count["text"]


def test_recorded_families_gather_the_book_s_claims_from_the_results(tmp_path):
    from vqpaper import results

    tcc = verdicts.tokens_collapse_cifar(cifar([16, 256], _flat, _flat, _mse, _mse), [16, 256])
    syn = verdicts.tokens_collapse_synthetic(tcs_runs("held"), [2, 8])
    for figure, notebook, fams in (("fig-a-claims", "03_tokens_collapse_cifar10", tcc),
                                   ("fig-b-claims", "02_tokens_collapse_synthetic", syn)):
        results.record(figure, {f.id: f.as_dict() for f in list(fams) + fams.left_out}, notebook=notebook,
                       profile="ci", params={}, seeds=list(SEEDS), directory=tmp_path)
    results.record("fig-c", {"summary": {"2/scratch": {"mse": {"mean": 1.0}}}}, notebook="02_tokens_collapse_synthetic",
                   profile="ci", params={}, seeds=[0], directory=tmp_path)        # not a claims figure
    book = verdicts.recorded_families(tmp_path)
    assert list(book) == ["02_tokens_collapse_synthetic", "03_tokens_collapse_cifar10"]
    assert len(book["03_tokens_collapse_cifar10"]) == 6 and len(book["02_tokens_collapse_synthetic"]) == 5
    live = verdicts.paper_claims_count({"02": syn, "03": tcc})
    assert verdicts.paper_claims_count(book)["text"] == live["text"]
    assert len(verdicts.claims_overview(book)) == 11


def _fig2_inputs():
    u, t = _ranges("held")
    runs, per_run, per_coord = [], [], []
    for s in SEEDS:
        runs += [run({}, method="scratch", seed=s), run({}, history=PRETRAINED, method="pretrained", seed=s)]
        per_run += [{"seed": s, "encoder": "untrained", "range": u[s]}, {"seed": s, "encoder": "trained", "range": t[s]}]
        per_coord += [{"seed": s, "encoder": e, "coordinate": 1, "peaks": p, "input peaks": 4}
                      for e, p in (("untrained", 2), ("trained", 4))]
    return runs, per_run, per_coord


def test_a_check_id_is_a_glue_key_made_of_the_setting_s_words():
    assert verdicts.claim_id("tcs-coverage-K = 4,096") == "tcs-coverage-k4096"
    [check] = verdicts.paired_checks(tcs_runs("held", dims=[2]), "coverage", better={"method": "pretrained"},
                                     worse={"method": "scratch"}, over="dim", values=[2], label="{}-D",
                                     claim="{setting}: x", id_prefix="tcs")
    assert check.id == "tcs-coverage-2-d" and check.outcome == claims.HELD


# ------------------------------------------------------------------ 06: each recipe against the baseline
def _remedy_run(dim, seed, metric_value, falling=False):
    loss = [1.0 - 0.1 * e for e in range(10)] if falling else [1.0] + [0.1] * 9  # falling: still dropping fast
    return SimpleNamespace(config={"dim": dim, "seed": seed},
                           metrics={"perplexity": metric_value, "participation_ratio": metric_value},
                           history=[{"stage": "scratch", "loss": v} for v in loss])


@pytest.mark.parametrize("offsets, falling, outcome", [
    ([10, 12, 11], False, claims.HELD),         # every seed better in both dims
    ([-10, -12, -11], False, claims.NOT_HELD),  # every seed worse
    ([10, -12, 3], False, claims.INCONCLUSIVE),  # mixed
    ([10, 12, 11], True, claims.INCONCLUSIVE),  # better, but the loss was still falling
    ([0.1, 0.0, -0.1], False, claims.NOT_HELD),  # within 1%: no effect larger than δ (10%)
])
def test_remedy_verdicts_can_come_out_every_way(offsets, falling, outcome):
    base = [_remedy_run(d, s, 20.0 + s) for d in (2, 8) for s in range(3)]
    mine = [_remedy_run(d, s, 20.0 + s + off, falling) for d in (2, 8) for s, off in enumerate(offsets)]
    [family] = verdicts.remedy_families({"ema": base, "restart": mine}, "tokens")
    assert family.outcome == outcome and len(family.checks) == 2
    assert family.source == "companion question" and not family.is_paper
    if offsets[0] == 0.1:
        assert family.decision == claims.NO_EFFECT and family.phrase == family.phrases[claims.NO_EFFECT]
    assert [c.setting for c in family.checks] == ["2-D", "8-D"]
    grid = verdicts.verdict_grid({"tokens": [family]})
    assert grid.iloc[0]["tokens collapse, synthetic"] == outcome


def test_effect_grid_is_relative_to_the_baseline_and_signed_for_lower_is_better():
    base = [_remedy_run(2, s, 10.0) for s in range(3)]
    better = [_remedy_run(2, s, 15.0 + 0.1 * s) for s in range(3)]
    for r in base + better:
        r.metrics["mse"] = r.metrics["perplexity"] / 100
    grid = verdicts.effect_grid({"tokens": {"ema": base, "restart": better}},
                         columns=(("tokens", "perplexity", True), ("tokens", "mse", False)))
    ppl, mse = grid
    assert ppl["relative"] == pytest.approx(0.51) and ppl["decided"]
    assert mse["relative"] == pytest.approx(-0.51) and mse["decided"]  # higher MSE: worse


def test_which_sentence_groups_recipes_by_the_computed_outcome():
    base = [_remedy_run(d, s, 20.0 + s) for d in (2, 8) for s in range(3)]
    better = [_remedy_run(d, s, 30.0 + s) for d in (2, 8) for s in range(3)]
    worse = [_remedy_run(d, s, 10.0 + 0.5 * s) for d in (2, 8) for s in range(3)]
    families = verdicts.remedy_families({"ema": base, "restart": better, "fsq": worse}, "tokens")
    text = verdicts.which_sentence(families, "tokens")
    assert text == ("Tokens collapse (synthetic), each recipe against EMA-VQ from scratch: held for dead-code restart; "
                    "not held for FSQ.")


def test_library_run_sentence_quotes_the_lib_recipe_s_verdicts_or_says_it_did_not_run():
    base = [_remedy_run(d, s, 20.0 + s) for d in (2, 8) for s in range(3)]
    same = [_remedy_run(d, s, 20.0 + s + (0.1 if s == 1 else -0.1)) for d in (2, 8) for s in range(3)]
    families = {"tokens": verdicts.remedy_families({"ema": base, "lib": same, "restart": same}, "tokens")}
    text = verdicts.library_run_sentence(families)
    assert text.startswith("On whole training runs") and "tokens collapse (synthetic), not held" in text and "(no effect)" in text
    assert "did not run" in verdicts.library_run_sentence({"tokens": verdicts.remedy_families({"ema": base, "fsq": same}, "tokens")})


def test_cifar_trend_sentence_gives_the_slopes_over_the_sweep():
    sizes = [16, 256, 4096, 16384]
    runs = cifar(sizes, lambda k, s: 2 * k ** 0.5, lambda k, s: 3.0, lambda k, s: 0.1 * k ** -0.25, _mse)
    text = verdicts.cifar_trend_sentence(runs, sizes)
    assert text.startswith("Over K = 16, 256, 4,096 and 16,384 the perplexity grows as K^0.50 with pretraining and "
                           "K^0.00 from scratch, the test MSE as K^-0.25 and K^0.00")
    assert "From 2^12 on (K = 4,096 and 16,384) the scratch perplexity grows as K^0.00" in text
