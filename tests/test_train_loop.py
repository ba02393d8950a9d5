"""The GPU-ready training loop (issue 12): no per-step host sync, yet the same numbers on a CPU.

The current loop (``train._train_stage``: losses read once per epoch) must record exactly the
history, arrays and metrics of the former per-step ``.item()`` loop, kept as the baseline in
``benchmarks/train_step.py``; bf16 autocast must leave the quantizer's search in float32; TF32
is refused without CUDA; the CUDA search tile follows the device's free memory.
"""
import importlib.util

import numpy as np
import pytest
import torch

from vqpaper import quantizers, train
from vqpaper.config import CifarRun, SyntheticRun
from vqpaper.errors import ConfigError
from vqpaper.paths import ROOT

torch.set_num_threads(1)


def _baseline_loop():
    spec = importlib.util.spec_from_file_location("bench_train_step", ROOT / "benchmarks" / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train_stage_per_step_sync


def _assert_identical(a, b):
    assert a.config == b.config
    assert a.history == b.history  # exact floats, not approx
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name], err_msg=name)
    assert a.metrics.keys() == b.metrics.keys()
    for k in a.metrics:
        same = a.metrics[k] == b.metrics[k] or (a.metrics[k] != a.metrics[k] and b.metrics[k] != b.metrics[k])
        assert same, (k, a.metrics[k], b.metrics[k])


@pytest.mark.parametrize("kw", [dict(method="scratch"), dict(method="pretrained"),
                                dict(method="scratch", quantizer="simvq", dim=8, token_dim=4)],
                         ids=["scratch", "pretrained", "simvq-8d"])
def test_synthetic_run_is_bit_identical_to_the_per_step_sync_loop(kw, monkeypatch):
    cfg = SyntheticRun(epochs=3, pretrain_epochs=2, finetune_epochs=2, n_per_cluster=100, **kw)
    now = train.run_synthetic(cfg)
    monkeypatch.setattr(train, "_train_stage", _baseline_loop())
    before = train.run_synthetic(cfg)
    assert len(now.history) == (3 if kw["method"] == "scratch" else 4)
    _assert_identical(before, now)


def test_cifar_run_is_bit_identical_to_the_per_step_sync_loop(cifar_subset_path, monkeypatch):
    from vqpaper.data import load_cifar10

    data = load_cifar10(cifar_subset_path).subset(n_train=128, n_test=32)
    cfg = CifarRun(token_dim=8, channels=16, residual_channels=8, method="pretrained", pretrain_epochs=1,
                   finetune_epochs=2, batch_size=32, codebook_size=1024, kmeans_vectors=512)
    now = train.run_cifar(cfg, data)
    monkeypatch.setattr(train, "_train_stage", _baseline_loop())
    before = train.run_cifar(cfg, data)
    _assert_identical(before, now)


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
