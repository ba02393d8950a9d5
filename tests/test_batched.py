"""A sweep trained as one model (issue 19): runs of one shape train in one batched step.

* grouping invariance: a run's history, metrics, checkpoint, arrays and weights are the same bit
  for bit whether it trained alone or in a group of 3 or 8 (on a CPU, one thread), so the cache
  key of a run holds whatever it was grouped with;
* a run whose loss becomes NaN stops alone, with its own error and history; the others finish;
* every step has one batch shape (full batches, a fresh permutation each epoch);
* every run records its checkpoint at 3/4 of its last stage, and the cache keeps it;
* a training step never reads a tensor back to the host (CPU: no .item()/bool()/.tolist()/.cpu();
  CUDA: ``torch.cuda.set_sync_debug_mode("error")``);
* our Adam is torch's, bit for bit; the models start from the weights torch's layers draw.
"""
import dataclasses
import math

import numpy as np
import pytest
from conftest import random_cifar
import torch

from vqpaper import sweeps, train
from vqpaper.config import CifarRun, SyntheticRun
from vqpaper.errors import ConfigError, TrainingDiverged
from vqpaper.models import ConvVQVAE, MLPVQVAE

torch.set_num_threads(1)

TINY = dict(n_per_cluster=40, epochs=4, pretrain_epochs=2, finetune_epochs=3, codebook_size=32, kmeans_iters=3,
            batch_size=64)


def _assert_identical(a, b):
    assert a.config == b.config
    assert a.history == b.history                       # exact floats
    assert a.metrics == b.metrics
    assert a.checkpoint == b.checkpoint
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name], err_msg=name)
    assert a.state_dict.keys() == b.state_dict.keys()
    for name in a.state_dict:
        assert torch.equal(a.state_dict[name], b.state_dict[name]), name


VARIANTS = {
    "scratch-2d": dict(dim=2, token_dim=1),
    "pretrained-3d-laplace": dict(dim=3, token_dim=1, method="pretrained", ema_update="laplace"),
    "simvq-8d": dict(dim=8, token_dim=4, quantizer="simvq"),
    "batch-kmeans-8d": dict(dim=8, token_dim=4, kmeans_init="batch"),
    # the library's VQ draws restarts from torch's generator: each model has its own stream
    "library-restart-2d": dict(dim=2, token_dim=1, quantizer="vq-lib-restart", kmeans_init="batch"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_run_is_the_same_alone_and_in_groups_of_3_and_8(variant):
    kw = {**TINY, **VARIANTS[variant]}
    run = SyntheticRun(seed=0, **kw)
    # the others differ in seed, data seed, cluster spread and EMA rule: what a group may mix
    others = [SyntheticRun(seed=s, data_seed=s % 3, cluster_std=0.5 + 0.1 * (s % 2),
                           **{**kw, "ema_update": "laplace" if s % 2 else "eq5"}) for s in range(1, 8)]
    alone = train.run_group([run])
    in_3 = train.run_group([others[0], others[1], run])
    in_8 = train.run_group(others[:5] + [run] + others[5:])
    assert len(alone) == 1 and len(in_3) == 3 and len(in_8) == 8
    _assert_identical(alone[0], in_3[2])
    _assert_identical(alone[0], in_8[5])
    # and a neighbour is itself too: the same in both groups
    _assert_identical(in_3[0], in_8[0])
    assert in_8[0].history != alone[0].history  # another seed: another run


def _images(n_train=48, n_test=16):
    return random_cifar(n_train, n_test)


CIFAR_TINY = dict(token_dim=8, channels=8, residual_channels=4, epochs=2, pretrain_epochs=1, finetune_epochs=2,
                  batch_size=16, codebook_size=32, kmeans_vectors=256)


def test_cifar_runs_train_one_at_a_time_on_a_cpu_and_are_the_same_alone_or_listed_together():
    assert train.max_group_size(CifarRun(device="cpu")) == 1
    data = _images()
    configs = [CifarRun(method="pretrained", seed=s, **CIFAR_TINY) for s in (0, 1, 2)]
    together = train.run_group(configs, data)
    alone = train.run_group(configs[1:2], data)
    _assert_identical(alone[0], together[1])
    assert together[0].history != together[1].history


def test_the_conv_model_batches_several_models_as_grouped_convolutions():
    """On CUDA CIFAR runs train in groups: the grouped convolutions give each model its own output."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 3, 32, 32, generator=g)
    group = ConvVQVAE(8, 8, 4, seeds=[4, 5, 6])
    for m, seed in enumerate((4, 5, 6)):
        alone = ConvVQVAE(8, 8, 4, seeds=[seed])
        with torch.no_grad():
            torch.testing.assert_close(group(x).recon[m], alone(x[m:m + 1]).recon[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ a diverging run stops alone

@pytest.fixture
def poisoned_data_seed_1(monkeypatch):
    """Synthetic data whose data_seed 1 holds non-finite values (every 20th point): that run diverges."""
    make = train.make_clusters

    def make_clusters(*args, seed=0, **kwargs):
        X, y = make(*args, seed=seed, **kwargs)
        if seed == 1:
            X[::20, 0] = np.inf
            X[::40, 1] = np.nan
        return X, y

    monkeypatch.setattr(train, "make_clusters", make_clusters)
    return [SyntheticRun(seed=s, data_seed=1 if s == 1 else 0, method="pretrained", **TINY) for s in (0, 1, 2)]


def test_a_diverging_run_stops_alone_with_its_own_error_and_the_others_finish(poisoned_data_seed_1):
    configs = poisoned_data_seed_1
    results = train.run_group(configs)
    assert isinstance(results[1], TrainingDiverged)
    assert "seed 1" in str(results[1]) and "epoch 1/2" in str(results[1]) and "'pretrain'" in str(results[1])
    assert results[1].history == []
    for m in (0, 2):
        assert not isinstance(results[m], BaseException)
        assert len(results[m].history) == 5 and all(math.isfinite(h["loss"]) for h in results[m].history)
        _assert_identical(results[m], train.run_group([configs[m]])[0])   # as if it had trained alone
    with pytest.raises(TrainingDiverged, match="seed 1"):
        train.run_synthetic(configs[1])
    # from scratch, the K-means initialisation meets the infinite embeddings first: that run stops there
    scratch = train.run_group([dataclasses.replace(c, method="scratch") for c in configs])
    assert isinstance(scratch[1], ConfigError) and "K-means initialisation got NaN or infinite" in str(scratch[1])
    assert [len(r.history) for r in (scratch[0], scratch[2])] == [4, 4]


def test_a_sweep_stores_the_finished_runs_of_a_group_then_raises_the_diverged_one(poisoned_data_seed_1, tmp_path):
    configs = poisoned_data_seed_1
    with pytest.raises(TrainingDiverged, match="seed 1"):
        sweeps.sweep(configs, use_cache=True, cache_dir=tmp_path, progress=False, executor="local")
    stored = {p.name for p in tmp_path.iterdir() if (p / "result.json").exists()}
    assert stored == {sweeps.run_key(configs[m], "run_synthetic") for m in (0, 2)}


# ------------------------------------------------------------------ groups in a sweep

def test_a_sweep_groups_runs_of_one_shape_and_returns_them_in_order(monkeypatch, tmp_path):
    groups = []
    real = sweeps.run_group

    def run_group(configs, data=None, **kwargs):
        groups.append([(c.dim, c.seed, c.ema_update) for c in configs])
        return real(configs, data, **kwargs)

    monkeypatch.setattr(sweeps, "run_group", run_group)
    configs = [SyntheticRun(dim=d, seed=s, ema_update=u, **TINY) for u in ("eq5", "laplace") for d in (2, 3)
               for s in (0, 1)]
    results = sweeps.sweep(configs, use_cache=True, cache_dir=tmp_path, progress=False, executor="local")
    assert sorted(map(len, groups)) == [4, 4]  # per dimension: both seeds, both EMA rules
    assert [(r.config["dim"], r.config["seed"], r.config["ema_update"]) for r in results] == \
        [(c.dim, c.seed, c.ema_update) for c in configs]
    assert len([p for p in tmp_path.iterdir() if (p / "result.json").exists()]) == 8
    # each stored under its own key: read back alone, and equal to the run trained alone
    again = sweeps.sweep(configs[5:6], use_cache=True, cache_dir=tmp_path, progress=False, executor="local")
    assert again[0].cached and again[0].checkpoint == results[5].checkpoint
    _assert_identical(train.run_synthetic(configs[5]), results[5])


def test_groups_respect_their_cap_and_keep_different_shapes_apart(monkeypatch):
    monkeypatch.setitem(train.MAX_GROUP, ("synthetic", "cpu"), 3)
    configs = [SyntheticRun(seed=s, **TINY) for s in range(7)] + [SyntheticRun(seed=0, encoder_hidden=8, **TINY)]
    assert train.groups_of(configs) == [[0, 1, 2], [3, 4, 5], [6], [7]]
    with pytest.raises(ConfigError, match=r"differ in more: \['encoder_hidden'\]"):
        train.run_group([configs[0], configs[7]])


# ------------------------------------------------------------------ one batch shape

def test_every_step_has_one_batch_shape_and_each_epoch_a_fresh_permutation(monkeypatch):
    shapes, rows = [], []
    real_step, real_batch = train.train_step, train._batch

    def spy_step(model, optimizer, xb):
        shapes.append(tuple(xb.shape))
        return real_step(model, optimizer, xb)

    def spy_batch(x, source, index):
        if index.dim() == 2:  # a training batch (evaluation passes a range)
            rows.append(index.clone())
        return real_batch(x, source, index)

    monkeypatch.setattr(train, "train_step", spy_step)
    monkeypatch.setattr(train, "_batch", spy_batch)
    cfg = SyntheticRun(n_per_cluster=10, epochs=3, batch_size=32, codebook_size=16)  # 100 points: 3 x 32, 4 left out
    train.run_group([cfg, dataclasses.replace(cfg, seed=1)])
    assert shapes == [(2, 32, 2)] * 9
    epochs = [torch.cat(rows[e * 3:(e + 1) * 3], dim=1) for e in range(3)]
    for seen in epochs:
        for m in range(2):
            assert seen[m].unique().numel() == 96  # no point twice in an epoch
    assert not torch.equal(epochs[0], epochs[1])
    assert not torch.equal(epochs[0][0], epochs[0][1])  # each run its own permutation
    shapes.clear()
    train.run_synthetic(SyntheticRun(n_per_cluster=2, epochs=2, batch_size=256, codebook_size=4, kmeans_iters=1))
    assert shapes == [(1, 20, 2)] * 2  # fewer points than a batch: one batch of all of them


# ------------------------------------------------------------------ the checkpoint

def test_every_run_records_its_checkpoint_at_three_quarters_of_its_last_stage(tmp_path):
    scratch = SyntheticRun(**{**TINY, "epochs": 8})
    pretrained = SyntheticRun(method="pretrained", **{**TINY, "finetune_epochs": 5})
    for cfg, stage, epoch in ((scratch, "scratch", 6), (pretrained, "finetune", 4)):
        r = sweeps.sweep([cfg], use_cache=True, cache_dir=tmp_path, progress=False, executor="local")[0]
        assert (r.checkpoint["stage"], r.checkpoint["epoch"], r.checkpoint["fraction"]) == (stage, epoch, 0.75)
        assert epoch == math.ceil(0.75 * (cfg.epochs if stage == "scratch" else cfg.finetune_epochs))
        m = r.checkpoint["metrics"]
        # the collapse metrics without the KDE peak counts
        assert {"perplexity", "usage", "mse", "coverage", "alloc_entropy", "trained_range"} <= set(m)
        assert not {"embedding_peaks", "token_peaks", "peaks_with_tokens"} & set(m)
        assert {"embedding_peaks", "peaks_with_tokens"} <= set(r.metrics)
        assert m != {k: r.metrics[k] for k in m}  # measured before the end
        stored = sweeps.sweep([cfg], use_cache=True, cache_dir=tmp_path, progress=False, executor="local")[0]
        assert stored.cached and stored.checkpoint == r.checkpoint


def test_a_cifar_run_records_its_checkpoint_with_the_final_metrics_keys():
    r = train.run_cifar(CifarRun(**{**CIFAR_TINY, "epochs": 4}), _images())
    assert (r.checkpoint["stage"], r.checkpoint["epoch"]) == ("scratch", 3)
    assert set(r.checkpoint["metrics"]) == set(r.metrics)


@pytest.mark.parametrize("kind, quantizer", [("cifar", "ema"), ("cifar", "simvq"), ("synthetic", "vq-lib")])
def test_the_indices_without_the_decoder_are_the_full_forward_pass_s(kind, quantizer):
    """A CIFAR-10 run's train-set perplexity reads only the indices (train._token_indices)."""
    model, optimizer, x = _group(kind, quantizer)
    model.train()
    train.train_step(model, optimizer, x)   # trained tokens (K-means on the first batch, one step)
    source = torch.arange(3)[:, None]
    full = train._evaluate(model, x, source, batch_size=3)[1]
    assert torch.equal(train._token_indices(model, x, source, batch_size=3), full)


def test_steady_training_steps_reuse_freed_memory_instead_of_fresh_pages():
    """config.reuse_freed_memory: a step's temporaries come from memory freed by the steps before
    (glibc's default maps, zeroes and unmaps a fresh block for each: ~1,000 page faults a step
    here; with it, none alone and ~25 after the rest of the suite has shaped the heap)."""
    import resource

    from vqpaper.config import reuse_freed_memory

    if not reuse_freed_memory():
        pytest.skip("the C library has no mallopt (not glibc)")
    model, optimizer, _ = _group("synthetic", "ema", models=20)
    x = torch.randn(20, 512, 8)
    model.train()
    for _ in range(10):
        train.train_step(model, optimizer, x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        train.train_step(model, optimizer, x)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20 < 100


# ------------------------------------------------------------------ no host sync in a step

def _group(kind: str, quantizer: str, models: int = 3):
    if kind == "synthetic":
        configs = [SyntheticRun(dim=8, token_dim=4, quantizer=quantizer, seed=s, kmeans_init="batch", codebook_size=32)
                   for s in range(models)]
        x = torch.randn(models, 64, 8)
    else:
        configs = [CifarRun(token_dim=8, channels=8, residual_channels=4, quantizer=quantizer, seed=s,
                            kmeans_init="batch", codebook_size=32) for s in range(models)]
        x = torch.rand(models, 4, 3, 32, 32) - 0.5
    model = train.new_model(configs).attach_quantizer(train.new_quantizer(configs))
    return model, train.new_optimizer(model, configs[0]), x


def _forbid(*_args, **_kwargs):
    raise AssertionError("a training step read a tensor back to the host")


@pytest.mark.parametrize("kind, quantizer", [("synthetic", "ema"), ("synthetic", "simvq"), ("cifar", "ema"),
                                             ("synthetic", "vq-lib"), ("synthetic", "fsq")])
def test_a_training_step_never_reads_a_tensor_back(kind, quantizer, monkeypatch):
    model, optimizer, x = _group(kind, quantizer)
    model.train()
    train.train_step(model, optimizer, x)  # the first step runs the first-batch K-means (a host loop)
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, _forbid)
    for _ in range(2):
        loss, mse, indices = train.train_step(model, optimizer, x)
    monkeypatch.undo()
    assert loss.shape == mse.shape == (3,) and torch.isfinite(loss).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["synthetic", "cifar"])
def test_a_training_step_on_cuda_never_synchronises(kind):
    model, optimizer, x = _group(kind, "ema")
    model, x = model.cuda().train(), x.cuda()
    optimizer = train.new_optimizer(model, SyntheticRun() if kind == "synthetic" else CifarRun())
    train.train_step(model, optimizer, x)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            train.train_step(model, optimizer, x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


# ------------------------------------------------------------------ the optimiser and the weights

@pytest.mark.parametrize("kind", ["adamw", "adam-amsgrad"])
def test_our_adam_is_torch_s_bit_for_bit(kind):
    g = torch.Generator().manual_seed(0)
    ours_p = [torch.randn(3, 5, 4, generator=g).requires_grad_(), torch.randn(3, 1, 4, generator=g).requires_grad_()]
    torch_p = [p.detach().clone().requires_grad_() for p in ours_p]
    if kind == "adamw":
        ours = train.Adam(ours_p, lr=1e-2, weight_decay=0.01, decoupled=True)
        ref = torch.optim.AdamW(torch_p, lr=1e-2, weight_decay=0.01, foreach=False)
    else:
        ours = train.Adam(ours_p, lr=3e-4, amsgrad=True)
        ref = torch.optim.Adam(torch_p, lr=3e-4, amsgrad=True, foreach=False)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in ours_p]
        for a, b, grad in zip(ours_p, torch_p, grads):
            a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
        for a, b in zip(ours_p, torch_p):
            assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(1, 128, 3, 32, 32), (3, 128, 3, 32, 32), (1, 512, 2), (8, 512, 8), (3, 100, 3)])
def test_the_reconstruction_loss_and_its_gradient_are_autograd_s_bit_for_bit(shape):
    """train.SquaredError against ``(recon - x).pow(2).mean`` differentiated by autograd: the same
    losses and the same gradient, to the last bit, at scales from 1e-4 to 1e4, in torch's layout
    and in the conv model's (its reconstructions are a transposed view)."""
    g = torch.Generator().manual_seed(sum(shape))
    dims = tuple(range(1, len(shape)))
    for trial in range(12):
        scale = 10.0 ** (trial % 9 - 4)
        base, x = torch.randn(*shape, generator=g) * scale, torch.randn(*shape, generator=g) * scale
        weights = torch.rand(shape[0], generator=g) * 3  # each model's loss weighted differently
        if trial % 2:
            base = base.transpose(0, 1).contiguous().transpose(0, 1)
        ref, ours = base.clone().requires_grad_(), base.clone().requires_grad_()  # clone keeps the layout
        assert ref.stride() == ours.stride() == base.stride()
        ref_loss = (ref - x).pow(2).mean(dims)
        ours_loss = train.SquaredError.apply(ours, x)
        (ref_loss * weights).sum().backward()
        (ours_loss * weights).sum().backward()
        assert torch.equal(ref_loss, ours_loss)
        assert torch.equal(ref.grad, ours.grad)


def test_model_weights_are_drawn_as_torch_s_layers_draw_them_from_the_run_s_seed():
    group = MLPVQVAE(8, 4, encoder_hidden=16, seeds=[3, 11])
    torch.manual_seed(11)
    reference = [torch.nn.Linear(a, b) for a, b in ((8, 16), (16, 16), (16, 8), (8, 32), (32, 32), (32, 8))]
    layers = list(group.encoder) + list(group.decoder)
    for layer, ref in zip(layers, reference):
        assert torch.equal(layer.weight[1], ref.weight.t()) and torch.equal(layer.bias[1, 0], ref.bias)
    torch.manual_seed(3)
    conv = ConvVQVAE(8, 8, 4, seeds=[3])
    first = torch.nn.Conv2d(3, 4, 4, stride=2, padding=1)  # the encoder's first layer, drawn first
    assert torch.equal(conv.encoder[0].weight[0], first.weight) and torch.equal(conv.encoder[0].bias[0], first.bias)


@pytest.mark.slow  # compiles the encoder and decoder (C++ through inductor): ~40 s on 2 cores
@pytest.mark.timeout(600)
def test_the_opt_in_compiled_path_trains_and_is_recorded(monkeypatch):
    monkeypatch.setenv("VQPAPER_COMPILE", "1")
    cfg = SyntheticRun(n_per_cluster=30, epochs=2, codebook_size=16, kmeans_iters=2)
    key = sweeps.run_key(cfg, "run_synthetic")
    r = train.run_synthetic(cfg)
    assert r.config["compile"] is True and all(math.isfinite(h["loss"]) for h in r.history)
    monkeypatch.delenv("VQPAPER_COMPILE")
    assert "compile" not in train.run_synthetic(cfg).config
    assert sweeps.run_key(cfg, "run_synthetic") != key  # a compiled run is stored under its own key


def test_the_benchmark_times_notebook_02_s_real_ci_sweep():
    """benchmarks/batched.py builds notebook 02's ``ci`` runs the way the notebook does (its sweeps,
    the Laplace ablation's included), so the speed-up it prints is that of the book's sweep."""
    from vqpaper import config, experiments

    bench = _benchmark("batched")
    runs = bench.notebook_02_configs("cpu", quick=False)
    cfg = config.notebook_config("02_tokens_collapse_synthetic", "ci", device="cpu")
    assert runs == [r for rs in experiments.runs_02(cfg).values() for r in rs]
    assert len(train.groups_of(runs)) < len(runs)
    quick = bench.notebook_02_configs("cpu", quick=True)
    assert len(quick) == len(runs) and {r.epochs for r in quick} == {2}


def _benchmark(name: str):
    """The script ``benchmarks/<name>.py``, imported as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", sweeps.paths.ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_conv_benchmark_times_every_layer_of_the_ci_model_and_a_sub_pixel_form_of_the_same_map(capsys):
    """benchmarks/cifar_convs.py: its layers are those of notebook 03's ``ci`` model, in order, and its
    sub-pixel form of the decoder's transposed convolutions computes the same map (up to rounding), so
    the time it prints for that form is a time for the same layer."""
    from vqpaper.models import GroupConv2d

    bench = _benchmark("cifar_convs")
    layers = bench.layer_inputs(batch=4)
    assert [name for name, _, _ in layers][:2] == ["encoder.0", "encoder.2"]
    assert sum(isinstance(layer, GroupConv2d) and layer.transposed for _, layer, _ in layers) == 2
    assert layers[0][2].shape == (4, 3, 32, 32)
    for _, layer, x in layers:
        if layer.transposed:
            w, b = layer.weight[0].detach(), layer.bias[0].detach()
            expected = torch.nn.functional.conv_transpose2d(x, w, b, stride=2, padding=1)
            got = bench._sub_pixel(layer, x, w, b)
            assert got.shape == expected.shape
            assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(got, torch.zeros_like(got))
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--quick", "--repeats", "1"]) == 0  # it sets one torch thread, as the book's runs
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "decoder.4 T" in out and out.strip().splitlines()[-1].startswith("ci conv layers: as trained ")
