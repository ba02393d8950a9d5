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


def test_format_table_shows_figure_key_and_values():
    new = make_record()
    new["values"]["per_seed"][1]["mse"] = 0.26
    table = format_table(compare(make_record(), new))
    lines = table.splitlines()
    assert lines[0].split() == ["figure", "key", "reference", "new", "allowed", "moved/allowed", "reason"]
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

def seed_record(per_seed, env=None, outcome="held", margin=2.0, words="eases"):
    """A record with one metric over seeds, one verdict and one derived word."""
    mean = float(np.mean(per_seed))
    return {
        "figure_id": "fig-x", "notebook": "02_x", "profile": "ci", "params": {"dims": [2]}, "seeds": [0, 1, 2],
        "values": {"summary": {"2/scratch": {"perplexity": {"mean": mean, "std": float(np.std(per_seed)),
                                                            "per_seed": list(map(float, per_seed))}}},
                   "single": {"mse": 0.01},
                   "claims": {"c1": {"id": "c1", "statement": "s", "outcome": outcome, "reason": "r",
                                     "effect": 1.0, "low": 0.5, "high": 1.5, "n": 3, "n_agree": 3,
                                     "margin": margin, "verdict": f"{outcome}: ...", "decision": "positive",
                                     "sd": 0.2, "n_80": 3, "n_95": 4, "converged": True}},
                   "verdicts": {"svq.tokens.2d.verdict": words}},
        "provenance": {"environment": dict(ENV if env is None else env)},
    }


OTHER_ENV = {**ENV, "cpu_capability": "DEFAULT", "threads": 2}


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
    moved = seed_record([41.0, 40.5, 45.5], env=OTHER_ENV)
    assert compare(ref, moved) == []
    # the same numbers claimed to come from the same environment: exact, so they fail
    same_env = seed_record([41.0, 40.5, 45.5])
    assert {m.key for m in compare(ref, same_env)} >= {
        "values.summary.2/scratch.perplexity.mean", "values.summary.2/scratch.perplexity.per_seed[0]"}


def test_cross_environment_band_fails_a_real_shift_and_says_by_how_much():
    ref = seed_record([40.0, 42.0, 44.0])     # sd 2 -> band max(4 * 2 * sqrt(2/3), 4.2, 0.02) = 6.53
    band = max(regression.CROSS.z * 2.0 * (2 / 3) ** 0.5, regression.CROSS.rel_floor * 42.0)
    inside = seed_record([46.0, 48.0, 50.0], env=OTHER_ENV)    # +6
    assert compare(ref, inside) == []
    outside = seed_record([48.0, 50.0, 52.0], env=OTHER_ENV)   # +8
    [m] = compare(ref, outside)
    assert m.key == "values.summary.2/scratch.perplexity.mean" and m.reason == regression.OUT_OF_BAND
    assert m.band == pytest.approx(band) and m.ratio == pytest.approx(8.0 / band)
    assert m.fails


def test_cross_environment_floors_protect_a_metric_without_spread():
    ref = seed_record([0.0, 0.0, 0.0])       # e.g. min tokens per cluster: 0 in every seed
    assert compare(ref, seed_record([0.0, 0.01, 0.0], env=OTHER_ENV)) == []   # absolute floor
    assert compare(ref, seed_record([0.0, 1.0, 0.0], env=OTHER_ENV)) == []    # the new runs' own spread
    [m] = compare(ref, seed_record([2.0, 2.0, 2.0], env=OTHER_ENV))
    assert m.reason == regression.OUT_OF_BAND


def test_cross_environment_single_values_use_a_log_band():
    ref = seed_record([40.0, 42.0, 44.0])
    new = seed_record([40.0, 42.0, 44.0], env=OTHER_ENV)
    new["values"]["single"]["mse"] = 0.01 * 2.9          # within x3
    assert compare(ref, new) == []
    new["values"]["single"]["mse"] = 0.01 * 3.1 + 0.03  # beyond x3 and beyond the absolute floor
    [m] = compare(ref, new)
    assert m.key == "values.single.mse" and m.reason == regression.SINGLE_OUT_OF_BAND and m.ratio > 1


def test_cross_environment_decided_verdict_must_hold_near_threshold_is_reported():
    ref = seed_record([40.0, 42.0, 44.0], outcome="held", margin=2.0)
    [m] = compare(ref, seed_record([40.0, 42.0, 44.0], env=OTHER_ENV, outcome="inconclusive"))
    assert m.key == "values.claims.c1.outcome" and m.reason == regression.VERDICT_CHANGED and m.fails
    near = seed_record([40.0, 42.0, 44.0], outcome="held", margin=0.1)
    [m] = compare(near, seed_record([40.0, 42.0, 44.0], env=OTHER_ENV, outcome="inconclusive"))
    assert m.reason == regression.VERDICT_NEAR and not m.fails
    # an inconclusive reference decides nothing: a decided new outcome is reported only
    undecided = seed_record([40.0, 42.0, 44.0], outcome="inconclusive", margin=-1.0)
    [m] = compare(undecided, seed_record([40.0, 42.0, 44.0], env=OTHER_ENV, outcome="held"))
    assert not m.fails
    # the claim's numbers do not count on their own across environments ...
    shifted = seed_record([40.0, 42.0, 44.0], env=OTHER_ENV)
    shifted["values"]["claims"]["c1"].update(effect=3.0, low=0.1, margin=0.7, verdict="held: other text", sd=2.0,
                                             n_80=None, n_95=40)
    assert compare(ref, shifted) == []
    # ... but do in the same environment
    same = seed_record([40.0, 42.0, 44.0])
    same["values"]["claims"]["c1"]["effect"] = 3.0
    assert [m.key for m in compare(ref, same)] == ["values.claims.c1.effect"]


def test_cross_environment_derived_words_reported_params_still_exact():
    ref = seed_record([40.0, 42.0, 44.0])
    new = seed_record([40.0, 42.0, 44.0], env=OTHER_ENV, words="does not ease")
    [m] = compare(ref, new)
    assert m.reason == regression.WORDS_CHANGED and not m.fails
    new["params"]["dims"] = [3]
    assert any(m.key == "params.dims[0]" and m.fails for m in compare(ref, new))


def test_cli_check_prints_mode_and_table(tmp_path, capsys):
    ref_dir, new_dir = tmp_path / "ref", tmp_path / "new"
    _write_dir(ref_dir, [seed_record([40.0, 42.0, 44.0])])
    _write_dir(new_dir, [seed_record([48.0, 50.0, 52.0], env=OTHER_ENV)])
    args = ["--results", str(new_dir), "--references", str(ref_dir)]
    assert cli.main(["check", *args]) == 1
    out = capsys.readouterr().out
    assert "cross environment mode for 1 figure(s)" in out and "threads 1 -> 2" in out
    assert "values.summary.2/scratch.perplexity.mean" in out and "mean moved beyond its band" in out
    assert "1 difference(s) in 1 figure(s): fig-x" in out
    _write_dir(new_dir, [seed_record([41.0, 40.5, 45.5], env=OTHER_ENV)])
    assert cli.main(["check", *args]) == 0
    assert cli.main(["check", "--mode", "same", *args]) == 1
