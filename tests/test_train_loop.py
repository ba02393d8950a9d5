"""The GPU-ready training loop (issues 12, 19): no per-step host sync, an epoch's record from its steps.

Each step's losses stay on the device and are read once per epoch; the epoch's record must be
the mean of its steps' losses in step order (as a per-step ``.item()`` loop would add them);
bf16 autocast must leave the quantizer's search in float32; TF32 is refused without CUDA; the
CUDA search tile follows the device's free memory. (Grouping, the fixed batch shape and the
sync-free step: tests/test_batched.py.)
"""
import math

import numpy as np
import pytest
import torch

from vqpaper import quantizers, train
from vqpaper.config import SyntheticRun
from vqpaper.errors import ConfigError

torch.set_num_threads(1)


@pytest.mark.parametrize("kw", [dict(method="scratch"), dict(method="pretrained"),
                                dict(method="scratch", quantizer="simvq", dim=8, token_dim=4)],
                         ids=["scratch", "pretrained", "simvq-8d"])
def test_each_epoch_records_the_step_order_mean_of_its_steps(kw, monkeypatch):
    steps = []  # every step's loss and MSE, read on the host here (the loop itself reads once per epoch)
    real = train.train_step

    def spy(model, optimizer, xb):
        loss, mse, indices = real(model, optimizer, xb)
        steps.append((loss.tolist(), mse.tolist()))
        return loss, mse, indices

    monkeypatch.setattr(train, "train_step", spy)
    cfg = SyntheticRun(epochs=3, pretrain_epochs=2, finetune_epochs=2, n_per_cluster=100, **kw)
    result = train.run_synthetic(cfg)
    per_epoch = 1000 // cfg.batch_size  # full batches only
    assert len(result.history) == (3 if kw["method"] == "scratch" else 4)
    assert len(steps) == per_epoch * len(result.history)
    for e, rec in enumerate(result.history):
        loss_sum = mse_sum = 0.0
        for loss, mse in steps[e * per_epoch:(e + 1) * per_epoch]:
            loss_sum += loss[0]
            mse_sum += mse[0]
        assert rec["loss"] == loss_sum / per_epoch and rec["mse"] == mse_sum / per_epoch  # exact floats
        assert math.isfinite(rec["loss"])
    assert ("perplexity" in result.history[-1]) and 1 <= result.history[-1]["perplexity"] <= cfg.codebook_size


def test_precision_is_recorded_and_bf16_keeps_the_search_in_float32(monkeypatch):
    seen = []
    real = quantizers.nearest_token

    def spy(z, codebook, *args, **kwargs):
        seen.append((z.dtype, codebook.dtype, torch.is_autocast_enabled("cpu")))
        return real(z, codebook, *args, **kwargs)

    monkeypatch.setattr(quantizers, "nearest_token", spy)
    cfg = SyntheticRun(epochs=2, n_per_cluster=50, codebook_size=16)
    r = train.run_synthetic(cfg, precision="bf16")
    assert r.config["precision"] == "bf16" and np.isfinite(r.history[-1]["loss"])
    assert seen and set(seen) == {(torch.float32, torch.float32, False)}
    assert not torch.is_autocast_enabled("cpu")  # nothing left switched on after the run
    assert train.run_synthetic(cfg).config["precision"] == "float32"


def test_precision_errors_name_the_value_and_what_is_allowed(monkeypatch):
    cfg = SyntheticRun(epochs=1, n_per_cluster=20, codebook_size=8)
    with pytest.raises(ConfigError, match=r"precision must be one of \['float32', 'tf32', 'bf16'\], got 'fp8'"):
        train.run_synthetic(cfg, precision="fp8")
    with pytest.raises(ConfigError, match="precision='tf32' needs a CUDA device, got device='cpu'"):
        train.run_synthetic(cfg, precision="tf32")
    monkeypatch.setenv("VQPAPER_PRECISION", "half")
    with pytest.raises(ConfigError, match="got 'half'"):
        train.run_synthetic(cfg)


def test_cuda_search_tile_follows_free_memory(monkeypatch):
    """Sized once per device: a quarter of the free memory, at most 2**29 elements, at least the old bound."""
    monkeypatch.setattr(quantizers, "_cuda_tiles", {})
    free = {0: 80 * 2**30, 1: 2 * 2**30, 2: 2**20}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (free[index], 2 * free[index]))
    assert quantizers._cuda_tile(torch.device("cuda", 0), 4) == 2**29          # 8,192 x 65,536 in one tile
    assert quantizers._cuda_tile(torch.device("cuda", 1), 4) == 2 * 2**30 // 16
    assert quantizers._cuda_tile(torch.device("cuda", 2), 4) == quantizers.DEFAULT_CHUNK_SIZE
    free[0] = 0  # measured once: later steps never query the driver
    assert quantizers._cuda_tile(torch.device("cuda", 0), 4) == 2**29
