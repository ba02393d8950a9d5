"""Sweeps on Ray (vqpaper.executors): the same results as in-process, resumable, safe when shared.

* a sweep through a local Ray instance (2 workers) returns exactly the in-process results, in
  the order of its configs; the CIFAR data travel once; an error comes back as its own type;
* a driver killed mid-sweep leaves no Ray process behind, and started again computes only the
  points that were not stored;
* two drivers sweeping the same points at once on one instance leave one complete entry per key;
* ``auto`` picks the executor as documented, and ``import vqpaper`` does not import ray.
"""
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import random_cifar

from vqpaper import executors, paths, sweeps
from vqpaper.config import CifarRun, SyntheticRun
from vqpaper.errors import ConfigError, TrainingDiverged

TINY = dict(n_per_cluster=50, epochs=2, pretrain_epochs=1, finetune_epochs=1, codebook_size=16, kmeans_iters=2)
RAY_TIMEOUT_S = 120  # no point of these sweeps takes more than a few seconds


def _cifar(n_train=40, n_test=16):
    return random_cifar(n_train, n_test)


CIFAR_TINY = dict(token_dim=8, channels=8, residual_channels=4, epochs=1, pretrain_epochs=1, finetune_epochs=1,
                  batch_size=16, codebook_size=64, kmeans_vectors=256)


def _entries(cache):
    if not cache.is_dir():
        return []
    return sorted(p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".partial-")
                  and (p / "result.json").is_file())


def _assert_same(a, b):
    assert a.config == b.config
    assert a.history == b.history
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name], err_msg=name)
    assert a.metrics.keys() == b.metrics.keys()
    for k, v in a.metrics.items():
        assert v == b.metrics[k] or (v != v and b.metrics[k] != b.metrics[k]), k


@pytest.fixture(scope="module")
def ray_executor():
    """One local Ray instance (2 CPUs) for this module; afterwards none of its processes may remain."""
    pytest.importorskip("ray")
    ex = executors.RayExecutor(num_cpus=2, timeout_s=RAY_TIMEOUT_S)
    ex.start()
    sid = ex._head.proc.pid  # the supervisor leads the session of every process of the instance
    try:
        yield ex
    finally:
        ex.close()
    deadline = time.monotonic() + 15  # a process killed a moment ago may still be on its way out
    while executors._session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = executors._session_pids(sid)
    assert left == [], "the Ray instance left processes behind: " + subprocess.run(
        ["ps", "-o", "pid,stat,args", "-p", ",".join(map(str, left))], capture_output=True, text=True).stdout


@pytest.fixture
def counting(monkeypatch):
    """The runs a sweep computes in this process (its groups go through ``sweeps.run_group``)."""
    calls = []
    real = sweeps.run_group

    @functools.wraps(real)
    def run_group(configs, data=None, **kwargs):
        calls.extend(configs)
        return real(configs, data, **kwargs)

    monkeypatch.setattr(sweeps, "run_group", run_group)
    return calls


# ------------------------------------------------------------------ same results as in-process

@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ray_sweep_gives_the_in_process_results_in_order(ray_executor, tmp_path):
    data = _cifar()
    configs = [SyntheticRun(seed=1, method="pretrained", **TINY), CifarRun(method="pretrained", **CIFAR_TINY),
               SyntheticRun(seed=0, **TINY), SyntheticRun(seed=0, quantizer="simvq", **TINY)]
    on_ray = sweeps.sweep(configs, data, use_cache=True, cache_dir=tmp_path, progress=False, executor=ray_executor)
    local = sweeps.sweep(configs, data, use_cache=False, progress=False, executor="local")
    assert [r.config for r in on_ray] == [{**dataclasses.asdict(c), "precision": "float32"} for c in configs]
    for a, b in zip(on_ray, local):
        _assert_same(a, b)
    assert len(_entries(tmp_path)) == 4
    # stored by the driver as they arrived: read back, they are the same too
    again = sweeps.sweep(configs, data, use_cache=True, cache_dir=tmp_path, progress=False, executor=ray_executor)
    assert all(r.cached for r in again)
    for a, b in zip(again, local):
        _assert_same(a, b)
    # the data went into the object store once, and stays there for the next sweep
    (held, ref), = ray_executor._data_refs.values()
    sweeps.sweep([dataclasses.replace(configs[1], seed=5)], data, use_cache=False, progress=False,
                 executor=ray_executor)
    assert list(ray_executor._data_refs.values()) == [(held, ref)]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_error_on_ray_comes_back_as_itself(ray_executor):
    diverging = SyntheticRun(method="pretrained", lr=1e30, n_per_cluster=20, pretrain_epochs=2, finetune_epochs=2)
    with pytest.raises(TrainingDiverged, match=r"epoch \d+/\d+, step \d+") as err:
        sweeps.sweep([SyntheticRun(**TINY), diverging], use_cache=False, progress=False, executor=ray_executor)
    assert isinstance(err.value.history, list)


# --------------------------------------------------------------- a killed driver, then resumed

KILLED = textwrap.dedent('''
    import sys, time
    from vqpaper import executors, sweeps
    from vqpaper.config import SyntheticRun

    real = sweeps.run_group

    def run_group(configs, data=None, **kwargs):
        time.sleep(1.2)  # a slow group: time for the parent to see two stored and kill us
        return real(configs, data, **kwargs)

    sweeps.run_group = run_group  # pickled by value: the Ray workers run it too
    ex = executors.RayExecutor(num_cpus=2, timeout_s=120)
    ex.start()
    print("session", ex._head.proc.pid, flush=True)
    # four groups of one (a learning rate each), two at a time on the instance's 2 CPUs
    sweeps.sweep([SyntheticRun(seed=seed, **{tiny!r}, lr=1e-3 * (1 + seed)) for seed in range(4)], progress=False,
                 executor=ex)
    print("finished all", flush=True)
''')


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_ray_driver_leaves_no_process_and_resumes_without_recomputing(tmp_path, monkeypatch, counting):
    pytest.importorskip("ray")
    cache = tmp_path / "cache"
    script = tmp_path / "driver.py"
    script.write_text(KILLED.format(tiny=TINY))
    env = dict(os.environ, VQPAPER_CACHE=str(cache), VQPAPER_BUILD=str(tmp_path / "build"))
    env.pop("VQPAPER_NO_CACHE", None)
    env.pop("RAY_ADDRESS", None)
    child = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    sid = None
    try:
        line = child.stdout.readline()
        assert line.startswith("session "), f"the driver did not start Ray: {line!r}"
        sid = int(line.split()[1])
        deadline = time.monotonic() + 180
        while len(_entries(cache)) < 2:
            if child.poll() is not None:
                pytest.fail(f"the sweep ended before it could be killed: {child.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail("no two points stored within 180 s")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        # the supervisor sees the pipe close and ends every Ray process of the instance
        deadline = time.monotonic() + 30
        while executors._session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert executors._session_pids(sid) == [], "Ray processes outlived the killed driver"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if sid is not None:
            executors._end_session(sid, grace_s=0)
    stored = _entries(cache)
    assert 2 <= len(stored) < 4, stored

    monkeypatch.setattr(paths, "CACHE", cache)
    configs = [SyntheticRun(seed=seed, **TINY, lr=1e-3 * (1 + seed)) for seed in range(4)]
    keys = [sweeps.run_key(c, "run_synthetic") for c in configs]
    assert set(stored) <= set(keys)
    results = sweeps.sweep(configs, use_cache=True, progress=False, executor="local")
    assert [c.seed for c in counting] == [c.seed for c, k in zip(configs, keys) if k not in stored]
    assert [r.config["seed"] for r in results] == [0, 1, 2, 3]
    assert [bool(r.cached) for r in results] == [k in stored for k in keys]
    assert _entries(cache) == sorted(keys)


# ------------------------------------------------------------ two drivers on one instance

TWO = textwrap.dedent('''
    import json, sys
    from vqpaper import executors, sweeps
    from vqpaper.config import SyntheticRun

    configs = [SyntheticRun(seed=seed, **{tiny!r}) for seed in (0, 1, 2)]
    executors.get_executor().start()  # joins the instance at RAY_ADDRESS
    print("ready", flush=True)
    sys.stdin.readline()              # both drivers submit at the same moment
    results = sweeps.sweep(configs, progress=False)
    print(json.dumps({{"computed": sum(not r.cached for r in results), "histories": [r.history for r in results]}}))
''')


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_sweeps_at_once_on_one_instance_leave_complete_entries(ray_executor, tmp_path, monkeypatch, counting):
    """A second driver (another process) and this one sweep the same points into one cache at once."""
    cache = tmp_path / "cache"
    script = tmp_path / "driver.py"
    script.write_text(TWO.format(tiny=TINY))
    env = dict(os.environ, VQPAPER_CACHE=str(cache), VQPAPER_BUILD=str(tmp_path / "build"),
               VQPAPER_EXECUTOR="ray", RAY_ADDRESS=ray_executor.gcs_address, **ray_executor.auth_env)
    env.pop("VQPAPER_NO_CACHE", None)
    other = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    configs = [SyntheticRun(seed=seed, **TINY) for seed in (0, 1, 2)]
    try:
        assert other.stdout.readline().strip() == "ready", other.stderr.read()[-3000:]
        other.stdin.write("go\n")
        other.stdin.flush()
        here = sweeps.sweep(configs, use_cache=True, cache_dir=cache, progress=False, executor=ray_executor)
        out, err = other.communicate(timeout=240)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert other.returncode == 0, err[-3000:]
    there = json.loads(out.strip().splitlines()[-1])
    assert there["histories"] == [r.history for r in here]
    # both computed points of the same keys and wrote them to one cache
    assert there["computed"] >= 1 and sum(not r.cached for r in here) >= 1
    assert _entries(cache) == sorted(sweeps.run_key(c, "run_synthetic") for c in configs)
    assert not [p for p in cache.iterdir() if p.name.startswith(".partial-")]
    monkeypatch.setattr(paths, "CACHE", cache)
    stored = sweeps.sweep(configs, use_cache=True, progress=False, executor="local")
    assert counting == [] and all(r.cached for r in stored)
    for a, b in zip(stored, here):
        _assert_same(a, b)


# --------------------------------------------------------------------------- choosing one

def test_auto_is_ray_with_a_cluster_address_and_local_on_a_small_cpu_machine(monkeypatch):
    monkeypatch.delenv("VQPAPER_EXECUTOR", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert executors.resolve_name() == "ray"
    monkeypatch.delenv("RAY_ADDRESS")
    assert executors.resolve_name(address="10.0.0.1:6379") == "ray"
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert executors.resolve_name() == "local"
    assert isinstance(executors.get_executor(None), executors.LocalExecutor)
    monkeypatch.setenv("VQPAPER_EXECUTOR", "local")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert executors.resolve_name() == "local"  # an explicit choice wins over the address


def test_bad_executor_options_name_the_value_and_what_is_allowed(monkeypatch):
    monkeypatch.setenv("VQPAPER_EXECUTOR", "dask")
    with pytest.raises(ConfigError, match=r"executor must be one of \['auto', 'local', 'ray'\], got 'dask'"):
        executors.resolve_name()
    with pytest.raises(ConfigError, match="gpus_per_run must be 0, a fraction of one GPU like 0.25.*got 1.5"):
        executors.check_gpus_per_run(1.5)
    with pytest.raises(ConfigError, match="cpus_per_run must be a positive number, got 0"):
        executors.check_cpus_per_run(0)
    ex = executors.RayExecutor(gpus_per_run=0.5)
    assert ex._options(CifarRun(device="cuda"), threads=1) == {"num_cpus": 1, "num_gpus": 0.5}
    assert ex._options(CifarRun(), threads=3) == {"num_cpus": 3, "num_gpus": 0}  # a CPU run reserves no GPU


def test_importing_vqpaper_does_not_import_ray():
    code = ("import sys, vqpaper, vqpaper.sweeps, vqpaper.experiments, vqpaper.executors, vqpaper.plan; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_book_instance_passes_the_choice_to_the_kernels_without_starting_ray_needlessly(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("VQPAPER_EXECUTOR", raising=False)
    with executors.book_instance("local", None, cpus_per_run=2) as env:
        assert env == {"VQPAPER_EXECUTOR": "local", "VQPAPER_CPUS_PER_RUN": "2"}
    with executors.book_instance("ray", "10.0.0.1:6379", gpus_per_run=0.5) as env:  # a cluster: joined, not started
        assert env == {"VQPAPER_EXECUTOR": "ray", "RAY_ADDRESS": "10.0.0.1:6379", "VQPAPER_GPUS_PER_RUN": "0.5"}
    with pytest.raises(ConfigError, match="gpus_per_run"):
        with executors.book_instance("ray", "10.0.0.1:6379", gpus_per_run=3.5):
            pass


EMPTY_HOME = """
import sys
from vqpaper import executors, sweeps
from vqpaper.config import SyntheticRun, set_threads

set_threads(1)
ex = executors.RayExecutor(num_cpus=1, timeout_s=120)
try:
    out = sweeps.sweep([SyntheticRun(seed=0, **{tiny})], use_cache=False, progress=False, executor=ex)
    print("ok", out[0].metrics["perplexity"])
finally:
    ex.close()
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_local_ray_instance_starts_on_a_machine_that_never_ran_ray(tmp_path):
    """HOME empty (no ~/.ray/auth_token, as on a new machine): the instance starts with its own token,
    and nothing is written to HOME's .ray either (issue 20: `ray start` does not create a missing token)."""
    pytest.importorskip("ray")
    home = tmp_path / "home"
    home.mkdir()
    script = tmp_path / "empty_home.py"
    script.write_text(EMPTY_HOME.format(tiny=TINY))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), VQPAPER_BUILD=str(tmp_path / "build"))
    proc = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=220)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stdout[-2000:] + proc.stderr[-4000:]
    assert not (home / ".ray" / "auth_token").exists()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_point_asking_for_more_cpus_than_the_cluster_has_is_refused_at_once(ray_executor, monkeypatch):
    monkeypatch.setattr(ray_executor, "cpus_per_run", 64)
    with pytest.raises(executors.ExecutorError, match="num_cpus=64 but the Ray cluster has 2 CPU"):
        sweeps.sweep([SyntheticRun(seed=0, **TINY)], use_cache=False, progress=False, executor=ray_executor)
