"""A cost plan before launch: every run the book would execute, and how long it would take.

    vqpaper plan --profile paper [--gpus N]

1. **Runs.** For each notebook, the run configs it builds: ``experiments.run_list``, the one
   function the notebook calls too. A run that two notebooks share (same cache key) is counted
   once; a run already in the cache is listed but costs nothing.
2. **Steps.** Synthetic: ``n_per_cluster x n_clusters`` points; CIFAR-10: the training images
   the profile implies (paper: all 50,000; ci: the 5,085-image subset, or ``train_images``),
   without loading the data. ``ceil(n / batch_size)`` steps per epoch.
3. **Time per step, measured here.** On the current device (CPU: this process's torch threads,
   1 by default), for each distinct model and codebook size:

   * synthetic runs: two real runs (``train.run_synthetic``) of the same shape at 1 and 3
     epochs; their difference gives the time per epoch, the rest is the fixed cost (data,
     K-means, evaluation, metrics);
   * CIFAR-10 runs: a few real training steps (``train._train_stage``) of the autoencoder
     alone, and a few forward+backward passes of the quantizer alone on a batch of latents
     (``128 x 64`` at batch 128); a VQ step is their sum. Plus the initialisation (encoding
     the training set, then ``kmeans_iters + 1`` nearest-token searches over its latents,
     timed on 8,192 of them) and the final evaluation (a forward pass over train and test,
     counted as 1/3 of a training step per batch).
4. **Wall time.** One device runs the runs one after another: the sum. ``N`` devices: the runs
   scheduled longest first, each to the device that frees up first (LPT), which is what Ray
   does with one run per device; packing several small runs per GPU (``gpus_per_run < 1``)
   can do better, and is not counted.

The estimate is a model, not a measurement of the whole book: per-step times of short timings
(caches cold, clocks not boosted, another process on the machine) can be off by tens of
percent; book/reproduce.md says how the numbers it quotes were obtained.
"""
from __future__ import annotations

import heapq
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

import torch

from . import experiments as ex
from . import sweeps
from .config import CifarRun, SyntheticRun, notebook_config, resolve_device
from .models import ConvVQVAE
from .quantizers import nearest_token
from .train import _new_quantizer, _train_stage, run_synthetic  # two privates: train.py has no public step to time

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
    estimate_s: float = float("nan")

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
                                 epochs * math.ceil(n_train / cfg.batch_size), cached, key=key)
                if key in first and first[key] != notebook:
                    run.shared_with = first[key]
                elif key in first:
                    run.shared_with = notebook  # repeated within one notebook: run once
                first.setdefault(key, notebook)
                out.append(run)
    return out


# --------------------------------------------------------------------------------------
# 3. Time per step on this device
# --------------------------------------------------------------------------------------
def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _synthetic_shape(cfg: SyntheticRun) -> tuple:
    return (cfg.dim, cfg.token_dim, cfg.encoder_hidden, cfg.decoder_hidden, cfg.codebook_size, cfg.quantizer,
            cfg.ema_update, cfg.kmeans_init, cfg.n_per_cluster, cfg.n_clusters, cfg.batch_size, cfg.method)


def time_synthetic(cfg: SyntheticRun, device: str) -> tuple[float, float]:
    """``(fixed s, s per epoch)`` of a synthetic run's shape: real runs at 1 and 3 epochs."""
    times = []
    for epochs in (1, 3):
        short = replace(cfg, epochs=epochs, pretrain_epochs=epochs, finetune_epochs=epochs, device=device)
        per_stage = 2 if cfg.method == "pretrained" else 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            run_synthetic(short, precision="float32")
            times.append((time.perf_counter() - t0, epochs * per_stage))
    (t1, e1), (t3, e3) = times
    per_epoch = max(0.0, (t3 - t1) / (e3 - e1))
    return max(0.0, t1 - per_epoch * e1), per_epoch


def _ae_shape(cfg: CifarRun) -> tuple:
    return (cfg.token_dim, cfg.channels, cfg.residual_channels, cfg.encoder_channels, cfg.batch_size)


def _quantizer_shape(cfg: CifarRun) -> tuple:
    return (cfg.quantizer, cfg.codebook_size, cfg.token_dim, cfg.ema_update, cfg.batch_size * LATENTS_PER_IMAGE)


def time_autoencoder_step(cfg: CifarRun, device: str, steps: int) -> float:
    """Seconds per training step of the conv autoencoder (no quantizer), batch ``cfg.batch_size``."""
    torch.manual_seed(0)
    model = ConvVQVAE(cfg.token_dim, cfg.channels, cfg.residual_channels, cfg.encoder_channels).to(device)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand((steps + 1) * cfg.batch_size, 3, 32, 32, generator=g) - 0.5).to(device)
    kw = dict(batch_size=cfg.batch_size, lr=cfg.lr, optimizer="adam", amsgrad=True, stage="plan", seed=0,
              device=device, progress=False, desc="plan")
    _train_stage(model, x[:cfg.batch_size], epochs=1, history=[], **kw)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    _train_stage(model, x[cfg.batch_size:], epochs=1, history=[], **kw)
    _sync(device)
    return (time.perf_counter() - t0) / steps


def time_quantizer_step(cfg: CifarRun, device: str, steps: int) -> tuple[float, float]:
    """``(s per training step, s per 8,192-vector nearest-token search)`` of the run's quantizer."""
    # no K-means here (it needs encoder outputs); its cost is estimated from the search time below
    q = _new_quantizer(replace(cfg, kmeans_init="none") if cfg.kmeans_init == "dataset" else cfg, device).train()
    g = torch.Generator().manual_seed(0)
    n = cfg.batch_size * LATENTS_PER_IMAGE
    z = torch.randn(n, cfg.token_dim, generator=g).to(device).requires_grad_(True)

    def step():
        quantized, indices, loss = q(z)
        (quantized.square().mean() + loss).backward()
        torch.bincount(indices.reshape(-1), minlength=cfg.codebook_size)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        per_step = (time.perf_counter() - t0) / steps
        codebook = q.codebook.detach()
        probe = torch.randn(8192, cfg.token_dim, generator=g).to(device)
        nearest_token(probe, codebook)
        _sync(device)
        t0 = time.perf_counter()
        nearest_token(probe, codebook)
        _sync(device)
    return per_step, time.perf_counter() - t0


@dataclass
class Timings:
    device: str
    steps: int
    synthetic: dict = field(default_factory=dict)   # shape -> (fixed s, s per epoch)
    autoencoder: dict = field(default_factory=dict)  # shape -> s per step
    quantizer: dict = field(default_factory=dict)    # shape -> (s per step, s per 8,192-vector search)
    seconds: float = 0.0                             # how long the timing itself took


def measure(runs: Sequence[PlannedRun], device: str = "auto", steps: int = 2,
            progress: Optional[Callable[[str], None]] = None) -> Timings:
    """Time each distinct shape among the runs still to do (see the module doc)."""
    device = resolve_device(device)
    t = Timings(device, steps)
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    for run in runs:
        if not run.to_run:
            continue
        cfg = run.cfg
        if isinstance(cfg, SyntheticRun):
            shape = _synthetic_shape(cfg)
            if shape not in t.synthetic:
                say(f"timing synthetic {run.describe()}")
                t.synthetic[shape] = time_synthetic(cfg, device)
            continue
        ae = _ae_shape(cfg)
        if ae not in t.autoencoder:
            say(f"timing conv autoencoder D={cfg.token_dim} ch{cfg.channels}/{cfg.residual_channels}"
                f"{'' if cfg.encoder_channels is None else f' enc{cfg.encoder_channels}'}, {steps} steps")
            t.autoencoder[ae] = time_autoencoder_step(cfg, device, steps)
        qs = _quantizer_shape(cfg)
        if qs not in t.quantizer:
            say(f"timing {cfg.quantizer} quantizer K={cfg.codebook_size:,} D={cfg.token_dim}")
            t.quantizer[qs] = time_quantizer_step(cfg, device, steps)
    t.seconds = time.perf_counter() - t0
    return t


def estimate_run(run: PlannedRun, t: Timings) -> float:
    """Seconds for one run on the timed device (0 when stored or run by an earlier notebook)."""
    if not run.to_run:
        return 0.0
    cfg = run.cfg
    if isinstance(cfg, SyntheticRun):
        fixed, per_epoch = t.synthetic[_synthetic_shape(cfg)]
        return fixed + per_epoch * run.epochs
    ae = t.autoencoder[_ae_shape(cfg)]
    q_step, search = t.quantizer[_quantizer_shape(cfg)]
    per_epoch = math.ceil(run.n_train / cfg.batch_size)
    ae_epochs = cfg.pretrain_epochs if cfg.method == "pretrained" else 0
    vq_epochs = cfg.finetune_epochs if cfg.method == "pretrained" else cfg.epochs
    train = per_epoch * (ae_epochs * ae + vq_epochs * (ae + q_step))
    batches = math.ceil(run.n_train / cfg.batch_size) + math.ceil(run.n_test / cfg.batch_size)
    evaluate = batches * (ae / 3 + q_step / 3)
    init = 0.0
    if cfg.quantizer == "ema" and cfg.kmeans_init == "dataset":
        vectors = min(cfg.kmeans_vectors or math.inf, run.n_train * LATENTS_PER_IMAGE)
        init = per_epoch * ae / 3 + (cfg.kmeans_iters + 1) * vectors / 8192 * search
    return train + evaluate + init


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


def report(runs: Sequence[PlannedRun], t: Timings, devices: int, profile: str, *, listing: bool = True,
           data_note: str = "") -> str:
    lines = []
    if listing:
        head = f"{'notebook':<30} {'run':<58} {'epochs':>6} {'steps':>10} {'estimate':>9}  note"
        lines += [head, "-" * len(head)]
        for r in runs:
            note = "cached" if r.cached else (f"= run of {r.shared_with}" if r.shared_with else "")
            lines.append(f"{r.notebook:<30} {r.describe():<58} {r.epochs:>6,} {r.steps:>10,} "
                         f"{_hms(r.estimate_s) if r.to_run else '-':>9}  {note}")
        lines.append("")
    head = f"{'notebook':<30} {'runs':>5} {'to run':>6} {'cached':>6} {'epochs':>8} {'steps':>12} {'1 device':>9}"
    lines += [head, "-" * len(head)]
    notebooks = list(dict.fromkeys(r.notebook for r in runs))
    for nb in notebooks:
        rs = [r for r in runs if r.notebook == nb]
        todo = [r for r in rs if r.to_run]
        lines.append(f"{nb:<30} {len(rs):>5} {len(todo):>6} {sum(r.cached for r in rs):>6} "
                     f"{sum(r.epochs for r in todo):>8,} {sum(r.steps for r in todo):>12,} "
                     f"{_hms(sum(r.estimate_s for r in todo)):>9}")
    todo = [r for r in runs if r.to_run]
    one = sum(r.estimate_s for r in todo)
    lines.append("-" * len(head))
    lines.append(f"{'all':<30} {len(runs):>5} {len(todo):>6} {sum(r.cached for r in runs):>6} "
                 f"{sum(r.epochs for r in todo):>8,} {sum(r.steps for r in todo):>12,} {_hms(one):>9}")
    lines.append("")
    cifar = [r for r in todo if r.kind == "cifar"]
    lines.append(f"profile {profile}; timed on {t.device} ({_device_name(t.device)}), {t.steps} step(s) per "
                 f"shape, {len(t.synthetic)} synthetic + {len(t.autoencoder)} autoencoder + "
                 f"{len(t.quantizer)} quantizer shapes in {t.seconds:.0f} s")
    if data_note:
        lines.append(data_note)
    lines.append(f"CIFAR-10: {len(cifar)} runs to do, {sum(r.steps for r in cifar):,} steps, "
                 f"{_hms(sum(r.estimate_s for r in cifar))} on one device")
    lines.append(f"estimated wall time: {_hms(one)} on 1 device"
                 + (f", {_hms(schedule([r.estimate_s for r in todo], devices))} on {devices} devices "
                    f"(longest run {_hms(max((r.estimate_s for r in todo), default=0))})" if devices > 1 else ""))
    return "\n".join(lines)


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} torch thread(s)"


def make_plan(profile: str = "paper", *, devices: int = 1, notebooks: Optional[Sequence[str]] = None,
              data=None, device: str = "auto", steps: int = 2, cache_dir=None, precision: Optional[str] = None,
              progress: Optional[Callable[[str], None]] = None):
    """Runs, timings and estimates: ``(runs, timings)`` with every run's ``estimate_s`` filled in."""
    runs = planned_runs(profile, notebooks, data=data, cache_dir=cache_dir, precision=precision)
    t = measure(runs, device, steps, progress)
    for r in runs:
        r.estimate_s = estimate_run(r, t)
    return runs, t
