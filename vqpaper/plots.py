"""Figure functions for the book: each returns a matplotlib Figure; save it with ``save_figure``.

Every figure has a stable id (``fig-tokens-collapse-synthetic``) used as its file name, as the
MyST ``name:`` in the book and as the key of its recorded numbers (``vqpaper.results``).

The functions use pyplot to create figures (so a notebook shows them inline) but never call
``plt.show``; matplotlib picks the non-interactive ``Agg`` backend by itself on a headless
machine. Text is ≥ 9 pt and figures are saved at 120 dpi.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from . import metrics as M
from . import paths
from .errors import ConfigError
from .paths import FIGURE_ID, check_figure_id  # one definition, re-exported
from .spread import aggregate

__all__ = [
    "FIGURE_ID",
    "save_figure",
    "plot_histograms",
    "plot_reconstructions",
    "plot_encoder_outputs",
    "plot_sweep",
    "plot_metric_bars",
    "plot_token_allocation",
    "plot_image_grid",
    "plot_remedy_heatmap",
]

DPI = 120

_RC = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "figure.titlesize": 11,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
}
EMBEDDING_COLOUR = "0.55"  # grey, as in the paper's figures
TOKEN_COLOUR = "tab:red"
DEAD_TOKEN_COLOUR = "tab:blue"


def _styled(func):
    """Draw inside one style (seaborn whitegrid + readable font sizes) without changing globals."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with plt.rc_context(_RC), sns.axes_style("whitegrid"):
            return func(*args, **kwargs)

    return wrapper


def save_figure(fig, figure_id, directory=None):
    """Save ``fig`` as ``<directory>/<figure_id>.png`` (120 dpi) and return the path.

    ``directory`` defaults to ``vqpaper.paths.FIGURES`` (``_build/figures``) and is created.
    ``figure_id`` must match ``^fig-[a-z0-9-]+$``.
    """
    if not isinstance(fig, Figure):
        raise ConfigError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    check_figure_id(figure_id)
    if directory is None:
        directory = paths.FIGURES  # read at call time, so a monkeypatched paths.FIGURES applies
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{figure_id}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


# --------------------------------------------------------------------------- helpers


def _panels(panels, required, name="panels"):
    if isinstance(panels, dict):
        panels = [panels]
    panels = list(panels) if panels is not None else []
    if not panels:
        raise ConfigError(f"{name} is empty; give a list of dicts with keys {sorted(required)}")
    for i, p in enumerate(panels):
        if not isinstance(p, dict):
            raise ConfigError(f"{name}[{i}] must be a dict with keys {sorted(required)}, got {type(p).__name__}")
        missing = [k for k in required if k not in p or p[k] is None]
        if missing:
            raise ConfigError(f"{name}[{i}] lacks key(s) {missing}; needed: {sorted(required)}")
    return panels


def _grid(n, ncols=None, width=3.6, height=3.0):
    ncols = min(n, ncols or (n if n <= 4 else 3))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def _finish(fig, axes, suptitle=None, legend_title=None, markerscale=1.0):
    """One legend for the whole figure, below the panels (it never hides data), and a title."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label and not label.startswith("_"):
                entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries.keys()), loc="outside lower center",
                   ncols=min(len(entries), 4), title=legend_title, markerscale=markerscale, frameon=False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _flat(x, name):
    arr = M._np(x, name).astype(np.float64).ravel()
    if arr.size == 0:
        raise ConfigError(f"{name} is empty")
    return arr


def _used_mask(used, n_tokens, name):
    """``used`` as a boolean mask over the K tokens (accepts a mask or used token ids)."""
    u = M._np(used, name)
    if u.dtype == bool:
        if u.shape != (n_tokens,):
            raise ConfigError(f"{name} as a mask must have shape ({n_tokens},), got {u.shape}")
        return u
    ids = M._int(u, name, n_tokens, "number of tokens").ravel()
    mask = np.zeros(n_tokens, dtype=bool)
    mask[ids] = True
    return mask


# --------------------------------------------------------------------------- paper figures


@_styled
def plot_histograms(panels, bins=60, ncols=None, suptitle=None):
    """Embedding vs token histograms, one panel per setting (paper Fig 3 and Fig 5, top rows).

    ``panels``: list of dicts ``{title, embeddings, tokens, used_tokens (optional)}``;
    ``embeddings`` (encoder outputs) and ``tokens`` (codebook, [K, D]) are flattened to 1-D.
    The embeddings' histogram (grey, left axis, density) and the tokens' histogram (red,
    right axis, count of tokens per bin, same bins) share the x axis; a rug marks every
    token. With ``used_tokens`` (mask over the K tokens, or used token ids) the unused
    tokens are drawn separately (blue, dashed), the red histogram counts the used ones only,
    and the title says how many tokens are used. One legend below the panels.
    """
    panels = _panels(panels, ("title", "embeddings", "tokens"))
    fig, axes = _grid(len(panels), ncols, width=4.2, height=3.0)
    twins = []
    for ax, p in zip(axes, panels):
        emb = _flat(p["embeddings"], "embeddings")
        tok_arr = M._np(p["tokens"], "tokens").astype(np.float64)
        if tok_arr.ndim == 1:
            tok_arr = tok_arr[:, None]
        tok = tok_arr.ravel()
        used = np.ones(tok_arr.shape[0], dtype=bool)
        if p.get("used_tokens") is not None:
            used = _used_mask(p["used_tokens"], tok_arr.shape[0], "used_tokens")
        used_flat = np.repeat(used, tok_arr.shape[1])
        lo, hi = min(emb.min(), tok.min()), max(emb.max(), tok.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)

        ax.hist(emb, bins=edges, density=True, color=EMBEDDING_COLOUR, alpha=0.6, label="embeddings")
        ax.set_xlabel("value (all coordinates)")
        ax.set_ylabel("embedding density")
        tax = ax.twinx()
        tax.grid(False)
        tax.hist(tok[used_flat], bins=edges, histtype="step", linewidth=1.5, color=TOKEN_COLOUR,
                 label="tokens")
        if not used.all():
            tax.hist(tok[~used_flat], bins=edges, histtype="step", linewidth=1.2, linestyle="--",
                     color=DEAD_TOKEN_COLOUR, label="unused tokens")
        tax.plot(tok[used_flat], np.zeros(used_flat.sum()), "|", color=TOKEN_COLOUR, markersize=8, alpha=0.7)
        tax.set_ylabel("tokens per bin")
        tax.set_ylim(bottom=0)
        title = str(p["title"])
        if not used.all():
            title += f"\n{int(used.sum())}/{used.size} tokens used"
        ax.set_title(title)
        twins.append(tax)
    return _finish(fig, [*axes, *twins], suptitle)


def _project_2d(X, X_hat):
    """2-D view of data and reconstructions: as is in 2-D, else the data's first two PCs."""
    if X.shape[1] == 2:
        return X, X_hat, ("$x_1$", "$x_2$")
    if X.shape[1] == 1:
        return (np.c_[X[:, 0], np.zeros(len(X))], np.c_[X_hat[:, 0], np.zeros(len(X_hat))],
                ("$x_1$", ""))
    mean = X.mean(axis=0)
    _, _, vt = np.linalg.svd(X - mean, full_matrices=False)  # PCA of the data only
    comps = vt[:2].T
    return (X - mean) @ comps, (X_hat - mean) @ comps, ("PC 1 (data)", "PC 2 (data)")


@_styled
def plot_reconstructions(panels, ncols=None, max_points=5000, seed=0, suptitle=None):
    """Data vs reconstructions scatter, one panel per setting (paper Fig 3 / Fig 5, bottom).

    ``panels``: list of dicts ``{title, X, X_hat, y (optional)}``. 2-D data is drawn as is;
    higher dimensions on the data's first two principal components (the same projection
    for data and reconstructions). Data: light points coloured by cluster; reconstructions:
    black crosses. At most ``max_points`` points are drawn (seeded subsample).
    """
    panels = _panels(panels, ("title", "X", "X_hat"))
    fig, axes = _grid(len(panels), ncols, width=3.6, height=3.4)
    for ax, p in zip(axes, panels):
        X = M._rows(p["X"], "X")
        Xh = M._rows(p["X_hat"], "X_hat")
        if X.shape != Xh.shape:
            raise ConfigError(f"X has shape {X.shape} but X_hat has {Xh.shape} in panel {p['title']!r}")
        y = None if p.get("y") is None else M._np(p["y"], "y").ravel()
        if y is not None and y.shape[0] != X.shape[0]:
            raise ConfigError(f"y has {y.shape[0]} labels but X has {X.shape[0]} rows in panel {p['title']!r}")
        P, Ph, (xl, yl) = _project_2d(X, Xh)
        rows = np.arange(len(P))
        if len(P) > max_points:
            rows = np.sort(np.random.default_rng(seed).choice(len(P), max_points, replace=False))
        if y is None:
            ax.scatter(P[rows, 0], P[rows, 1], s=4, alpha=0.3, color=EMBEDDING_COLOUR, label="data",
                       linewidths=0)
        else:
            ax.scatter(P[rows, 0], P[rows, 1], s=4, alpha=0.35, c=y[rows], cmap="tab10", linewidths=0,
                       vmin=0, vmax=max(9, int(np.max(y))))
            ax.scatter([], [], s=10, color=EMBEDDING_COLOUR, label="data (colour: cluster)")
        ax.scatter(Ph[rows, 0], Ph[rows, 1], s=10, marker="x", color="black", alpha=0.7, linewidths=0.8,
                   label="reconstructions")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(str(p["title"]))
    return _finish(fig, axes, suptitle, markerscale=2.0)


@_styled
def plot_encoder_outputs(panels, bins=80, prominence=0.05, ncols=None, suptitle=None):
    """Histogram of encoder outputs with KDE peaks marked (paper Fig 2: untrained vs trained).

    ``panels``: list of dicts ``{title, embeddings}`` (flattened to 1-D). Each panel shows
    the histogram (density), the Gaussian KDE, its peaks (``metrics.peak_positions`` with
    ``prominence``) as dashed lines, and in the title the range [min, max] and the number
    of peaks — the two things the paper's Fig 2 compares.
    """
    panels = _panels(panels, ("title", "embeddings"))
    fig, axes = _grid(len(panels), ncols, width=4.0, height=3.0)
    for ax, p in zip(axes, panels):
        emb = _flat(p["embeddings"], "embeddings")
        res = M.kde_peaks(emb, prominence=prominence)
        ax.hist(emb, bins=bins, density=True, color=EMBEDDING_COLOUR, alpha=0.6, label="encoder outputs")
        if res["grid"].size > 1:
            ax.plot(res["grid"], res["density"], color="black", linewidth=1.2, label="KDE")
        peaks = res["grid"][res["peaks"]]
        for i, x in enumerate(peaks):
            ax.axvline(x, color=TOKEN_COLOUR, linestyle="--", linewidth=0.9, label="KDE peaks" if i == 0 else None)
        ax.set_title(f"{p['title']}\nrange [{emb.min():.2f}, {emb.max():.2f}], {peaks.size} peaks")
        ax.set_xlabel("encoder output value")
        ax.set_ylabel("density")
    return _finish(fig, axes, suptitle)


# --------------------------------------------------------------------------- sweeps and summaries


def _rows_check(rows, keys):
    rows = list(rows) if rows is not None else []
    if not rows:
        raise ConfigError("rows is empty; give a list of dicts (one per run)")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ConfigError(f"rows[{i}] must be a dict, got {type(r).__name__}")
        missing = [k for k in keys if k is not None and k not in r]
        if missing:
            raise ConfigError(f"rows[{i}] lacks key(s) {missing}; it has {sorted(r)}")
    return rows


def _mean_std(values):
    """``(mean, sd, n)`` as ``spread.aggregate`` computes them; an unknown sd (one value) draws no error bar."""
    a = aggregate(values)
    return a["mean"], np.nan if a["std"] is None else a["std"], len(a["per_seed"])


def _ordered(values):
    """Unique values in first-seen order (keeps the caller's order of methods)."""
    return list(dict.fromkeys(values))


@_styled
def plot_sweep(rows, x, ys, hue=None, xscale="auto", ylog=None, titles=None, suptitle=None, dodge=0.08):
    """Sweep curves: mean over seeds with ± std error bars, one subplot per metric in ``ys``.

    ``rows``: list of dicts, one per run (several rows per (hue, x) = seeds), e.g.
    ``{"method": "pretrained", "codebook_size": 256, "seed": 0, "mse": ..., "perplexity": ...}``.
    ``x``: the swept key; ``hue``: key whose values get one line each (None: one line).
    ``xscale``: "log2", "linear" or "auto" (log2 when all x > 0 and they span ≥ 8×).
    ``ylog``: metric names to draw on a log y axis (e.g. ``["perplexity"]``).
    With several hues the points are shifted sideways by ``dodge`` (fraction of an octave on
    a log2 axis, of the x range on a linear one) so error bars do not hide each other.
    """
    ys = [ys] if isinstance(ys, str) else list(ys)
    if not ys:
        raise ConfigError("ys is empty; name at least one metric to plot")
    rows = _rows_check(rows, [x, hue, *ys])
    xs_all = np.array([float(r[x]) for r in rows])
    if xscale == "auto":
        xscale = "log2" if xs_all.min() > 0 and xs_all.max() / xs_all.min() >= 8 else "linear"
    if xscale not in ("log2", "linear"):
        raise ConfigError(f"xscale must be 'log2', 'linear' or 'auto', got {xscale!r}")
    hues = _ordered(r[hue] for r in rows) if hue else [None]
    palette = dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    ylog = set([ylog] if isinstance(ylog, str) else (ylog or []))
    fig, axes = plt.subplots(1, len(ys), figsize=(4.0 * len(ys), 3.4), squeeze=False, layout="constrained")
    span = float(xs_all.max() - xs_all.min()) or 1.0
    for j, (ax, metric) in enumerate(zip(axes[0], ys)):
        for i, h in enumerate(hues):
            shift = (i - (len(hues) - 1) / 2) * dodge
            groups = defaultdict(list)
            for r in rows:
                if hue is None or r[hue] == h:
                    groups[float(r[x])].append(r[metric])
            xv = np.array(sorted(groups))
            stats_ = [_mean_std(groups[v]) for v in xv]
            mean = np.array([s[0] for s in stats_])
            std = np.array([s[1] for s in stats_])
            n_max = max(s[2] for s in stats_)
            label = None if h is None else f"{h}" + (f" (n={n_max})" if n_max > 1 else "")
            xd = xv * 2.0**shift if xscale == "log2" else xv + shift * span * 0.1
            ax.errorbar(xd, mean, yerr=std, marker="o", markersize=4, capsize=3, linewidth=1.4,
                        color=palette[h], label=label)
        if xscale == "log2":
            ax.set_xscale("log", base=2)
        if metric in ylog:
            ax.set_yscale("log")
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(titles[j] if titles else metric.replace("_", " "))
    return _finish(fig, axes[0], suptitle, legend_title=hue.replace("_", " ") if hue else None)


@_styled
def plot_metric_bars(rows, metrics, group, hue=None, titles=None, suptitle=None, ncols=None):
    """Grouped bars: mean ± std over seeds, each seed as a dot; one subplot per metric.

    ``rows``: list of dicts, one per run, e.g. ``{"dim": 2, "method": "scratch", "seed": 0,
    "alloc_entropy": ...}``. ``group``: key on the x axis; ``hue``: key of the bars within
    a group (None: one bar per group). ``metrics``: metric names (a str for one).
    """
    metric_list = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metric_list:
        raise ConfigError("metrics is empty; name at least one metric to plot")
    rows = _rows_check(rows, [group, hue, *metric_list])
    groups = _ordered(r[group] for r in rows)
    hues = _ordered(r[hue] for r in rows) if hue else [None]
    palette = dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    width = 0.8 / len(hues)
    fig, axes = _grid(len(metric_list), ncols, width=max(3.6, 1.0 + 0.5 * len(groups) * len(hues)), height=3.2)
    for j, (ax, metric) in enumerate(zip(axes, metric_list)):
        for i, h in enumerate(hues):
            offset = (i - (len(hues) - 1) / 2) * width
            for g_i, g in enumerate(groups):
                vals = [r[metric] for r in rows if r[group] == g and (hue is None or r[hue] == h)]
                if not vals:
                    continue
                mean, std, _ = _mean_std(vals)
                xpos = g_i + offset
                ax.bar(xpos, mean, width=width * 0.95, yerr=std, capsize=3, color=palette[h], alpha=0.85,
                       label=None if h is None else str(h))
                jitter = np.linspace(-0.2, 0.2, len(vals)) * width if len(vals) > 1 else np.zeros(1)
                ax.scatter(xpos + jitter, vals, s=9, color="black", zorder=3, linewidths=0)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([str(g) for g in groups])
        ax.set_xlabel(group.replace("_", " "))
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(titles[j] if titles else metric.replace("_", " "))
    return _finish(fig, axes, suptitle, legend_title=hue.replace("_", " ") if hue else None)


@_styled
def plot_token_allocation(panels, n_clusters=None, ncols=None, suptitle=None):
    """Tokens per ground-truth cluster (``metrics.token_allocation``), one bar panel per setting.

    ``panels``: list of dicts ``{title, indices, labels}``; the title gains the allocation
    entropy. An even allocation is a flat row of bars; tokens collapse piles them on a few.
    """
    panels = _panels(panels, ("title", "indices", "labels"))
    fig, axes = _grid(len(panels), ncols, width=3.6, height=3.0)
    for ax, p in zip(axes, panels):
        alloc = M.token_allocation(p["indices"], p["labels"], n_clusters)
        ent = M.alloc_entropy(p["indices"], p["labels"], n_clusters)
        ax.bar(np.arange(alloc.size), alloc, color=sns.color_palette("tab10", alloc.size))
        ax.axhline(alloc.sum() / alloc.size, color="black", linestyle="--", linewidth=1, label="even allocation")
        ax.set_xticks(np.arange(alloc.size))
        ax.set_xlabel("ground-truth cluster")
        ax.set_ylabel("tokens (majority cluster)")
        ax.set_title(f"{p['title']}\nalloc. entropy {ent:.2f}, min {int(alloc.min())}")
    return _finish(fig, axes, suptitle)


def _as_images(images, name):
    """[N, H, W, C] floats in [0, 1] from uint8 NHWC, float NHWC/NCHW in [0, 1] or [-0.5, 0.5]."""
    arr = M._np(images, name)
    if arr.ndim == 3 and arr.shape[-1] in (1, 3):
        raise ConfigError(f"{name} has shape {arr.shape}: one image? give a batch [N, H, W, C] or [N, C, H, W]")
    if arr.ndim == 3:  # grey images
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise ConfigError(f"{name} must be a non-empty image batch [N, H, W, C] or [N, C, H, W], got {arr.shape}")
    if arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64) / 255.0
    else:
        arr = arr.astype(np.float64)
        if arr.min() < -0.01:  # vqpaper.data.cifar_to_tensor's range [-0.5, 0.5]
            arr = arr + 0.5
    arr = np.clip(arr, 0.0, 1.0)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


@_styled
def plot_image_grid(images, recon, n=8, titles=("originals", "reconstructions"), suptitle=None):
    """Originals (top row) above their reconstructions (bottom row), ``n`` columns.

    Accepts uint8 NHWC (as loaded), float NCHW in [-0.5, 0.5] (``cifar_to_tensor``, model
    output) or float in [0, 1]; reconstructions are clipped to the displayable range.
    """
    orig = _as_images(images, "images")
    rec = _as_images(recon, "recon")
    if orig.shape[1:] != rec.shape[1:]:
        raise ConfigError(f"images are {orig.shape[1:]} but recon are {rec.shape[1:]}; they must match")
    n = min(M._positive_int(n, "n"), orig.shape[0], rec.shape[0])
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3.0), squeeze=False, layout="constrained")
    for row, (batch, label) in enumerate(zip((orig, rec), titles)):
        for i in range(n):
            ax = axes[row, i]
            ax.imshow(batch[i], cmap="gray" if batch.ndim == 3 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        axes[row, 0].set_ylabel(label)
    return _finish(fig, [], suptitle)


def plot_remedy_heatmap(grid, clip=1.0, suptitle=None):
    """Recipes x metrics, coloured by the relative improvement over the baseline (notebook 06).

    ``grid``: ``verdicts.effect_grid`` (one dict per recipe and metric). Green: better than EMA-VQ
    from scratch, red: worse, clipped at ``clip`` (100%). Each cell shows the relative effect and
    its 95% interval; cells whose interval includes zero (or with a single pair) are faded.
    """
    if not grid:
        raise ConfigError("plot_remedy_heatmap: the grid is empty (no recipe besides the baseline?)")
    rows = list(dict.fromkeys(g["remedy"] for g in grid))
    cols = list(dict.fromkeys((g["set"], g["metric"], g["higher_is_better"]) for g in grid))
    values = np.full((len(rows), len(cols)), np.nan)
    cells = {}
    for g in grid:
        i, j = rows.index(g["remedy"]), cols.index((g["set"], g["metric"], g["higher_is_better"]))
        values[i, j] = np.clip(g["relative"], -clip, clip)
        cells[i, j] = g
    fig, ax = plt.subplots(figsize=(1.25 * len(cols) + 2.8, 0.62 * len(rows) + 2.0))
    cmap = plt.get_cmap("RdYlGn")
    norm = TwoSlopeNorm(vmin=-clip, vcenter=0.0, vmax=clip)
    for (i, j), g in cells.items():
        colour = cmap(norm(values[i, j]))
        ax.add_patch(plt.Rectangle((j, i), 1, 1, facecolor=colour, alpha=1.0 if g["decided"] else 0.3,
                                   edgecolor="white", linewidth=1.5))
        interval = (f"[{g['low']:+.0%}, {g['high']:+.0%}]" if np.isfinite(g["low"]) and np.isfinite(g["high"])
                    else f"({g['pairs']} pair)")
        ax.text(j + 0.5, i + 0.5, f"{g['relative']:+.0%}\n{interval}", ha="center", va="center", fontsize=7.5,
                fontweight="bold" if g["decided"] else "normal")
    ax.set_xlim(0, len(cols))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks(np.arange(len(cols)) + 0.5)
    ax.set_xticklabels([f"{m}{'' if h else ' (lower)'}\n{s}" for s, m, h in cols], rotation=35, ha="right",
                       fontsize=8.5)
    ax.set_yticks(np.arange(len(rows)) + 0.5)
    ax.set_yticklabels(rows, fontsize=9)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(sm, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label("improvement over EMA-VQ from scratch\n(relative to its mean; clipped)", fontsize=8.5)
    bar.ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:+.0%}"))
    if suptitle:
        ax.set_title(suptitle, fontsize=10)
    fig.tight_layout()
    return fig
