"""A cost plan before launch: every run the book would execute, and how long it would take.

    vqpaper plan --profile paper [--gpus N]

1. **Runs.** For each notebook, the run configs it builds: ``experiments.run_list``, the one
   function the notebook calls too. A run that two notebooks share (same cache key) is counted
   once; a run already in the cache is listed but costs nothing.
2. **Steps.** Synthetic: ``n_per_cluster x n_clusters`` points; CIFAR-10: the training images
   the profile implies (paper: all 50,000; ci: the 5,085-image subset, or ``train_images``),
   without loading the data. ``n // batch_size`` full batches per epoch (train.py drops the rest).
3. **Groups.** The runs still to do train in the groups ``sweeps.sweep`` forms, per notebook
   sweep (``train.groups_of``: runs that differ only in their seeds train as one model).
4. **FLOPs.** One training step of each shape, forward + backward, counted by
   ``torch.utils.flop_counter.FlopCounterMode`` (on the meta device: no arithmetic), as an
   autoencoder and with its quantizer (whose share, the distances of eq. 1, stays float32 in
   every precision); times the run's steps, plus its K-means initialisation and evaluation
   passes (:func:`run_flops`). The lower bound on one H100 puts every FLOP at the dense peak
   (:data:`H100_PEAK_FLOPS`), the quantizer's at FP32.
5. **Time per group, measured here.** On the current device (CPU: this process's torch threads,
   1 by default), for each distinct shape and group size, through train's public functions:

   * synthetic groups: two real groups (``train.run_group``) of the same shape and size at 1 and
     3 epochs; their difference gives the time per epoch, the rest is the fixed cost (data,
     K-means, evaluation, metrics);
   * CIFAR-10 groups: a few real training steps (``train.train_step``) of the group's autoencoder
     and of its VQ-VAE (K-means off); plus the initialisation (encoding the training set, then
     ``kmeans_iters + 1`` nearest-token searches over its latents, timed on 8,192 of them) and the
     evaluation passes (a forward pass over train and test, at the end and at the checkpoint,
     counted as 1/3 of a training step per batch).
6. **Wall time.** One device runs the groups one after another: the sum. ``N`` devices: the
   groups scheduled longest first, each to the device that frees up first (LPT), which is what
   Ray does with one group per device; packing several small groups per GPU (``gpus_per_run <
   1``) can do better, and is not counted.

The estimate is a model, not a measurement of the whole book: per-step times of short timings
(caches cold, clocks not boosted, another process on the machine) can be off by tens of
percent; book/reproduce.md says how the numbers it quotes were obtained.
"""
from __future__ import annotations

import heapq
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Optional, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import experiments as ex
from . import sweeps
from .config import PRESETS, CifarRun, SyntheticRun, notebook_config, resolve_device, reuse_freed_memory
from .quantizers import nearest_token
from .train import (at_precision, default_precision, denormals_flushed, groups_of, new_model, new_optimizer,
                    new_quantizer, run_group, train_step)

#: Training and test images of CIFAR-10 as each profile implies them (data.FULL_COUNTS; the ci
#: subset's counts are in vqpaper/manifests/cifar10-ci.json).
CIFAR_IMAGES = {"paper": (50_000, 10_000), "ci": (5_085, 1_017)}
#: Latent vectors per CIFAR-10 image: the conv VQ-VAE maps 32 x 32 to 8 x 8 (models.ConvVQVAE).
LATENTS_PER_IMAGE = 64


# --------------------------------------------------------------------------------------
# 1. The runs of each notebook: experiments.run_list, which the notebook itself calls
# --------------------------------------------------------------------------------------
def notebook_runs(notebook: str, profile: str, **overrides) -> dict:
    """``{sweep description: [run config, ...]}`` of ``notebook`` at ``profile``."""
    return ex.run_list(notebook_config(notebook, profile, **overrides))


# --------------------------------------------------------------------------------------
# 2. Steps, and which runs are stored already
# --------------------------------------------------------------------------------------
@dataclass
class PlannedRun:
    notebook: str
    sweep: str
    cfg: object
    n_train: int                 # points or training images one epoch goes over
    n_test: int = 0
    epochs: int = 0
    steps: int = 0
    cached: bool = False         # finished and in the cache: costs nothing
    shared_with: str = ""        # the same key is run by an earlier notebook (counted there)
    key: str = ""
    estimate_s: float = float("nan")   # its share of its group's time
    group: int = -1                    # which group it trains in (assign_groups)
    group_size: int = 0
    flops: float = 0.0                 # forward + backward, K-means, evaluation (run_flops)
    flops_quantizer: float = 0.0       # of which the quantizer's (float32 in every precision)

    @property
    def kind(self) -> str:
        return "cifar" if isinstance(self.cfg, CifarRun) else "synthetic"

    @property
    def to_run(self) -> bool:
        return not self.cached and not self.shared_with

    def describe(self) -> str:
        c = self.cfg
        if isinstance(c, CifarRun):
            width = "" if c.encoder_channels is None else f" enc{c.encoder_channels}"
            return (f"CIFAR {c.quantizer} {c.method} K={c.codebook_size:,} D={c.token_dim} ch{c.channels}/"
                    f"{c.residual_channels}{width} seed {c.seed}")
        extra = "" if c.ema_update == "eq5" else f" {c.ema_update}"
        return (f"{c.dim}-D {c.quantizer}{extra} {c.method} h{c.encoder_hidden} K={c.codebook_size} "
                f"seed {c.seed}")


def _epochs(cfg) -> int:
    return cfg.pretrain_epochs + cfg.finetune_epochs if cfg.method == "pretrained" else cfg.epochs


def planned_runs(profile: str = "paper", notebooks: Optional[Sequence[str]] = None, *, data=None,
                 cache_dir=None, precision: Optional[str] = None) -> list[PlannedRun]:
    """Every run of ``notebooks`` (default: all in ``experiments.RUN_LISTS``) at ``profile``, in book order.

    ``data``: the CIFAR-10 data the notebooks would load, if at hand; it decides the image counts
    and lets the CIFAR runs be looked up in the cache (their key hashes the pixels). Without it
    the counts are the profile's (:data:`CIFAR_IMAGES`) and CIFAR runs count as not stored.
    """
    n_train_default, n_test_default = CIFAR_IMAGES[profile]
    if data is not None:
        n_train_default, n_test_default = int(data.n_train), int(data.n_test)
    first: dict = {}
    out = []
    for notebook in (notebooks or list(ex.RUN_LISTS)):
        for sweep, configs in notebook_runs(notebook, profile).items():
            for cfg in configs:
                entry = sweeps.entry_folder(cfg, data, precision, cache_dir)
                key, cached = entry.name, (entry / "result.json").exists()
                if isinstance(cfg, CifarRun):
                    n_train = min(cfg.train_images or n_train_default, n_train_default)
                    n_test = n_test_default
                    cached = cached and data is not None  # without the data the key is not the notebook's
                else:
                    n_train, n_test = cfg.n_per_cluster * cfg.n_clusters, 0
                epochs = _epochs(cfg)
                run = PlannedRun(notebook, sweep, cfg, n_train, n_test, epochs,
                                 epochs * max(1, n_train // cfg.batch_size), cached, key=key)  # full batches
                if key in first and first[key] != notebook:
                    run.shared_with = first[key]
                elif key in first:
                    run.shared_with = notebook  # repeated within one notebook: run once
                first.setdefault(key, notebook)
                out.append(run)
    return out


# --------------------------------------------------------------------------------------
# 3. Groups, time and FLOPs per step
# --------------------------------------------------------------------------------------
def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def assign_groups(runs: Sequence[PlannedRun], precision: Optional[str] = None) -> list[list[PlannedRun]]:
    """The groups the runs still to do train in: per notebook sweep, as ``sweeps.sweep`` forms them
    (``train.groups_of``); each run's ``group_size`` is set."""

    groups = []
    by_sweep: dict = {}
    for r in runs:
        if r.to_run:
            by_sweep.setdefault((r.notebook, r.sweep), []).append(r)
    for members in by_sweep.values():
        for positions in groups_of([r.cfg for r in members], precision):
            group = [members[i] for i in positions]
            for r in group:
                r.group, r.group_size = len(groups), len(group)
            groups.append(group)
    return groups


def _synthetic_shape(cfg: SyntheticRun) -> tuple:
    return (cfg.dim, cfg.token_dim, cfg.encoder_hidden, cfg.decoder_hidden, cfg.codebook_size, cfg.quantizer,
            cfg.kmeans_init, cfg.n_per_cluster, cfg.n_clusters, cfg.batch_size, cfg.method)


def _seeded(cfg, size: int, device: str, **changes) -> list:
    """``size`` copies of ``cfg`` (seeds 0, 1, ...) on ``device``: a group to time."""
    return [replace(cfg, seed=s, device=device, **changes) for s in range(size)]


def time_synthetic(cfg: SyntheticRun, device: str, group: int = 1,
                   precision: Optional[str] = None) -> tuple[float, float]:
    """``(fixed s, s per epoch)`` of a group of ``group`` synthetic runs of ``cfg``'s shape
    (``train.run_group`` at 1 and 3 epochs a stage; the difference is the time per epoch, the rest
    the fixed cost: data, K-means, evaluation, metrics)."""

    times = []
    for epochs in (1, 3):
        configs = _seeded(cfg, group, device, epochs=epochs, pretrain_epochs=epochs, finetune_epochs=epochs)
        per_stage = 2 if cfg.method == "pretrained" else 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            run_group(configs, precision=precision)
            times.append((time.perf_counter() - t0, epochs * per_stage))
    (t1, e1), (t3, e3) = times
    per_epoch = max(0.0, (t3 - t1) / (e3 - e1))
    return max(0.0, t1 - per_epoch * e1), per_epoch


def _ae_shape(cfg: CifarRun) -> tuple:
    return (cfg.token_dim, cfg.channels, cfg.residual_channels, cfg.encoder_channels, cfg.batch_size)


def _vq_shape(cfg: CifarRun) -> tuple:
    return _ae_shape(cfg) + (cfg.quantizer, cfg.codebook_size, cfg.ema_update)


def _group_model(configs, device: str, quantized: bool):
    """A group's model (with its quantizer, K-means off) and optimiser, through train's public functions."""

    configs = [replace(c, kmeans_init="none") if c.kmeans_init == "dataset" else c for c in configs]
    model = new_model(configs, device)
    if quantized:
        model.attach_quantizer(new_quantizer(configs, device))
    return model, new_optimizer(model, configs[0])


def _images(n: int, batch: int, device: str):

    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, batch, 3, 32, 32, generator=g) - 0.5).to(device)


def time_cifar_step(cfg: CifarRun, device: str, steps: int, group: int = 1, quantized: bool = True,
                    precision: Optional[str] = None) -> float:
    """Seconds per training step (``train.train_step``) of a group of ``group`` conv models of
    ``cfg``'s shape, with its quantizer (``quantized``) or as the autoencoder of pretraining, at
    ``precision`` (default: the device's, ``train.default_precision``)."""

    model, optimizer = _group_model(_seeded(cfg, group, device), device, quantized)
    x = _images(group, cfg.batch_size, device)
    model.train()
    reuse_freed_memory()
    # as run_group trains: freed memory reused and subnormal floats flushed, so the steps timed
    # are the steps the book takes
    with warnings.catch_warnings(), at_precision(model, precision or default_precision(device), device), \
            denormals_flushed():
        warnings.simplefilter("ignore")  # a first-batch K-means on random images
        train_step(model, optimizer, x)  # warm-up: allocator, kernels, threads
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(model, optimizer, x)
        _sync(device)
    return (time.perf_counter() - t0) / steps


def time_search(cfg: CifarRun, device: str) -> float:
    """Seconds of one nearest-token search (eq. 1) of 8,192 vectors among ``cfg.codebook_size`` tokens."""


    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(cfg.codebook_size, cfg.token_dim, generator=g).to(device)
    probe = torch.randn(8192, cfg.token_dim, generator=g).to(device)
    nearest_token(probe, codebook)
    _sync(device)
    t0 = time.perf_counter()
    nearest_token(probe, codebook)
    _sync(device)
    return time.perf_counter() - t0


@dataclass
class StepFlops:
    """FLOPs (forward + backward, ``torch.utils.flop_counter.FlopCounterMode``) of one training step of
    a run alone: as an autoencoder, and with its quantizer (of which ``quantizer`` are the
    quantizer's, e.g. the distance matmul of eq. 1); ``search_per_vector``: one vector's search."""

    autoencoder: float
    vq: float
    quantizer: float
    search_per_vector: float


def count_flops(cfg, device: str = "meta") -> StepFlops:
    """Count :class:`StepFlops` for ``cfg``'s shape on ``device`` (``"meta"``: shapes only, no arithmetic;
    a quantizer that reads values back, the library's dead-code restart, is counted on the CPU)."""
    if device == "meta":
        try:
            return _count_flops(cfg, "meta")
        except (RuntimeError, NotImplementedError):  # e.g. "Tensor.item() cannot be called on meta tensors"
            device = "cpu"
    return _count_flops(cfg, device)


def _count_flops(cfg, device: str) -> StepFlops:


    shape = (cfg.dim,) if isinstance(cfg, SyntheticRun) else (3, 32, 32)
    out = []
    for quantized in (False, True):
        model, optimizer = _group_model([replace(cfg, seed=0)], device, quantized)
        x = torch.rand(1, cfg.batch_size, *shape, generator=torch.Generator().manual_seed(0)).to(device)
        with FlopCounterMode(display=False) as counter, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a first-batch K-means on random data
            train_step(model, optimizer, x)
        counts = counter.get_flop_counts()
        own = sum(v for name, ops in counts.items() if name.endswith(".quantizer") for v in ops.values())
        out.append((counter.get_total_flops(), own))
    with FlopCounterMode(display=False) as counter:
        nearest_token(torch.zeros(1024, cfg.token_dim, device=device),
                      torch.zeros(cfg.codebook_size, cfg.token_dim, device=device))
    return StepFlops(out[0][0], out[1][0], out[1][1], counter.get_total_flops() / 1024)


@dataclass
class Timings:
    device: str
    steps: int
    synthetic: dict = field(default_factory=dict)    # (shape, group) -> (fixed s, s per epoch)
    autoencoder: dict = field(default_factory=dict)  # (shape, group) -> s per step
    vq: dict = field(default_factory=dict)           # (shape, group) -> s per step
    search: dict = field(default_factory=dict)       # shape -> s per 8,192-vector search
    flops: dict = field(default_factory=dict)        # shape -> StepFlops
    seconds: float = 0.0                             # how long the timing itself took


def _flops_shape(cfg) -> tuple:
    return _synthetic_shape(cfg) if isinstance(cfg, SyntheticRun) else _vq_shape(cfg)


def measure(runs: Sequence[PlannedRun], device: str = "auto", steps: int = 2,
            progress: Optional[Callable[[str], None]] = None, precision: Optional[str] = None) -> Timings:
    """Count the FLOPs of, and time, each distinct shape and group size among the runs still to do."""

    device = resolve_device(device)
    t = Timings(device, steps)
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    count_all_flops(runs, t.flops, precision)
    for group in assign_groups(runs, precision):
        cfg, size = group[0].cfg, len(group)
        if isinstance(cfg, SyntheticRun):
            key = (_synthetic_shape(cfg), size)
            if key not in t.synthetic:
                say(f"timing synthetic {group[0].describe()} in a group of {size}")
                t.synthetic[key] = time_synthetic(cfg, device, size, precision)
            continue
        ae, vq = (_ae_shape(cfg), size), (_vq_shape(cfg), size)
        if ae not in t.autoencoder:
            say(f"timing conv autoencoder D={cfg.token_dim} ch{cfg.channels}/{cfg.residual_channels}"
                f"{'' if cfg.encoder_channels is None else f' enc{cfg.encoder_channels}'} x{size}, {steps} steps")
            t.autoencoder[ae] = time_cifar_step(cfg, device, steps, size, quantized=False, precision=precision)
        if vq not in t.vq:
            say(f"timing {cfg.quantizer} VQ-VAE K={cfg.codebook_size:,} D={cfg.token_dim} x{size}, {steps} steps")
            t.vq[vq] = time_cifar_step(cfg, device, steps, size, quantized=True, precision=precision)
        if vq[0] not in t.search:
            t.search[vq[0]] = time_search(cfg, device)
    t.seconds = time.perf_counter() - t0
    return t


def _steps_per_epoch(run: PlannedRun) -> int:
    return max(1, run.n_train // run.cfg.batch_size)  # full batches only (train.py)


def _eval_batches(run: PlannedRun) -> int:
    """Evaluation batches of a run: its points (and test images) at the end and at its checkpoint."""
    batch = 4096 if run.kind == "synthetic" else 256
    return 2 * (math.ceil(run.n_train / batch) + math.ceil(run.n_test / batch))


def _kmeans_vectors(run: PlannedRun) -> int:
    cfg = run.cfg
    latents = run.n_train * (LATENTS_PER_IMAGE if run.kind == "cifar" else cfg.dim // cfg.token_dim)
    return min(getattr(cfg, "kmeans_vectors", None) or latents, latents)


def run_flops(run: PlannedRun, f: StepFlops) -> tuple[float, float]:
    """``(FLOPs, of which the quantizer's)`` of one run: its training steps, the K-means initialisation
    (``kmeans_iters + 1`` searches of its vectors), and the evaluation passes (a forward pass is
    counted as 1/3 of a training step's encoder and decoder, plus the whole search)."""
    cfg = run.cfg
    per_epoch = _steps_per_epoch(run)
    ae_epochs = cfg.pretrain_epochs if cfg.method == "pretrained" else 0
    vq_epochs = run.epochs - ae_epochs
    dense = per_epoch * (ae_epochs * f.autoencoder + vq_epochs * (f.vq - f.quantizer))
    quantizer = per_epoch * vq_epochs * f.quantizer
    batch = 4096 if run.kind == "synthetic" else 256
    dense += _eval_batches(run) * (f.vq - f.quantizer) / 3 * batch / cfg.batch_size
    quantizer += _eval_batches(run) * f.quantizer * batch / cfg.batch_size
    if cfg.kmeans_init == "dataset" and cfg.quantizer not in ("simvq", "fsq"):  # those have no K-means
        quantizer += (cfg.kmeans_iters + 1) * _kmeans_vectors(run) * f.search_per_vector
    return dense + quantizer, quantizer


#: Dense peak throughput of one NVIDIA H100 SXM5, in FLOP/s, from NVIDIA's "H100 Tensor Core GPU"
#: datasheet (2023): FP32 67 TFLOPS; TF32 Tensor Core 989 TFLOPS and BF16 1,979 TFLOPS, both quoted
#: *with* 2:4 sparsity, i.e. 495 and 989 dense. The quantizer's distances stay float32 in every
#: precision (train.at_precision): their FLOPs count at the FP32 peak.
H100_PEAK_FLOPS = {"float32": 67e12, "tf32": 495e12, "bf16": 989e12}


#: The paper profile's budget (SPEC §4: at most 2 h on one H100) and the share of the dense peak a
#: run is assumed to reach there. The share is an assumption, not a measurement (no GPU was at
#: hand when it was chosen): a batch-128 step of small convolutions (8x8 to 32x32 maps, 32-128
#: channels) keeps a tensor core busy only part of the time; ``vqpaper plan --device cuda`` on an
#: H100 measures the real time. Notebook 06's paper scope is chosen so that the whole profile's
#: TF32 bound divided by this share fits the budget (tests/test_paper_profile.py checks it).
PAPER_BUDGET_S = 2 * 3600
ASSUMED_UTILISATION = 0.25


def h100_seconds(flops: float, quantizer_flops: float, precision: str) -> float:
    """The lower bound on one H100: every FLOP at its peak (the quantizer's at FP32)."""
    return (flops - quantizer_flops) / H100_PEAK_FLOPS[precision] + quantizer_flops / H100_PEAK_FLOPS["float32"]


def estimate_group(group: Sequence[PlannedRun], t: Timings) -> float:
    """Seconds for one group of runs on the timed device (trained as one model, train.run_group)."""
    run, size = group[0], len(group)
    cfg = run.cfg
    if isinstance(cfg, SyntheticRun):
        fixed, per_epoch = t.synthetic[(_synthetic_shape(cfg), size)]
        return fixed + per_epoch * run.epochs
    ae, vq = t.autoencoder[(_ae_shape(cfg), size)], t.vq[(_vq_shape(cfg), size)]
    per_epoch = _steps_per_epoch(run)
    ae_epochs = cfg.pretrain_epochs if cfg.method == "pretrained" else 0
    train = per_epoch * (ae_epochs * ae + (run.epochs - ae_epochs) * vq)
    evaluate = _eval_batches(run) * 256 / cfg.batch_size * vq / 3
    init = per_epoch * ae / 3
    if cfg.quantizer == "ema" and cfg.kmeans_init == "dataset":
        init += size * (cfg.kmeans_iters + 1) * _kmeans_vectors(run) / 8192 * t.search[_vq_shape(cfg)]
    return train + evaluate + init


def count_all_flops(runs: Sequence[PlannedRun], cache: Optional[dict] = None, precision: Optional[str] = None):
    """Fill in the FLOPs of every run still to do (:func:`run_flops`; one count per shape, kept in ``cache``)."""
    cache = {} if cache is None else cache
    for group in assign_groups(runs, precision):
        shape = _flops_shape(group[0].cfg)
        if shape not in cache:
            cache[shape] = count_flops(group[0].cfg)
        for r in group:
            r.flops, r.flops_quantizer = run_flops(r, cache[shape])
    return cache


def h100_estimate(runs: Sequence[PlannedRun], precision: str = "tf32") -> float:
    """Seconds the runs still to do would take on one H100 at :data:`ASSUMED_UTILISATION` of its peak."""
    todo = [r for r in runs if r.to_run]
    return h100_seconds(sum(r.flops for r in todo), sum(r.flops_quantizer for r in todo),
                        precision) / ASSUMED_UTILISATION


def estimate_all(runs: Sequence[PlannedRun], t: Timings, precision: Optional[str] = None) -> list:
    """Fill in every run's ``estimate_s`` (its share of its group's time) and FLOPs; returns the groups."""
    count_all_flops(runs, t.flops, precision)
    groups = assign_groups(runs, precision)
    for r in runs:
        if not r.to_run:
            r.estimate_s = 0.0
    for group in groups:
        seconds = estimate_group(group, t)
        for r in group:
            r.estimate_s = seconds / len(group)
    return groups


def estimate_run(run: PlannedRun, t: Timings) -> float:
    """Seconds for one run on the timed device, its share of its group (0 when stored or run earlier)."""
    return run.estimate_s if run.to_run else 0.0


def schedule(durations: Sequence[float], devices: int) -> float:
    """Wall time of ``durations`` on ``devices`` devices, longest first to the first free device (LPT)."""
    free = [0.0] * max(1, devices)
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(free, free[0] + d)
    return max(free)


# --------------------------------------------------------------------------------------
# 4. The report
# --------------------------------------------------------------------------------------
def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _flop(flops: float) -> str:
    """FLOPs with an SI prefix: ``8.8P``, ``43T``, ``1.2G``."""
    for value, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if flops >= value:
            return f"{flops / value:.3g}{prefix}"
    return f"{flops:.3g}"


def report(runs: Sequence[PlannedRun], t: Timings, devices: int, profile: str, *, listing: bool = True,
           data_note: str = "") -> str:
    lines = []
    if listing:
        head = f"{'notebook':<30} {'run':<58} {'epochs':>6} {'steps':>10} {'FLOP':>7} {'estimate':>9}  note"
        lines += [head, "-" * len(head)]
        for r in runs:
            note = "cached" if r.cached else (f"= run of {r.shared_with}" if r.shared_with else
                                              f"group of {r.group_size}")
            lines.append(f"{r.notebook:<30} {r.describe():<58} {r.epochs:>6,} {r.steps:>10,} "
                         f"{_flop(r.flops) if r.to_run else '-':>7} "
                         f"{_hms(r.estimate_s) if r.to_run else '-':>9}  {note}")
        lines.append("")
    head = (f"{'notebook':<30} {'runs':>5} {'to run':>6} {'groups':>6} {'steps':>12} {'FLOP':>7} {'H100 fp32':>9} "
            f"{'TF32':>7} {'bf16':>7} {'1 device':>9}")
    lines += [head, "-" * len(head)]
    notebooks = list(dict.fromkeys(r.notebook for r in runs))

    def row(name, rs):
        todo = [r for r in rs if r.to_run]
        flops, quant = sum(r.flops for r in todo), sum(r.flops_quantizer for r in todo)
        groups = len({r.group for r in todo})
        return (f"{name:<30} {len(rs):>5} {len(todo):>6} {groups:>6} {sum(r.steps for r in todo):>12,} "
                f"{_flop(flops):>7} " + " ".join(f"{_hms(h100_seconds(flops, quant, p)):>{w}}" for p, w in
                                                   (("float32", 9), ("tf32", 7), ("bf16", 7)))
                + f" {_hms(sum(r.estimate_s for r in todo)):>9}")

    for nb in notebooks:
        lines.append(row(nb, [r for r in runs if r.notebook == nb]))
    lines.append("-" * len(head))
    lines.append(row("all", list(runs)))
    lines.append("")
    todo = [r for r in runs if r.to_run]
    one = sum(r.estimate_s for r in todo)
    flops, quant = sum(r.flops for r in todo), sum(r.flops_quantizer for r in todo)
    cifar = [r for r in todo if r.kind == "cifar"]
    lines.append(f"profile {profile}; timed on {t.device} ({_device_name(t.device)}), {t.steps} step(s) per "
                 f"shape, {len(t.synthetic)} synthetic + {len(t.autoencoder)} autoencoder + {len(t.vq)} VQ "
                 f"shapes and group sizes in {t.seconds:.0f} s")
    if data_note:
        lines.append(data_note)
    lines.append(f"CIFAR-10: {len(cifar)} runs to do, {sum(r.steps for r in cifar):,} steps, "
                 f"{_flop(sum(r.flops for r in cifar))}FLOP, {_hms(sum(r.estimate_s for r in cifar))} on one device")
    lines.append(f"FLOPs: forward + backward of one step of each shape (torch.utils.flop_counter), times its steps, "
                 f"plus K-means and evaluation: {_flop(flops)}FLOP, of which {_flop(quant)}FLOP the quantizer's "
                 f"(float32 in every precision)")
    lines.append("lower bound on one H100 SXM (every FLOP at the dense peak; NVIDIA H100 datasheet: FP32 67, "
                 "TF32 495, BF16 989 TFLOP/s; the quantizer's at FP32): "
                 + ", ".join(f"{p} {_hms(h100_seconds(flops, quant, p))}" for p in ("float32", "tf32", "bf16")))
    lines.append(f"at an assumed {ASSUMED_UTILISATION:.0%} of the peak (plan.ASSUMED_UTILISATION): "
                 + ", ".join(f"{p} {_hms(h100_seconds(flops, quant, p) / ASSUMED_UTILISATION)}"
                             for p in ("float32", "tf32", "bf16"))
                 + f" (the paper profile's budget: {_hms(PAPER_BUDGET_S)} at TF32)")
    lines.append(f"estimated wall time here: {_hms(one)} on 1 device"
                 + (f", {_hms(schedule([r.estimate_s * r.group_size for r in _firsts(todo)], devices))} on "
                    f"{devices} devices (longest group {_hms(max((r.estimate_s * r.group_size for r in todo), default=0))})"
                    if devices > 1 else ""))
    return "\n".join(lines)


def _firsts(runs: Sequence[PlannedRun]) -> list[PlannedRun]:
    """One run per group (its ``estimate_s * group_size`` is the group's time)."""
    seen, out = set(), []
    for r in runs:
        if r.group not in seen:
            seen.add(r.group)
            out.append(r)
    return out


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} torch thread(s)"


def make_plan(profile: str = "paper", *, devices: int = 1, notebooks: Optional[Sequence[str]] = None,
              data=None, device: str = "auto", steps: int = 2, cache_dir=None, precision: Optional[str] = None,
              progress: Optional[Callable[[str], None]] = None):
    """Runs, timings and estimates: ``(runs, timings)`` with every run's ``estimate_s`` and FLOPs filled in."""
    runs = planned_runs(profile, notebooks, data=data, cache_dir=cache_dir, precision=precision)
    t = measure(runs, device, steps, progress, precision)
    estimate_all(runs, t, precision)
    return runs, t


# --------------------------------------------------------------------------------------
# 7. The order in which ``vqpaper book`` hands its notebooks to the workers
# --------------------------------------------------------------------------------------
#: Seconds each notebook took in a cold ``ci`` book on 2 idle cores (README's table: 2026-12-05,
#: commit 7c99bbf): the weights of :func:`book_priority` where this build folder has no timings of
#: its own yet.
COLD_CI_BOOK_S = {"01_preliminaries": 34, "02_tokens_collapse_synthetic": 51, "03_tokens_collapse_cifar10": 186,
                  "04_embeddings_collapse": 182, "05_simvq_comparison": 134, "06_remedies": 63}


def _run_ids(notebook: str, profile: str, parameters: dict) -> set:
    if notebook not in PRESETS:  # not one of the book's notebooks: no run list
        return set()
    runs = notebook_runs(notebook, profile, **parameters)
    return {json.dumps(asdict(c), sort_keys=True, default=str) for cs in runs.values() for c in cs}


def book_dependencies(jobs: Sequence[tuple]) -> dict:
    """``{notebook: {earlier notebooks}}``: which notebooks train runs that it trains too.

    ``jobs``: ``(name, profile, parameters)`` in the book's order. Two notebooks that build a run
    of the same config (with these parameters) share it through the cache: the later one finds it
    there if it starts after the earlier one has ended. For the ``ci`` book, 05 reuses runs of 02
    and 03.
    """
    ids = [_run_ids(name, profile, dict(parameters)) for name, profile, parameters in jobs]
    names = [name for name, _, _ in jobs]
    return {names[j]: {names[i] for i in range(j) if ids[i] & ids[j]} for j in range(len(jobs))}


def book_priority(jobs: Sequence[tuple], seconds: dict, dependencies: Optional[dict] = None) -> dict:
    """``{notebook: priority}``: the workers take the notebooks highest priority first.

    ``jobs``: ``(name, profile, parameters)`` in the book's order; ``seconds``: each notebook's
    expected time (a missing one counts 1 s); ``dependencies``: :func:`book_dependencies` (computed
    when not given). The priority is the notebook's time plus the longest chain of notebooks that
    depend on it (list scheduling by bottom level), so the longest chains start first and every
    notebook ranks below those it depends on (``runner.run_notebooks`` also holds it back until they
    have ended). For the ``ci`` book: 03, 02, 04, 05, 06, 01; with two workers about 400 s, against
    about 450 s in the book's order, where 05 waited for 03 behind 01.
    """
    dependencies = book_dependencies(jobs) if dependencies is None else dependencies
    names = [name for name, _, _ in jobs]
    priority: dict = {}
    for i in reversed(range(len(names))):
        later = [priority[names[j]] for j in range(i + 1, len(names)) if names[i] in dependencies.get(names[j], ())]
        priority[names[i]] = float(seconds.get(names[i]) or 1.0) + max(later, default=0.0)
    return priority
