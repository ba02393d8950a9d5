"""Long runs: the run store behind every sweep (vqpaper.sweeps).

A sweep killed mid-way and started again skips the finished points and loses none; any change
of a run's parameters, data or code changes its key; a stored result equals a fresh one; the
store can be emptied.
"""
import dataclasses
import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import random_cifar

from vqpaper import paths, sweeps
from vqpaper.config import CifarRun, SyntheticRun

TINY = dict(n_per_cluster=50, epochs=2, pretrain_epochs=1, finetune_epochs=1, codebook_size=16, kmeans_iters=2)


def _entries(cache: Path):
    """Finished entries of a store (a kill mid-write can only leave a ``.partial-*`` folder)."""
    if not cache.is_dir():
        return []
    return sorted(p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".partial-")
                  and (p / "result.json").is_file())


@pytest.fixture
def counting(monkeypatch):
    """Count the runs ``sweep`` (in groups: ``run_group``) and ``cached_run`` really compute."""
    calls = []
    real_group, real_one = sweeps.run_group, sweeps.run_synthetic

    @functools.wraps(real_group)
    def run_group(configs, data=None, **kwargs):
        calls.extend(configs)
        return real_group(configs, data, **kwargs)

    @functools.wraps(real_one)
    def run_synthetic(cfg, progress=False, **kwargs):
        calls.append(cfg)
        return real_one(cfg, progress=progress, **kwargs)

    monkeypatch.setattr(sweeps, "run_group", run_group)
    monkeypatch.setattr(sweeps, "run_synthetic", run_synthetic)
    return calls


def _was_cached(result):
    """Loaded from the store rather than trained now (``RunResult.cached``)."""
    return bool(getattr(result, "cached", False) or result.metrics.get("cached", False))


# ------------------------------------------------------------------------- keys

def _other_value(value, name):
    """A different value of the same kind (validity does not matter: keys do not validate)."""
    if value is None:
        return 7
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.125
    if isinstance(value, str):
        return value + "-other"
    raise AssertionError(f"no other value for field {name}={value!r}; extend _other_value")


# Built from dataclasses.fields, so a field added to a run config later is covered without
# editing this list (and _other_value fails loudly for a type it cannot vary).
FIELD_CASES = [pytest.param(cls, f.name, id=f"{cls.__name__}.{f.name}")
               for cls in (SyntheticRun, CifarRun) for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls, name", FIELD_CASES)
def test_changing_any_field_changes_the_key(cls, name):
    base = cls()
    changed = dataclasses.replace(base, **{name: _other_value(getattr(base, name), name)})
    runner = "run_synthetic" if cls is SyntheticRun else "run_cifar"
    assert sweeps.run_key(changed, runner) != sweeps.run_key(base, runner)


@pytest.mark.parametrize("cls", [SyntheticRun, CifarRun])
def test_same_config_same_key(cls):
    a, b = cls(seed=3, codebook_size=64), cls(seed=3, codebook_size=64)
    assert a is not b
    assert sweeps.run_key(a, "r") == sweeps.run_key(b, "r") == sweeps.run_key(a, "r")
    assert len(sweeps.run_key(a, "r")) >= 16


def test_runner_changes_the_key():
    cfg = SyntheticRun()
    assert sweeps.run_key(cfg, "run_synthetic") != sweeps.run_key(cfg, "run_other")


def _cifar(seed, n_train=20, n_test=10):
    return random_cifar(n_train, n_test, seed=seed)


def test_cifar_data_changes_the_key():
    cfg = CifarRun()
    a, b, c = _cifar(0), _cifar(0), _cifar(1)
    assert sweeps.run_key(cfg, "run_cifar", a) == sweeps.run_key(cfg, "run_cifar", b)
    assert sweeps.run_key(cfg, "run_cifar", a) != sweeps.run_key(cfg, "run_cifar", c)
    assert sweeps.run_key(cfg, "run_cifar", a) != sweeps.run_key(cfg, "run_cifar", _cifar(0, n_train=30))
    assert sweeps.run_key(cfg, "run_cifar", a) != sweeps.run_key(cfg, "run_cifar", None)


def test_code_change_changes_the_key(monkeypatch):
    cfg = SyntheticRun()
    before = sweeps.run_key(cfg, "run_synthetic")
    monkeypatch.setattr(sweeps, "code_fingerprint", lambda: "0123456789abcdef")
    assert sweeps.run_key(cfg, "run_synthetic") != before


# ----------------------------------------------------------------- stored vs fresh

def _assert_same_result(a, b):
    assert a.config == b.config
    assert a.history == b.history
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name], err_msg=name)
    strip = lambda m: {k: v for k, v in m.items() if k != "cached"}  # noqa: E731
    assert strip(a.metrics) == pytest.approx(strip(b.metrics), nan_ok=True)


@pytest.mark.parametrize("method", ["scratch", "pretrained"])
def test_cached_result_equals_fresh_one(method, tmp_path, counting):
    cfg = SyntheticRun(method=method, **TINY)
    [first] = sweeps.sweep([cfg], use_cache=True, cache_dir=tmp_path, progress=False)
    assert len(counting) == 1 and not _was_cached(first)
    assert _entries(tmp_path) == [sweeps.run_key(cfg, "run_synthetic")]
    [again] = sweeps.sweep([cfg], use_cache=True, cache_dir=tmp_path, progress=False)
    assert len(counting) == 1, "the stored run was computed again"
    assert _was_cached(again)
    _assert_same_result(first, again)
    [fresh] = sweeps.sweep([cfg], use_cache=False, cache_dir=tmp_path, progress=False)
    assert len(counting) == 2
    assert not _was_cached(fresh)
    _assert_same_result(fresh, again)
    # the weights are stored too
    state = sweeps.load_result(tmp_path / _entries(tmp_path)[0], with_state=True).state_dict
    assert state.keys() == first.state_dict.keys()
    for k in state:
        assert (state[k] == first.state_dict[k]).all(), k


def test_no_cache_env_stores_nothing(tmp_path, monkeypatch, counting):
    monkeypatch.setenv("VQPAPER_NO_CACHE", "1")
    cfg = SyntheticRun(**TINY)
    sweeps.sweep([cfg], cache_dir=tmp_path, progress=False)
    sweeps.sweep([cfg], cache_dir=tmp_path, progress=False)
    assert len(counting) == 2 and _entries(tmp_path) == []


def test_changed_parameter_is_computed_not_reused(tmp_path, counting):
    sweeps.sweep([SyntheticRun(**TINY)], use_cache=True, cache_dir=tmp_path, progress=False)
    sweeps.sweep([SyntheticRun(**{**TINY, "lr": 2e-3})], use_cache=True, cache_dir=tmp_path, progress=False)
    assert len(counting) == 2 and len(_entries(tmp_path)) == 2


# ------------------------------------------------------------ a sweep killed mid-way

CHILD = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, {root!r})
    from vqpaper import sweeps
    from vqpaper.config import SyntheticRun

    real = sweeps.run_group

    def run_group(configs, data=None, **kwargs):
        time.sleep(1.5)  # a slow group: time for the parent to see two stored and kill us
        return real(configs, data, **kwargs)

    sweeps.run_group = run_group
    # four groups of one (a learning rate each): stored one after another
    configs = [SyntheticRun(seed=seed, **{tiny!r}, lr=1e-3 * (1 + seed)) for seed in range(4)]
    sweeps.sweep(configs, progress=False)
    print("finished all", flush=True)
''')


@pytest.mark.slow  # kills and restarts a sweep process
@pytest.mark.timeout(300)
def test_killed_sweep_resumes_without_recomputing_or_losing_points(tmp_path, monkeypatch, counting):
    cache = tmp_path / "cache"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(paths.ROOT), tiny=TINY))
    env = dict(os.environ, VQPAPER_CACHE=str(cache), VQPAPER_BUILD=str(tmp_path / "build"))
    env.pop("VQPAPER_NO_CACHE", None)
    child = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while len(_entries(cache)) < 2:
            if child.poll() is not None:
                pytest.fail(f"the sweep ended before it could be killed:\n{child.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail("no two points stored within 180 s")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    stored = _entries(cache)
    assert 2 <= len(stored) < 4, stored

    # a kill in the middle of a write leaves at most a .partial-* folder: it must never be read
    (cache / ".partial-killed").mkdir()
    (cache / ".partial-killed" / "result.json").write_text("{ half a file")

    # started again (in this process, on the same store)
    monkeypatch.setattr(paths, "CACHE", cache)
    configs = [SyntheticRun(seed=seed, **TINY, lr=1e-3 * (1 + seed)) for seed in range(4)]
    keys = [sweeps.run_key(c, "run_synthetic") for c in configs]
    assert set(stored) <= set(keys)  # the keys of another process are the same
    results = sweeps.sweep(configs, use_cache=True, progress=False)

    computed = [c.seed for c in counting]
    missing = [c.seed for c, k in zip(configs, keys) if k not in stored]
    assert computed == missing, "only the points missing after the kill may be computed"
    assert len(results) == 4
    assert [r.config["seed"] for r in results] == [0, 1, 2, 3]
    for cfg, key, result in zip(configs, keys, results):
        assert _was_cached(result) == (key in stored)
        assert result.config == {**dataclasses.asdict(cfg), "precision": "float32"}
        assert np.isfinite(result.metrics["mse"]) and result.history
    assert _entries(cache) == sorted(keys)

    # a third start computes nothing
    counting.clear()
    again = sweeps.sweep(configs, use_cache=True, progress=False)
    assert counting == [] and all(_was_cached(r) for r in again)
    for a, b in zip(results, again):
        _assert_same_result(a, b)


# --------------------------------------------------------------------- the sweep's bar

def test_the_bar_steps_once_per_group_by_its_size(tmp_path, monkeypatch):
    """A group's runs finish together; stepping the bar per run would print an ETA from one run
    in a whole group's time (inflated by the group's size). Stored points count from the start."""
    steps = []

    class Recording(sweeps.tqdm):
        def update(self, n=1):
            steps.append(n)
            return super().update(n)

    monkeypatch.setattr(sweeps, "tqdm", Recording)
    group = [SyntheticRun(seed=s, **TINY) for s in range(3)]
    other = [SyntheticRun(seed=s, **{**TINY, "codebook_size": 8}) for s in range(2)]
    sweeps.sweep([group[0]], use_cache=True, cache_dir=tmp_path, progress=False)
    assert steps == [1]
    steps.clear()
    sweeps.sweep(group + other, use_cache=True, cache_dir=tmp_path, progress=False)
    assert steps == [2, 2], "the stored point is the bar's initial count; then one step per group"


# --------------------------------------------------------------------- emptying it

def test_clear_cache_empties_the_store(tmp_path, counting):
    sweeps.sweep([SyntheticRun(seed=s, **TINY) for s in range(2)], use_cache=True, cache_dir=tmp_path / "c",
                 progress=False)
    (tmp_path / "c" / ".partial-x").mkdir()
    assert len(_entries(tmp_path / "c")) == 2
    assert sweeps.clear_cache(tmp_path / "c") == 2
    assert not (tmp_path / "c").exists()
    assert sweeps.clear_cache(tmp_path / "c") == 0
    sweeps.sweep([SyntheticRun(seed=0, **TINY)], use_cache=True, cache_dir=tmp_path / "c", progress=False)
    assert len(counting) == 3, "after clear_cache the point is computed again"


def test_clean_cache_command_empties_the_store(tmp_path):
    cache = tmp_path / "cache"
    sweeps.sweep([SyntheticRun(**TINY)], use_cache=True, cache_dir=cache, progress=False)
    assert len(_entries(cache)) == 1
    env = dict(os.environ, VQPAPER_CACHE=str(cache), VQPAPER_BUILD=str(tmp_path / "build"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(paths.ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "vqpaper.cli", "clean-cache"]
    proc = subprocess.run(cmd, cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "removed" in proc.stdout
    assert not cache.exists()
    proc = subprocess.run(cmd, cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "nothing to remove" in proc.stdout


def _cifar_tiny(n_train=64, n_test=16):
    return random_cifar(n_train, n_test)


CIFAR_TINY = dict(token_dim=8, channels=8, residual_channels=4, epochs=2, pretrain_epochs=2, finetune_epochs=2,
                  batch_size=16, kmeans_vectors=256, method="pretrained")


def test_a_codebook_sweep_pretrains_once_per_seed_and_gives_the_numbers_of_a_fresh_run(tmp_path, monkeypatch):
    """Pretraining does not depend on the codebook: the runs of a sweep over K start from one stored
    autoencoder per seed (CACHE/pretrain), and a run that restored it equals one that trained it."""
    from vqpaper import train

    data = _cifar_tiny()
    stages = []
    real = train._train_stage

    def counting_stage(*args, **kwargs):
        stages.append(kwargs["stage"])
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "_train_stage", counting_stage)
    configs = [CifarRun(codebook_size=k, seed=s, **CIFAR_TINY) for k in (16, 32, 64) for s in (0, 1)]
    out = sweeps.sweep(configs, data, use_cache=True, cache_dir=tmp_path / "cache", progress=False)
    assert stages.count("pretrain") == 2 and stages.count("finetune") == 6, stages
    assert len(list((tmp_path / "cache" / "pretrain").iterdir())) == 2
    fresh = train.run_cifar(configs[-1], data)  # K = 64, seed 1, pretrained here from scratch
    assert out[-1].history == fresh.history and out[-1].metrics == fresh.metrics
    np.testing.assert_array_equal(out[-1].arrays["codebook"], fresh.arrays["codebook"])
    # anything that changes pretraining changes the entry: another learning rate pretrains again
    sweeps.sweep([dataclasses.replace(configs[0], lr=1e-3)], data, use_cache=True, cache_dir=tmp_path / "cache",
                 progress=False)
    assert stages.count("pretrain") == 4 and len(list((tmp_path / "cache" / "pretrain").iterdir())) == 3
