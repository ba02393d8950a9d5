"""Regression checks of recorded figure numbers: flatten, tolerances, reasons, table, CLI."""
import copy
import json

import numpy as np
import pytest

from vqpaper import cli, regression, results
from vqpaper.regression import compare, flatten, format_table


ENV = {"device": "cpu (2 cores, x86_64)", "cpu": "AMD EPYC", "cpu_capability": "AVX512", "blas": "mkl 2024.2",
       "threads": 1, "torch": "2.14.1", "numpy": "2.4.6"}


def make_record(**changes):
    record = {
        "figure_id": "fig-tokens-collapse-synthetic",
        "notebook": "02_tokens_collapse_synthetic",
        "profile": "ci",
        "params": {"dims": [2, 3, 8], "quantizer": "ema", "epochs": 20},
        "seeds": [0, 1],
        "values": {
            "scratch": {"perplexity": {"mean": 43.25, "std": 3.5}},
            "pretrained": {"perplexity": {"mean": 111.0, "std": 2.0}},
            "per_seed": [{"mse": 0.125, "used": 40}, {"mse": 0.25, "used": 38}],
            "separates": True,
        },
        "provenance": {
            "versions": {"python": "3.11.7", "torch": "2.14.1", "numpy": "2.4.6"},
            "commit": "abc123",
            "device": "cpu (2 cores)",
            "environment": dict(ENV),
            "wall_time_s": 12.5,
            "created": "2025-01-01T00:00:00+00:00",
        },
    }
    record.update(changes)
    return record


def test_flatten_keys():
    flat = flatten(make_record())
    assert flat["values.scratch.perplexity.mean"] == 43.25
    assert flat["values.per_seed[0].mse"] == 0.125
    assert flat["values.per_seed[1].used"] == 38
    assert flat["params.dims[1]"] == 3
    assert flat["profile"] == "ci"
    assert flat["seeds[1]"] == 1
    assert flatten({"a": [], "b": {}}) == {"a": [], "b": {}}


def test_identical_records_have_no_mismatch():
    assert compare(make_record(), make_record()) == []


def test_one_number_beyond_tolerance_reports_exactly_that_key():
    new = make_record()
    new["values"]["per_seed"][1]["mse"] = 0.26
    mismatches = compare(make_record(), new)
    assert len(mismatches) == 1
    m = mismatches[0]
    assert (m.figure, m.key, m.reference, m.new) == (
        "fig-tokens-collapse-synthetic", "values.per_seed[1].mse", 0.25, 0.26)
    assert m.reason == regression.MOVED
    assert m.tolerance == regression.TOLERANCES["*"]


def test_within_tolerance_is_not_reported():
    new = make_record()
    new["values"]["scratch"]["perplexity"]["mean"] = 43.25 * (1 + 1e-7)
    new["values"]["per_seed"][0]["mse"] = 0.125 + 1e-8
    assert compare(make_record(), new) == []


def test_tolerance_patterns_first_match_wins_and_brackets_are_literal():
    tolerances = {
        "fig-tokens-collapse-synthetic/values.per_seed[1].mse": (0.1, 0.0),
        "values.*.perplexity.*": (0.0, 0.01),
        "*": (1e-6, 1e-5),
    }
    new = make_record()
    new["values"]["per_seed"][1]["mse"] = 0.3           # within 0.1
    new["values"]["per_seed"][0]["mse"] = 0.2           # default: moved
    new["values"]["scratch"]["perplexity"]["mean"] = 43.6  # within 1 %
    mismatches = compare(make_record(), new, tolerances)
    assert [m.key for m in mismatches] == ["values.per_seed[0].mse"]
    assert regression.tolerance_for("fig-x", "values.per_seed[1].mse", tolerances) == (1e-6, 1e-5)


def test_changed_param_and_profile_are_reported_exactly():
    new = make_record(profile="paper")
    new["params"]["quantizer"] = "simvq"
    new["params"]["epochs"] = 20.000001  # a parameter gets no tolerance
    found = {m.key: m for m in compare(make_record(), new)}
    assert set(found) == {"profile", "params.quantizer", "params.epochs"}
    assert found["params.quantizer"].reference == "ema"
    assert found["params.quantizer"].new == "simvq"
    assert all(m.reason == regression.DIFFERS for m in found.values())


def test_missing_extra_and_type_changed_keys():
    new = make_record()
    del new["values"]["pretrained"]["perplexity"]["std"]
    new["values"]["pretrained"]["usage"] = 0.9
    new["values"]["separates"] = 1
    found = {m.key: m.reason for m in compare(make_record(), new)}
    assert found == {
        "values.pretrained.perplexity.std": regression.MISSING,
        "values.pretrained.usage": regression.NEW_KEY,
        "values.separates": regression.TYPE_CHANGED,
    }


def test_nan_equals_nan():
    ref = make_record()
    ref["values"]["scratch"]["perplexity"]["std"] = float("nan")
    assert compare(ref, copy.deepcopy(ref)) == []
    new = copy.deepcopy(ref)
    new["values"]["scratch"]["perplexity"]["std"] = 1.0
    assert [m.key for m in compare(ref, new)] == ["values.scratch.perplexity.std"]


def test_provenance_is_ignored():
    new = make_record()
    new["provenance"] = {"commit": "other-dirty", "versions": {"torch": "9"},
                         "device": "cuda:0", "wall_time_s": 99.0, "created": "now",
                         "environment": dict(ENV), "extra": 1}
    assert compare(make_record(), new) == []
    new["provenance"]["environment"]["threads"] = 2  # another environment: compared statistically
    assert compare(make_record(), new) == []
    del new["provenance"]
    assert compare(make_record(), new) == []


def test_the_device_and_where_the_data_lay_are_the_environment_not_the_experiment():
    # Found on a GPU: a cuda run's record said device 'cuda' and its CIFAR-10 file lay elsewhere;
    # both were reported as differences, so a check on any other machine failed on them.
    data = ("CIFAR-10 ci subset (manifest 765702da245388c1) from ../shared/data/cifar10-subset.npz: "
            "5,085 train / 1,017 test images; the runs trained on a class-stratified subset of 1,024 of them")
    ref = make_record()
    ref["params"]["device"] = "cpu"
    ref["values"]["data"] = data
    new = copy.deepcopy(ref)
    new["params"]["device"] = "cuda"
    new["values"]["data"] = data.replace("from ../shared/data/cifar10-subset.npz",
                                         "via torchvision (data/cifar10), cached in /tmp/my data/c.npz")
    assert compare(ref, new) == []
    for other in (data.replace("765702da245388c1", "0123456789abcdef"), data.replace("1,024", "2,048")):
        new["values"]["data"] = other  # another subset, or other counts: another experiment
        assert [(m.key, m.reason) for m in compare(ref, new)] == [("values.data", regression.DIFFERS)]


def test_format_table_shows_figure_key_and_values():
    new = make_record()
    new["values"]["per_seed"][1]["mse"] = 0.26
    table = format_table(compare(make_record(), new))
    lines = table.splitlines()
    assert lines[0].split() == ["figure", "key", "reference", "new", "allowed", "move", "(band", "units)", "reason"]
    row = lines[2]
    for text in ("fig-tokens-collapse-synthetic", "values.per_seed[1].mse", "0.25", "0.26",
                 "abs 1e-06 + rel 1e-05"):
        assert text in row
    assert "1 difference(s) in 1 figure(s): fig-tokens-collapse-synthetic" in table
    assert format_table([]) == "no differences"


def test_compare_dirs_reports_missing_and_new_figures(tmp_path):
    ref_dir, new_dir = tmp_path / "ref", tmp_path / "new"
    ref_dir.mkdir(), new_dir.mkdir()
    (ref_dir / "fig-a.json").write_text(json.dumps(make_record(figure_id="fig-a")))
    (ref_dir / "fig-b.json").write_text(json.dumps(make_record(figure_id="fig-b")))
    (new_dir / "fig-a.json").write_text(json.dumps(make_record(figure_id="fig-a")))
    (new_dir / "fig-c.json").write_text(json.dumps(make_record(figure_id="fig-c")))
    found = {(m.figure, m.reason) for m in regression.compare_dirs(ref_dir, new_dir)}
    assert found == {("fig-b", regression.FIGURE_MISSING), ("fig-c", regression.NEW_FIGURE)}


def test_record_roundtrip_converts_numpy_and_compares_clean(tmp_path):
    values = {"mean": np.float32(0.5), "counts": np.arange(3), "flag": np.bool_(True),
              "nested": ({"k": np.int64(4)},)}
    path = results.record("fig-roundtrip", values, notebook="notebooks/02_x.py",
                          params={"sizes": (16, 256)}, profile="ci", seeds=np.array([0, 1]),
                          started=0.0, directory=tmp_path)
    data = json.loads(path.read_text())
    assert data["values"] == {"mean": 0.5, "counts": [0, 1, 2], "flag": True,
                              "nested": [{"k": 4}]}
    assert data["notebook"] == "02_x" and data["params"] == {"sizes": [16, 256]}
    assert data["seeds"] == [0, 1]
    assert set(data["provenance"]) == {"versions", "commit", "device", "environment", "wall_time_s", "created"}
    env = data["provenance"]["environment"]
    assert {"device", "cpu", "torch", "numpy"} <= set(env)
    assert results.load_results(tmp_path)["fig-roundtrip"]["values"]["mean"] == 0.5
    with pytest.raises(ValueError, match="figure_id"):
        results.record("Fig_bad", {}, notebook="x", params={}, profile="ci", directory=tmp_path)
    with pytest.raises(TypeError, match=r"values\.obj"):
        results.record("fig-bad", {"obj": object()}, notebook="x", params={}, profile="ci",
                       directory=tmp_path)


def _write_dir(directory, records):
    directory.mkdir(parents=True, exist_ok=True)
    for record in records:
        (directory / f"{record['figure_id']}.json").write_text(json.dumps(record))


def test_cli_check_exit_code_and_table(tmp_path, capsys):
    ref_dir, new_dir = tmp_path / "references" / "ci", tmp_path / "results"
    _write_dir(ref_dir, [make_record(), make_record(figure_id="fig-other")])
    _write_dir(new_dir, [make_record(), make_record(figure_id="fig-other")])
    args = ["--results", str(new_dir), "--references", str(ref_dir)]
    assert cli.main(["check", *args]) == 0
    assert "no differences" in capsys.readouterr().out

    perturbed = make_record()
    perturbed["values"]["pretrained"]["perplexity"]["mean"] = 112.0
    _write_dir(new_dir, [perturbed])
    assert cli.main(["check", *args]) == 1
    out = capsys.readouterr().out
    assert "values.pretrained.perplexity.mean" in out and "112.0" in out and "111.0" in out
    assert "fig-other" not in out.split("\n", 1)[1]  # only the changed figure is listed

    # references --accept copies the changed result; afterwards the check passes
    assert cli.main(["references", "--accept", *args]) == 0
    assert "updated" in capsys.readouterr().out
    assert cli.main(["check", *args]) == 0


def test_cli_check_without_results_says_what_to_run(tmp_path, capsys):
    code = cli.main(["check", "--results", str(tmp_path / "none"),
                     "--references", str(tmp_path / "ref")])
    assert code == 1
    assert "run the notebooks first" in capsys.readouterr().err


# ------------------------------------------------------------ environments and modes

def seed_record(per_seed, env=None, outcome="held", low=0.5, high=1.5, metric="perplexity", figure="fig-x",
                single=0.01):
    """A record with one metric over seeds, one verdict (with its interval) and one single-seed number."""
    mean = float(np.mean(per_seed))
    return {
        "figure_id": figure, "notebook": "02_x", "profile": "ci", "params": {"dims": [2]},
        "seeds": list(range(len(per_seed))),
        "values": {"summary": {"2/scratch": {metric: {"mean": mean, "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None,
                                                      "per_seed": list(map(float, per_seed))}}},
                   "single": {"mse": single},
                   "claims": {"c1": {"id": "c1", "statement": "s", "outcome": outcome, "reason": "r",
                                     "effect": (low + high) / 2, "low": low, "high": high, "n": 3, "n_agree": 3,
                                     "margin": 1.0, "verdict": f"{outcome}: ...", "decision": outcome}}},
        "provenance": {"environment": dict(ENV if env is None else env)},
    }


OTHER_ENV = {**ENV, "cpu_capability": "DEFAULT", "threads": 2}
MEAN_KEY = "values.summary.2/scratch.{}.mean"


def cross(ref_seeds, new_seeds, metric="perplexity", **kw):
    """The mismatches of a cross-environment comparison of one metric over seeds."""
    return compare(seed_record(ref_seeds, metric=metric), seed_record(new_seeds, env=OTHER_ENV, metric=metric, **kw))


def welch_band(a, b, tolerance, confidence=regression.CROSS.confidence):
    """The band written out independently of regression.compare_seeds: Welch half-width + tolerance."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    return stats.t.ppf(0.5 + confidence / 2, df) * np.sqrt(va + vb) + tolerance


def test_mode_follows_the_environment():
    ref = seed_record([40.0, 42.0, 44.0])
    mode, why = regression.choose_mode(ref, seed_record([40.0, 42.0, 44.0]))
    assert mode == regression.SAME
    mode, why = regression.choose_mode(ref, seed_record([40.0, 42.0, 44.0], env=OTHER_ENV))
    assert mode == regression.CROSS_ENV
    assert "cpu_capability 'AVX512' -> 'DEFAULT'" in why and "threads 1 -> 2" in why
    no_env = seed_record([40.0, 42.0, 44.0])
    del no_env["provenance"]["environment"]
    assert regression.choose_mode(no_env, ref)[0] == regression.CROSS_ENV
    assert regression.choose_mode(ref, ref, mode="cross")[0] == regression.CROSS_ENV
    with pytest.raises(ValueError, match="mode"):
        regression.choose_mode(ref, ref, mode="fuzzy")


def test_precision_decides_the_mode_and_older_records_ran_in_float32():
    ref = seed_record([40.0, 42.0, 44.0])  # a record from before "precision" was recorded
    assert regression.choose_mode(ref, seed_record([40.0, 42.0, 44.0], env={**ENV, "precision": "float32"}))[0] \
        == regression.SAME
    mode, why = regression.choose_mode(ref, seed_record([40.0, 42.0, 44.0], env={**ENV, "precision": "bf16"}))
    assert mode == regression.CROSS_ENV and "precision 'float32' -> 'bf16'" in why
    # the executor is recorded for the reader only: Ray and in-process runs are bit-identical
    assert regression.choose_mode(ref, seed_record([40.0, 42.0, 44.0], env={**ENV, "executor": "ray"}))[0] \
        == regression.SAME


def test_same_environment_is_exact_but_cross_environment_allows_seed_noise():
    ref = seed_record([40.0, 42.0, 44.0])
    # another environment: every seed moved a little (float noise grown by training)
    assert cross([40.0, 42.0, 44.0], [41.0, 40.5, 45.5]) == []
    # the same numbers claimed to come from the same environment: exact, so they fail
    same_env = seed_record([41.0, 40.5, 45.5])
    assert {m.key for m in compare(ref, same_env)} >= {
        "values.summary.2/scratch.perplexity.mean", "values.summary.2/scratch.perplexity.per_seed[0]"}


def test_log_band_is_welch_plus_a_factor_and_has_no_absolute_floor():
    ref = [0.00028, 0.00029, 0.00030]  # 2-D pretrained MSE at ci
    band = welch_band(np.log(ref), np.log(ref), regression.CROSS.log_tolerance)
    inside = [v * np.exp(0.98 * band) for v in ref]
    assert cross(ref, inside, metric="mse") == []
    outside = [v * np.exp(1.02 * band) for v in ref]
    [m] = cross(ref, outside, metric="mse")
    assert m.key == MEAN_KEY.format("mse") and m.reason == regression.OUT_OF_BAND and m.fails
    assert m.band == pytest.approx(band) and m.move == pytest.approx(1.02) and m.scale == regression.LOG
    # the old rule's absolute floor (0.02) let this MSE rise 70-fold and pass
    [m] = cross(ref, [0.0199, 0.02, 0.0201], metric="mse")
    assert m.move > 10 and "×/÷" in format_table([m])
    # CIFAR perplexity halving at K = 4,096 (2,366 -> 1,183) fails, whatever the spread of 3 seeds
    [m] = cross([2300.0, 2366.0, 2430.0], [1150.0, 1183.0, 1215.0])
    assert m.reason == regression.OUT_OF_BAND


def test_bounded_band_tolerance_is_the_reference_seed_sd():
    ref = [0.5, 0.6, 0.7]  # allocation entropy, sd 0.1
    band = welch_band(ref, ref, 1.0 * regression.CROSS.spread_tolerance * 0.1)
    assert cross(ref, [v + 0.98 * band for v in ref], metric="alloc_entropy") == []
    [m] = cross(ref, [v + 1.02 * band for v in ref], metric="alloc_entropy")
    assert m.reason == regression.OUT_OF_BAND and m.band == pytest.approx(band) and m.scale == regression.BOUNDED
    assert "±" in format_table([m])
    # precision near 1: the old 10% floor let 0.999 -> 0.90 pass (100x more points outside the data)
    [m] = cross([0.999, 0.998, 0.999], [0.90, 0.90, 0.91], metric="precision")
    assert m.reason == regression.OUT_OF_BAND and m.move > 2
    # a saturated share (sd 0) may lose a code in one seed: the new runs' spread covers it
    assert cross([1.0, 1.0, 1.0], [1.0, 1.0, 127 / 128], metric="usage") == []


def test_count_scale_resolves_one_count():
    assert cross([0.0, 0.0, 0.0], [0.0, 0.0, 1.0], metric="min_tokens_per_cluster") == []
    assert cross([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], metric="min_tokens_per_cluster") == []  # one count: resolution
    [m] = cross([0.0, 0.0, 0.0], [3.0, 3.0, 3.0], metric="min_tokens_per_cluster")
    assert m.reason == regression.OUT_OF_BAND and "(of 1 + count)" in format_table([m])


def test_a_change_that_adds_noise_fails_on_its_spread():
    ref = [0.50, 0.51, 0.52]  # sd 0.01
    noisy = [0.0, 0.51, 1.0]  # same mean, sd 0.5: the Welch interval alone would widen to ~±2.8
    found = cross(ref, noisy, metric="coverage")
    assert [(m.key, m.reason) for m in found] == [
        ("values.summary.2/scratch.coverage.std", regression.SPREAD_GREW)]
    m = found[0]
    assert m.fails and m.move > 1 and m.reference == pytest.approx(0.01) and m.new == pytest.approx(0.5, rel=1e-3)
    limit = max(0.01, regression.CROSS.spread_floor) * np.sqrt(__import__("scipy").stats.f.ppf(1 - regression.CROSS.spread_alpha, 2, 2))
    assert m.band == pytest.approx(limit)
    # a spread within the F bound passes
    assert cross(ref, [0.45, 0.51, 0.57], metric="coverage") == []


def test_unknown_metric_fails_and_names_where_to_add_it():
    [m] = cross([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], metric="wobble")
    assert m.fails and m.reason.startswith(regression.UNKNOWN_METRIC) and "'wobble'" in m.reason
    with pytest.raises(ValueError, match="SCALES"):
        regression.scale_of("wobble")


def test_nan_in_one_environment_only_fails():
    [m] = cross([40.0, 42.0, 44.0], [40.0, float("nan"), 44.0])
    assert m.fails and m.move == float("inf") and "NaN" in m.reason
    assert cross([40.0, float("nan"), 44.0], [41.0, float("nan"), 43.0]) == []


def test_verdict_flip_between_decided_outcomes_fails_even_near_the_threshold():
    ref = seed_record([40.0, 42.0, 44.0], outcome="held", low=0.01, high=0.5)  # held by a hair
    new = seed_record([40.0, 42.0, 44.0], env=OTHER_ENV, outcome="not held", low=-0.3, high=-0.01)
    [m] = compare(ref, new)
    assert m.key == "values.claims.c1.outcome" and m.reason == regression.VERDICT_FLIPPED and m.fails
    assert m.intervals == ((0.01, 0.5), (-0.3, -0.01))


def test_change_to_or_from_inconclusive_is_reported_with_both_intervals():
    ref = seed_record([40.0, 42.0, 44.0], outcome="held", low=0.5, high=1.5)
    new = seed_record([40.0, 42.0, 44.0], env=OTHER_ENV, outcome="inconclusive", low=-0.2, high=1.2)
    [m] = compare(ref, new)
    assert m.reason == regression.VERDICT_CHANGED and not m.fails
    row = format_table([m]).splitlines()[2]
    assert "'held' [0.5, 1.5]" in row and "'inconclusive' [-0.2, 1.2]" in row
    # ... from inconclusive too
    [m] = compare(seed_record([40.0, 42.0, 44.0], outcome="inconclusive", low=-0.2, high=1.2),
                  seed_record([40.0, 42.0, 44.0], env=OTHER_ENV, outcome="held", low=0.5, high=1.5))
    assert not m.fails
    # ... unless the intervals do not even overlap: the effect itself moved
    far = seed_record([40.0, 42.0, 44.0], env=OTHER_ENV, outcome="inconclusive", low=-3.0, high=0.2)
    [m] = compare(ref, far)
    assert m.reason == regression.VERDICT_MOVED and m.fails


def test_a_claims_evidence_is_not_compared_on_its_own_but_its_identity_is():
    ref = seed_record([40.0, 42.0, 44.0])
    shifted = seed_record([40.0, 42.0, 44.0], env=OTHER_ENV, low=0.7, high=1.9)
    shifted["values"]["claims"]["c1"].update(verdict="held: other text", margin=0.2, decision="other", delta=0.1)
    found = compare(ref, shifted)
    assert [m.key for m in found] == ["values.claims.c1.delta"]  # a new field is a new key, nothing more
    shifted["values"]["claims"]["c1"]["n"] = 4
    assert any(m.key == "values.claims.c1.n" and m.fails for m in compare(ref, shifted))
    # in the same environment every field counts
    same = seed_record([40.0, 42.0, 44.0])
    same["values"]["claims"]["c1"]["effect"] = 3.0
    assert [m.key for m in compare(ref, same)] == ["values.claims.c1.effect"]


def test_a_claims_convergence_report_is_evidence_across_environments():
    conv = {"converged": True, "reason": "", "stages": [{"group": "scratch, 2-D", "seed": 0, "stage": "scratch",
                                                         "change": 0.02, "converged": True, "why": "flattened"}]}
    ref = seed_record([40.0, 42.0, 44.0])
    ref["values"]["claims"]["c1"]["convergence"] = conv
    new = seed_record([40.0, 42.0, 44.0], env=OTHER_ENV)
    new["values"]["claims"]["c1"]["convergence"] = {**conv, "stages": [{**conv["stages"][0], "change": 0.12,
                                                                       "converged": False, "why": "still falling"}]}
    assert compare(ref, new) == []          # the verdict did not change: its evidence is shown, not compared
    same = seed_record([40.0, 42.0, 44.0])
    same["values"]["claims"]["c1"]["convergence"] = new["values"]["claims"]["c1"]["convergence"]
    assert {m.key for m in compare(ref, same)} >= {"values.claims.c1.convergence.stages[0].converged"}


def test_single_seed_numbers_are_not_compared_across_environments_and_are_counted(tmp_path):
    ref = seed_record([40.0, 42.0, 44.0], single=0.01)
    new = seed_record([40.0, 42.0, 44.0], env=OTHER_ENV, single=1.0)   # 100x: no seeds to judge it by
    report = regression.compare_record(ref, new)
    assert report.mismatches == [] and report.not_compared == {"fig-x": ["values.single.mse"]}
    assert f"{regression.NOT_COMPARED}: 1 number(s) in 1 figure(s) (fig-x 1)" in regression.format_report(report)
    # a metric over one seed only is counted the same way
    one = regression.compare_record(seed_record([40.0]), seed_record([80.0], env=OTHER_ENV))
    assert one.mismatches == [] and MEAN_KEY.format("perplexity") in one.not_compared["fig-x"]
    # in the same environment the single number is compared, and a parameter is exact in both
    assert [m.key for m in compare(ref, seed_record([40.0, 42.0, 44.0], single=1.0))] == ["values.single.mse"]
    new["params"]["dims"] = [3]
    assert any(m.key == "params.dims[0]" and m.fails for m in compare(ref, new))


def test_check_never_passes_vacuously(tmp_path):
    ref_dir, new_dir = tmp_path / "ref", tmp_path / "new"
    _write_dir(ref_dir, [seed_record([40.0, 42.0, 44.0])])
    _write_dir(new_dir, [seed_record([40.0, 42.0, 44.0])])
    assert regression.check_dirs(ref_dir, new_dir).ok
    report = regression.check_dirs(ref_dir, new_dir, notebooks=["nope"])
    assert not report.ok and report.failures == []
    assert any(p.startswith("notebook 'nope': no results in") and "no references in" in p and "02_x" in p
               for p in report.problems)
    assert any("no number was compared" in p for p in report.problems)
    report = regression.check_dirs(ref_dir, new_dir, figures=["fig-nope", "fig-x"])
    assert not report.ok and [p for p in report.problems if "fig-nope" in p]
    assert report.compared > 0  # fig-x was still compared
    # a notebook with results but no references
    _write_dir(new_dir, [seed_record([40.0, 42.0, 44.0], figure="fig-y") | {"notebook": "03_y"}])
    report = regression.check_dirs(ref_dir, new_dir, notebooks=["03_y"])
    assert any(p.startswith("notebook '03_y': no references in") for p in report.problems)
    empty_ref, empty_new = tmp_path / "e1", tmp_path / "e2"
    empty_ref.mkdir(), empty_new.mkdir()
    report = regression.check_dirs(empty_ref, empty_new)
    assert not report.ok and any("no number was compared" in p for p in report.problems)


def test_cli_check_fails_for_unknown_notebook_or_figure(tmp_path, capsys):
    ref_dir, new_dir = tmp_path / "ref", tmp_path / "new"
    _write_dir(ref_dir, [seed_record([40.0, 42.0, 44.0])])
    _write_dir(new_dir, [seed_record([40.0, 42.0, 44.0])])
    args = ["--results", str(new_dir), "--references", str(ref_dir)]
    assert cli.main(["check", *args]) == 0
    capsys.readouterr()
    assert cli.main(["check", "--notebook", "nope", *args]) == 1
    assert "notebook 'nope'" in capsys.readouterr().out
    assert cli.main(["check", "--figure", "fig-nope", *args]) == 1
    assert "figure 'fig-nope'" in capsys.readouterr().out
    assert cli.main(["check", "--figure", "fig-x", *args]) == 0


def test_cli_check_prints_mode_table_and_markdown(tmp_path, capsys):
    ref_dir, new_dir = tmp_path / "ref", tmp_path / "new"
    _write_dir(ref_dir, [seed_record([40.0, 42.0, 44.0])])
    _write_dir(new_dir, [seed_record([80.0, 84.0, 88.0], env=OTHER_ENV, single=5.0)])
    args = ["--results", str(new_dir), "--references", str(ref_dir)]
    assert cli.main(["check", *args]) == 1
    out = capsys.readouterr().out
    assert "cross environment mode for 1 figure(s)" in out and "threads 1 -> 2" in out
    assert MEAN_KEY.format("perplexity") in out and regression.OUT_OF_BAND in out
    assert "1 difference(s) in 1 figure(s): fig-x" in out
    assert f"{regression.NOT_COMPARED}: 1 number(s)" in out
    assert cli.main(["check", "--format", "markdown", *args]) == 1
    md = capsys.readouterr().out
    lines = md.splitlines()
    header = "| figure | key | reference | new | allowed | move (band units) | reason |"
    assert header in lines and lines[lines.index(header) + 1] == "| --- | --- | --- | --- | --- | --- | --- |"
    row = next(line for line in lines if line.startswith("| fig-x |"))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[1] == f"`{MEAN_KEY.format('perplexity')}`" and cells[2] == "42.0" and cells[3] == "84.0"
    assert cells[4].startswith("×/÷") and float(cells[5]) > 1 and cells[6] == regression.OUT_OF_BAND
    assert "- cross environment mode for 1 figure(s)" in md and "**1 difference(s) in 1 figure(s): fig-x**" in md
    _write_dir(new_dir, [seed_record([41.0, 40.5, 45.5], env=OTHER_ENV)])
    assert cli.main(["check", *args]) == 0
    assert cli.main(["check", "--format", "markdown", *args]) == 0
    assert "**no differences**" in capsys.readouterr().out
    assert cli.main(["check", "--mode", "same", *args]) == 1


def test_markdown_escapes_pipes():
    m = regression.Mismatch("fig-x", "values.a|b", "x|y", "z", None, regression.DIFFERS)
    md = regression.format_markdown(regression.Report(mismatches=[m]))
    row = next(line for line in md.splitlines() if line.startswith("| fig-x"))
    assert "values.a\\|b" in row and "'x\\|y'" in row and row.count(" | ") == 6


def test_calibration_reports_the_largest_move_per_figure_and_metric(tmp_path):
    ref_dir = tmp_path / "ref"
    _write_dir(ref_dir, [seed_record([40.0, 42.0, 44.0]), seed_record([0.5, 0.6, 0.7], figure="fig-y",
                                                                       metric="usage")])
    env_a, env_b = tmp_path / "a", tmp_path / "b"
    _write_dir(env_a, [seed_record([41.0, 43.0, 45.0], env=OTHER_ENV),
                       seed_record([0.5, 0.6, 0.7], figure="fig-y", metric="usage", env=OTHER_ENV)])
    _write_dir(env_b, [seed_record([38.0, 40.0, 42.0], env=OTHER_ENV),
                       seed_record([0.55, 0.65, 0.75], figure="fig-y", metric="usage", env=OTHER_ENV)])
    cal = regression.calibrate(ref_dir, {"threads2": env_a, "generic": env_b})
    by_figure, by_metric = cal.by_figure(), cal.by_metric()
    assert set(by_figure) == {"fig-x", "fig-y"} and set(by_metric) == {"perplexity", "usage"}
    expected = max(mv.move for r in cal.reports.values() for mv in r.moves
                   if mv.figure == "fig-x" and mv.kind == "mean")
    move, where, label = by_figure["fig-x"]["mean"]
    assert move == pytest.approx(expected) and 0 < move < 1 and where == f"fig-x/{MEAN_KEY.format('perplexity')}"
    assert by_figure["fig-y"]["mean"][2] == "generic"  # only env b moved fig-y
    assert by_metric["usage"]["mean"][0] == by_figure["fig-y"]["mean"][0]
    text = regression.format_calibration(cal)
    assert "fig-x" in text and "usage" in text and "largest move in band units" in text
    assert "threads2: passes" in text


def test_constants_can_be_tried_without_editing_the_module():
    rule = regression.cross_rule(["confidence=0.5", "min_seeds=3"])
    assert (rule.confidence, rule.min_seeds, rule.log_tolerance) == (0.5, 3, regression.CROSS.log_tolerance)
    ref, new = seed_record([40.0, 42.0, 44.0]), seed_record([46.0, 48.0, 50.0], env=OTHER_ENV)
    assert compare(ref, new) == []                                   # within the default band
    assert [m.reason for m in compare(ref, new, rule=rule)] == [regression.OUT_OF_BAND]
    with pytest.raises(ValueError, match="confidence"):
        regression.cross_rule(["confidance=0.9"])
    with pytest.raises(ValueError, match="not a number"):
        regression.cross_rule(["confidence=high"])
