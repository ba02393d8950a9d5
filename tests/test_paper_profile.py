"""The `paper` profile cannot break unseen (issue 12).

Every run configuration the book builds at ``--profile paper`` (``experiments.run_list``, which
the notebooks and ``vqpaper plan`` call) is built at full size: channels 128, residual 64, codebook sizes up to 65,536,
every encoder width, quantizer and recipe. Each distinct shape then trains for one epoch on a
few dozen images through the path of a real run: config -> sweeps.sweep -> train -> metrics.
Only the budget is cut (epochs, points, images); the models and codebooks are the paper's.
"""
import dataclasses
import math
import time
import warnings

import pytest
from conftest import random_cifar
import torch

from vqpaper import config, plan, sweeps
from vqpaper import experiments as ex
from vqpaper.config import CifarRun, SyntheticRun
from vqpaper.paths import NOTEBOOKS

torch.set_num_threads(1)  # as every run of the book (config.DEFAULT_THREADS)

#: The cut budget: one epoch per stage, 16 points per cluster, 24 training and 8 test images.
SYNTHETIC_CUT = dict(epochs=1, pretrain_epochs=1, finetune_epochs=1, n_per_cluster=16)
CIFAR_CUT = dict(epochs=1, pretrain_epochs=1, finetune_epochs=1, train_images=None)
N_TRAIN, N_TEST = 24, 8


@pytest.fixture(scope="module")
def paper_runs():
    return plan.planned_runs("paper")


def test_every_notebook_has_a_run_list_and_runs_it():
    """A notebook added to the book must say which runs it makes, or the plan and this test miss it; and
    it trains exactly that list (the runs the plan counts), so the two cannot drift apart."""
    on_disk = {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")}
    assert set(config.PRESETS) <= set(ex.RUN_LISTS), "add the notebook's run list to vqpaper/experiments.RUN_LISTS"
    assert on_disk <= set(ex.RUN_LISTS), "add the notebook's run list to vqpaper/experiments.RUN_LISTS"
    for path in NOTEBOOKS.glob("[0-9][0-9]_*.py"):
        source = path.read_text()
        assert "ex.run_list(cfg)" in source, f"{path.name} does not train its run list"
        assert "ex.run_all(" not in source, f"{path.name} trains runs of its own making besides its run list"


def test_paper_configs_are_built_at_full_size(paper_runs):
    cifar = [r.cfg for r in paper_runs if isinstance(r.cfg, CifarRun)]
    synthetic = [r.cfg for r in paper_runs if isinstance(r.cfg, SyntheticRun)]
    assert {r.notebook for r in paper_runs} == set(ex.RUN_LISTS)
    assert max(c.codebook_size for c in cifar) == 65_536
    assert {c.channels for c in cifar} == {128} and {c.residual_channels for c in cifar} == {64}
    assert {c.encoder_channels for c in cifar} >= {None, 64, 2}
    assert all(c.train_images is None and c.kmeans_vectors is None for c in cifar)  # all 50,000 images
    assert {s.n_per_cluster for s in synthetic} == {1000}
    assert max(_epochs(c) for c in cifar) == 300 and max(_epochs(s) for s in synthetic) == 200
    steps = sum(r.steps for r in paper_runs if r.to_run and r.kind == "cifar")
    assert steps > 1_000_000  # the paper's budget, not the ci one


def _epochs(cfg):
    return cfg.pretrain_epochs + cfg.finetune_epochs if cfg.method == "pretrained" else cfg.epochs


def _shape(cfg):
    """What decides whether a run can break: everything but seeds, budgets and data sizes."""
    skip = {"seed", "data_seed", "epochs", "pretrain_epochs", "finetune_epochs", "n_per_cluster", "train_images",
            "kmeans_vectors", "codebook_size"}
    return (type(cfg).__name__,) + tuple(v for k, v in sorted(dataclasses.asdict(cfg).items()) if k not in skip)


def _distinct(configs):
    """One config per shape, at the smallest and at the largest codebook size of that shape."""
    by_shape = {}
    for c in configs:
        by_shape.setdefault(_shape(c), []).append(c)
    out = []
    for cs in by_shape.values():
        sizes = sorted({c.codebook_size for c in cs})
        out += [next(c for c in cs if c.codebook_size == k) for k in {sizes[0], sizes[-1]}]
    return out


def _images(n_train, n_test):
    return random_cifar(n_train, n_test)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_paper_shape_trains_through_the_real_path(paper_runs):
    configs = _distinct(r.cfg for r in paper_runs)
    cut = [dataclasses.replace(c, device="cpu", **(CIFAR_CUT if isinstance(c, CifarRun) else SYNTHETIC_CUT))
           for c in configs]
    synthetic = [c for c in cut if isinstance(c, SyntheticRun)]
    cifar = [c for c in cut if isinstance(c, CifarRun)]
    assert max(c.codebook_size for c in cifar) == 65_536 and {c.channels for c in cifar} == {128}
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # K-means with fewer vectors than tokens says so, by design
        results = sweeps.sweep(synthetic, use_cache=False, progress=False, executor="local")
        results += sweeps.sweep(cifar, _images(N_TRAIN, N_TEST), use_cache=False, progress=False, executor="local")
    elapsed = time.perf_counter() - started
    for cfg, r in zip(synthetic + cifar, results):
        what = f"{cfg.__class__.__name__} {cfg.quantizer} {cfg.method} K={cfg.codebook_size}"
        assert r.history and all(math.isfinite(h["loss"]) for h in r.history), what
        assert r.arrays["codebook"].shape[0] == cfg.codebook_size, what
        if isinstance(cfg, CifarRun):
            assert r.metrics["n_train"] == N_TRAIN and math.isfinite(r.metrics["test_mse"]), what
            assert r.arrays["train_indices"].shape == (N_TRAIN, 8, 8), what
            assert 1 <= r.metrics["codes_used"] <= cfg.codebook_size, what
        else:
            assert math.isfinite(r.metrics["mse"]) and 0 < r.metrics["usage"] <= 1, what
    print(f"{len(synthetic)} synthetic + {len(cifar)} CIFAR-10 paper shapes trained in {elapsed:.1f} s")


def test_plan_command_lists_the_runs_and_estimates_the_time(capsys, tmp_path, monkeypatch):
    from vqpaper import cli

    from dataclasses import replace

    monkeypatch.setenv("VQPAPER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sweeps.paths, "CACHE", tmp_path / "cache")
    # three of 01's 40 paper seeds: timing groups of 32 at the paper's 10,000 points took 2 min here
    presets = dict(config.PRESETS["01_preliminaries"])
    presets["paper"] = replace(presets["paper"], seeds=[0, 1, 2])
    monkeypatch.setitem(config.PRESETS, "01_preliminaries", presets)
    assert cli.main(["plan", "--profile", "paper", "--notebook", "01", "--gpus", "4"]) == 0
    out = capsys.readouterr().out
    runs = [line for line in out.splitlines() if line.startswith("01_preliminaries ") and "seed" in line]
    n = 2 * len(config.notebook_config("01_preliminaries", "paper").seeds)
    assert len(runs) == n  # seeds x (scratch, pretrained), each with its epochs and steps
    # 100 + 1 epochs x 39 full batches of 256 (10,000 points); the seeds of a method train as one group
    assert any(" 101 " in line and " 3,939 " in line and line.endswith(f"group of {n // 2}") for line in runs), runs
    assert "estimated wall time here:" in out and "on 4 devices" in out
    assert "FLOPs: forward + backward" in out and "lower bound on one H100 SXM" in out
    assert cli.main(["plan", "--profile", "paper", "--gpus", "0"]) == 2
    assert "--gpus must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.timeout(600)
def test_the_paper_profile_fits_two_hours_on_one_h100_at_tf32(paper_runs):
    """The budget rule behind notebook 06's paper scope (plan.ASSUMED_UTILISATION): FLOPs counted per
    shape, the quantizer's at FP32, the rest at TF32's dense peak over the assumed share of it."""
    plan.count_all_flops(paper_runs)
    todo = [r for r in paper_runs if r.to_run]
    flops, quantizer = sum(r.flops for r in todo), sum(r.flops_quantizer for r in todo)
    assert 1e17 < flops < 1e18 and 0 < quantizer < flops   # hundreds of PFLOP, as issue 19 counted
    assert plan.h100_estimate(paper_runs, "tf32") <= plan.PAPER_BUDGET_S
    bounds = [plan.h100_seconds(flops, quantizer, p) for p in ("float32", "tf32", "bf16")]
    assert bounds == sorted(bounds, reverse=True)
    assert all(r.flops > 0 for r in todo)


def test_lpt_schedule_bounds():
    assert plan.schedule([5, 4, 3, 3, 3], 1) == 18
    # longest first: 5 | 4, 3 -> 5, 3 | 4, 3, 3 = 10, within LPT's 4/3 of the best split (5, 4 | 3, 3, 3 = 9)
    assert plan.schedule([5, 4, 3, 3, 3], 2) == 10
    assert plan.schedule([10, 1, 1], 8) == 10          # never below the longest run
