"""Models and training: shapes, AE -> VQ weight loading, determinism, the reproduced effect."""
import numpy as np
import pytest
import torch

from vqpaper.config import CifarRun, SyntheticRun, resolve_device
from vqpaper.errors import ConfigError, TrainingDiverged
from vqpaper.models import ConvVQVAE, MLPVQVAE
from vqpaper.quantizers import make_quantizer
from vqpaper.train import run_cifar, run_synthetic

torch.set_num_threads(1)
TINY = dict(n_per_cluster=100, epochs=4, pretrain_epochs=2, finetune_epochs=2)


def test_mlp_splits_output_into_latent_vectors_sharing_one_codebook():
    q = make_quantizer("ema", 16, 4, kmeans_init="batch", seed=[0, 1])
    model = MLPVQVAE(8, token_dim=4, encoder_hidden=32, quantizer=q, seeds=[0, 1]).train()
    out = model(torch.randn(2, 5, 8))
    assert out.z.shape == (2, 5, 2, 4) and out.indices.shape == (2, 5, 2) and out.recon.shape == (2, 5, 8)
    assert out.vq_loss.shape == (2,)
    for m in range(2):  # each model's latents take its own tokens
        torch.testing.assert_close(out.quantized[m], q.codebook[m][out.indices[m]])


def test_conv_model_latents_are_8x8_channel_last_and_encoder_width_is_separate():
    model = ConvVQVAE(token_dim=16, channels=32, residual_channels=8, encoder_channels=2)
    out = model(torch.randn(1, 2, 3, 32, 32))
    assert out.z.shape == (1, 2, 8, 8, 16) and out.recon.shape == (1, 2, 3, 32, 32) and out.indices is None
    narrow = sum(p.numel() for p in model.encoder.parameters())
    wide = sum(p.numel() for p in ConvVQVAE(16, 32, 8, encoder_channels=64).encoder.parameters())
    assert narrow < wide / 20
    with pytest.raises(ConfigError, match=r"expects images \[1, B, 3, 32, 32\], got shape \(2, 3, 32, 32\)"):
        model(torch.randn(2, 3, 32, 32))


def test_autoencoder_mode_and_attaching_a_quantizer_keeps_the_weights():
    ae = MLPVQVAE(2, 1)
    x = torch.randn(1, 7, 2)
    before = ae(x)
    torch.testing.assert_close(before.quantized, before.z)  # plain AE: no quantization
    ae.attach_quantizer(make_quantizer("ema", 8, 1, kmeans_init="batch", seed=[0]))
    torch.testing.assert_close(ae.encode(x), before.z)      # same encoder weights
    with pytest.raises(ConfigError, match="token_dim"):
        ae.attach_quantizer(make_quantizer("ema", 8, 2, seed=[0]))
    with pytest.raises(ConfigError, match="needs a group of 1 quantizers"):
        ae.attach_quantizer(make_quantizer("ema", 8, 1))  # a single quantizer has no model axis


def test_token_dim_must_divide_dim():
    with pytest.raises(ConfigError, match="token_dim=3 must divide"):
        MLPVQVAE(8, token_dim=3)


def test_same_seed_gives_bit_identical_runs_and_another_seed_differs():
    a = run_synthetic(SyntheticRun(method="pretrained", seed=1, **TINY))
    b = run_synthetic(SyntheticRun(method="pretrained", seed=1, **TINY))
    c = run_synthetic(SyntheticRun(method="pretrained", seed=2, **TINY))
    assert a.history == b.history
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
    assert a.metrics == b.metrics
    assert a.history != c.history


def test_history_records_each_stage_and_epoch():
    r = run_synthetic(SyntheticRun(method="pretrained", **TINY))
    stages = [h["stage"] for h in r.history]
    assert stages == ["pretrain"] * 2 + ["finetune"] * 2
    assert all({"loss", "mse"} <= set(h) for h in r.history)
    assert all("perplexity" in h and "usage" in h for h in r.history if h["stage"] == "finetune")
    assert r.arrays["Z"].shape == (1000, 2, 1) and r.arrays["codebook"].shape == (128, 1)


def test_simvq_runs_end_to_end_and_uses_its_projected_codebook():
    r = run_synthetic(SyntheticRun(quantizer="simvq", **TINY))
    a = r.arrays
    # the recorded codebook is W(B): every latent's index is its nearest row of it
    from vqpaper.quantizers import nearest_token
    idx, _ = nearest_token(torch.from_numpy(a["Z"].reshape(-1, 1)), torch.from_numpy(a["codebook"]))
    np.testing.assert_array_equal(idx.numpy(), a["indices"].reshape(-1))
    assert r.metrics["usage"] > 0


def test_nan_loss_stops_with_epoch_and_step_and_keeps_history():
    with pytest.raises(TrainingDiverged, match=r"epoch \d+/\d+, step \d+") as err:
        run_synthetic(SyntheticRun(method="pretrained", lr=1e30, n_per_cluster=100, pretrain_epochs=3,
                                   finetune_epochs=3))
    assert isinstance(err.value.history, list)


def test_device_auto_is_cpu_here_and_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_cifar_run_on_real_subset(cifar_subset_path):
    from vqpaper.data import load_cifar10

    data = load_cifar10(cifar_subset_path).subset(n_train=256, n_test=64)
    r = run_cifar(CifarRun(codebook_size=32, token_dim=8, channels=8, residual_channels=4, epochs=1,
                           batch_size=64), data)
    m = r.metrics
    assert m["n_train"] == 256 and m["n_test"] == 64
    assert 1 <= m["perplexity"] <= 32 and 0 < m["usage"] <= 1 and m["test_mse"] > 0
    assert r.arrays["train_indices"].shape == (256, 8, 8)


def test_smoke_reproduced_effect_pretraining_beats_scratch_on_allocation_entropy():
    """The paper's tokens-collapse effect at a small budget: 2-D, >= 2 of 3 seeds."""
    wins = 0
    for seed in range(3):
        kw = dict(dim=2, token_dim=1, n_per_cluster=300, epochs=10, pretrain_epochs=5, finetune_epochs=5, seed=seed)
        scratch = run_synthetic(SyntheticRun(method="scratch", **kw)).metrics["alloc_entropy"]
        pre = run_synthetic(SyntheticRun(method="pretrained", **kw)).metrics["alloc_entropy"]
        wins += pre > scratch
    assert wins >= 2


def test_training_flushes_subnormal_floats_and_restores_torch_s_default(monkeypatch):
    """train.denormals_flushed: inside a run a subnormal reads as 0 (fast path), after it as itself."""
    from vqpaper import train

    tiny = torch.tensor([1e-39])
    seen = []
    step = train.train_step
    monkeypatch.setattr(train, "train_step", lambda *a: (seen.append(float(tiny * 1.0)), step(*a))[1])
    assert float(tiny * 1.0) > 0
    run_synthetic(SyntheticRun(dim=2, epochs=1, n_per_cluster=30))
    assert seen and set(seen) == {0.0}
    assert float(tiny * 1.0) > 0, "torch's default is restored after the run"
