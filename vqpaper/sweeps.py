"""Sweeps that survive a kill: every finished run is stored under a key of its full config.

A sweep over codebook sizes, encoder widths or seeds is a list of run configs. Each finished
run is written (atomically) to ``CACHE/<key>/`` — its metrics and history as JSON, its arrays
as ``.npz``, its weights as a small checkpoint — where ``key`` hashes the run's full config,
the runner, the data it saw and the source of the code that produced it
(:mod:`vqpaper.fingerprint`). Started again after a kill, a sweep skips what is finished and
loses nothing; change any parameter (or the code) and the key changes, so a stale result is
never reused. :func:`clear_cache` removes the store.

The points not in the store train in groups (:func:`vqpaper.train.groups_of`): runs that differ
only in their seeds train as one batched model (:func:`vqpaper.train.run_group`), and since a
run's numbers do not depend on its group, each is stored under its own key as if it had trained
alone. Where the groups run is an executor's job (:mod:`vqpaper.executors`): in this process, one
after another, or as Ray tasks collected as they finish. Either way this module stores each
result the moment its group returns, so a killed driver loses only the groups still running,
and two sweeps writing the same key at once leave one complete entry (:func:`save_result`).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
from tqdm import tqdm

from . import paths
from .config import CifarRun, SyntheticRun
from .executors import get_executor
from .fingerprint import code_fingerprint
from .settings import settings
from .train import (RunResult, compile_enabled, default_precision, device_of, groups_of, pretrain_fields, run_cifar,
                    run_group, run_synthetic)


def data_fingerprint(data) -> Optional[dict]:
    """Identify a CIFAR dataset by its sizes and a hash of its pixels (cheap: strided sample)."""
    if data is None:
        return None
    h = hashlib.sha256()
    for arr in (data.x_train, data.y_train, data.x_test, data.y_test):
        a = np.ascontiguousarray(arr)
        h.update(str(a.shape).encode())
        h.update(a.reshape(-1)[:: max(1, a.size // 1_000_000)].tobytes())
    return {"n_train": int(data.n_train), "n_test": int(data.n_test), "pixels": h.hexdigest()[:16]}


def run_key(cfg, runner: str, data=None, precision: Optional[str] = None) -> str:
    """Hash of everything that determines a run's result (``precision``: default_precision() of its device).

    Not the group the run trained in: its numbers do not depend on it (vqpaper.train).
    """
    payload = {"config": asdict(cfg), "runner": runner, "data": data_fingerprint(data), "code": code_fingerprint(),
               "torch": torch.__version__, "precision": precision or default_precision(device_of(cfg))}
    if compile_enabled():
        payload["compile"] = True
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_folder(cache_dir=None) -> Path:
    """The store: ``cache_dir``, else ``paths.CACHE`` (``VQPAPER_CACHE``, default ``_build/cache``)."""
    return Path(cache_dir) if cache_dir is not None else paths.CACHE


def runner_of(cfg):
    """The training function of a run config: ``run_synthetic`` or ``run_cifar``."""
    if isinstance(cfg, SyntheticRun):
        return run_synthetic
    if isinstance(cfg, CifarRun):
        return run_cifar
    raise TypeError(f"sweep needs SyntheticRun or CifarRun configs, got {type(cfg).__name__}")


def entry_folder(cfg, data=None, precision: Optional[str] = None, cache_dir=None) -> Path:
    """Where the run of ``cfg`` is (or would be) stored; it is finished when ``result.json`` is there."""
    runner = runner_of(cfg)
    return cache_folder(cache_dir) / run_key(cfg, runner.__name__, data if runner is run_cifar else None, precision)


class PretrainStore:
    """The autoencoders pretrained for ``pretrained`` runs, under ``CACHE/pretrain/<key>``.

    A run's pretraining does not depend on its codebook or anything after it
    (:func:`vqpaper.train.pretrain_fields`), so the runs of a codebook sweep pretrain once per seed.
    The key hashes those fields with the data, the code, the torch version and the precision, as a
    run's key does; an entry (the weights and the stage's history) is written atomically.
    """

    def __init__(self, data=None, cache_dir=None, precision: Optional[str] = None):
        # the data's fingerprint, not the data: the store travels with every Ray task
        self.data, self.cache_dir, self.precision = data_fingerprint(data), cache_dir, precision

    def _folder(self, cfg) -> Path:
        precision = self.precision or default_precision(device_of(cfg))
        payload = {"pretraining": pretrain_fields(cfg), "runner": runner_of(cfg).__name__,
                   "data": self.data if runner_of(cfg) is run_cifar else None,
                   "code": code_fingerprint(), "torch": torch.__version__, "precision": precision,
                   **({"compile": True} if compile_enabled() else {})}
        key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]
        return cache_folder(self.cache_dir) / "pretrain" / key

    def load(self, cfg) -> Optional[dict]:
        folder = self._folder(cfg)
        if not (folder / "entry.json").exists():
            return None
        history = json.loads((folder / "entry.json").read_text())["history"]
        return {"state": torch.load(folder / "weights.pt", weights_only=True), "history": history}

    def save(self, cfg, entry: dict) -> None:
        folder = self._folder(cfg)
        if (folder / "entry.json").exists():
            return
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder.parent))
        try:
            torch.save(entry["state"], tmp / "weights.pt")
            (tmp / "entry.json").write_text(json.dumps({"history": entry["history"]}, default=float))
            try:
                os.replace(tmp, folder)
            except OSError:  # another sweep stored it first: keep that one
                if not (folder / "entry.json").exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def save_result(result: RunResult, directory: Path):
    """Write ``result`` to ``directory`` atomically: a kill mid-write leaves no half entry.

    Safe when two sweeps (two notebooks, two drivers on one Ray cluster) finish the same key at
    once: the entry appears by one ``rename`` of a complete folder, a finished entry is never
    removed or rewritten (same key, same result), and the loser of the race discards its copy.
    A reader therefore sees either no entry or a complete one.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    if (directory / "result.json").exists():
        return
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=directory.parent))
    try:
        meta = {"config": result.config, "history": result.history, "metrics": result.metrics,
                "checkpoint": result.checkpoint, "wall_time_s": result.wall_time_s}
        (tmp / "result.json").write_text(json.dumps(meta, indent=1, default=float))
        # uncompressed: zlib cost 19 ms a run (0.8 ms plain) for 1.8x less disk, and slowed every read
        np.savez(tmp / "arrays.npz", **result.arrays)
        if result.state_dict is not None:
            torch.save(result.state_dict, tmp / "model.pt")
        if directory.exists() and not (directory / "result.json").exists():
            # not an entry (entries appear complete): move it aside atomically, then remove it
            with contextlib.suppress(OSError):
                aside = Path(tempfile.mkdtemp(prefix=".partial-", dir=directory.parent))
                os.replace(directory, aside / "old")
                shutil.rmtree(aside, ignore_errors=True)
        try:
            os.replace(tmp, directory)
        except OSError:
            if not (directory / "result.json").exists():
                raise
            # another sweep stored this key between our check and our rename: keep its entry
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_result(directory: Path, with_state: bool = False) -> RunResult:
    meta = json.loads((directory / "result.json").read_text())
    with np.load(directory / "arrays.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    state = torch.load(directory / "model.pt", weights_only=True) if with_state and (directory / "model.pt").exists() \
        else None
    return RunResult(meta["config"], meta["history"], arrays, meta["metrics"], meta["wall_time_s"], state,
                     checkpoint=meta.get("checkpoint"))


def _load_cached(directory: Path) -> RunResult:
    result = load_result(directory)
    result.cached = True
    return result


def sweep(configs: Iterable, data=None, *, use_cache: Optional[bool] = None, cache_dir=None, progress: bool = True,
          desc: str = "sweep", executor=None, precision: Optional[str] = None) -> list[RunResult]:
    """Run every config (synthetic or CIFAR, chosen by its type); finished points come from the cache.

    The points not in the cache are grouped (:func:`vqpaper.train.groups_of`: same shape, data
    size, schedule, quantizer, device and precision, at most ``train.MAX_GROUP`` runs) and every
    group goes to ``executor`` (``"local"``, ``"ray"``, ``"auto"``, an executor object, or
    ``None``: ``executors.default_executor()``, from ``VQPAPER_EXECUTOR`` and ``RAY_ADDRESS``) as
    one task; each result is stored under its own key as soon as its group returns. Returns the
    results in the order of ``configs``, whatever order they finished in; the same with either
    executor and whatever the grouping. A run that diverged raises its TrainingDiverged once
    the other runs of its group are stored. ``precision``: ``train.PRECISIONS``, default
    ``VQPAPER_PRECISION``, else TF32 on CUDA and float32 on a CPU.
    """
    if use_cache is None:
        use_cache = use_cache_default()
    configs = list(configs)
    todo, results, directories, precisions, first_of = [], [None] * len(configs), [], [], {}
    duplicates = []  # (index, index of the same key's first occurrence)
    for i, cfg in enumerate(configs):
        precisions.append(precision or default_precision(device_of(cfg)))
        directory = entry_folder(cfg, data, precisions[i], cache_dir)
        directories.append(directory)
        if use_cache and (directory / "result.json").exists():
            results[i] = _load_cached(directory)
        elif use_cache and directory in first_of:
            duplicates.append((i, first_of[directory]))  # computed once, then read back like a cached point
        else:
            first_of[directory] = i
            todo.append(i)
    tasks = []  # (indices, configs, runner, precision): one group each
    for group in groups_of([configs[i] for i in todo], [precisions[i] for i in todo]):
        indices = [todo[j] for j in group]
        store = PretrainStore(data, cache_dir, precisions[indices[0]])
        runner = functools.partial(run_group, pretrain_store=store) if use_cache else run_group
        tasks.append((indices, [configs[i] for i in indices], runner, precisions[indices[0]]))
    # One step per run (unit "run": vqpaper.progress tells this bar from a run's epoch bar); the
    # stored points count from the start (``initial``), so the ETA (smoothing=0: the mean over the
    # runs trained here) comes from the runs finished so far, not from cache reads that took no time.
    # A group's runs finish together: the bar steps once per group, by its size, so that tqdm's rate
    # is the group's runs over its time. One step per run would print an ETA from the first run alone
    # (one run in a whole group's time: the ETA inflated by the group's size until the next group).
    # mininterval=0: every step is shown. It steps once per group, and tqdm's default (0.1 s) would
    # swallow the step of a group that finished within 0.1 s of the last print (a 1-epoch group),
    # leaving "run 0/N, ETA ?" on screen while the next group trains.
    bar = tqdm(total=len(configs), initial=len(configs) - len(todo), desc=desc, unit="run", smoothing=0,
               mininterval=0, miniters=1, disable=not progress)
    task_of = {i: t for t, (indices, *_) in enumerate(tasks) for i in indices}
    waiting = [len(indices) for indices, *_ in tasks]   # runs of each group not yet delivered

    def done(index: int, result: RunResult):
        if use_cache:
            save_result(result, directories[index])
        results[index] = result
        t = task_of[index]
        waiting[t] -= 1
        if waiting[t] == 0:
            bar.update(len(tasks[t][0]))

    try:
        get_executor(executor).run(tasks, data, done, progress=progress)
    finally:
        # a group stopped by a run's error: the runs of it that were stored still count
        stored = sum(len(indices) - left for (indices, *_), left in zip(tasks, waiting) if left)
        if stored:
            bar.update(stored)
        bar.close()
    for i, first in duplicates:
        results[i] = _load_cached(directories[first])
    return results


def clear_cache(cache_dir=None) -> int:
    """Remove every stored run; returns how many were removed."""
    d = cache_folder(cache_dir)
    if not d.exists():
        return 0
    n = sum(1 for p in d.iterdir() if p.is_dir() and not p.name.startswith(".partial-") and p.name != "pretrain")
    shutil.rmtree(d)
    return n


def use_cache_default() -> bool:
    """``VQPAPER_NO_CACHE=1`` turns the store off (the determinism test uses it)."""
    return not settings().no_cache

