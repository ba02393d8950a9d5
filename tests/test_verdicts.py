"""Every family of the book can hold and can fail: fed fabricated runs, each goes both ways."""
from types import SimpleNamespace

import pytest

from vqpaper import claims, verdicts
from vqpaper.train import RunResult

FLAT = [{"stage": "scratch", "loss": 0.2}] * 10          # converged
FALLING = [{"stage": "scratch", "loss": 1.0 - 0.05 * i} for i in range(10)]  # a straight line: still falling


def run(metrics, history=FLAT, **config):
    return RunResult(config=config, history=list(history), metrics=dict(metrics))


SEEDS = (0, 1, 2)


def synthetic(dims, good, bad, metrics, good_cfg, bad_cfg, jitter=0.01, **extra):
    """Runs where ``good_cfg`` has every metric at ``good`` and ``bad_cfg`` at ``bad`` (+ seed jitter)."""
    out = []
    for d in dims:  # codebook_size: min_tokens_per_cluster's smallest effect is a hundredth of it
        for s in SEEDS:
            out.append(run({m: good + jitter * s for m in metrics}, dim=d, seed=s, codebook_size=16, **good_cfg, **extra))
            out.append(run({m: bad + jitter * s for m in metrics}, dim=d, seed=s, codebook_size=16, **bad_cfg, **extra))
    return out


def outcomes(families):
    return {f.id: f.outcome for f in families}


TCS = ("alloc_entropy", "min_tokens_per_cluster", "coverage")


@pytest.mark.parametrize("good, bad, expected", [(0.9, 0.5, claims.HELD), (0.5, 0.9, claims.NOT_HELD)])
def test_tokens_collapse_synthetic_goes_both_ways(good, bad, expected):
    runs = synthetic([2, 8], good, bad, TCS, {"method": "pretrained"}, {"method": "scratch"})
    fams = verdicts.tokens_collapse_synthetic(runs, [2, 8])
    assert set(outcomes(fams).values()) == {expected}
    assert all(len(f.checks) == 2 for f in fams)
    assert all(f.phrase == f.phrases[expected] for f in fams)


def test_tokens_collapse_synthetic_not_converged_is_inconclusive():
    runs = synthetic([2], 0.9, 0.5, TCS, {"method": "pretrained"}, {"method": "scratch"})
    runs[0].history = FALLING
    assert set(outcomes(verdicts.tokens_collapse_synthetic(runs, [2])).values()) == {claims.INCONCLUSIVE}


def test_tokens_collapse_synthetic_no_effect_is_decided():
    runs = synthetic([2, 8], 0.9, 0.9, TCS, {"method": "pretrained"}, {"method": "scratch"})
    fams = verdicts.tokens_collapse_synthetic(runs, [2, 8])
    assert set(outcomes(fams).values()) == {claims.NOT_HELD}
    assert {f.decision for f in fams} == {claims.NO_EFFECT}


def test_paired_checks_refuse_repeated_or_unmatched_seeds():
    runs = synthetic([2], 0.9, 0.5, TCS, {"method": "pretrained"}, {"method": "scratch"})
    for r in runs:
        r.config["seed"] = min(r.config["seed"], 1)          # seeds 0, 1, 1: the same run twice
    with pytest.raises(ValueError, match="must all differ"):
        verdicts.tokens_collapse_synthetic(runs, [2])
    runs = synthetic([2], 0.9, 0.5, TCS, {"method": "pretrained"}, {"method": "scratch"})
    runs[1].config["seed"] = 7                                 # a scratch seed with no pretrained partner
    with pytest.raises(ValueError, match="same seeds on both sides"):
        verdicts.tokens_collapse_synthetic(runs, [2])


def test_a_metric_still_drifting_at_the_checkpoint_is_inconclusive():
    runs = synthetic([2], 0.9, 0.5, TCS, {"method": "pretrained"}, {"method": "scratch"})
    for r in runs:   # recorded at 3/4 of the final stage: the pretrained runs' coverage has fallen by 0.38 since
        shift = 0.38 if r.config["method"] == "pretrained" else 0.0
        r.checkpoint = {"epoch": 8, "fraction": 0.75,
                        "metrics": {**r.metrics, "coverage": r.metrics["coverage"] + shift}}
    fams = {f.id: f for f in verdicts.tokens_collapse_synthetic(runs, [2])}
    assert fams["tcs-coverage"].outcome == claims.INCONCLUSIVE and "still moving" in fams["tcs-coverage"].reason
    assert fams["tcs-uniform"].outcome == fams["tcs-worst-cluster"].outcome == claims.HELD


def test_ablation_sentence_says_whether_outcomes_moved():
    held = verdicts.tokens_collapse_synthetic(
        synthetic([2], 0.9, 0.5, TCS, {"method": "pretrained"}, {"method": "scratch"}), [2])
    failed = verdicts.tokens_collapse_synthetic(
        synthetic([2], 0.5, 0.9, TCS, {"method": "pretrained"}, {"method": "scratch"}), [2], suffix="-x")
    assert "do not depend" in verdicts.ablation_sentence(held, held, "x")
    assert "3 of 3 families come out differently" in verdicts.ablation_sentence(held, failed, "x")


def cifar_runs(pre_ppl, scr_ppl, pre_mse, scr_mse, sizes=(16, 256, 4096), seeds=SEEDS):
    out = []
    for k in sizes:
        for s in seeds:
            g = k / 16  # perplexity grows with K for both; pre_ppl/scr_ppl scale it
            out.append(run({"perplexity": pre_ppl * g + s, "test_mse": pre_mse + 1e-4 * s}, codebook_size=k,
                           method="pretrained", seed=s))
            out.append(run({"perplexity": scr_ppl * g ** 0.2 + s, "test_mse": scr_mse + 1e-4 * s}, codebook_size=k,
                           method="scratch", seed=s))
    return out


def test_tokens_collapse_cifar_goes_both_ways():
    fams = outcomes(verdicts.tokens_collapse_cifar(cifar_runs(10, 8, 0.010, 0.020), [16, 256, 4096]))
    assert fams["tcc-large-perplexity"] == fams["tcc-large-mse"] == claims.HELD
    assert fams["tcc-pretrained-rising"] == fams["tcc-scratch-stagnates"] == claims.HELD
    assert fams["tcc-smallest-mse"] == claims.NOT_HELD   # pretraining not worse at the smallest K here
    fams = outcomes(verdicts.tokens_collapse_cifar(cifar_runs(1, 200, 0.030, 0.020), [16, 256, 4096]))
    assert fams["tcc-large-perplexity"] == fams["tcc-large-mse"] == claims.NOT_HELD
    assert fams["tcc-smallest-mse"] == claims.HELD
    # one seed decides nothing
    one = outcomes(verdicts.tokens_collapse_cifar(cifar_runs(10, 8, 0.010, 0.020, seeds=(0,)), [16, 256, 4096]))
    assert set(one.values()) == {claims.INCONCLUSIVE}


EC = ("participation_ratio", "precision")


@pytest.mark.parametrize("wide, narrow, expected", [(0.9, 0.4, claims.HELD), (0.4, 0.9, claims.NOT_HELD)])
def test_embeddings_collapse_goes_both_ways(wide, narrow, expected):
    runs = synthetic([2, 8], wide, narrow, EC, {"encoder_hidden": 32}, {"encoder_hidden": 4})
    for r in runs:  # MSE: lower is better, so the wide encoder gets the low value when the claim should hold
        good = (r.config["encoder_hidden"] == 32) == (expected == claims.HELD)
        r.metrics["mse"] = (0.1 if good else 0.3) + 0.001 * r.config["seed"]
        r.metrics["embedding_peaks"] = (4 if good else 2) + r.config["seed"] % 2   # counts, apart by 2 > half a peak
    fams = verdicts.embeddings_collapse(runs, [2, 8], [1, 4], narrow=4, wide=32)
    assert set(outcomes(fams).values()) == {expected}
    peaks = next(f for f in fams if f.id == "ec-merged-peaks")
    assert [c.setting for c in peaks.checks] == ["2-D"]      # peaks only for 1-D tokens


@pytest.mark.parametrize("wide, narrow, expected", [(0.9, 0.4, claims.HELD), (0.4, 0.9, claims.NOT_HELD)])
def test_embeddings_variant_goes_both_ways(wide, narrow, expected):
    runs = synthetic([2], wide, narrow, ("min_spread_ratio",), {"encoder_hidden": 32}, {"encoder_hidden": 4})
    for r in runs:
        r.metrics["mse"] = 1 - r.metrics["min_spread_ratio"]
    assert set(outcomes(verdicts.embeddings_collapse_pretrained(runs, [2], narrow=4, wide=32)).values()) == {expected}


def simvq_runs(simvq_good: bool):
    hi, lo = (0.95, 0.5) if simvq_good else (0.5, 0.95)
    runs = []
    for d in (2, 8):
        for s in SEEDS:
            j = 0.01 * s
            runs += [run({"usage": hi + j, "alloc_entropy": 0.8 + j, "participation_ratio": 0.9 + j}, dim=d,
                         seed=s, quantizer="simvq", method="scratch", encoder_hidden=32),
                     run({"usage": hi + j, "alloc_entropy": 0.8 + j, "participation_ratio": (0.4 if simvq_good
                                                                                            else 0.95) + j},
                         dim=d, seed=s, quantizer="simvq", method="scratch", encoder_hidden=4),
                     run({"usage": 1.0, "alloc_entropy": (0.9 if simvq_good else 0.7) + j}, dim=d, seed=s,
                         quantizer="simvq", method="pretrained", encoder_hidden=32),
                     run({"usage": 1.0, "alloc_entropy": lo + j}, dim=d, seed=s, quantizer="ema", method="scratch",
                         encoder_hidden=32)]
    cifar = []
    for k in (256, 1024):
        for s in SEEDS:
            cifar += [run({"usage": hi + 0.01 * s, "perplexity": (k if simvq_good else 10) + s,
                           "codes_used": (k * hi if simvq_good else 300 - k / 8) + s},
                          codebook_size=k, seed=s, quantizer="simvq", method="scratch"),
                      run({"usage": 0.1, "perplexity": 50 + s, "codes_used": 40 + s}, codebook_size=k, seed=s,
                          quantizer="ema", method="scratch")]
    return runs, cifar


@pytest.mark.parametrize("good, expected", [(True, claims.HELD), (False, claims.NOT_HELD)])
def test_simvq_families_go_both_ways(good, expected):
    runs, cifar = simvq_runs(good)
    fams = verdicts.simvq(runs, cifar, [2, 8], [256, 1024], narrow=4, wide=32)
    assert [f.id for f in fams] == ["svq-own-usage", "svq-own-rising", "svq-eases-tokens", "svq-plus-pretraining",
                                    "svq-embeddings-persist"]
    assert set(outcomes(fams).values()) == {expected}, outcomes(fams)


def test_a_check_id_is_a_glue_key_made_of_the_setting_s_words():
    assert verdicts.claim_id("tcs-coverage-K = 4,096") == "tcs-coverage-k4096"
    [check] = verdicts.paired_checks(synthetic([2], 0.9, 0.5, ["coverage"], {"method": "pretrained"},
                                               {"method": "scratch"}),
                                     "coverage", better={"method": "pretrained"}, worse={"method": "scratch"},
                                     over="dim", values=[2], label="{}-D", claim="{setting}: x", id_prefix="tcs")
    assert check.id == "tcs-coverage-2-d" and check.outcome == claims.HELD


# ------------------------------------------------------------------ 01: Fig. 2
def _rows(u_peaks, t_peaks, input_peaks=4, u_range=0.3, t_range=6.0):
    """Per-run and per-coordinate rows for len(u_peaks) // 2 seeds of 2 coordinates."""
    seeds = len(u_peaks) // 2
    per_run = [{"seed": s, "encoder": e, "range": r} for s in range(seeds)
               for e, r in (("untrained", u_range + 0.01 * s), ("trained", t_range + 0.1 * s))]
    per_coord = [{"seed": i // 2, "encoder": e, "coordinate": i % 2 + 1, "peaks": p, "input peaks": input_peaks}
                 for e, peaks in (("untrained", u_peaks), ("trained", t_peaks)) for i, p in enumerate(peaks)]
    return per_run, per_coord


def _outcomes(*args, **kwargs):
    return {f.id: f.outcome for f in verdicts.encoder_output_families(*_rows(*args, **kwargs))}


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
])
def test_remedy_verdicts_can_come_out_every_way(offsets, falling, outcome):
    base = [_remedy_run(d, s, 20.0 + s) for d in (2, 8) for s in range(3)]
    mine = [_remedy_run(d, s, 20.0 + s + off, falling) for d in (2, 8) for s, off in enumerate(offsets)]
    [family] = verdicts.remedy_families({"ema": base, "restart": mine}, "tokens")
    assert family.outcome == outcome and len(family.checks) == 2
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
