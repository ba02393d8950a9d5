"""The experiments of each notebook, as functions: configs in, runs and tidy tables out.

A notebook cell is a call and a sentence (STYLE.md); what the call does lives here. Each notebook's
runs come from one function (:data:`RUN_LISTS`, ``runs_01`` ... ``runs_06``), which the notebook,
``vqpaper plan`` and the tests all call. The paper's claims about these runs are in
:mod:`vqpaper.verdicts`.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from . import metrics as M
from . import results
from .config import (METHODS, CifarRun, CifarSweep, EmbeddingsCollapse, NotebookParams, Preliminaries, Remedies,
                     SimVQComparison, SyntheticRun, SyntheticSweep, TokensCollapseCifar, TokensCollapseSynthetic,
                     describe, notebook_config, reuse_freed_memory, set_threads)
from .data import load_cifar10, make_clusters
from .diagnose import diagnose
from .errors import ConfigError
from .executors import resolve_name
from .models import MLPVQVAE
from .quantizers import EMA_UPDATES, EMAQuantizer
from .recipes import parse_remedies, parse_remedy, with_remedy
from .remedies import Seeded
from .spread import aggregate, mean_sd_text
from .sweeps import sweep
from .train import RunResult


# --------------------------------------------------------------------------------------
# A notebook's start: its parameters, checked; its data
# --------------------------------------------------------------------------------------
def setup(notebook: str, profile: str, namespace: dict) -> NotebookParams:
    """The notebook's parameters from its ``parameters`` cell, checked before any training.

    ``namespace`` is the notebook's ``globals()``: exactly the dataclass's parameters are read from
    it (``None`` means the profile's value), so the cell's names are never listed twice. Also sets
    torch's threads, starts the clock and names the executor, for the records, and lets the
    notebook's tables show every cell in full (the parameters' meanings included).
    """
    import pandas as pd  # heavy: only a notebook's kernel sets its display

    pd.set_option("display.max_colwidth", None)  # a notebook's tables show every cell in full, never "..."
    names = notebook_config(notebook, profile).parameter_names()
    missing = [name for name in names if name not in namespace]
    if missing:
        raise ConfigError(f"the parameters cell of {notebook} does not define {missing}; it must assign every "
                          f"parameter of the notebook ({names}), None meaning the profile's value")
    cfg = notebook_config(notebook, profile, **{name: namespace[name] for name in names})
    reuse_freed_memory()  # for the kernel's metrics and figures as for its training
    return replace(cfg, threads=set_threads(), started=time.time(), executor=resolve_name())


def parameters_table(cfg: NotebookParams):
    """The notebook's parameters as run: value and meaning, from its dataclass (``config.describe``)."""
    import pandas as pd  # heavy: only notebooks show tables

    rows_ = [{"parameter": r["parameter"], "value": getattr(cfg, r["parameter"]), "meaning": r["meaning"]}
             for r in describe(cfg.notebook)]
    return pd.DataFrame(rows_).set_index("parameter")


def load_cifar(cfg: NotebookParams):
    """CIFAR-10 from the ``cifar10`` parameter, ``$VQPAPER_CIFAR10`` or a download; at ``ci`` the manifest's images."""
    return load_cifar10(cfg.cifar10, subset="ci" if cfg.profile == "ci" else None)


def record(cfg: NotebookParams, figure_id: str, values, seeds=None):
    """Record a figure's numbers with this notebook's parameters, profile, clock, device and executor."""
    return results.record(figure_id, values, **cfg.provenance(seeds))


# --------------------------------------------------------------------------------------
# Run configs
# --------------------------------------------------------------------------------------
def synthetic_configs(*, dims: Sequence[int], token_dims: Sequence[int], seeds: Sequence[int], epochs: int,
                      pretrain_epochs: int, finetune_epochs: int, n_per_cluster: int, data_seed: int, device: str,
                      methods: Sequence[str] = METHODS, quantizer: str = "ema", encoder_hiddens: Iterable[int] = (32,),
                      ema_update: str = "eq5") -> list[SyntheticRun]:
    """Every (dim, method, encoder width, seed) run of a synthetic experiment."""
    return [SyntheticRun(dim=dim, token_dim=token_dim, encoder_hidden=hidden, quantizer=quantizer, method=method,
                         epochs=epochs, pretrain_epochs=pretrain_epochs, finetune_epochs=finetune_epochs,
                         n_per_cluster=n_per_cluster, data_seed=data_seed, seed=seed, ema_update=ema_update,
                         device=device).validate()
            for dim, token_dim in zip(dims, token_dims) for method in methods for hidden in encoder_hiddens
            for seed in seeds]


def cifar_configs(*, codebook_sizes: Sequence[int], methods: Sequence[str], seeds: Sequence[int], device: str,
                  quantizer: str = "ema", encoder_channels: Iterable[Optional[int]] = (None,),
                  **fields) -> list[CifarRun]:
    """Every (codebook size, method, encoder width, seed) CIFAR-10 run; ``fields``: other ``CifarRun`` fields."""
    return [CifarRun(codebook_size=k, method=method, quantizer=quantizer, encoder_channels=width, seed=seed,
                     device=device, **fields).validate()
            for k in codebook_sizes for method in methods for width in encoder_channels for seed in seeds]


def _synthetic(cfg: SyntheticSweep) -> dict:
    """The synthetic sweep of notebooks 02, 05 and 06, as ``synthetic_configs`` arguments."""
    return dict(dims=cfg.dims, token_dims=cfg.token_dims, seeds=cfg.seeds, epochs=cfg.scratch_epochs,
                pretrain_epochs=cfg.pretrain_epochs, finetune_epochs=cfg.finetune_epochs,
                n_per_cluster=cfg.n_per_cluster, data_seed=cfg.data_seed, device=cfg.device)


def _cifar(cfg: CifarSweep) -> dict:
    """The CIFAR-10 sweep of notebooks 05 and 06, as ``cifar_configs`` arguments."""
    return dict(codebook_sizes=cfg.codebook_sizes, seeds=cfg.cifar_seeds, device=cfg.device, token_dim=cfg.token_dim,
                channels=cfg.channels, residual_channels=cfg.residual_channels, epochs=cfg.cifar_scratch_epochs,
                pretrain_epochs=cfg.cifar_pretrain_epochs, finetune_epochs=cfg.cifar_finetune_epochs,
                train_images=cfg.train_images, kmeans_vectors=cfg.kmeans_vectors, lr=cfg.cifar_lr)


# --------------------------------------------------------------------------------------
# The runs of each notebook: {sweep description: run configs}, in the order it runs them
# --------------------------------------------------------------------------------------
def runs_01(cfg: Preliminaries) -> dict:
    return {"Fig. 2 runs": encoder_output_configs(cfg)}


def runs_02(cfg: TokensCollapseSynthetic) -> dict:
    out = {"synthetic runs": synthetic_configs(**_synthetic(cfg))}
    if cfg.laplace_ablation:
        out["synthetic runs, Laplace update"] = synthetic_configs(**_synthetic(cfg), ema_update="laplace")
    return out


def runs_03(cfg: TokensCollapseCifar) -> dict:
    return {"CIFAR-10 runs": cifar_configs(
        codebook_sizes=cfg.codebook_sizes, methods=METHODS, seeds=cfg.seeds, device=cfg.device,
        token_dim=cfg.token_dim, channels=cfg.channels, residual_channels=cfg.residual_channels,
        epochs=cfg.scratch_epochs, pretrain_epochs=cfg.pretrain_epochs, finetune_epochs=cfg.finetune_epochs,
        train_images=cfg.train_images, kmeans_vectors=cfg.kmeans_vectors, lr=cfg.lr)}


def runs_04(cfg: EmbeddingsCollapse) -> dict:
    # the pretrained variant splits the synthetic epochs half and half (a scratch run records the same split)
    half = max(1, cfg.epochs // 2)
    synthetic = dict(dims=cfg.dims, token_dims=cfg.token_dims, seeds=cfg.seeds, epochs=cfg.epochs,
                     pretrain_epochs=half, finetune_epochs=half, n_per_cluster=cfg.n_per_cluster,
                     data_seed=cfg.data_seed, device=cfg.device)
    return {
        "synthetic, scratch": synthetic_configs(**synthetic, methods=("scratch",), encoder_hiddens=cfg.encoder_hiddens),
        "synthetic, pretrained": synthetic_configs(**synthetic, methods=("pretrained",),
                                                   encoder_hiddens=cfg.pretrained_hiddens),
        "CIFAR-10 runs": cifar_configs(codebook_sizes=[cfg.cifar_codebook_size], methods=("scratch",),
                                       seeds=cfg.cifar_seeds, device=cfg.device,
                                       encoder_channels=cfg.encoder_channels, token_dim=cfg.cifar_token_dim,
                                       channels=cfg.cifar_channels, residual_channels=cfg.cifar_residual_channels,
                                       epochs=cfg.cifar_epochs, kmeans_vectors=cfg.cifar_kmeans_vectors,
                                       train_images=cfg.cifar_train_images, lr=cfg.cifar_lr),
    }


def runs_05(cfg: SimVQComparison) -> dict:
    return {
        "SimVQ synthetic runs": synthetic_configs(**_synthetic(cfg), methods=("scratch",), quantizer="simvq",
                                                  encoder_hiddens=cfg.encoder_hiddens),
        "SimVQ + pretraining synthetic runs": synthetic_configs(**_synthetic(cfg), methods=("pretrained",),
                                                                quantizer="simvq"),
        "EMA synthetic runs": synthetic_configs(**_synthetic(cfg)),
        "CIFAR-10 runs": cifar_configs(**_cifar(cfg), methods=("scratch",), quantizer="simvq")
                         + cifar_configs(**_cifar(cfg), methods=METHODS),
    }


def runs_06(cfg: Remedies) -> dict:
    """Every recipe applied to 06's base runs (EMA-VQ from scratch), recipe by recipe (:func:`remedy_runs`).

    ``"synthetic runs"``: every data dimension, encoder hidden 32; ``"narrow-encoder runs"``: the
    narrow encoder on ``narrow_dims``, with its own epochs and points per cluster; ``"CIFAR-10 runs"``:
    the CIFAR-10 sizes and seeds, when ``cfg.cifar``.
    """
    half = max(1, cfg.narrow_epochs // 2)
    narrow = dict(_synthetic(cfg), dims=cfg.narrow_dims,
                  token_dims=[t for d, t in zip(cfg.dims, cfg.token_dims) if d in cfg.narrow_dims],
                  epochs=cfg.narrow_epochs, pretrain_epochs=half, finetune_epochs=half,
                  n_per_cluster=cfg.narrow_n_per_cluster)
    base = {"synthetic runs": synthetic_configs(**_synthetic(cfg), methods=("scratch",)),
            "narrow-encoder runs": synthetic_configs(**narrow, methods=("scratch",),
                                                     encoder_hiddens=[cfg.narrow_hidden])}
    if cfg.cifar:
        base["CIFAR-10 runs"] = cifar_configs(**_cifar(cfg), methods=("scratch",))
    return {name: [c for r in parse_remedies(cfg.remedies) for c in with_remedy(configs, r)]
            for name, configs in base.items()}


#: notebook -> its run list (a function of its checked parameters). A notebook added to the book
#: needs an entry here (tests/test_paper_profile.py fails until it has one).
RUN_LISTS = {Preliminaries.NOTEBOOK: runs_01, TokensCollapseSynthetic.NOTEBOOK: runs_02,
             TokensCollapseCifar.NOTEBOOK: runs_03, EmbeddingsCollapse.NOTEBOOK: runs_04,
             SimVQComparison.NOTEBOOK: runs_05, Remedies.NOTEBOOK: runs_06}


def run_list(cfg: NotebookParams) -> dict:
    """``{sweep description: [run config, ...]}`` of ``cfg``'s notebook, in the order it runs them."""
    if cfg.notebook not in RUN_LISTS:
        raise ConfigError(f"no run list for notebook {cfg.notebook!r} in experiments.RUN_LISTS; "
                          f"known: {sorted(RUN_LISTS)}")
    return RUN_LISTS[cfg.notebook](cfg)


def run_all(configs, data=None, desc="runs") -> list[RunResult]:
    """Run (or load from the cache) every config, with a progress bar."""
    return sweep(configs, data, desc=desc)


def run_sweep(runs: dict, name: str, data=None) -> list[RunResult]:
    """Run (or load) the sweep ``name`` of a notebook's :func:`run_list`."""
    return run_all(runs[name], data, desc=name)


def run_sweeps(runs: dict, names: Sequence[str], data=None) -> dict:
    """``{name: results}``: the sweeps ``names`` of a notebook's :func:`run_list` run (or loaded) as ONE
    sweep, so that runs of one shape train as one group across them (02's eq. (5) and Laplace runs,
    06's recipes); the results are those :func:`run_sweep` gives each."""
    flat = run_all([c for n in names for c in runs[n]], data, desc=" + ".join(names))
    out, start = {}, 0
    for n in names:
        out[n] = flat[start:start + len(runs[n])]
        start += len(runs[n])
    return out


def by_recipe(results: Sequence[RunResult], remedies: Sequence[str]) -> dict:
    """``{recipe: runs}`` of a sweep of :func:`runs_06` (its configs are recipe by recipe, in order).

    Recipes that share a config (say the baseline and a run of notebook 02) share the run.
    """
    per = len(results) // len(remedies)
    return {r: list(results[i * per:(i + 1) * per]) for i, r in enumerate(remedies)}


def remedy_runs(runs: dict, name: str, remedies: Sequence[str], data=None) -> dict:
    """``{recipe: runs}`` of the sweep ``name`` of :func:`runs_06`: run (or load) it, split by recipe."""
    return by_recipe(run_sweep(runs, name, data), remedies)


# --------------------------------------------------------------------------------------
# Tidy tables: one row per run
# --------------------------------------------------------------------------------------
def _config_value(run: RunResult, key: str):
    if key not in run.config:
        raise ConfigError(f"runs have no config key {key!r}; they have {sorted(run.config)}")
    return run.config[key]


def rows(results: Sequence[RunResult], keys: Sequence[str] = ("dim", "method", "quantizer", "seed"),
         label: Optional[dict] = None) -> list[dict]:
    """Tidy rows (one per run): the chosen config keys plus every scalar metric."""
    out = []
    for r in results:
        row = {k: _config_value(r, k) for k in keys}
        row.update({m: v for m, v in r.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        row["wall_time_s"] = r.wall_time_s
        if label:
            row.update(label)
        out.append(row)
    return out


def select(results: Sequence[RunResult], **where) -> list[RunResult]:
    """Runs whose config matches every ``key=value`` (ordered by seed); an unknown key is an error."""
    sel = [r for r in results if all(_config_value(r, k) == v for k, v in where.items())]
    return sorted(sel, key=lambda r: r.config["seed"])


def per_seed(results: Sequence[RunResult], metric: str, **where) -> list[float]:
    """``metric`` of the selected runs, in seed order."""
    return [float(r.metrics[metric]) for r in select(results, **where)]


def per_seed_ratio(results: Sequence[RunResult], metric: str, key: str, top, bottom, **where) -> list[float]:
    """Per seed: ``metric`` at ``key=top`` divided by ``metric`` at ``key=bottom`` (growth along a sweep)."""
    hi = per_seed(results, metric, **{key: top}, **where)
    lo = per_seed(results, metric, **{key: bottom}, **where)
    return [h / l if l else float("nan") for h, l in zip(hi, lo)]


def summary(rows_: Sequence[dict], by: Sequence[str], metrics: Sequence[str]) -> dict:
    """Nested ``{group label: {metric: spread.aggregate(values)}}`` for recording and glue."""
    groups: dict = {}
    for row in rows_:
        label = "/".join(str(row[b]) for b in by)
        g = groups.setdefault(label, {m: [] for m in metrics})
        for m in metrics:
            g[m].append(row.get(m, float("nan")))
    return {label: {m: aggregate(v) for m, v in g.items()} for label, g in groups.items()}


def mean_std_text(values: Sequence[float], fmt: str = ".3g") -> str:
    """``"0.58 ± 0.03"``: mean ± sample standard deviation over seeds (``spread.mean_sd_text``)."""
    return mean_sd_text(aggregate(values), fmt)


def summary_frame(rows_: Sequence[dict], by: Sequence[str], metrics: Sequence[str], digits: int = 3):
    """A readable table: one row per group, ``mean ± std`` per metric.

    Each value is one unit in its cell: narrow no-break spaces around "±" keep "0.983 ± 0.0065" on
    one line, so a narrow column never splits a number from its spread.
    """
    import pandas as pd  # heavy: only notebooks show tables

    s = summary(rows_, by, metrics)
    return pd.DataFrame([{**dict(zip(by, label.split("/"))),
                          **{m: mean_sd_text(d[m], f".{digits}g").replace(" ± ", NNBSP + "±" + NNBSP) for m in metrics}}
                         for label, d in s.items()])


NNBSP = "\u202f"  # narrow no-break space


def optimizer_steps(run: RunResult) -> int:
    """The optimiser steps a CIFAR-10 run took: per epoch of its history, ceil(training images / batch size)."""
    n = run.metrics.get("n_train")
    if n is None:
        raise ConfigError(f"optimizer_steps: the run has no n_train among its metrics ({sorted(run.metrics)})")
    return len(run.history) * -(-int(n) // int(run.config["batch_size"]))


def optimizer_steps_text(results: Sequence[RunResult]) -> str:
    """The optimiser steps of runs, in words, with how they follow from the run: "96 optimiser steps (2,048 images /
    batch 128 = 16 per epoch, × 6 epochs)"; runs with different counts give each."""
    parts = {}
    for r in results:
        n, b, epochs = int(r.metrics["n_train"]), int(r.config["batch_size"]), len(r.history)
        per = -(-n // b)
        parts.setdefault(f"{optimizer_steps(r):,} optimiser steps ({n:,} images / batch {b} = {per} per epoch, "
                         f"× {epochs} epoch{'s' if epochs != 1 else ''})", None)
    if not parts:
        raise ConfigError("optimizer_steps_text: no runs")
    return " or ".join(parts)


def extremes_sentence(summary_: dict, values: Sequence, metric: str, what: str, fmt: str = ".4f") -> str:
    """The mean ``metric`` at the first and the last of ``values`` (e.g. the widest and the narrowest encoder), as
    a sentence; with one value, that value alone and what a comparison needs (never a value against itself).

    ``summary_``: :func:`summary` keyed by ``str(value)``; ``what``: the unit in words ("encoder channels").
    """
    values = list(dict.fromkeys(values))
    if not values:
        raise ConfigError("extremes_sentence: no values")
    mean = {v: format(summary_[str(v)][metric]["mean"], fmt) for v in values}
    name = {"test_mse": "test MSE", "mse": "MSE"}.get(metric, metric.replace("_", " "))
    if len(values) == 1:
        return (f"With {values[0]} {what} the {name} is {mean[values[0]]}; a second setting would be needed to "
                f"compare.")
    return f"With {values[0]} {what} the {name} is {mean[values[0]]}; with {values[-1]} it is {mean[values[-1]]}."


def label_rows(rows_: Sequence[dict], name: str, template: str) -> list[dict]:
    """Add ``name = template.format(**row)`` to every row (e.g. ``"scratch, hidden 4"``: one plot hue)."""
    for row in rows_:
        row[name] = template.format(**row)
    return list(rows_)


def range_text(values: Sequence) -> str:
    """``"3"`` when all values agree, else ``"2 to 5"`` (smallest to largest)."""
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo} to {hi}"


def histogram_panel(result: RunResult, title: str) -> dict:
    """Embeddings (encoder outputs) vs tokens for plots.plot_histograms (1-D tokens)."""
    a = result.arrays
    used = np.zeros(a["codebook"].shape[0], dtype=bool)
    used[np.unique(a["indices"])] = True
    # plots.plot_histograms flattens [K, D] tokens itself and counts used *tokens*, not coordinates
    return {"title": title, "embeddings": a["Z"].reshape(-1), "tokens": a["codebook"], "used_tokens": used}


def reconstruction_panel(result: RunResult, title: str) -> dict:
    a = result.arrays
    return {"title": title, "X": a["X"], "X_hat": a["X_hat"], "y": a["y"]}


RECIPE_NAMES = {("simvq", "scratch"): "SimVQ", ("simvq", "pretrained"): "SimVQ pretrained",
                ("ema", "scratch"): "EMA scratch", ("ema", "pretrained"): "EMA pretrained"}


def recipe_of(config: dict) -> str:
    """A run's quantizer and method as one name: "SimVQ", "EMA scratch" or "EMA pretrained"."""
    return RECIPE_NAMES[(config["quantizer"], config["method"])]


def recipe_rows(results: Sequence[RunResult], keys: Sequence[str]) -> list[dict]:
    """:func:`rows` plus a ``recipe`` column (05: one plot hue per recipe)."""
    out = rows(results, keys)
    for row, r in zip(out, results):
        row["recipe"] = recipe_of(r.config)
    return out


def list_text(items: Sequence[str]) -> str:
    """"a, b and c" (one item: "a")."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _listed(values, fmt="{:,}") -> str:
    """"16, 256 and 4,096" (one value: "16")."""
    return list_text([fmt.format(v) for v in values])


def _seeds(seeds) -> str:
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}"


def _sizes(sizes) -> str:
    return f"codebook size{'s' if len(sizes) != 1 else ''} {_listed(sizes)}"


def _images(n: Optional[int]) -> str:
    return "all training images" if n is None else f"at most {n:,} training images"


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _rate(lr: float) -> str:
    """0.0003 -> "3·10⁻⁴", 0.001 -> "10⁻³" (as the prose writes the paper's); 0.05 -> "0.05"."""
    if lr >= 0.01:
        return f"{lr:g}"
    m, e = f"{lr:e}".split("e")
    m = f"{float(m):g}"
    power = "10" + str(int(e)).translate(_SUPERSCRIPT)
    return power if m == "1" else f"{m}·{power}"


def _cifar_model(token_dim: int, channels: int, residual_channels: int, lr: float) -> str:
    return (f"token dimension {token_dim}, {channels} channels ({residual_channels} in the residual blocks), "
            f"learning rate {_rate(lr)}")


def budget_sentence(cfg: NotebookParams) -> str:
    """What this build of a notebook trains, from its parameters (glued into its set-up paragraph,
    so that the text says what ran, whatever the profile or ``-p`` values). Training images are
    "at most" ``train_images``: a data set with fewer gives all of its own."""
    head = f"This build runs the {cfg.profile or 'given'} profile"
    if isinstance(cfg, TokensCollapseSynthetic):
        ablation = "; every run trained a second time with the Laplace-smoothed update" if cfg.laplace_ablation else ""
        return (f"{head}: {_listed(cfg.dims, '{}-D')} data (token dimension{'s' if len(cfg.dims) != 1 else ''} "
                f"{_listed(cfg.token_dims, '{}')}) with {cfg.n_per_cluster:,} points per cluster; "
                f"{cfg.scratch_epochs} epochs from scratch, {cfg.pretrain_epochs} + {cfg.finetune_epochs} "
                f"pretrained; {_seeds(cfg.seeds)}{ablation}.")
    if isinstance(cfg, TokensCollapseCifar):
        return (f"{head}: {_cifar_model(cfg.token_dim, cfg.channels, cfg.residual_channels, cfg.lr)}; "
                f"{_images(cfg.train_images)}; {_sizes(cfg.codebook_sizes)}; {_seeds(cfg.seeds)}; "
                f"{cfg.scratch_epochs} epochs from scratch, {cfg.pretrain_epochs} + {cfg.finetune_epochs} pretrained.")
    if isinstance(cfg, EmbeddingsCollapse):
        synthetic = runs_04(cfg)["synthetic, pretrained"][0]  # the split runs_04 gives the pretrained variant
        return (f"{head}: {_listed(cfg.dims, '{}-D')} synthetic data (token dimensions "
                f"{_listed(cfg.token_dims, '{}')}) with {cfg.n_per_cluster:,} points per cluster; {cfg.epochs} "
                f"epochs from scratch, {synthetic.pretrain_epochs} + {synthetic.finetune_epochs} for the pretrained "
                f"variant; encoder widths {_listed(cfg.encoder_hiddens, '{}')} from scratch, "
                f"{_listed(cfg.pretrained_hiddens, '{}')} pretrained; {_seeds(cfg.seeds)}. On CIFAR-10: codebook "
                f"{cfg.cifar_codebook_size:,}, token dimension {cfg.cifar_token_dim}, a decoder of "
                f"{cfg.cifar_channels} channels ({cfg.cifar_residual_channels} in the residual blocks), encoder "
                f"channels {_listed(cfg.encoder_channels, '{}')}, learning rate {_rate(cfg.cifar_lr)}; "
                f"{_images(cfg.cifar_train_images)}; {cfg.cifar_epochs} epochs; {_seeds(cfg.cifar_seeds)}.")
    if isinstance(cfg, SimVQComparison):
        runs = runs_05(cfg)
        widths = {name: sorted({c.encoder_hidden for c in cs}) for name, cs in runs.items() if "synthetic" in name}
        simvq = widths.pop("SimVQ synthetic runs")
        others = sorted({w for ws in widths.values() for w in ws})
        return (f"{head}: {_listed(cfg.dims, '{}-D')} synthetic data with {cfg.n_per_cluster:,} points per "
                f"cluster; {cfg.scratch_epochs} epochs from scratch, {cfg.pretrain_epochs} + {cfg.finetune_epochs} "
                f"pretrained; encoder width {_listed(others, '{}')}, SimVQ from scratch also "
                f"{_listed([w for w in simvq if w not in others] or simvq, '{}')}; {_seeds(cfg.seeds)}. On "
                f"CIFAR-10: {_cifar_model(cfg.token_dim, cfg.channels, cfg.residual_channels, cfg.cifar_lr)}; "
                f"{_images(cfg.train_images)}; {_sizes(cfg.codebook_sizes)}; "
                f"{cfg.cifar_scratch_epochs} epochs from scratch, {cfg.cifar_pretrain_epochs} + "
                f"{cfg.cifar_finetune_epochs} pretrained; {_seeds(cfg.cifar_seeds)}.")
    raise ConfigError(f"budget_sentence knows notebooks 02, 03, 04 and 05, not {type(cfg).__name__}")


def cifar_data_description(data, results: Sequence[RunResult]) -> str:
    """``data.description``, plus how many training images the runs used when ``train_images`` cut it."""
    used = sorted({int(r.metrics["n_train"]) for r in results})
    if used and used != [data.n_train]:
        counts = " or ".join(f"{n:,}" for n in used)
        return f"{data.description}; the runs trained on a class-stratified subset of {counts} of its training images"
    return data.description


def remedy_rows(runs: dict, keys: Sequence[str] = ("dim", "seed")) -> list[dict]:
    """:func:`rows` of every recipe's runs plus ``remedy`` (its short label, one plot hue per recipe)."""
    return [row for name, rs in runs.items() for row in rows(rs, keys, label={"remedy": parse_remedy(name).label})]


def diagnose_run(run: RunResult, title: str):
    """``vqpaper.diagnose`` on a synthetic run's arrays: embeddings, tokens, data, labels, reconstructions."""
    a = run.arrays
    return diagnose(a["Z"], a["indices"], a["codebook"], data=a["X"], labels=a["y"], reconstructions=a["X_hat"],
                    title=title)


# --------------------------------------------------------------------------------------
# 01 preliminaries: where unused tokens go (§3), what the tokens are initialised from (Fig. 2)
# --------------------------------------------------------------------------------------
def untrained_embeddings(cfg: Preliminaries, seed: int):
    """The data and the outputs of a freshly initialised encoder (``[N * latents, token_dim]``)."""
    X, y = make_clusters(cfg.n_per_cluster, cfg.dim, seed=cfg.data_seed)
    model = MLPVQVAE(cfg.dim, cfg.token_dim, seeds=[seed])  # a group of one, weights drawn from the seed
    with torch.no_grad():
        z = model.encode(torch.from_numpy(X)[None])[0].reshape(-1, cfg.token_dim)
    return X, y, z


def unused_token_positions(used: Sequence[float], unused: Sequence[float], data: tuple[float, float],
                           record_at: Sequence[int], decay: float = 0.9, batch_size: int = 256,
                           seed: int = 0) -> list[dict]:
    """Positions of 1-D tokens that no embedding chooses, under each EMA update (01 §3).

    A codebook of ``used`` and ``unused`` tokens (``L_k = 1``, ``M_k = t_k``) is trained by
    ``EMAQuantizer`` on batches drawn uniformly from ``data = (low, high)``, once per update of
    ``quantizers.EMA_UPDATES``, the same batches for both. The ``unused`` tokens must lie
    farther from that interval than every ``used`` token and, moving towards the origin, get
    no closer to it (so that they never win an embedding); a batch that picks one of them is an
    error. Returns one row per update, token and step of ``record_at`` (0 = the start).
    """
    start = [float(t) for t in used] + [float(t) for t in unused]
    low, high = map(float, data)
    out = []
    for update in EMA_UPDATES:
        q = EMAQuantizer(len(start), 1, decay=decay, kmeans_init="none", update=update)
        q.codebook.copy_(torch.tensor(start)[:, None])
        q.cluster_size.fill_(1.0)
        q.embed_sum.copy_(q.codebook)   # eq. (5) holds at the start: t_k = M_k / L_k
        q.train()
        g = torch.Generator().manual_seed(seed)
        for step in range(max(record_at) + 1):
            if step in record_at:
                out += [{"update": update, "token start": t0, "step": step, "position": float(q.codebook[k, 0])}
                        for k, t0 in enumerate(start) if k >= len(used)]
            _, idx, _ = q(torch.rand(batch_size, 1, generator=g) * (high - low) + low)
            if bool((idx >= len(used)).any()):
                raise ConfigError(f"unused_token_positions: a token of unused={list(unused)} won an embedding at "
                                  f"step {step} under update={update!r}; place them farther from data={data}")
    return out


#: Fig. 2's name for the encoder whose outputs a run's K-means initialisation saw.
ENCODER_OF_METHOD = {"scratch": "untrained", "pretrained": "trained"}


def encoder_output_configs(cfg: Preliminaries) -> list[SyntheticRun]:
    """Fig. 2 runs, per seed: one ``scratch`` run and one ``pretrained`` run (01_preliminaries).

    Only ``arrays["Z_init"]`` is used (``train._init_codebook``): for the scratch run the
    untrained encoder's outputs, for the pretrained run the encoder's outputs after
    autoencoder pretraining. Both are taken before the first VQ step, so the VQ epochs that
    follow (``scratch_epochs``, ``finetune_epochs``) do not change them.
    """
    out = []
    for seed in cfg.seeds:
        common = dict(dim=cfg.dim, token_dim=cfg.token_dim, n_per_cluster=cfg.n_per_cluster,
                      data_seed=cfg.data_seed, seed=seed, device=cfg.device)
        out.append(SyntheticRun(method="scratch", epochs=cfg.scratch_epochs, **common).validate())
        out.append(SyntheticRun(method="pretrained", pretrain_epochs=cfg.pretrain_epochs,
                                finetune_epochs=cfg.finetune_epochs, **common).validate())
    return out


def encoder_output_rows(results: Sequence[RunResult], prominence: float = 0.05) -> list[dict]:
    """Per run: seed, encoder (untrained / trained), range and KDE peak count of ``Z_init``."""
    out = []
    for r in results:
        z = r.arrays["Z_init"].reshape(-1)
        out.append({"seed": r.config["seed"], "encoder": ENCODER_OF_METHOD[r.config["method"]],
                    "range": float(r.metrics["init_range"]), "min": float(z.min()), "max": float(z.max()),
                    "peaks": M.count_peaks(z, prominence=prominence)})
    return out

def encoder_output_coordinates(results: Sequence[RunResult], prominence: float = 0.05) -> list[dict]:
    """Per run and coordinate of ``Z_init``: KDE peaks of the encoder outputs and of the input (Fig. 2).

    A run's ``Z_init`` holds ``dim / token_dim`` latents of ``token_dim`` each per data point,
    ``dim`` numbers in all, as many as the input has coordinates. Coordinate ``c`` of the outputs
    is paired with coordinate ``c`` of the input ``X``: the encoder mixes the input's coordinates,
    so this pairs two 1-D views of the same points, not the same axis (see 01 §6).
    """
    out = []
    for r in results:
        X = r.arrays["X"]
        z = r.arrays["Z_init"].reshape(X.shape[0], -1)
        for c in range(z.shape[1]):
            out.append({"seed": r.config["seed"], "encoder": ENCODER_OF_METHOD[r.config["method"]],
                        "coordinate": c + 1, "peaks": M.count_peaks(z[:, c], prominence=prominence),
                        # the runs share their input: its peaks are counted once per coordinate
                        "input peaks": M.count_data_peaks(X[:, c], prominence=prominence),
                        "range": float(np.ptp(z[:, c]))})
    return out


#: Fig. 2 draws this many seeds (rows); every seed enters its table and checks. Forty rows of
#: four histograms would be unreadable, and drawing them took a minute of notebook 01.
FIG2_SEEDS_SHOWN = 4


def encoder_output_coordinate_panels(results: Sequence[RunResult], per_coordinate: Sequence[dict],
                                     max_seeds: int = FIG2_SEEDS_SHOWN) -> list[dict]:
    """Fig. 2 panels, one per seed, encoder and coordinate of ``Z_init`` (for plots.plot_encoder_outputs).

    Rows of four per seed, for the ``max_seeds`` lowest seeds: untrained coordinates, then trained
    ones; each title names the input's peak count for that coordinate
    (:func:`encoder_output_coordinates`), the reference of the checks.
    """
    input_peaks = {(r["seed"], r["encoder"], r["coordinate"]): r["input peaks"] for r in per_coordinate}
    out = []
    for seed in sorted({r.config["seed"] for r in results})[:max_seeds]:
        for method in ("scratch", "pretrained"):
            for r in select(results, method=method, seed=seed):
                z = r.arrays["Z_init"].reshape(r.arrays["X"].shape[0], -1)
                encoder = ENCODER_OF_METHOD[method]
                for c in range(z.shape[1]):
                    out.append({"title": f"{encoder}, seed {seed}, coordinate {c + 1} "
                                         f"(input: {input_peaks[(seed, encoder, c + 1)]} peaks)",
                                "embeddings": z[:, c]})
    return out


# --------------------------------------------------------------------------------------
# 06: our EMA-VQ against the library's
# --------------------------------------------------------------------------------------
@torch.no_grad()
def compare_ema_with_library(codebook_size: int = 128, token_dim: int = 1, decay: float = 0.9, steps: int = 200,
                             batch: int = 512, seed: int = 0) -> list[dict]:
    """Our ``EMAQuantizer`` and the library's ``VectorQuantize`` from one codebook on one stream of batches.

    Both start from the same tokens, ``L_k = 1`` and ``M_k = t_k``; every step both see the same
    batch of latents, drawn from two Gaussian modes that only half of the tokens are near (so
    some tokens go unused). One row per update rule of ours (``quantizers.EMA_UPDATES``):
    the share of latents given the same token at every step, the largest gap between the two
    codebooks at the end, and how many tokens each left within 1e-3 of the origin.
    """
    from vector_quantize_pytorch import VectorQuantize  # heavy, and used by notebook 06 only

    g = torch.Generator().manual_seed(seed)
    start = torch.randn(codebook_size, token_dim, generator=g) * 2.0
    centres = torch.randn(2, token_dim, generator=g) * 2.0
    batches = [centres[torch.randint(2, (batch,), generator=g)] + 0.3 * torch.randn(batch, token_dim, generator=g)
               for _ in range(steps)]
    out = []
    for update in EMA_UPDATES:
        ours = EMAQuantizer(codebook_size, token_dim, decay=decay, kmeans_init="none", update=update).train()
        ours.codebook.copy_(start)
        ours.cluster_size.fill_(1.0)
        ours.embed_sum.copy_(start)
        with Seeded(seed):
            lib = VectorQuantize(dim=token_dim, codebook_size=codebook_size, decay=decay, eps=ours.eps,
                                 kmeans_init=False, rotation_trick=False, threshold_ema_dead_code=0,
                                 use_cosine_sim=False, commitment_weight=ours.beta, sync_codebook=False).train()
        lib._codebook.embed.copy_(start[None])
        lib._codebook.embed_avg.copy_(start[None])
        lib._codebook.cluster_size.fill_(1.0)
        same = total = 0
        for z in batches:
            _, i_ours, _ = ours(z)
            _, i_lib, _ = lib(z[None])
            same += int((i_ours == i_lib[0]).sum())
            total += z.shape[0]
        lib_codebook = lib.codebook
        out.append({"update": update, "same_token_share": same / total,
                    "max_codebook_gap": float((ours.codebook - lib_codebook).abs().max()),
                    "ours_at_origin": int((ours.codebook.norm(dim=1) < 1e-3).sum()),
                    "library_at_origin": int((lib_codebook.norm(dim=1) < 1e-3).sum()),
                    "steps": steps, "codebook_size": codebook_size, "token_dim": token_dim})
    return out


#: Our EMA-VQ and the library's count as the same algorithm when, both smoothing the counts, they give the same
#: token to at least this share of the latents. Not 100%: the same update computed in another order leaves the
#: tokens a float rounding apart, and a latent within rounding of halfway between two tokens can then take
#: either (after which the two codebooks drift a little apart); eq. (5) against the library disagrees far more.
SAME_ALGORITHM_SHARE = 0.999


def library_conclusion(rows: Sequence[dict]) -> str:
    """Whether the two EMA-VQs agree once both smooth the counts, over every row of :func:`compare_ema_with_library`."""
    lap = [r for r in rows if r["update"] == "laplace"]
    if not lap:
        raise ConfigError("library_conclusion: no row with the Laplace-smoothed update")
    worst_share = min(r["same_token_share"] for r in lap)
    worst_gap = max(r["max_codebook_gap"] for r in lap)
    if worst_share >= SAME_ALGORITHM_SHARE:
        return (f"So the two implementations are the same algorithm up to float rounding once both smooth the "
                f"counts (at least {worst_share:.2%} of the choices agreed; codebooks at most {worst_gap:.2g} apart).")
    return (f"So the two implementations differ even when both smooth the counts: as few as {worst_share:.2%} of "
            f"the choices agreed and the codebooks ended up to {worst_gap:.3g} apart.")


def library_difference_sentence(rows: Sequence[dict]) -> str:
    """What :func:`compare_ema_with_library` measured, as a sentence for the book (computed, not typed)."""
    by = {r["update"]: r for r in rows}
    lap, eq5 = by["laplace"], by["eq5"]
    same = ("every latent" if lap["same_token_share"] == 1.0 else
            f"{lap['same_token_share']:.2%} of the latents (the same update computed in another order leaves the "
            f"tokens a float rounding apart, and a latent almost exactly halfway between two tokens can then take "
            f"either)")
    return (f"From one codebook of {lap['codebook_size']} tokens of dimension {lap['token_dim']}, over "
            f"{lap['steps']} batches, our EMA-VQ with the Laplace-smoothed update gave the library's VectorQuantize's "
            f"token to {same}, and the codebooks ended at most {lap['max_codebook_gap']:.2g} apart; with eq. (5) "
            f"as the paper writes it (this book's "
            f"default) {eq5['same_token_share']:.1%} of the choices agreed and the codebooks ended up to "
            f"{eq5['max_codebook_gap']:.3g} apart, because the library drags every unused token towards the origin "
            f"({eq5['library_at_origin']} tokens ended there, against {eq5['ours_at_origin']} of ours).")
