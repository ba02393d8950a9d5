"""The experiments of each notebook, as functions: configs in, runs and tidy rows out.

A notebook cell is a call and a sentence (STYLE.md); what the call does lives here.
"""
from __future__ import annotations

import time
from typing import Iterable, Optional, Sequence

import numpy as np

from .config import CifarRun, NotebookConfig, SyntheticRun, notebook_config, set_threads
from .sweeps import sweep
from .train import RunResult


def setup(notebook: str, profile: str, **params) -> NotebookConfig:
    """Check a notebook's parameters (before any training), set torch's threads, start the clock.

    ``params`` are the parameters cell's values; ``None`` means "the profile's value".
    """
    cfg = notebook_config(notebook, profile, **params)
    cfg["threads"] = set_threads()
    cfg["started"] = time.time()
    cfg["notebook"] = notebook
    return cfg


def params_of(cfg: NotebookConfig) -> dict:
    """The parameters to record with a figure (no clock, no thread count)."""
    return {k: v for k, v in cfg.items() if k not in ("started", "threads", "notebook")}


def parameters_table(cfg: NotebookConfig):
    """The notebook's parameters as run: value and meaning, from its dataclass (``config.describe``)."""
    import pandas as pd

    from .config import describe

    rows = [{"parameter": r["parameter"], "value": cfg[r["parameter"]], "meaning": r["meaning"]}
            for r in describe(cfg.notebook)]
    return pd.DataFrame(rows).set_index("parameter")


def synthetic_configs(cfg: NotebookConfig, *, methods: Sequence[str] = ("scratch", "pretrained"),
                      quantizer: str = "ema", encoder_hiddens: Optional[Iterable[int]] = None,
                      epochs: Optional[int] = None, ema_update: str = "eq5") -> list[SyntheticRun]:
    """Every (dim, method, encoder width, seed) run of a synthetic experiment."""
    hiddens = list(encoder_hiddens) if encoder_hiddens is not None else [32]
    scratch_epochs = epochs if epochs is not None else cfg.get("scratch_epochs", cfg.get("epochs"))
    out = []
    for dim, token_dim in zip(cfg.dims, cfg.token_dims):
        for method in methods:
            for hidden in hiddens:
                for seed in cfg.seeds:
                    out.append(SyntheticRun(
                        dim=dim, token_dim=token_dim, encoder_hidden=hidden, quantizer=quantizer, method=method,
                        epochs=scratch_epochs, pretrain_epochs=cfg.get("pretrain_epochs", max(1, scratch_epochs // 2)),
                        finetune_epochs=cfg.get("finetune_epochs", max(1, scratch_epochs // 2)),
                        n_per_cluster=cfg.n_per_cluster, data_seed=cfg.data_seed, seed=seed,
                        ema_update=ema_update, device=cfg.device).validate())
    return out


def cifar_configs(cfg: NotebookConfig, *, codebook_sizes: Sequence[int], methods: Sequence[str],
                  quantizer: str = "ema", encoder_channels: Optional[Iterable[Optional[int]]] = None,
                  **overrides) -> list[CifarRun]:
    """Every (codebook size, method, encoder width, seed) CIFAR-10 run."""
    widths = list(encoder_channels) if encoder_channels is not None else [None]
    base = dict(token_dim=cfg.get("token_dim", 32), channels=cfg.get("channels", 128),
                residual_channels=cfg.get("residual_channels", 64),
                pretrain_epochs=cfg.get("pretrain_epochs", 150), finetune_epochs=cfg.get("finetune_epochs", 150),
                epochs=cfg.get("scratch_epochs", 300), train_images=cfg.get("train_images"),
                kmeans_vectors=cfg.get("kmeans_vectors"), device=cfg.device)
    base.update(overrides)
    out = []
    for k in codebook_sizes:
        for method in methods:
            for width in widths:
                for seed in cfg.get("seeds", [0]):
                    out.append(CifarRun(codebook_size=k, method=method, quantizer=quantizer,
                                        encoder_channels=width, seed=seed, **base).validate())
    return out


def run_all(configs, data=None, desc="runs") -> list[RunResult]:
    """Run (or load from the cache) every config, with a progress bar."""
    return sweep(configs, data, desc=desc)


def rows(results: Sequence[RunResult], keys: Sequence[str] = ("dim", "method", "quantizer", "seed"),
         label: Optional[dict] = None) -> list[dict]:
    """Tidy rows (one per run): the chosen config keys plus every scalar metric."""
    out = []
    for r in results:
        row = {k: r.config.get(k) for k in keys}
        row.update({m: v for m, v in r.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        row["wall_time_s"] = r.wall_time_s
        if label:
            row.update(label)
        out.append(row)
    return out


def select(results: Sequence[RunResult], **where) -> list[RunResult]:
    """Runs whose config matches every ``key=value`` (ordered by seed)."""
    sel = [r for r in results if all(r.config.get(k) == v for k, v in where.items())]
    return sorted(sel, key=lambda r: r.config.get("seed", 0))


def per_seed(results: Sequence[RunResult], metric: str, **where) -> list[float]:
    return [float(r.metrics[metric]) for r in select(results, **where)]


def summary(rows_: Sequence[dict], by: Sequence[str], metrics: Sequence[str]) -> dict:
    """Nested ``{group label: {metric: {"mean", "std", "per_seed"}}}`` for recording and glue."""
    groups: dict = {}
    for row in rows_:
        label = "/".join(str(row[b]) for b in by)
        g = groups.setdefault(label, {m: [] for m in metrics})
        for m in metrics:
            g[m].append(row.get(m, float("nan")))
    return {label: {m: aggregate(v) for m, v in g.items()} for label, g in groups.items()}


def aggregate(values: Sequence[float]) -> dict:
    """``{"mean", "std", "per_seed"}`` of one metric over seeds: the book's one aggregation.

    ``std`` is the sample standard deviation (ddof 1), as in the figures' error bars; 0 for a
    single seed.
    """
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "per_seed": [float(x) for x in v]}


def mean_std_text(values: Sequence[float], fmt: str = ".3g") -> str:
    """``"0.58 ± 0.03"``: mean ± sample standard deviation over seeds (see :func:`aggregate`)."""
    a = aggregate(values)
    return f"{a['mean']:{fmt}} ± {a['std']:.2g}"


def summary_frame(rows_: Sequence[dict], by: Sequence[str], metrics: Sequence[str], digits: int = 3):
    """A readable table: one row per group, ``mean ± std`` per metric."""
    import pandas as pd

    s = summary(rows_, by, metrics)
    return pd.DataFrame([{**dict(zip(by, label.split("/"))),
                          **{m: f"{d[m]['mean']:.{digits}g} ± {d[m]['std']:.2g}" for m in metrics}}
                         for label, d in s.items()])


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


# --------------------------------------------------------------------------------------
# Verdicts: paired checks over settings (claims.Family collects them per sentence of the paper)
# --------------------------------------------------------------------------------------
def runs_converged(results: Sequence[RunResult], **where) -> bool:
    """Whether every selected run's final training loss has flattened (``claims.converged``)."""
    from .claims import converged

    return all(converged(r.history) for r in select(results, **where))


def paired_checks(results: Sequence[RunResult], metric: str, *, better: dict, worse: dict, over: str,
                  values: Iterable, label: str, claim: str, higher_is_better: bool = True,
                  id_prefix: str = "", worse_results: Optional[Sequence[RunResult]] = None) -> list:
    """One ``claims.paired`` check per value of ``over`` (e.g. per dim): ``better`` vs ``worse`` seed by seed.

    ``better``/``worse`` select runs (e.g. ``{"method": "pretrained"}``); ``label`` formats the
    setting (``"{}-D"``), ``claim`` the statement (``"{setting}: pretraining gives ..."``). A
    check is inconclusive when any run it compares had not converged. ``worse_results``: take
    the ``worse`` runs from another list (e.g. another quantizer's runs).
    """
    from . import claims

    other = results if worse_results is None else worse_results
    out = []
    for value in values:
        setting = label.format(value)
        b = select(results, **{over: value}, **better)
        w = select(other, **{over: value}, **worse)
        ok = runs_converged(b) and runs_converged(w)
        out.append(claims.paired(f"{id_prefix}-{metric.replace('_', '-')}-{setting}".lower().replace(" ", "")
                                 .replace(",", "").replace("=", ""),
                                 claim.format(setting=setting),
                                 [float(r.metrics[metric]) for r in b], [float(r.metrics[metric]) for r in w],
                                 higher_is_better=higher_is_better, converged=ok, setting=setting))
    return out


# --------------------------------------------------------------------------------------
# 01 preliminaries, Fig. 2: the encoder outputs the tokens are initialised from
# --------------------------------------------------------------------------------------
#: Fig. 2's name for the encoder whose outputs a run's K-means initialisation saw.
ENCODER_OF_METHOD = {"scratch": "untrained", "pretrained": "trained"}


def encoder_output_configs(cfg: NotebookConfig) -> list[SyntheticRun]:
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
    from . import metrics as M

    out = []
    for r in results:
        z = r.arrays["Z_init"].reshape(-1)
        out.append({"seed": r.config["seed"], "encoder": ENCODER_OF_METHOD[r.config["method"]],
                    "range": float(r.metrics["init_range"]), "min": float(z.min()), "max": float(z.max()),
                    "peaks": M.count_peaks(z, prominence=prominence)})
    return out


def encoder_output_panel(result: RunResult, title: str) -> dict:
    """``Z_init`` (all latents, all coordinates) for plots.plot_encoder_outputs."""
    return {"title": title, "embeddings": result.arrays["Z_init"].reshape(-1)}


def untrained_embeddings(cfg: NotebookConfig, seed: int):
    """The data and the outputs of a freshly initialised encoder (``[N * latents, token_dim]``)."""
    import torch

    from .data import make_clusters
    from .models import MLPVQVAE

    X, y = make_clusters(cfg.n_per_cluster, cfg.dim, seed=cfg.data_seed)
    model = MLPVQVAE(cfg.dim, cfg.token_dim, seeds=[seed])  # a group of one, weights drawn from the seed
    with torch.no_grad():
        z = model.encode(torch.from_numpy(X)[None])[0].reshape(-1, cfg.token_dim)
    return X, y, z


# --------------------------------------------------------------------------------------
# 03 tokens collapse on CIFAR-10 and 04 embeddings collapse: sweeps and their claims
# --------------------------------------------------------------------------------------
def with_params(cfg: NotebookConfig, **changes) -> NotebookConfig:
    """A copy of ``cfg`` with some values changed (04: the CIFAR runs have their own seeds)."""
    return NotebookConfig({**cfg, **changes})


def label_rows(rows_: Sequence[dict], name: str, template: str) -> list[dict]:
    """Add ``name = template.format(**row)`` to every row (e.g. ``"scratch, hidden 4"``: one plot hue)."""
    for row in rows_:
        row[name] = template.format(**row)
    return list(rows_)


def per_seed_at(results: Sequence[RunResult], metric: str, key: str, values: Iterable, **where) -> list[float]:
    """``metric`` per seed at each of ``values`` of ``key``, concatenated in that order.

    Two calls that differ only in ``where`` (e.g. the method) line up pair by pair for
    ``claims.paired``, even over several codebook sizes.
    """
    return [v for value in values for v in per_seed(results, metric, **{key: value}, **where)]


def per_seed_ratio(results: Sequence[RunResult], metric: str, key: str, top, bottom, **where) -> list[float]:
    """Per seed: ``metric`` at ``key=top`` divided by ``metric`` at ``key=bottom`` (growth along a sweep)."""
    hi = per_seed(results, metric, **{key: top}, **where)
    lo = per_seed(results, metric, **{key: bottom}, **where)
    return [h / l if l else float("nan") for h, l in zip(hi, lo)]


# --------------------------------------------------------------------------------------
# 05 SimVQ comparison: one name per recipe, and verdict words computed from the claims
# --------------------------------------------------------------------------------------
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


def cifar_data_description(data, results: Sequence[RunResult]) -> str:
    """``data.description``, plus how many training images the runs used when ``train_images`` cut it."""
    used = sorted({int(r.metrics["n_train"]) for r in results})
    if used and used != [data.n_train]:
        counts = " or ".join(f"{n:,}" for n in used)
        return f"{data.description}; the runs trained on a class-stratified subset of {counts} of its training images"
    return data.description


def record(cfg: NotebookConfig, figure_id: str, values, seeds=None):
    """Record a figure's numbers with this notebook's parameters, profile, clock and device."""
    from . import results

    return results.record(figure_id, values, notebook=cfg.notebook, params=params_of(cfg), profile=cfg.profile,
                          seeds=cfg.seeds if seeds is None else seeds, started=cfg.started, device=cfg.device)


# --------------------------------------------------------------------------------------
# 01 preliminaries: where unused tokens go (§3) and the claims of Fig. 2 (§6)
# --------------------------------------------------------------------------------------
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
    import torch

    from .errors import ConfigError
    from .quantizers import EMA_UPDATES, EMAQuantizer

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


def range_text(values: Sequence) -> str:
    """``"3"`` when all values agree, else ``"2 to 5"`` (smallest to largest)."""
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo} to {hi}"


def encoder_output_coordinates(results: Sequence[RunResult], prominence: float = 0.05) -> list[dict]:
    """Per run and coordinate of ``Z_init``: KDE peaks of the encoder outputs and of the input (Fig. 2).

    A run's ``Z_init`` holds ``dim / token_dim`` latents of ``token_dim`` each per data point,
    ``dim`` numbers in all, as many as the input has coordinates. Coordinate ``c`` of the outputs
    is paired with coordinate ``c`` of the input ``X``: the encoder mixes the input's coordinates,
    so this pairs two 1-D views of the same points, not the same axis (see 01 §6).
    """
    from . import metrics as M

    out = []
    for r in results:
        X = r.arrays["X"]
        z = r.arrays["Z_init"].reshape(X.shape[0], -1)
        for c in range(z.shape[1]):
            out.append({"seed": r.config["seed"], "encoder": ENCODER_OF_METHOD[r.config["method"]],
                        "coordinate": c + 1, "peaks": M.count_peaks(z[:, c], prominence=prominence),
                        "input peaks": M.count_peaks(X[:, c], prominence=prominence),
                        "range": float(np.ptp(z[:, c]))})
    return out


def encoder_output_families(per_run: Sequence[dict], per_coordinate: Sequence[dict], ratio: float = 5) -> list:
    """The claims of Fig. 2 as ``claims.Family``s (01 §6), from :func:`encoder_output_rows` and
    :func:`encoder_output_coordinates` of the same runs.

    * range: per seed, the trained encoder's outputs span at least ``ratio`` times the range of
      the untrained encoder's (the paper's "relatively small range", made concrete);
    * fewer peaks: per seed and coordinate, the untrained encoder's outputs show fewer KDE peaks
      than the input's same coordinate (Fig. 2 (a));
    * as many peaks: per seed and coordinate, the trained encoder's outputs show at least as many
      peaks as the input's (Fig. 2 (b); ``peaks > input - 1``, so "more" passes and "fewer" fails).
    """
    from .claims import HELD, INCONCLUSIVE, NOT_HELD, Family, paired

    def pick(rows_, encoder):
        return sorted((r for r in rows_ if r["encoder"] == encoder), key=lambda r: (r["seed"], r.get("coordinate", 0)))

    u_run, t_run = pick(per_run, "untrained"), pick(per_run, "trained")
    u_co, t_co = pick(per_coordinate, "untrained"), pick(per_coordinate, "trained")
    if [r["seed"] for r in u_run] != [r["seed"] for r in t_run] or len(u_co) != len(t_co):
        raise ValueError("encoder_output_families: need one untrained and one trained run per seed")
    return [
        Family("pre-range-narrower", "§3.1.1, Fig. 2 (a)",
               "the untrained encoder's outputs cluster in a much narrower range than the trained encoder's",
               [paired("pre-range-ratio", f"per seed: the trained encoder's outputs span at least {ratio:g} "
                       f"times the range of the untrained encoder's", [r["range"] for r in t_run],
                       [ratio * r["range"] for r in u_run], setting=f"range ratio ≥ {ratio:g}")],
               {HELD: f"The untrained encoder's outputs span a range at least {ratio:g} times narrower than the "
                      f"trained encoder's, as in the paper's Fig. 2.",
                NOT_HELD: f"The untrained encoder's outputs do not span a range {ratio:g} times narrower than the "
                          f"trained encoder's here, unlike the paper's Fig. 2.",
                INCONCLUSIVE: f"Whether the untrained encoder's outputs span a range {ratio:g} times narrower than the "
                              f"trained encoder's cannot be decided from these seeds."}),
        Family("pre-untrained-fewer-peaks", "§3.1.1, Fig. 2 (a)",
               "the untrained encoder's outputs show fewer peaks than the input",
               [paired("pre-untrained-fewer-peaks-than-input", "per seed and coordinate: the untrained encoder's "
                       "outputs show fewer KDE peaks than the input's same coordinate", [r["peaks"] for r in u_co],
                       [r["input peaks"] for r in u_co], higher_is_better=False, setting="seeds × coordinates")],
               {HELD: "The untrained encoder's outputs show fewer peaks than the input, coordinate by coordinate, "
                      "as the paper's Fig. 2 (a) says: it merges some of the input's modes.",
                NOT_HELD: "The untrained encoder's outputs do not show fewer peaks than the input here: the merged "
                          "modes of the paper's Fig. 2 (a) are not seen in the peak counts.",
                INCONCLUSIVE: "Whether the untrained encoder's outputs show fewer peaks than the input cannot be "
                              "decided from these seeds and coordinates (the table of checks gives the interval)."}),
        Family("pre-trained-peaks-match-input", "§3.1.1, Fig. 2 (b)",
               "the trained encoder's outputs show as many peaks as the input",
               [paired("pre-trained-at-least-input-peaks", "per seed and coordinate: the trained encoder's outputs "
                       "show at least as many KDE peaks as the input's same coordinate", [r["peaks"] for r in t_co],
                       [r["input peaks"] - 1 for r in t_co], setting="seeds × coordinates")],
               {HELD: "The trained encoder's outputs show at least as many peaks as the input, coordinate by "
                      "coordinate, as the paper's Fig. 2 (b) says: pretraining keeps the input's modes apart.",
                NOT_HELD: "The trained encoder's outputs show fewer peaks than the input here, unlike the paper's "
                          "Fig. 2 (b).",
                INCONCLUSIVE: "Whether the trained encoder's outputs show as many peaks as the input cannot be decided "
                              "from these seeds and coordinates (the table of checks gives the interval)."}),
    ]


def encoder_output_coordinate_panels(results: Sequence[RunResult], per_coordinate: Sequence[dict]) -> list[dict]:
    """Fig. 2 panels, one per seed, encoder and coordinate of ``Z_init`` (for plots.plot_encoder_outputs).

    Rows of four per seed: untrained coordinates, then trained ones; each title names the input's
    peak count for that coordinate (:func:`encoder_output_coordinates`), the reference of the checks.
    """
    input_peaks = {(r["seed"], r["encoder"], r["coordinate"]): r["input peaks"] for r in per_coordinate}
    out = []
    for seed in sorted({r.config["seed"] for r in results}):
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
# 06 remedies: every recipe on the runs of notebooks 02-04 (recipes parsed in vqpaper.remedies)
# --------------------------------------------------------------------------------------
def remedy_runs(configs: Sequence, remedies: Sequence[str], data=None, desc: str = "runs") -> dict:
    """``{recipe: runs}``: the base ``configs`` (EMA-VQ from scratch) with each recipe applied, all run.

    One sweep over every recipe's configs (finished runs come from the cache, see
    :func:`run_all`); recipes that share a config (say the baseline and a run of notebook 02)
    share the run.
    """
    from .remedies import parse_remedies, with_remedy

    per = {r.name: with_remedy(configs, r) for r in parse_remedies(remedies)}
    flat = run_all([c for cs in per.values() for c in cs], data, desc=desc)
    out, start = {}, 0
    for name, cs in per.items():
        out[name] = flat[start:start + len(cs)]
        start += len(cs)
    return out


def remedy_rows(runs: dict, keys: Sequence[str] = ("dim", "seed")) -> list[dict]:
    """:func:`rows` of every recipe's runs plus ``remedy`` (its short label, one plot hue per recipe)."""
    from .remedies import parse_remedy

    return [row for name, rs in runs.items() for row in rows(rs, keys, label={"remedy": parse_remedy(name).label})]


def remedy_base_configs(cfg: NotebookConfig) -> dict:
    """06's base configs (EMA-VQ from scratch) per sweep, before each recipe is applied (:func:`remedy_runs`).

    ``"synthetic"``: every data dimension, encoder hidden 32; ``"narrow"``: the narrow encoder on
    ``narrow_dims``, with its own epochs and points per cluster; ``"cifar"``: the CIFAR-10 sizes
    and seeds. The notebook and ``vqpaper plan`` both build their runs here.
    """
    narrow = with_params(cfg, dims=cfg.narrow_dims,
                         token_dims=[t for d, t in zip(cfg.dims, cfg.token_dims) if d in cfg.narrow_dims],
                         scratch_epochs=cfg.narrow_epochs, pretrain_epochs=max(1, cfg.narrow_epochs // 2),
                         finetune_epochs=max(1, cfg.narrow_epochs // 2), n_per_cluster=cfg.narrow_n_per_cluster)
    return {
        "synthetic": synthetic_configs(cfg, methods=("scratch",)),
        "narrow": synthetic_configs(narrow, methods=("scratch",), encoder_hiddens=[cfg.narrow_hidden]),
        "cifar": cifar_configs(with_params(cfg, seeds=cfg.cifar_seeds), codebook_sizes=cfg.codebook_sizes,
                               methods=("scratch",), epochs=cfg.cifar_scratch_epochs,
                               pretrain_epochs=cfg.cifar_pretrain_epochs, finetune_epochs=cfg.cifar_finetune_epochs),
    }
