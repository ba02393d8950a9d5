"""The regression check has teeth: deliberate scientific changes fail it, an environment change passes.

The deliberate changes live in ``tests/broken_science/sitecustomize.py`` (applied inside the
processes that get that folder on ``PYTHONPATH``); ``benchmarks/sensitivity.py`` runs them.
CI runs two of them and one environment change on notebook 02 (the whole suite is a benchmark).
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import CI_CHANGES, CI_ENV, REPO

BROKEN_SCIENCE = REPO / "tests" / "broken_science"

# What each change must do to a run config made and validated twice, then copied with
# dataclasses.replace and validated again (as experiments, remedies and the trainer do).
EXPECTED = {
    "decay": {"SyntheticRun": {"decay": 0.8}, "CifarRun": {"decay": 0.98}},
    "beta": {"SyntheticRun": {"beta": 1.0}, "CifarRun": {"beta": 1.0}},
    "kmeans-iters": {"SyntheticRun": {"kmeans_iters": 1}, "CifarRun": {"kmeans_iters": 1}},
    "lr": {"SyntheticRun": {"lr": 0.0005}, "CifarRun": {"lr": 0.00015}},
    "laplace": {"SyntheticRun": {"ema_update": "laplace"}, "CifarRun": {"ema_update": "laplace"}},
    "cifar-pretrain": {"SyntheticRun": {"pretrain_epochs": 100}, "CifarRun": {"pretrain_epochs": 75}},
}

PROBE = """
import json, sys
from dataclasses import asdict, replace
from vqpaper.config import CifarRun, SyntheticRun
from vqpaper.train import RunResult
out = {}
for cls in (SyntheticRun, CifarRun):
    cfg = cls().validate().validate()
    cfg = replace(cfg, seed=1).validate()
    out[cls.__name__] = asdict(cfg)
r = RunResult({}, metrics={"perplexity": 10.0, "test_perplexity": 4.0, "usage": 0.5})
out["cifar_metrics"] = r.metrics
r = RunResult({}, metrics={"perplexity": 10.0, "usage": 0.5})
out["synthetic_metrics"] = r.metrics
json.dump(out, sys.stdout)
"""


def _probe(change, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BROKEN_SCIENCE), str(REPO)]),
           "VQPAPER_BREAK": change, "VQPAPER_BREAK_LOG": str(tmp_path / "applied.jsonl")}
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    return proc


@pytest.fixture(scope="module")
def defaults(tmp_path_factory):
    proc = _probe("", tmp_path_factory.mktemp("defaults"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("change", sorted(EXPECTED) + ["test-perplexity"])
def test_each_deliberate_change_is_applied_once_at_the_run_config(change, defaults, tmp_path):
    proc = _probe(change, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    applied = [json.loads(line) for line in (tmp_path / "applied.jsonl").read_text().splitlines()]
    assert applied and {a["change"] for a in applied} == {change}
    for cls in ("SyntheticRun", "CifarRun"):
        changed = {k: v for k, v in out[cls].items() if v != defaults[cls][k]}
        expected = {k: v for k, v in EXPECTED.get(change, {}).get(cls, {}).items() if v != defaults[cls][k]}
        assert changed == pytest.approx(expected) if expected else changed == {}, (cls, changed)
    if change == "test-perplexity":
        assert out["cifar_metrics"]["perplexity"] == 4.0 and out["synthetic_metrics"]["perplexity"] == 10.0
    else:
        assert out["cifar_metrics"]["perplexity"] == 10.0


@pytest.mark.slow
def test_an_unknown_change_is_refused(tmp_path):
    proc = _probe("nonsense", tmp_path)
    assert proc.returncode != 0 and "VQPAPER_BREAK='nonsense'" in proc.stderr


# CI's share of benchmarks/sensitivity.py on notebook 02 (conftest.CI_CHANGES, CI_ENV), run in
# conftest.reruns_of_02 beside the determinism re-execution.
@pytest.mark.notebooks
def test_deliberate_changes_fail_the_check_and_another_environment_passes(reruns_of_02):
    suite = reruns_of_02["suite"]
    out = suite["log"]
    assert suite["returncode"] == 0, out[-5000:]
    assert (f"caught {len(CI_CHANGES)} of {len(CI_CHANGES)} deliberate changes; "
            f"passed 1 of 1 environment changes") in out, out[-5000:]
    outcomes = {o["change"]: o for o in suite["outcomes"]}
    for change in CI_CHANGES:
        assert outcomes[change]["failed_figures"] and outcomes[change]["applied"] > 0, outcomes[change]
    # the environment did move the numbers: its pass is not vacuous
    assert 0 < outcomes[CI_ENV]["largest_move"] <= 1, outcomes[CI_ENV]
