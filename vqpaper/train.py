"""Training: VQ-VAE from scratch, or pretrain an autoencoder and fine-tune it with VQ (§3.1).

**Runs train in groups.** Runs that differ only in their seeds (``seed``, ``data_seed``, the
synthetic ``cluster_std``) and in the EMA rule of eq. (5) (``ema_update``) share the model's
shape, the data size and the schedule: :func:`run_group` trains them as one model with a leading
model axis (:mod:`vqpaper.models`, :mod:`vqpaper.quantizers`), one batched step for all. A run
alone is a group of one; there is no other path. Each run keeps its own seed, data, batches,
K-means initialisation, EMA statistics, optimiser state and NaN stop (a diverging run stops
alone, with its own :class:`TrainingDiverged`; the others finish), and its arithmetic does not
depend on its group: on a CPU a config gives bit-identical history, metrics and arrays alone or
in any group (tests/test_batched.py), so its cache key (:mod:`vqpaper.sweeps`) holds whatever it
was grouped with. :func:`run_synthetic` and :func:`run_cifar` are groups of one.

**Batches.** Every epoch each run draws a fresh random permutation of its training points and
cuts it into ``n // batch_size`` full batches: the last ``n mod batch_size`` points of that
permutation sit the epoch out (with fewer than ``batch_size`` points, one batch of all of them).
One batch shape for every step is what CUDA graphs and compiled steps need; the permutation
changes every epoch, so every point is still seen.

**No host synchronisation in a step** (:func:`train_step`): losses stay on the device, token
counts are summed there (``index_add_``), and both are read once per epoch, at its end, where a
NaN is detected.

**Precision** (``PRECISIONS``): the encoder and decoder run in float32 on a CPU and with TF32 on
CUDA unless ``VQPAPER_PRECISION`` says otherwise; the quantizer's distances and EMA statistics
are float32 in every mode. The precision is recorded in each run's config (and so in its cache
key). ``VQPAPER_COMPILE=1`` compiles the encoder and decoder with ``torch.compile`` (opt-in).

**Checkpoint.** Besides its final metrics, every run records the same metrics at 3/4 of its last
stage (:data:`CHECKPOINT_FRACTION`; synthetic runs there without the KDE peak counts, which are
slow), so that a reader can see whether the compared numbers were still moving.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from . import metrics as M
from .config import (PRECISIONS, CifarRun, SyntheticRun, check_precision, default_precision,  # noqa: F401
                     resolve_device, reuse_freed_memory)
from .data import CifarData, cifar_to_tensor, make_clusters, tensor_to_images
from .errors import ConfigError, TrainingDiverged
from .models import ConvVQVAE, MLPVQVAE
from .quantizers import QUANTIZERS as OUR_QUANTIZERS
from .quantizers import QuantizerLoop
from .remedies import make_quantizer  # ours and vector-quantize-pytorch's (notebook 06)
from .settings import settings

from tqdm import tqdm


@dataclass
class RunResult:
    config: dict
    history: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    wall_time_s: float = 0.0       # a run trained in a group of M: 1/M of the group's time
    state_dict: Optional[dict] = None
    cached: bool = False  # loaded from the sweep cache rather than trained now
    #: The metrics at 3/4 of the last stage: ``{"stage", "epoch", "fraction", "metrics"}``.
    checkpoint: Optional[dict] = None


# --------------------------------------------------------------------------------------
# Precision and compilation
# --------------------------------------------------------------------------------------
def device_of(cfg) -> str:
    """The device a config will train on, without failing where it is missing (for keys and plans):
    ``"auto"`` is CUDA when this machine has one."""
    device = str(cfg.device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def compile_enabled() -> bool:
    """``VQPAPER_COMPILE=1``: compile the encoder and decoder with ``torch.compile`` (opt-in; changes
    the numbers in the last bits, so the run's config records it)."""
    return settings().compile


def _set_tf32(enabled: bool):
    """Turn TF32 on or off for cuBLAS matmuls and cuDNN convolutions; returns the previous setting."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision = conv.fp32_precision = "tf32" if enabled else "ieee"
    return before


@contextlib.contextmanager
def at_precision(model, precision: str, device: str):
    """Run the enclosed training steps at ``precision`` (encoder and decoder only).

    The quantizer always runs in float32 without TF32: a forward pre-hook turns autocast and
    TF32 off and casts its input to float32, and a forward hook restores them. With TF32 or
    bf16 distances, nearby tokens would tie or swap and eq. (1) would pick different tokens.
    ``"float32"`` on a CPU changes nothing (no hooks, no flags), so CPU runs stay bit-identical.
    """
    device_type = torch.device(device).type
    if precision == "float32" and device_type != "cuda":
        yield
        return
    handles, saved = [], []
    before = _set_tf32(precision == "tf32") if device_type == "cuda" else None
    autocast = (torch.autocast(device_type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    quantizer = model.quantizer
    if quantizer is not None:
        def enter(module, args):
            off = torch.autocast(device_type, enabled=False)
            off.__enter__()
            saved.append((off, _set_tf32(False) if device_type == "cuda" else None))
            return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

        def leave(module, args, output):
            off, tf32 = saved.pop()
            if tf32 is not None:
                torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = tf32
            off.__exit__(None, None, None)

        handles = [quantizer.register_forward_pre_hook(enter), quantizer.register_forward_hook(leave)]
    try:
        with autocast:
            yield
    finally:
        for h in handles:
            h.remove()
        if before is not None:
            torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before


# --------------------------------------------------------------------------------------
# The optimiser
# --------------------------------------------------------------------------------------
class Adam:
    """Adam (Kingma & Ba 2015) with AMSGrad as an option, or AdamW (decoupled weight decay,
    Loshchilov & Hutter 2019), over a group's stacked parameters.

    Elementwise, so each model's slice is updated exactly as if it trained alone. The arithmetic
    is ``torch.optim.Adam``/``AdamW``'s (``foreach=False``) op for op; tests/test_batched.py
    compares them bit for bit. Two differences in how it runs:

    * every parameter and its gradient become views of one flat buffer each, so a step is eight
      tensor operations whatever the number of parameters (torch's per-tensor loop, or its
      ``_foreach`` fallback on a CPU, costs ~60 small operations a step for the MLP's 12 tensors);
    * the step count and the bias corrections are host numbers: ``torch.optim`` reads its step
      counter back with ``.item()`` every step, and imports ``torch._dynamo`` on first use (2-3 s
      in every notebook kernel).

    Gradients accumulate in place into the flat buffer (``backward`` adds into an existing
    ``.grad``); :meth:`zero_grad` zeroes it. A ``.grad`` replaced by other code is copied back in.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled: bool = False, amsgrad: bool = False):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ConfigError("Adam needs at least one parameter that requires a gradient")
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.weight_decay, self.decoupled, self.amsgrad = weight_decay, decoupled, amsgrad
        with torch.no_grad():
            self.flat = torch.cat([p.detach().reshape(-1) for p in self.params])
            self.flat_grad = torch.zeros_like(self.flat)
            sizes = [p.numel() for p in self.params]
            self._grads = [g.view_as(p) for g, p in zip(self.flat_grad.split(sizes), self.params)]
            for p, value, grad in zip(self.params, self.flat.split(sizes), self._grads):
                p.data = value.view_as(p)   # the parameter now lives in the flat buffer
                p.grad = grad
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.max_exp_avg_sq = torch.zeros_like(self.flat) if amsgrad else None
        self.steps = 0

    @torch.no_grad()
    def step(self):
        for p, grad in zip(self.params, self._grads):
            if p.grad is None:
                raise ConfigError("Adam.step: every parameter needs a gradient (call backward first)")
            if p.grad.data_ptr() != grad.data_ptr():  # replaced, not accumulated: take it in
                grad.copy_(p.grad)
                p.grad = grad
        param, grad = self.flat, self.flat_grad
        self.steps += 1
        lr, beta1, beta2 = self.lr, self.beta1, self.beta2
        if self.weight_decay:
            if self.decoupled:
                param.mul_(1 - lr * self.weight_decay)
            else:
                grad = grad.add(param, alpha=self.weight_decay)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = float(self.steps)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        if self.amsgrad:
            torch.maximum(self.max_exp_avg_sq, self.exp_avg_sq, out=self.max_exp_avg_sq)
            denom = (self.max_exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
        else:
            denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
        param.addcdiv_(self.exp_avg, denom, value=-(lr / bias_correction1))

    def zero_grad(self):
        self.flat_grad.zero_()


#: The paper's optimisers (§5.2): AdamW for the synthetic MLP (torch's default weight decay),
#: Adam with AMSGrad for the CIFAR-10 conv net.
ADAMW_WEIGHT_DECAY = 0.01


def new_optimizer(model, cfg) -> Adam:
    """The optimiser of ``cfg``'s kind of run over all of ``model``'s trainable parameters."""
    if isinstance(cfg, CifarRun):
        return Adam(model.parameters(), lr=cfg.lr, amsgrad=True)
    return Adam(model.parameters(), lr=cfg.lr, weight_decay=ADAMW_WEIGHT_DECAY, decoupled=True)


# --------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------
#: The config fields in which the runs of one group may differ: each run draws its own model,
#: data and batches, and applies its own rule of eq. (5).
PER_RUN_FIELDS = ("seed", "data_seed", "cluster_std", "ema_update")
#: The largest group trained as one model, per kind of run and device type. On a CPU the conv
#: model trains one run at a time: there a step is compute-bound, and M models as one grouped
#: convolution were 3x slower per model at M = 4 (measured here: 71 ms per step alone, 851 ms for
#: 4) and not bit-identical to a plain convolution, which would make a run's numbers depend on
#: its group. On CUDA a step's cost is kernel launches, which grouping shares. The synthetic MLP
#: gains on both (benchmarks/batched.py); the caps keep memory bounded.
MAX_GROUP = {("synthetic", "cpu"): 32, ("cifar", "cpu"): 1, ("synthetic", "cuda"): 256, ("cifar", "cuda"): 8}


def _kind(cfg) -> str:
    if isinstance(cfg, SyntheticRun):
        return "synthetic"
    if isinstance(cfg, CifarRun):
        return "cifar"
    raise TypeError(f"a run config must be a SyntheticRun or a CifarRun, got {type(cfg).__name__}")


def group_key(cfg, precision: Optional[str] = None) -> tuple:
    """Runs with equal keys train as one group (:func:`run_group`): the same kind of run, model
    shape, data size, schedule, quantizer, device and precision; they may differ in
    :data:`PER_RUN_FIELDS` only."""
    shared = tuple(sorted((k, v) for k, v in asdict(cfg).items() if k not in PER_RUN_FIELDS))
    return (_kind(cfg), shared, precision or default_precision(device_of(cfg)))


def max_group_size(cfg) -> int:
    """How many runs like ``cfg`` train as one model at most (:data:`MAX_GROUP`)."""
    return MAX_GROUP[(_kind(cfg), "cuda" if device_of(cfg).startswith("cuda") else "cpu")]


def groups_of(configs: Sequence, precision=None) -> list[list[int]]:
    """Positions of ``configs`` in groups: equal :func:`group_key`, at most :func:`max_group_size`
    each, in the order of their first config. ``precision``: one for all, or one per config."""
    precisions = list(precision) if isinstance(precision, (list, tuple)) else [precision] * len(configs)
    by_key: dict = {}
    for i, (cfg, p) in enumerate(zip(configs, precisions)):
        by_key.setdefault(group_key(cfg, p), []).append(i)
    out = []
    for members in by_key.values():
        size = max_group_size(configs[members[0]])
        out += [members[s:s + size] for s in range(0, len(members), size)]
    return out


@dataclass
class _Runs:
    """A group's bookkeeping: per run its config, label, history, checkpoint and error."""

    configs: list
    labels: list
    histories: list = field(default_factory=list)
    checkpoints: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    def __post_init__(self):
        n = len(self.configs)
        self.histories, self.checkpoints, self.errors = [[] for _ in range(n)], [None] * n, [None] * n

    @property
    def active(self) -> list[int]:
        """The runs still training (not stopped by a NaN)."""
        return [m for m, e in enumerate(self.errors) if e is None]


def new_model(configs: Sequence, device: str = "cpu"):
    """The group's model (no quantizer yet), one model per config, weights drawn from its seed."""
    cfg, seeds = configs[0], [c.seed for c in configs]
    if isinstance(cfg, SyntheticRun):
        model = MLPVQVAE(cfg.dim, cfg.token_dim, cfg.encoder_hidden, cfg.decoder_hidden, seeds=seeds)
    else:
        model = ConvVQVAE(cfg.token_dim, cfg.channels, cfg.residual_channels, cfg.encoder_channels, seeds=seeds)
    return model.to(device)


def new_quantizer(configs: Sequence, device: str = "cpu"):
    """The group's quantizer: ours batched over the models; the library's as a loop of single ones."""
    cfg, seeds = configs[0], [c.seed for c in configs]
    common = dict(decay=cfg.decay, beta=cfg.beta, kmeans_init=cfg.kmeans_init, kmeans_iters=cfg.kmeans_iters)
    if cfg.quantizer in OUR_QUANTIZERS:
        quantizer = make_quantizer(cfg.quantizer, cfg.codebook_size, cfg.token_dim, seed=seeds,
                                   update=[c.ema_update for c in configs], **common)
    else:
        quantizer = QuantizerLoop([make_quantizer(cfg.quantizer, cfg.codebook_size, cfg.token_dim, seed=c.seed,
                                                  update=c.ema_update, **common) for c in configs], seeds)
    return quantizer.to(device)


# --------------------------------------------------------------------------------------
# One step, one stage
# --------------------------------------------------------------------------------------
class SquaredError(torch.autograd.Function):
    """Each model's reconstruction MSE, ``(recon - x).pow(2).mean`` over all but the model axis,
    with a backward pass of one multiplication.

    Autograd's backward of that expression takes four passes over the images (the mean's
    division, ``pow``'s ``2 * d.pow(1)`` and its product with the gradient): about 1.5 ms of a
    CIFAR-10 step. Here the gradient is ``d * (2 (g / n))``, the same numbers to the last bit:
    ``g / n`` is the mean's division, and scaling by 2 is exact, so ``d * 2 (g / n)`` rounds the
    same real number as autograd's ``(g / n) * (2 d)`` (tests/test_batched.py compares both).
    The forward pass is the expression itself, so the losses are unchanged too.
    """

    @staticmethod
    def forward(ctx, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        d = recon - x
        ctx.save_for_backward(d)
        return d.pow(2).mean(tuple(range(1, d.dim())))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (d,) = ctx.saved_tensors
        scale = (grad / d[0].numel()).mul_(2)
        return d * scale.view(-1, *([1] * (d.dim() - 1))), None


def train_step(model, optimizer: Adam, xb: torch.Tensor):
    """One training step of a group on ``xb`` [M, B, ...]: returns each model's loss and MSE ([M],
    detached) and the token indices (``None`` without a quantizer).

    Nothing is read back to the host. The loss of model m is its reconstruction MSE
    (:class:`SquaredError`) plus its quantizer's loss; the summed loss is differentiated, and
    since the models share no parameter each receives the gradient of its own loss.
    """
    out = model(xb)
    mse = SquaredError.apply(out.recon.float(), xb)
    loss = mse + out.vq_loss.float()
    loss.sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach(), mse.detach(), out.indices


def _batch(x: torch.Tensor, source: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Each model's rows of its data: ``x`` [U, n, ...] (U distinct data sets), ``source`` [M, 1]
    (which data set model m trains on), ``rows`` [M, B] or [B] -> [M, B, ...]."""
    return x[source, rows]


def _perplexity_usage(counts: np.ndarray) -> tuple[float, float]:
    """Perplexity and usage of one epoch's token counts (every training latent, not one batch)."""
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum())), float(np.count_nonzero(counts) / counts.size)


def _train_stage(model, x, source, runs: _Runs, *, epochs: int, stage: str, seeds: Sequence[int], device: str,
                 precision: str, progress: bool, desc: str, checkpoint=None):
    """Train the group for ``epochs`` over its data; append one record per epoch to each run's history.

    ``seeds``: each run's permutation seed. ``checkpoint``: ``(epoch, callback)``, the callback
    called at the end of that epoch (the model in eval mode, the runs still training).
    """
    cfg = runs.configs[0]
    optimizer = new_optimizer(model, cfg)
    models, n = model.models, x.shape[1]
    batch = min(cfg.batch_size, n)
    steps = n // batch
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    k = model.quantizer.codebook_size if model.quantizer is not None else None
    offsets = torch.arange(models, device=device)[:, None] * (k or 0)  # model m's token j is count m * K + j
    values = torch.empty(2, steps, models, device=device)  # loss and MSE of every step
    counts = torch.zeros(models * k, dtype=torch.long, device=device) if k else None
    step = _compiled(model, optimizer)
    model.train()
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        perm = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
        if counts is not None:
            counts.zero_()
        with at_precision(model, precision, device):
            for s in range(steps):
                loss, mse, indices = step(_batch(x, source, perm[:, s * batch:(s + 1) * batch]))
                values[0, s].copy_(loss)
                values[1, s].copy_(mse)
                if counts is not None:
                    rows = (indices.reshape(models, -1) + offsets).reshape(-1)
                    counts.index_add_(0, rows, torch.ones_like(rows))
        _record_epoch(runs, values.tolist(), counts, k, stage=stage, epoch=epoch, epochs=epochs, lr=cfg.lr)
        if checkpoint is not None and epoch + 1 == checkpoint[0] and runs.active:
            model.eval()  # evaluated as at the end: eval mode, float32
            checkpoint[1](model)
            model.train()
        if progress and runs.active:
            last = runs.histories[runs.active[0]][-1]
            bar.set_postfix(loss=f"{last['loss']:.4f}", **({"ppl": f"{last['perplexity']:.1f}"} if k else {}))
    return runs


def _record_epoch(runs: _Runs, values: list, counts, k, *, stage, epoch, epochs, lr):
    """Each running model's record of one epoch, from the values read once at its end.

    The losses are added as Python floats in step order. A model whose loss became NaN or
    infinite stops here, at the end of the epoch in which that happened; its error names the
    epoch and the step.
    """
    losses, mses = values
    count_rows = counts.view(len(runs.configs), k).cpu().numpy() if counts is not None else None
    for m in runs.active:
        history = runs.histories[m]
        loss_sum = mse_sum = 0.0
        for s, (loss, mse) in enumerate(zip(losses, mses)):
            if not math.isfinite(loss[m]):
                runs.errors[m] = TrainingDiverged(
                    f"{runs.labels[m]}: the loss became {loss[m]} at epoch {epoch + 1}/{epochs}, step {s + 1} "
                    f"(stage {stage!r}); the {len(history)} epochs recorded so far are in .history. "
                    f"Try a smaller learning rate (lr={lr}).", history)
                break
            loss_sum += loss[m]
            mse_sum += mse[m]
        else:
            rec = {"stage": stage, "epoch": epoch + 1, "loss": loss_sum / len(losses), "mse": mse_sum / len(losses)}
            if count_rows is not None:
                rec["perplexity"], rec["usage"] = _perplexity_usage(count_rows[m])
            history.append(rec)


def _compiled(model, optimizer):
    """The step function: :func:`train_step`, with the encoder and decoder compiled if asked for."""
    if compile_enabled() and not getattr(model, "_compiled", False):
        model.encode = torch.compile(model.encode)
        model.decode = torch.compile(model.decode)
        model._compiled = True
    return lambda xb: train_step(model, optimizer, xb)


# --------------------------------------------------------------------------------------
# Initialisation, evaluation, the two recipes of §3.1
# --------------------------------------------------------------------------------------
def _batches(x: torch.Tensor, source: torch.Tensor, batch_size: int):
    """Each model's points in order, ``batch_size`` at a time (see :func:`_batch`): the batches of
    every evaluation pass, so the passes see the same batches."""
    n = x.shape[1]
    for i in range(0, n, batch_size):
        yield _batch(x, source, torch.arange(i, min(n, i + batch_size), device=x.device))


@torch.no_grad()
def _encode_all(model, x, source, batch_size=4096):
    """Every model's embeddings of all of its points, [M, n, ..., D]."""
    model.eval()
    return torch.cat([model.encode(xb) for xb in _batches(x, source, batch_size)], dim=1)


@torch.no_grad()
def _evaluate(model, x, source, batch_size=4096):
    """Embeddings, token indices and reconstructions of every model for all of its points (eval mode)."""
    model.eval()
    zs, idx, rec = [], [], []
    for xb in _batches(x, source, batch_size):
        out = model(xb)
        zs.append(out.z)
        idx.append(out.indices)
        rec.append(out.recon)
    return torch.cat(zs, 1), torch.cat(idx, 1), torch.cat(rec, 1)


@torch.no_grad()
def _token_indices(model, x, source, batch_size=4096):
    """The token indices of :func:`_evaluate` alone: encoder and quantizer, no decoder (about half
    of a conv model's forward pass). The same batches, so the same indices."""
    model.eval()
    return torch.cat([model.quantizer(model.encode(xb))[1] for xb in _batches(x, source, batch_size)], dim=1)


def _init_codebook(model, x, source, runs: _Runs, kmeans_vectors=None):
    """K-means init on the encoder outputs of each run's whole training set (paper), if asked for.

    Returns the embeddings the tokens were initialised from, [M, n, ..., D] (Fig. 2 compares
    them for an untrained and a pretrained encoder).
    """
    z = _encode_all(model, x, source)
    quantizer = model.quantizer
    flat = z.reshape(model.models, -1, quantizer.token_dim)
    if quantizer.kmeans_init in ("dataset", "batch"):
        # K-means cannot start from NaN or infinite embeddings: such a run stops here, alone
        finite = torch.isfinite(flat).flatten(1).all(1).tolist()  # once per run, not per step
        for m in runs.active:
            if not finite[m]:
                runs.errors[m] = ConfigError(f"{runs.labels[m]}: the K-means initialisation got NaN or infinite "
                                             f"encoder outputs; check the model and data")
    quantizer.active = runs.active  # a first-batch K-means leaves a stopped run alone
    if quantizer.kmeans_init == "dataset":
        if kmeans_vectors is not None and flat.shape[1] > kmeans_vectors:
            picks = [torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(c.seed))[:kmeans_vectors]
                     for c in runs.configs]
            flat = torch.stack([flat[m, p.to(flat.device)] for m, p in enumerate(picks)])
        quantizer.init_codebook(flat, models=runs.active)
    return z


#: Where in its last stage a run records its checkpoint metrics (issue 18: did the compared
#: numbers still move over the last quarter of training?).
CHECKPOINT_FRACTION = 0.75


def checkpoint_epoch(epochs: int) -> int:
    """The epoch of the last stage whose end is the run's checkpoint: ``ceil(CHECKPOINT_FRACTION * epochs)``."""
    return math.ceil(CHECKPOINT_FRACTION * epochs)


def _fit(model, x, source, runs: _Runs, device, precision, progress, label, take_checkpoint, kmeans_vectors=None,
         pretrain_store=None):
    """The two recipes of §3.1: ``scratch`` (VQ-VAE from the start) or ``pretrained`` (AE, then VQ).

    ``take_checkpoint(model)`` -> ``{run: metrics}``, called at :func:`checkpoint_epoch` of the last
    stage. ``pretrain_store`` (``load(cfg)``/``save(cfg, entry)``, e.g. ``sweeps.PretrainStore``):
    the autoencoders pretrained before, by :func:`pretrain_fields` (every codebook size of a sweep
    starts from the same pretrained autoencoder of its seed). Returns the embeddings the tokens
    were initialised from.
    """
    cfg = runs.configs[0]
    common = dict(device=device, precision=precision, progress=progress)
    seeds = [c.seed for c in runs.configs]
    if cfg.method == "pretrained":
        _pretrain(model, x, source, runs, seeds, f"{label} AE pretrain", pretrain_store, common)
        stage, epochs, seeds, desc = "finetune", cfg.finetune_epochs, [s + 1 for s in seeds], f"{label} VQ fine-tune"
    elif cfg.method == "scratch":
        stage, epochs, desc = "scratch", cfg.epochs, f"{label} VQ-VAE"
    else:
        raise ConfigError(f"method must be 'scratch' or 'pretrained', got {cfg.method!r}")
    model.attach_quantizer(new_quantizer(runs.configs, device))
    z_init = _init_codebook(model, x, source, runs, kmeans_vectors)
    at = checkpoint_epoch(epochs)

    def checkpoint(model_):
        for m, metrics in take_checkpoint(model_).items():
            runs.checkpoints[m] = {"stage": stage, "epoch": at, "fraction": CHECKPOINT_FRACTION, "metrics": metrics}

    _train_stage(model, x, source, runs, epochs=epochs, stage=stage, seeds=seeds, desc=desc,
                 checkpoint=(at, checkpoint), **common)
    return z_init


#: Run-config fields that do not change the autoencoder pretraining of a ``pretrained`` run: the
#: quantizer's and the stages after it. Runs equal in every other field pretrain identically.
NOT_PRETRAINING = ("codebook_size", "quantizer", "decay", "beta", "kmeans_init", "kmeans_iters", "kmeans_vectors",
                   "ema_update", "finetune_epochs", "epochs", "method")


def pretrain_fields(cfg) -> dict:
    """What decides a run's autoencoder pretraining (its config without :data:`NOT_PRETRAINING`)."""
    return {k: v for k, v in asdict(cfg).items() if k not in NOT_PRETRAINING}


def _pretrain(model, x, source, runs: _Runs, seeds, desc, store, common):
    """The ``pretrain`` stage, or its result from ``store`` when every run of the group has one there
    (the weights and the stage's history: the same numbers, since nothing after it depends on how
    they were obtained); a trained group is stored run by run."""
    cfg = runs.configs[0]
    entries = [store.load(c) for c in runs.configs] if store is not None else [None]
    if store is not None and all(e is not None for e in entries):
        for m, entry in enumerate(entries):
            _restore(model, m, entry["state"])
            runs.histories[m].extend(entry["history"])
        return
    _train_stage(model, x, source, runs, epochs=cfg.pretrain_epochs, stage="pretrain", seeds=seeds, desc=desc,
                 **common)
    if store is not None:
        for m in runs.active:
            store.save(runs.configs[m], {"state": _state_of(model, m), "history": list(runs.histories[m])})


@torch.no_grad()
def _restore(model, m: int, state: dict) -> None:
    """Put run m's weights (as :func:`_state_of` gives them) back into its slice of the group's model."""
    for name, value in model.state_dict().items():
        value[m].copy_(state[name]) if value.dim() else value.copy_(state[name])


def _state_of(model, m: int) -> dict:
    """Run m's weights and buffers: its slice of every tensor with a model axis, its own member of
    a quantizer loop (``quantizer.members.<m>.``, stored as ``quantizer.``)."""
    out = {}
    for name, value in model.state_dict().items():
        if ".members." in name:
            prefix, rest = name.split(".members.", 1)
            member, key = rest.split(".", 1)
            if int(member) == m:
                out[f"{prefix}.{key}"] = value.detach().cpu().clone()
        else:
            out[name] = (value[m] if value.dim() else value).detach().cpu().clone()
    return out


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------
def run_group(configs: Sequence, data: Optional[CifarData] = None, *, progress: bool = False,
              precision: Optional[str] = None, pretrain_store=None) -> list:
    """Train ``configs`` as one model; returns, in their order, a :class:`RunResult` per run, or the
    exception that stopped it (a :class:`TrainingDiverged` carrying that run's own history).

    The configs must share a :func:`group_key` (they may differ in :data:`PER_RUN_FIELDS`);
    more than :func:`max_group_size` of them train as several groups. CIFAR-10 runs need
    ``data``. ``precision`` (one of :data:`PRECISIONS`, default :func:`default_precision`) is
    recorded in each result's config; the sweep cache keys on it. ``pretrain_store``: see :func:`_fit`.
    """
    configs = list(configs)
    if not configs:
        return []
    for cfg in configs:
        if not isinstance(cfg, (SyntheticRun, CifarRun)):
            raise TypeError(f"run_group needs SyntheticRun or CifarRun configs, got {type(cfg).__name__}")
        cfg.validate()
    device = resolve_device(configs[0].device)
    precision = check_precision(default_precision(device) if precision is None else precision, device)
    keys = {group_key(c, precision) for c in configs}
    if len(keys) > 1:
        raise ConfigError(f"run_group trains runs that differ only in {list(PER_RUN_FIELDS)} as one model; these "
                          f"configs differ in more: {_differences(configs)}")
    size = max_group_size(configs[0])
    if len(configs) > size:
        return [r for s in range(0, len(configs), size)
                for r in run_group(configs[s:s + size], data, progress=progress, precision=precision,
                                   pretrain_store=pretrain_store)]
    if not isinstance(configs[0], SyntheticRun) and data is None:
        raise ConfigError("CIFAR-10 runs need data: run_group(configs, data=vqpaper.data.load_cifar10(...))")
    reuse_freed_memory()  # steps take freed memory, not fresh pages (config.reuse_freed_memory)
    with denormals_flushed():
        if isinstance(configs[0], SyntheticRun):
            return _run_synthetic_group(configs, device, precision, progress, pretrain_store)
        return _run_cifar_group(configs, data, device, precision, progress, pretrain_store)


@contextlib.contextmanager
def denormals_flushed():
    """Train with the CPU's subnormal floats flushed to zero (``torch.set_flush_denormal``);
    torch's default (off) is restored afterwards.

    EMA-VQ drags the tokens no embedding chooses towards the origin (eq. 5), by a factor
    ``decay`` per step, so a long run ends with subnormal coordinates (below 1.2e-38) in its
    codebook. Arithmetic on them takes a slow microcode path: the distance matmul of eq. (1) took
    5.9 ms instead of 0.9 ms on a late codebook of notebook 02's 8-D runs, and that group of 12
    runs trained in 5.7 s instead of 7.6 s. Flushed, such a coordinate reads as 0. That can only
    matter for a token no embedding has chosen for thousands of steps, and in the ``ci`` book it
    changes no recorded number (``vqpaper check --mode same`` against a book built without it).
    """
    flushed = torch.set_flush_denormal(True)
    try:
        yield flushed
    finally:
        if flushed:
            torch.set_flush_denormal(False)


def _differences(configs) -> list[str]:
    first = asdict(configs[0])
    return sorted({k for c in configs[1:] for k, v in asdict(c).items() if v != first[k] and k not in PER_RUN_FIELDS})


def _config_record(cfg, precision: str) -> dict:
    return {**asdict(cfg), "precision": precision, **({"compile": True} if compile_enabled() else {})}


def _only(results: list):
    result = results[0]
    if isinstance(result, BaseException):
        raise result
    return result


def run_synthetic(cfg: SyntheticRun, progress: bool = False, precision: Optional[str] = None) -> RunResult:
    """One synthetic run (§3.1.1, §3.2): a group of one (:func:`run_group`); raises its error."""
    return _only(run_group([cfg], progress=progress, precision=precision))


def run_cifar(cfg: CifarRun, data: CifarData, progress: bool = False, precision: Optional[str] = None) -> RunResult:
    """One CIFAR-10 run (§3.1.2, §3.2): a group of one (:func:`run_group`); raises its error."""
    return _only(run_group([cfg], data, progress=progress, precision=precision))


def _datasets(keys: list, make) -> tuple[list, torch.Tensor]:
    """The distinct data sets of a group, and which one each run trains on (``source`` [M, 1])."""
    distinct = list(dict.fromkeys(keys))
    return [make(k) for k in distinct], torch.tensor([[distinct.index(k)] for k in keys])


def _run_synthetic_group(configs, device, precision, progress, pretrain_store=None) -> list:
    """Synthetic runs (§3.1.1, §3.2): data, model, training, evaluation on all points, metrics."""
    t0 = time.perf_counter()
    cfg = configs[0]
    data, source = _datasets([(c.data_seed, c.cluster_std) for c in configs],
                             lambda k: make_clusters(cfg.n_per_cluster, cfg.dim, n_clusters=cfg.n_clusters,
                                                     cluster_std=k[1], seed=k[0]))
    x = torch.from_numpy(np.stack([X for X, _ in data])).to(device)   # [distinct data sets, n, dim]
    source = source.to(device)
    model = new_model(configs, device)
    runs = _Runs(configs, [f"{c.dim}-D {c.method} h{c.encoder_hidden} seed {c.seed}" for c in configs])
    label = runs.labels[0] + (f" (+{len(configs) - 1} in its group)" if len(configs) > 1 else "")

    def arrays_of(model_) -> list:
        """Per running model: X, y, Z, indices, codebook, X_hat as numpy (eval mode)."""
        z, indices, recon = _evaluate(model_, x, source)
        codebook = model_.quantizer.codebook.detach()
        out = {}
        for m in runs.active:
            X, y = data[int(source[m, 0])]
            out[m] = {"X": X, "y": y, "Z": z[m].cpu().numpy(), "indices": indices[m].cpu().numpy().astype(np.int64),
                      "codebook": codebook[m].cpu().numpy(), "X_hat": recon[m].cpu().numpy()}
        return out

    def metrics_of(m, a, peaks=True) -> dict:
        c = configs[m]
        out = M.collapse_metrics(a["X"], a["y"], a["Z"], a["indices"], a["codebook"], a["X_hat"],
                                 codebook_size=c.codebook_size, n_clusters=c.n_clusters, seed=c.seed, peaks=peaks)
        out["trained_range"] = float(np.ptp(a["Z"]))
        return out

    def take_checkpoint(model_) -> dict:
        return {m: metrics_of(m, a, peaks=False) for m, a in arrays_of(model_).items()}

    z_init = _fit(model, x, source, runs, device, precision, progress, label, take_checkpoint,
                  pretrain_store=pretrain_store)
    finished = arrays_of(model)
    results = []
    for m, c in enumerate(configs):
        if runs.errors[m] is not None:
            results.append(runs.errors[m])
            continue
        arrays = finished[m]
        arrays["Z_init"] = z_init[m].cpu().numpy()
        metrics = metrics_of(m, arrays)
        metrics["init_range"] = float(np.ptp(arrays["Z_init"]))
        arrays = {k: arrays[k] for k in ("X", "y", "Z", "Z_init", "indices", "codebook", "X_hat")}
        results.append(RunResult(_config_record(c, precision), runs.histories[m], arrays, metrics,
                                 state_dict=_state_of(model, m), checkpoint=runs.checkpoints[m]))
    _share_time(results, time.perf_counter() - t0)
    return results


def _share_time(results: list, seconds: float):
    for r in results:
        if isinstance(r, RunResult):
            r.wall_time_s = seconds / len(results)


def _run_cifar_group(configs, data: CifarData, device, precision, progress, pretrain_store=None) -> list:
    """CIFAR-10 runs (§3.1.2, §3.2): conv VQ-VAE, test MSE, train-set perplexity/usage.

    Perplexity and usage are computed over the *training* images: at large codebooks the
    test split has fewer latents than tokens (1,017 x 64 < 65,536 on the subset).
    """
    t0 = time.perf_counter()
    cfg = configs[0]

    def train_images(data_seed):
        if cfg.train_images is None:
            return data
        return data.subset(n_train=min(cfg.train_images, data.n_train), seed=data_seed)

    # without train_images every run sees all of them: one copy, whatever its data_seed
    subsets, source = _datasets([c.data_seed if cfg.train_images is not None else 0 for c in configs], train_images)
    x_train = torch.stack([cifar_to_tensor(d.x_train) for d in subsets]).to(device)   # [distinct sets, n, 3, 32, 32]
    x_test = cifar_to_tensor(data.x_test).to(device)[None]
    source = source.to(device)
    test_source = torch.zeros_like(source)
    variances = [float(x) for x in x_train.var(dim=(1, 2, 3, 4))]
    model = new_model(configs, device)
    runs = _Runs(configs, [f"K={c.codebook_size} {c.method} {c.quantizer} seed {c.seed}" for c in configs])
    label = runs.labels[0] + (f" (+{len(configs) - 1} in its group)" if len(configs) > 1 else "")

    def evaluate(model_):
        z_te, idx_te, rec_te = _evaluate(model_, x_test, test_source, batch_size=256)
        idx_tr = _token_indices(model_, x_train, source, batch_size=256)  # perplexity and usage only
        out = {}
        for m in runs.active:
            c = configs[m]
            test_mse = float((rec_te[m] - x_test[0]).pow(2).mean())
            idx_tr_np = idx_tr[m].cpu().numpy().reshape(-1)
            out[m] = ({
                "test_mse": test_mse,
                "test_mse_normalised": test_mse / variances[int(source[m, 0])],
                "perplexity": M.perplexity(idx_tr_np, c.codebook_size),
                "usage": M.usage(idx_tr_np, c.codebook_size),
                "codes_used": int(np.unique(idx_tr_np).size),
                "test_perplexity": M.perplexity(idx_te[m].cpu().numpy().reshape(-1), c.codebook_size),
                # normalised by token_dim, as for the synthetic runs (metrics.collapse_metrics): one meaning per name
                "participation_ratio": M.participation_ratio(z_te[m].reshape(-1, c.token_dim).cpu().numpy()),
                "n_train": int(x_train.shape[1]), "n_test": int(x_test.shape[1]),
            }, rec_te[m], idx_tr[m])
        return out

    _fit(model, x_train, source, runs, device, precision, progress, label,
         lambda model_: {m: metrics for m, (metrics, _, _) in evaluate(model_).items()},
         kmeans_vectors=cfg.kmeans_vectors, pretrain_store=pretrain_store)
    finished = evaluate(model) if runs.active else {}
    codebook = model.quantizer.codebook.detach()
    n_show = min(8, x_test.shape[1])
    results = []
    for m, c in enumerate(configs):
        if runs.errors[m] is not None:
            results.append(runs.errors[m])
            continue
        metrics, rec_te, idx_tr = finished[m]
        arrays = {
            "test_images": data.x_test[:n_show],
            "test_recon": tensor_to_images(rec_te[:n_show].cpu()),
            "train_indices": idx_tr.cpu().numpy().astype(np.int32),
            "codebook": codebook[m].cpu().numpy(),
        }
        results.append(RunResult(_config_record(c, precision), runs.histories[m], arrays, metrics,
                                 state_dict=_state_of(model, m), checkpoint=runs.checkpoints[m]))
    _share_time(results, time.perf_counter() - t0)
    return results
