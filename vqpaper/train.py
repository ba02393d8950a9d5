"""Training: VQ-VAE from scratch, or pretrain an autoencoder and fine-tune it with VQ (§3.1).

``run_synthetic`` and ``run_cifar`` take one run's full configuration (a dataclass from
:mod:`vqpaper.config`) and return a :class:`RunResult`: per-epoch history, the arrays the
figures and metrics need, summary metrics, and the wall time. Same config and seed on CPU
give bit-identical results.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import metrics as M
from .config import CifarRun, SyntheticRun, resolve_device
from .data import CifarData, cifar_to_tensor, make_clusters, tensor_to_images
from .errors import ConfigError, TrainingDiverged
from .models import ConvVQVAE, MLPVQVAE
from .remedies import make_quantizer  # ours and vector-quantize-pytorch's (notebook 06)
from .settings import settings


@dataclass
class RunResult:
    config: dict
    history: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    state_dict: Optional[dict] = None
    cached: bool = False  # loaded from the sweep cache rather than trained now


def seed_everything(seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


#: Numerical precision of the encoder and decoder during training (``precision`` of a run; the
#: quantizer's distances and EMA statistics are float32 in every mode):
#: ``"float32"`` (default; on CUDA also without TF32, so a GPU run computes what the CPU does),
#: ``"tf32"`` (CUDA only: TF32 matmuls and convolutions), ``"bf16"`` (bfloat16 autocast).
PRECISIONS = ("float32", "tf32", "bf16")


def default_precision() -> str:
    """``VQPAPER_PRECISION`` (set by ``vqpaper run/book --precision``), else ``"float32"``."""
    return check_precision(settings().precision or "float32")


def check_precision(precision, device: str = "cpu") -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r} "
                          f"(vqpaper run/book: --precision tf32; environment: VQPAPER_PRECISION=tf32)")
    if precision == "tf32" and not str(device).startswith("cuda"):
        raise ConfigError(f"precision='tf32' needs a CUDA device, got device={device!r}; "
                          f"use precision='float32' (or 'bf16') on {device!r}")
    return precision


def _set_tf32(enabled: bool):
    """Turn TF32 on or off for cuBLAS matmuls and cuDNN convolutions; returns the previous setting."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision = conv.fp32_precision = "tf32" if enabled else "ieee"
    return before


@contextlib.contextmanager
def _precision(model, precision: str, device: str):
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


def _train_stage(model, x, *, epochs, batch_size, lr, optimizer, stage, history, seed, device,
                 progress, desc, amsgrad=False, precision="float32"):
    """Train for ``epochs`` over ``x`` (a tensor on ``device``); append one record per epoch.

    No step waits for the device: each step's loss and MSE stay on the device (detached
    scalars, a list of them) and the token counts are summed there; all are read in one transfer
    at the end of the epoch, so a GPU never idles while the host catches up. The host then adds
    the values as Python floats in step order, exactly as the former per-step
    ``loss_sum += loss.item()`` did, so the recorded history is bit-identical to it (a float32 or
    a tree-ordered ``torch.sum`` on the device would round differently; tests/test_train.py
    compares both loops). A diverged run is stopped at the end of the epoch in which its loss
    first became NaN or infinite; the error names that epoch and step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, amsgrad=amsgrad)
    else:
        raise ConfigError(f"optimizer must be 'adamw' or 'adam', got {optimizer!r}")
    n = x.shape[0]
    g = torch.Generator().manual_seed(seed)
    k = model.quantizer.codebook_size if model.quantizer is not None else None
    model.train()
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    with _precision(model, precision, device):
        for epoch in bar:
            perm = torch.randperm(n, generator=g).to(device)
            losses, mses = [], []  # per step, on the device
            counts = torch.zeros(k, dtype=torch.long, device=device) if k else None
            for start in range(0, n, batch_size):
                xb = x[perm[start:start + batch_size]]
                out = model(xb)
                mse = F.mse_loss(out.recon.float(), xb)
                loss = mse + out.vq_loss.float()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
                mses.append(mse.detach())
                if counts is not None:
                    counts += torch.bincount(out.indices.reshape(-1), minlength=k)
            # the epoch's one synchronisation for the losses (then one for the counts)
            steps = len(losses)
            values = torch.stack(losses + mses).tolist()
            loss_sum = mse_sum = 0.0
            for step in range(steps):
                if not math.isfinite(values[step]):
                    raise TrainingDiverged(
                        f"{desc}: the loss became {values[step]} at epoch {epoch + 1}/{epochs}, step {step + 1} "
                        f"(stage {stage!r}); the {len(history)} epochs recorded so far are in .history. "
                        f"Try a smaller learning rate (lr={lr}).", history)
                loss_sum += values[step]
                mse_sum += values[steps + step]
            rec = {"stage": stage, "epoch": epoch + 1, "loss": loss_sum / steps, "mse": mse_sum / steps}
            if counts is not None:
                # perplexity and usage over the whole epoch (every training latent), not one batch
                p = counts.double() / counts.sum()
                rec["perplexity"] = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
                rec["usage"] = float((counts > 0).float().mean())
            history.append(rec)
            if progress:
                bar.set_postfix(loss=f"{rec['loss']:.4f}", **({"ppl": f"{rec['perplexity']:.1f}"} if k else {}))
    return history


@torch.no_grad()
def _encode_all(model, x, batch_size=4096):
    model.eval()
    return torch.cat([model.encode(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def _evaluate(model, x, batch_size=4096):
    """Embeddings, token indices and reconstructions for every row of ``x`` (eval mode)."""
    model.eval()
    zs, idx, rec = [], [], []
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i:i + batch_size])
        zs.append(out.z)
        idx.append(out.indices)
        rec.append(out.recon)
    return torch.cat(zs), torch.cat(idx), torch.cat(rec)


def _init_codebook(model, x, cfg, kmeans_vectors=None):
    """K-means init on the encoder outputs of the whole training set (paper) if asked for.

    Returns the embeddings the tokens were initialised from (Fig. 2 compares them for an
    untrained and a pretrained encoder).
    """
    z = _encode_all(model, x)
    if model.quantizer.kmeans_init == "dataset":
        flat = z.reshape(-1, model.quantizer.token_dim)
        if kmeans_vectors is not None and flat.shape[0] > kmeans_vectors:
            g = torch.Generator().manual_seed(cfg.seed)
            flat = flat[torch.randperm(flat.shape[0], generator=g)[:kmeans_vectors].to(flat.device)]
        model.quantizer.init_codebook(flat)
    return z


def _new_quantizer(cfg, device):
    return make_quantizer(cfg.quantizer, cfg.codebook_size, cfg.token_dim, decay=cfg.decay, beta=cfg.beta,
                          kmeans_init=cfg.kmeans_init, kmeans_iters=cfg.kmeans_iters, seed=cfg.seed,
                          update=cfg.ema_update).to(device)


def _fit(model, x, cfg, device, progress, label, optimizer, amsgrad=False, kmeans_vectors=None,
         precision="float32"):
    """The two recipes of §3.1: ``scratch`` (VQ-VAE from the start) or ``pretrained`` (AE, then VQ)."""
    history = []
    common = dict(batch_size=cfg.batch_size, lr=cfg.lr, optimizer=optimizer, history=history,
                  device=device, progress=progress, amsgrad=amsgrad, precision=precision)
    if cfg.method == "pretrained":
        _train_stage(model, x, epochs=cfg.pretrain_epochs, stage="pretrain", seed=cfg.seed,
                     desc=f"{label} AE pretrain", **common)
        model.attach_quantizer(_new_quantizer(cfg, device))
        z_init = _init_codebook(model, x, cfg, kmeans_vectors)
        _train_stage(model, x, epochs=cfg.finetune_epochs, stage="finetune", seed=cfg.seed + 1,
                     desc=f"{label} VQ fine-tune", **common)
    elif cfg.method == "scratch":
        model.attach_quantizer(_new_quantizer(cfg, device))
        z_init = _init_codebook(model, x, cfg, kmeans_vectors)
        _train_stage(model, x, epochs=cfg.epochs, stage="scratch", seed=cfg.seed,
                     desc=f"{label} VQ-VAE", **common)
    else:
        raise ConfigError(f"method must be 'scratch' or 'pretrained', got {cfg.method!r}")
    return history, z_init


def run_synthetic(cfg: SyntheticRun, progress: bool = False, precision: Optional[str] = None) -> RunResult:
    """One synthetic run (§3.1.1, §3.2): data, model, training, evaluation on all points.

    ``precision`` (one of :data:`PRECISIONS`, default :func:`default_precision`) is recorded in
    the result's config; the sweep cache keys on it.
    """
    cfg.validate()
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    precision = check_precision(default_precision() if precision is None else precision, device)
    X, y = make_clusters(cfg.n_per_cluster, cfg.dim, n_clusters=cfg.n_clusters,
                         cluster_std=cfg.cluster_std, seed=cfg.data_seed)
    x = torch.from_numpy(X).to(device)
    seed_everything(cfg.seed)
    model = MLPVQVAE(cfg.dim, cfg.token_dim, cfg.encoder_hidden, cfg.decoder_hidden).to(device)
    label = f"{cfg.dim}-D {cfg.method} h{cfg.encoder_hidden} seed {cfg.seed}"
    history, z_init = _fit(model, x, cfg, device, progress, label, optimizer="adamw", precision=precision)
    z, indices, recon = _evaluate(model, x)
    codebook = model.quantizer.codebook.detach()
    arrays = {
        "X": X, "y": y,
        "Z": z.cpu().numpy(), "Z_init": z_init.cpu().numpy(),
        "indices": indices.cpu().numpy().astype(np.int64),
        "codebook": codebook.cpu().numpy(), "X_hat": recon.cpu().numpy(),
    }
    metrics = M.collapse_metrics(X, y, arrays["Z"], arrays["indices"], arrays["codebook"], arrays["X_hat"],
                                 codebook_size=cfg.codebook_size, n_clusters=cfg.n_clusters, seed=cfg.seed)
    metrics["init_range"] = float(np.ptp(arrays["Z_init"]))
    metrics["trained_range"] = float(np.ptp(arrays["Z"]))
    return RunResult({**asdict(cfg), "precision": precision}, history, arrays, metrics, time.perf_counter() - t0,
                     {k: v.detach().cpu() for k, v in model.state_dict().items()})


def run_cifar(cfg: CifarRun, data: CifarData, progress: bool = False, precision: Optional[str] = None) -> RunResult:
    """One CIFAR-10 run (§3.1.2, §3.2): conv VQ-VAE, test MSE, train-set perplexity/usage.

    Perplexity and usage are computed over the *training* images: at large codebooks the
    test split has fewer latents than tokens (1,017 x 64 < 65,536 on the subset).
    ``precision``: as for :func:`run_synthetic`.
    """
    cfg.validate()
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    precision = check_precision(default_precision() if precision is None else precision, device)
    if cfg.train_images is not None:
        data = data.subset(n_train=min(cfg.train_images, data.n_train), seed=cfg.data_seed)
    x_train = cifar_to_tensor(data.x_train).to(device)
    x_test = cifar_to_tensor(data.x_test).to(device)
    variance = float(x_train.var())
    seed_everything(cfg.seed)
    model = ConvVQVAE(cfg.token_dim, cfg.channels, cfg.residual_channels, cfg.encoder_channels).to(device)
    label = f"K={cfg.codebook_size} {cfg.method} {cfg.quantizer}"
    history, _ = _fit(model, x_train, cfg, device, progress, label, optimizer="adam", amsgrad=True,
                      kmeans_vectors=cfg.kmeans_vectors, precision=precision)
    z_te, idx_te, rec_te = _evaluate(model, x_test, batch_size=256)
    _, idx_tr, _ = _evaluate(model, x_train, batch_size=256)
    test_mse = float(F.mse_loss(rec_te, x_test))
    idx_tr_np = idx_tr.cpu().numpy().reshape(-1)
    metrics = {
        "test_mse": test_mse,
        "test_mse_normalised": test_mse / variance,
        "perplexity": M.perplexity(idx_tr_np, cfg.codebook_size),
        "usage": M.usage(idx_tr_np, cfg.codebook_size),
        "codes_used": int(np.unique(idx_tr_np).size),
        "test_perplexity": M.perplexity(idx_te.cpu().numpy().reshape(-1), cfg.codebook_size),
        # normalised by token_dim, as for the synthetic runs (metrics.collapse_metrics): one meaning per name
        "participation_ratio": M.participation_ratio(z_te.reshape(-1, cfg.token_dim).cpu().numpy()),
        "n_train": int(x_train.shape[0]), "n_test": int(x_test.shape[0]),
    }
    n_show = min(8, x_test.shape[0])
    arrays = {
        "test_images": data.x_test[:n_show],
        "test_recon": tensor_to_images(rec_te[:n_show].cpu()),
        "train_indices": idx_tr.cpu().numpy().astype(np.int32),
        "codebook": model.quantizer.codebook.detach().cpu().numpy(),
    }
    return RunResult({**asdict(cfg), "precision": precision}, history, arrays, metrics, time.perf_counter() - t0,
                     {k: v.detach().cpu() for k, v in model.state_dict().items()})
