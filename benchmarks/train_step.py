#!/usr/bin/env python
"""Training-step benchmark: steps/s of the paper-size conv VQ-VAE, per-step host sync vs none.

    python benchmarks/train_step.py                       # K = 512 and 65,536 on the current device
    python benchmarks/train_step.py --device cuda --steps 50 --codebook-sizes 512 65536

For each codebook size it times the same training steps (paper model: channels 128, residual
64, token_dim 32, batch 128, Adam with AMSGrad, EMA-VQ) with two loops, in one run:

* ``per-step sync``: the loop as it was before issue 12 (:func:`train_stage_per_step_sync`,
  kept here for the comparison): ``loss.item()`` and ``mse.item()`` after every step, so the
  host waits for the device each step, and 16 MiB search tiles on CUDA as before issue 12
  (``chunk_size`` 2**22 - 1 elements passed explicitly, since the default 2**22 now means
  "device-sized" on CUDA: about 130 ``addmm`` per forward at K = 65,536);
* ``epoch sync``: ``vqpaper.train._train_stage`` as it is now (losses kept on the device, read
  once per epoch; device-sized search tiles).

On a CPU both loops do the same arithmetic (the CPU search has its own cache-sized tiles), so
the numbers there should agree within noise; the difference is what a GPU gains. Results go
to ``_build/bench/train_step.json`` (or ``--out``). Medians of ``--repeats`` timings.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vqpaper.errors import ConfigError, TrainingDiverged  # noqa: E402


def train_stage_per_step_sync(model, x, *, epochs, batch_size, lr, optimizer, stage, history, seed, device,
                              progress=False, desc="", amsgrad=False, precision="float32"):
    """``vqpaper.train._train_stage`` before issue 12: two host syncs per step (``.item()``) and a
    NaN check that syncs before every optimiser step. Kept as the benchmark's baseline and as the
    reference that tests/test_train_loop.py compares the current loop's history with, bit for bit."""
    if precision != "float32":
        raise ConfigError(f"the per-step-sync baseline only runs precision='float32', got {precision!r}")
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
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=g).to(device)
        loss_sum = mse_sum = 0.0
        counts = torch.zeros(k, dtype=torch.long, device=device) if k else None
        steps = 0
        for step, start in enumerate(range(0, n, batch_size)):
            xb = x[perm[start:start + batch_size]]
            out = model(xb)
            mse = F.mse_loss(out.recon, xb)
            loss = mse + out.vq_loss
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"{desc}: the loss became {loss.item()} at epoch {epoch + 1}/{epochs}, "
                                       f"step {step + 1} (stage {stage!r})", history)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            mse_sum += mse.item()
            steps += 1
            if counts is not None:
                counts += torch.bincount(out.indices.reshape(-1), minlength=k)
        rec = {"stage": stage, "epoch": epoch + 1, "loss": loss_sum / steps, "mse": mse_sum / steps}
        if counts is not None:
            p = counts.double() / counts.sum()
            rec["perplexity"] = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
            rec["usage"] = float((counts > 0).float().mean())
        history.append(rec)
    return history


def _model(k: int, device: str, chunk_size=None):
    from vqpaper.models import ConvVQVAE
    from vqpaper.quantizers import DEFAULT_CHUNK_SIZE, EMAQuantizer

    torch.manual_seed(0)
    model = ConvVQVAE(token_dim=32, channels=128, residual_channels=64).to(device)
    q = EMAQuantizer(k, 32, decay=0.99, kmeans_init="none", chunk_size=chunk_size or DEFAULT_CHUNK_SIZE)
    return model.attach_quantizer(q.to(device))


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_loop(loop, k: int, device: str, steps: int, batch: int, chunk_size=None) -> float:
    """Seconds per step of ``loop`` over ``steps`` steps (one epoch of ``steps`` batches)."""
    model = _model(k, device, chunk_size)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(steps * batch, 3, 32, 32, generator=g) - 0.5).to(device)
    kw = dict(batch_size=batch, lr=3e-4, optimizer="adam", amsgrad=True, stage="bench", seed=0, device=device,
              progress=False, desc="bench")
    loop(model, x[:2 * batch], epochs=1, history=[], **kw)  # warm-up: allocator, kernels, threads
    _sync(device)
    t0 = time.perf_counter()
    loop(model, x, epochs=1, history=[], **kw)
    _sync(device)
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    from vqpaper import paths
    from vqpaper.config import resolve_device, set_threads
    from vqpaper.quantizers import DEFAULT_CHUNK_SIZE
    from vqpaper.train import _train_stage

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]")
    p.add_argument("--codebook-sizes", type=int, nargs="+", default=[512, 65536])
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default: 5 on CPU, 50 on GPU)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default VQPAPER_THREADS or 1)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    steps = args.steps or (50 if device.startswith("cuda") else 5)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU, {threads} thread(s)"
    print(f"paper-size conv VQ-VAE (channels 128, residual 64, token_dim 32), batch {args.batch}, "
          f"{steps} steps x {args.repeats} repeats, device {device} ({name})", flush=True)
    rows = []
    head = f"{'K':>7} {'per-step sync steps/s':>22} {'epoch sync steps/s':>19} {'speed-up':>9}"
    print(head + "\n" + "-" * len(head), flush=True)
    for k in args.codebook_sizes:
        before, after = [], []
        for _ in range(args.repeats):  # interleaved, so a load change on a shared machine hits both
            before.append(time_loop(train_stage_per_step_sync, k, device, steps, args.batch, DEFAULT_CHUNK_SIZE - 1))
            after.append(time_loop(_train_stage, k, device, steps, args.batch))
        b, a = statistics.median(before), statistics.median(after)
        rows.append({"codebook_size": k, "before_steps_per_s": 1 / b, "after_steps_per_s": 1 / a,
                     "speed_up": b / a, "before_s_per_step": before, "after_s_per_step": after})
        print(f"{k:>7,} {1 / b:>22.3f} {1 / a:>19.3f} {b / a:>8.2f}x", flush=True)
    out = args.out or paths.BUILD / "bench" / "train_step.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "device_name": name, "threads": threads, "steps": steps,
                               "batch": args.batch, "repeats": args.repeats, "torch": torch.__version__,
                               "rows": rows}, indent=1, default=lambda v: None if math.isnan(v) else v))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
