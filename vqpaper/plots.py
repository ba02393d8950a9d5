"""Figure functions for the book, each drawn from a tidy table of what it plots.

Every figure has a stable id (``fig-tokens-collapse-synthetic``) used as its file name, as the
MyST ``name:`` in the book and as the key of its recorded numbers (``vqpaper.results``).

Each ``plot_*`` function works in two steps: it first reduces its inputs to a **tidy frame**, one
row per plotted point, bar, histogram bin or pixel, with named columns (e.g. ``panel, title,
series, bin_left, bin_right, value`` for a histogram), then draws the figure from that frame
alone. The frame and the drawing options travel with the returned Figure (:func:`plot_data`), so
:func:`save_data` writes exactly what was drawn as ``<figure-id>.csv`` (with
``<figure-id>.plot.json``: which drawing and its options), and :func:`replot` draws the same
figure again from those two files, without the runs (``vqpaper plot <figure-id>``).

The functions use pyplot to create figures (so a notebook shows them inline) but never call
``plt.show``; matplotlib picks the non-interactive ``Agg`` backend by itself on a headless
machine. Text is ≥ 9 pt and figures are saved at 120 dpi.
"""
from __future__ import annotations

import functools
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
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
    "save_data",
    "plot_data",
    "replot",
    "replot_to",
    "known_figures",
    "PlotData",
    "plot_histograms",
    "plot_reconstructions",
    "plot_encoder_outputs",
    "plot_sweep",
    "plot_metric_bars",
    "plot_token_allocation",
    "plot_image_grid",
    "plot_remedy_heatmap",
    "plot_diagnosis",
]

DPI = 120
#: Significant digits of the numbers in a figure's CSV: far below what a plot resolves, and it keeps
#: the scatter figures' files (up to 60,000 points) at a few MB. The results JSON has every digit.
CSV_DIGITS = 6

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


# --------------------------------------------------------------------------- a figure's data


@dataclass
class PlotData:
    """What a figure shows: its ``kind`` (a key of :data:`DRAWERS`), the tidy ``frame`` and the options."""

    kind: str
    frame: pd.DataFrame
    options: dict = field(default_factory=dict)


#: kind -> the function that draws a Figure from ``(frame, **options)``; filled by :func:`_drawer`.
DRAWERS: dict[str, Callable[..., Figure]] = {}
_ATTRIBUTE = "vqpaper_plot_data"  # where a Figure carries its PlotData


def _drawer(kind: str, styled: bool = True):
    """Register ``func`` as the drawing of ``kind`` (in the book's style unless ``styled=False``: a heat map
    or a report that draws its own cells and grid)."""
    def register(func):
        DRAWERS[kind] = _styled(func) if styled else func
        return DRAWERS[kind]

    return register


def _draw(kind: str, frame: pd.DataFrame, **options) -> Figure:
    """Draw ``kind`` from ``frame`` and attach the data to the figure (:func:`plot_data`)."""
    fig = DRAWERS[kind](frame, **options)
    setattr(fig, _ATTRIBUTE, PlotData(kind, frame, options))
    return fig


def plot_data(fig) -> Optional[PlotData]:
    """The data a figure of this module was drawn from, or None (a figure drawn elsewhere)."""
    return getattr(fig, _ATTRIBUTE, None)


def _directory(directory) -> Path:
    path = Path(paths.FIGURES if directory is None else directory)  # read at call time (monkeypatched in tests)
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, figure_id, directory=None):
    """Save ``fig`` as ``<directory>/<figure_id>.png`` (120 dpi) and return the path.

    ``directory`` defaults to ``vqpaper.paths.FIGURES`` (``_build/figures``) and is created.
    ``figure_id`` must match ``^fig-[a-z0-9-]+$``.
    """
    if not isinstance(fig, Figure):
        raise ConfigError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    check_figure_id(figure_id)
    path = _directory(directory) / f"{figure_id}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def save_data(data, figure_id, directory=None) -> tuple[Path, Path]:
    """Write what a figure plots: ``<figure_id>.csv`` (the tidy frame) and ``<figure_id>.plot.json``.

    ``data``: a Figure of this module, or its :class:`PlotData`. The JSON names the drawing and its
    options, so that :func:`replot` can draw the figure again from the CSV. Returns both paths.
    """
    check_figure_id(figure_id)
    if isinstance(data, Figure):
        found = plot_data(data)
        if found is None:
            raise ConfigError(f"{figure_id}: the figure was not drawn by a vqpaper.plots function, so it carries no "
                              "data to write; draw it with one (e.g. plots.plot_metric_bars) or give its tidy table")
        data = found
    if not isinstance(data, PlotData):
        raise ConfigError(f"{figure_id}: data must be a Figure of vqpaper.plots or a PlotData, got {type(data).__name__}")
    folder = _directory(directory)
    csv_path, spec_path = folder / f"{figure_id}.csv", folder / f"{figure_id}.plot.json"
    data.frame.to_csv(csv_path, index=False, float_format=f"%.{CSV_DIGITS}g")
    spec = {"figure_id": figure_id, "kind": data.kind, "drawn_by": f"vqpaper.plots.{DRAWERS[data.kind].__name__}",
            "columns": list(data.frame.columns), "rows": len(data.frame), "options": data.options}
    spec_path.write_text(json.dumps(spec, indent=1) + "\n")
    return csv_path, spec_path


def known_figures(directory=None) -> list[str]:
    """The figure ids whose data can be re-plotted from ``directory`` (default ``paths.FIGURES``)."""
    folder = Path(paths.FIGURES if directory is None else directory)
    return sorted(p.name.removesuffix(".plot.json") for p in folder.glob("fig-*.plot.json")
                  if (folder / p.name.replace(".plot.json", ".csv")).is_file())


def load_data(figure_id, directory=None) -> PlotData:
    """The :class:`PlotData` that :func:`save_data` wrote for ``figure_id``; a ConfigError names the known ids."""
    folder = Path(paths.FIGURES if directory is None else directory)
    known = known_figures(folder)
    if figure_id not in known:
        listing = ", ".join(known) if known else "none (execute the notebooks first: vqpaper book, or vqpaper run NN)"
        raise ConfigError(f"unknown figure id {figure_id!r}: no {figure_id}.csv and {figure_id}.plot.json in {folder}; "
                          f"known figures: {listing}")
    spec = json.loads((folder / f"{figure_id}.plot.json").read_text())
    if spec.get("kind") not in DRAWERS:
        raise ConfigError(f"{folder / f'{figure_id}.plot.json'}: unknown kind {spec.get('kind')!r}; "
                          f"this vqpaper draws {sorted(DRAWERS)}")
    frame = pd.read_csv(folder / f"{figure_id}.csv", keep_default_na=False, na_values=[""])
    return PlotData(spec["kind"], frame, spec.get("options") or {})


def replot(figure_id, directory=None) -> Figure:
    """Draw ``figure_id`` again from its CSV and options (no training): the figure the notebook saved."""
    data = load_data(figure_id, directory)
    return _draw(data.kind, data.frame, **data.options)


def replot_to(figure_id, output=None, directory=None) -> Path:
    """``vqpaper plot``: :func:`replot` ``figure_id`` into the PNG ``output`` (default ``<figure_id>.png`` here)."""
    out = Path(output) if output else Path(f"{figure_id}.png")
    if out.suffix.lower() != ".png":
        raise ConfigError(f"-o {out}: the figure is written as PNG; give a file name ending in .png")
    if not out.parent.is_dir():
        raise ConfigError(f"-o {out}: the folder {out.parent} does not exist; create it or give a path in an existing "
                          "folder")
    fig = replot(figure_id, directory)
    try:
        fig.savefig(out, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


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


#: A figure's default width in inches, at most: wider ones shrink to the page's column (about 7 inches
#: at 1400 px) until their text is too small to read, so panels wrap onto more rows instead.
MAX_WIDTH_IN = 11.0


def _grid(n, ncols=None, width=3.6, height=3.0):
    ncols = min(n, ncols or max(1, int(MAX_WIDTH_IN // width)))
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


def _frame(rows, columns) -> pd.DataFrame:
    """Rows (dicts) as a frame with exactly ``columns``, in that order (absent cells empty)."""
    return pd.DataFrame(rows).reindex(columns=columns)


def _bins(panel, title, series, edges, values):
    return [{"panel": panel, "title": title, "series": series, "bin_left": lo, "bin_right": hi, "value": v}
            for lo, hi, v in zip(edges[:-1], edges[1:], values)]


def _edges(rows: pd.DataFrame) -> np.ndarray:
    """A histogram's bin edges from its tidy rows (``bin_left`` of each bin and the last ``bin_right``)."""
    return np.r_[rows["bin_left"].to_numpy(float), rows["bin_right"].to_numpy(float)[-1:]]


def _by_panel(frame: pd.DataFrame):
    """``(title, rows)`` per panel, in the panels' order."""
    for _, rows in frame.groupby("panel", sort=True):
        yield str(rows["title"].iloc[0]), rows


def _labels(values) -> list[str]:
    """Category labels as text, first-seen order (a CSV may read "256" back as the number 256)."""
    return list(dict.fromkeys("" if _missing(v) else str(v) for v in values))


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


# --------------------------------------------------------------------------- paper figures

HISTOGRAM_COLUMNS = ["panel", "title", "series", "bin_left", "bin_right", "value", "position"]


def plot_histograms(panels, bins=60, ncols=None, suptitle=None):
    """Embedding vs token histograms, one panel per setting (paper Fig 3 and Fig 5, top rows).

    ``panels``: list of dicts ``{title, embeddings, tokens, used_tokens (optional)}``;
    ``embeddings`` (encoder outputs) and ``tokens`` (codebook, [K, D]) are flattened to 1-D.
    The embeddings' histogram (grey, left axis, density) and the tokens' histogram (red,
    right axis, count of tokens per bin, same bins) share the x axis; a rug marks every
    token. With ``used_tokens`` (mask over the K tokens, or used token ids) the unused
    tokens are drawn separately (blue, dashed), the red histogram counts the used ones only,
    and the title says how many tokens are used. One legend below the panels.

    Tidy rows: one per bin of each series (``embeddings``: density; ``tokens`` and ``unused
    tokens``: tokens per bin) and one per used token coordinate (``token positions``: ``position``).
    """
    panels = _panels(panels, ("title", "embeddings", "tokens"))
    rows = []
    for i, p in enumerate(panels):
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
        title = str(p["title"])
        if not used.all():
            title += f"\n{int(used.sum())}/{used.size} tokens used"
        rows += _bins(i, title, "embeddings", edges, np.histogram(emb, bins=edges, density=True)[0])
        rows += _bins(i, title, "tokens", edges, np.histogram(tok[used_flat], bins=edges)[0])
        if not used.all():
            rows += _bins(i, title, "unused tokens", edges, np.histogram(tok[~used_flat], bins=edges)[0])
        rows += [{"panel": i, "title": title, "series": "token positions", "position": x} for x in tok[used_flat]]
    return _draw("histograms", _frame(rows, HISTOGRAM_COLUMNS), ncols=ncols, suptitle=suptitle)


@_drawer("histograms")
def draw_histograms(frame, ncols=None, suptitle=None):
    panels = list(_by_panel(frame))
    fig, axes = _grid(len(panels), ncols, width=4.2, height=3.0)
    twins = []
    for ax, (title, rows) in zip(axes, panels):
        emb = rows[rows.series == "embeddings"]
        ax.stairs(emb["value"].to_numpy(float), _edges(emb), fill=True, color=EMBEDDING_COLOUR, alpha=0.6,
                  label="embeddings")
        ax.set_xlabel("value (all coordinates)")
        ax.set_ylabel("embedding density")
        tax = ax.twinx()
        tax.grid(False)
        tok = rows[rows.series == "tokens"]
        tax.stairs(tok["value"].to_numpy(float), _edges(tok), linewidth=1.5, color=TOKEN_COLOUR, label="tokens")
        unused = rows[rows.series == "unused tokens"]
        if len(unused):
            tax.stairs(unused["value"].to_numpy(float), _edges(unused), linewidth=1.2, linestyle="--",
                       color=DEAD_TOKEN_COLOUR, label="unused tokens")
        rug = rows.loc[rows.series == "token positions", "position"].to_numpy(float)
        tax.plot(rug, np.zeros(rug.size), "|", color=TOKEN_COLOUR, markersize=8, alpha=0.7)
        tax.set_ylabel("tokens per bin")
        tax.set_ylim(bottom=0)
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


def plot_reconstructions(panels, ncols=None, max_points=5000, seed=0, suptitle=None):
    """Data vs reconstructions scatter, one panel per setting (paper Fig 3 / Fig 5, bottom).

    ``panels``: list of dicts ``{title, X, X_hat, y (optional)}``. 2-D data is drawn as is;
    higher dimensions on the data's first two principal components (the same projection
    for data and reconstructions). Data: light points coloured by cluster; reconstructions:
    black crosses. At most ``max_points`` points are drawn (seeded subsample).

    Tidy rows: one per drawn point (``series`` data or reconstruction; ``x``, ``y`` in the panel's
    axes; ``cluster`` when labels were given).
    """
    panels = _panels(panels, ("title", "X", "X_hat"))
    rows, axis_labels = [], []
    for i, p in enumerate(panels):
        X = M._rows(p["X"], "X")
        Xh = M._rows(p["X_hat"], "X_hat")
        if X.shape != Xh.shape:
            raise ConfigError(f"X has shape {X.shape} but X_hat has {Xh.shape} in panel {p['title']!r}")
        y = None if p.get("y") is None else M._np(p["y"], "y").ravel()
        if y is not None and y.shape[0] != X.shape[0]:
            raise ConfigError(f"y has {y.shape[0]} labels but X has {X.shape[0]} rows in panel {p['title']!r}")
        P, Ph, labels = _project_2d(X, Xh)
        axis_labels.append(list(labels))
        keep = np.arange(len(P))
        if len(P) > max_points:
            keep = np.sort(np.random.default_rng(seed).choice(len(P), max_points, replace=False))
        for series, points in (("data", P), ("reconstruction", Ph)):
            part = pd.DataFrame({"panel": i, "title": str(p["title"]), "series": series,
                                 "x": points[keep, 0], "y": points[keep, 1]})
            part["cluster"] = pd.array(y[keep].astype(int), dtype="Int64") if y is not None else pd.NA
            rows.append(part)
    frame = pd.concat(rows, ignore_index=True)
    return _draw("reconstructions", frame, ncols=ncols, suptitle=suptitle, axis_labels=axis_labels)


@_drawer("reconstructions")
def draw_reconstructions(frame, ncols=None, suptitle=None, axis_labels=None):
    panels = list(_by_panel(frame))
    fig, axes = _grid(len(panels), ncols, width=3.6, height=3.4)
    for i, (ax, (title, rows)) in enumerate(zip(axes, panels)):
        data, recon = rows[rows.series == "data"], rows[rows.series == "reconstruction"]
        clusters = pd.to_numeric(data["cluster"], errors="coerce")
        if clusters.isna().all():
            ax.scatter(data["x"], data["y"], s=4, alpha=0.3, color=EMBEDDING_COLOUR, label="data", linewidths=0)
        else:
            ax.scatter(data["x"], data["y"], s=4, alpha=0.35, c=clusters.to_numpy(float), cmap="tab10", linewidths=0,
                       vmin=0, vmax=max(9, int(clusters.max())))
            ax.scatter([], [], s=10, color=EMBEDDING_COLOUR, label="data (colour: cluster)")
        ax.scatter(recon["x"], recon["y"], s=10, marker="x", color="black", alpha=0.7, linewidths=0.8,
                   label="reconstructions")
        xl, yl = (axis_labels or [])[i] if axis_labels and i < len(axis_labels) else ("x", "y")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(title)
    return _finish(fig, axes, suptitle, markerscale=2.0)


ENCODER_COLUMNS = ["panel", "title", "series", "bin_left", "bin_right", "x", "value"]


def plot_encoder_outputs(panels, bins=80, prominence=0.05, ncols=None, suptitle=None):
    """Histogram of encoder outputs with KDE peaks marked (paper Fig 2: untrained vs trained).

    ``panels``: list of dicts ``{title, embeddings}`` (flattened to 1-D). Each panel shows
    the histogram (density), the Gaussian KDE, its peaks (``metrics.peak_positions`` with
    ``prominence``) as dashed lines, and in the title the range [min, max] and the number
    of peaks — the two things the paper's Fig 2 compares.

    Tidy rows: one per histogram bin (``histogram``: density), per point of the KDE curve
    (``KDE``: ``x``, ``value``) and per peak (``KDE peak``: ``x``).
    """
    panels = _panels(panels, ("title", "embeddings"))
    rows = []
    for i, p in enumerate(panels):
        emb = _flat(p["embeddings"], "embeddings")
        res = M.kde_peaks(emb, prominence=prominence)
        peaks = res["grid"][res["peaks"]]
        title = f"{p['title']}\nrange [{emb.min():.2f}, {emb.max():.2f}], {peaks.size} peaks"
        density, edges = np.histogram(emb, bins=bins, density=True)
        rows += _bins(i, title, "histogram", edges, density)
        if res["grid"].size > 1:
            rows += [{"panel": i, "title": title, "series": "KDE", "x": x, "value": d}
                     for x, d in zip(res["grid"], res["density"])]
        rows += [{"panel": i, "title": title, "series": "KDE peak", "x": x} for x in peaks]
    return _draw("encoder_outputs", _frame(rows, ENCODER_COLUMNS), ncols=ncols, suptitle=suptitle)


@_drawer("encoder_outputs")
def draw_encoder_outputs(frame, ncols=None, suptitle=None):
    panels = list(_by_panel(frame))
    fig, axes = _grid(len(panels), ncols, width=4.0, height=3.0)
    for ax, (title, rows) in zip(axes, panels):
        hist = rows[rows.series == "histogram"]
        ax.stairs(hist["value"].to_numpy(float), _edges(hist), fill=True, color=EMBEDDING_COLOUR, alpha=0.6,
                  label="encoder outputs")
        kde = rows[rows.series == "KDE"]
        if len(kde):
            ax.plot(kde["x"], kde["value"], color="black", linewidth=1.2, label="KDE")
        for i, x in enumerate(rows.loc[rows.series == "KDE peak", "x"]):
            ax.axvline(x, color=TOKEN_COLOUR, linestyle="--", linewidth=0.9, label="KDE peaks" if i == 0 else None)
        ax.set_title(title)
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


def plot_sweep(rows, x, ys, hue=None, xscale="auto", ylog=None, titles=None, suptitle=None, dodge=0.08):
    """Sweep curves: mean over seeds with ± std error bars, one subplot per metric in ``ys``.

    ``rows``: list of dicts, one per run (several rows per (hue, x) = seeds), e.g.
    ``{"method": "pretrained", "codebook_size": 256, "seed": 0, "mse": ..., "perplexity": ...}``.
    ``x``: the swept key; ``hue``: key whose values get one line each (None: one line).
    ``xscale``: "log2", "linear" or "auto" (log2 when all x > 0 and they span ≥ 8×).
    ``ylog``: metric names to draw on a log y axis (e.g. ``["perplexity"]``).
    With several hues the points are shifted sideways by ``dodge`` (fraction of an octave on
    a log2 axis, of the x range on a linear one) so error bars do not hide each other.

    Tidy rows: one per plotted point: ``metric``, the hue's value, ``x``, ``mean``, ``sd`` (empty
    when unknown) and ``n`` (seeds).
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
    tidy = []
    for metric in ys:
        for h in hues:
            groups = defaultdict(list)
            for r in rows:
                if hue is None or r[hue] == h:
                    groups[float(r[x])].append(r[metric])
            for xv in sorted(groups):
                mean, sd, n = _mean_std(groups[xv])
                tidy.append({"metric": metric, "hue": "" if h is None else h, "x": xv, "mean": mean, "sd": sd, "n": n})
    frame = _frame(tidy, ["metric", "hue", "x", "mean", "sd", "n"])
    return _draw("sweep", frame, x_name=x, hue_name=hue, xscale=xscale, ylog=sorted(_ylog_set(ylog)),
                 titles=list(titles) if titles else None, suptitle=suptitle, dodge=dodge)


def _ylog_set(ylog) -> set:
    return set([ylog] if isinstance(ylog, str) else (ylog or []))


@_drawer("sweep")
def draw_sweep(frame, x_name="x", hue_name=None, xscale="linear", ylog=(), titles=None, suptitle=None, dodge=0.08):
    metrics = _labels(frame["metric"])
    hue_text = frame["hue"].map(lambda v: "" if _missing(v) else str(v))
    hues = _labels(hue_text)
    palette = dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.0 * len(metrics), 3.4), squeeze=False, layout="constrained")
    xs = frame["x"].to_numpy(float)
    span = float(xs.max() - xs.min()) or 1.0
    for j, (ax, metric) in enumerate(zip(axes[0], metrics)):
        for i, h in enumerate(hues):
            shift = (i - (len(hues) - 1) / 2) * dodge
            pts = frame[(frame.metric == metric) & (hue_text == h)].sort_values("x")
            if pts.empty:
                continue
            xv = pts["x"].to_numpy(float)
            n_max = int(pts["n"].max())
            label = None if not hue_name else h + (f" (n={n_max})" if n_max > 1 else "")
            xd = xv * 2.0**shift if xscale == "log2" else xv + shift * span * 0.1
            ax.errorbar(xd, pts["mean"].to_numpy(float), yerr=pts["sd"].to_numpy(float), marker="o", markersize=4,
                        capsize=3, linewidth=1.4, color=palette[h], label=label)
        if xscale == "log2":
            ax.set_xscale("log", base=2)
        if metric in set(ylog or ()):
            ax.set_yscale("log")
        ax.set_xlabel(x_name.replace("_", " "))
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(titles[j] if titles else metric.replace("_", " "))
    return _finish(fig, axes[0], suptitle, legend_title=hue_name.replace("_", " ") if hue_name else None)


def plot_metric_bars(rows, metrics, group, hue=None, titles=None, suptitle=None, ncols=None):
    """Grouped bars: mean ± std over seeds, each seed as a dot; one subplot per metric.

    ``rows``: list of dicts, one per run, e.g. ``{"dim": 2, "method": "scratch", "seed": 0,
    "alloc_entropy": ...}``. ``group``: key on the x axis; ``hue``: key of the bars within
    a group (None: one bar per group). ``metrics``: metric names (a str for one).

    Tidy rows: one per bar (``mark`` bar: ``value`` the mean, ``sd``, ``n``) and one per dot
    (``mark`` seed: ``value`` of one run, ``seed`` when the rows have one).
    """
    metric_list = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metric_list:
        raise ConfigError("metrics is empty; name at least one metric to plot")
    rows = _rows_check(rows, [group, hue, *metric_list])
    groups = _ordered(r[group] for r in rows)
    hues = _ordered(r[hue] for r in rows) if hue else [None]
    tidy = []
    for metric in metric_list:
        for h in hues:
            for g in groups:
                chosen = [r for r in rows if r[group] == g and (hue is None or r[hue] == h)]
                if not chosen:
                    continue
                mean, sd, n = _mean_std([r[metric] for r in chosen])
                base = {"metric": metric, "group": g, "hue": "" if h is None else h}
                tidy.append({**base, "mark": "bar", "value": mean, "sd": sd, "n": n})
                tidy += [{**base, "mark": "seed", "value": r[metric], "seed": r.get("seed")} for r in chosen]
    frame = _frame(tidy, ["metric", "group", "hue", "mark", "value", "sd", "n", "seed"])
    return _draw("metric_bars", frame, group_name=group, hue_name=hue, groups=[str(g) for g in groups],
                 hues=["" if h is None else str(h) for h in hues], titles=list(titles) if titles else None,
                 suptitle=suptitle, ncols=ncols)


@_drawer("metric_bars")
def draw_metric_bars(frame, group_name="group", hue_name=None, groups=None, hues=None, titles=None, suptitle=None,
                     ncols=None):
    text = lambda column: frame[column].map(lambda v: "" if _missing(v) else str(v))  # noqa: E731
    group_text, hue_text = text("group"), text("hue")
    groups = list(groups) if groups else _labels(group_text)
    hues = list(hues) if hues else _labels(hue_text)
    metric_list = _labels(frame["metric"])
    palette = dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    width = 0.8 / len(hues)
    fig, axes = _grid(len(metric_list), ncols, width=max(3.6, 1.0 + 0.5 * len(groups) * len(hues)), height=3.2)
    for j, (ax, metric) in enumerate(zip(axes, metric_list)):
        for i, h in enumerate(hues):
            offset = (i - (len(hues) - 1) / 2) * width
            for g_i, g in enumerate(groups):
                here = frame[(frame.metric == metric) & (group_text == g) & (hue_text == h)]
                bar, dots = here[here.mark == "bar"], here[here.mark == "seed"]["value"].to_numpy(float)
                if bar.empty:
                    continue
                xpos = g_i + offset
                ax.bar(xpos, float(bar["value"].iloc[0]), width=width * 0.95, yerr=float(bar["sd"].iloc[0]), capsize=3,
                       color=palette[h], alpha=0.85, label=h if hue_name else None)
                jitter = np.linspace(-0.2, 0.2, len(dots)) * width if len(dots) > 1 else np.zeros(len(dots))
                ax.scatter(xpos + jitter, dots, s=9, color="black", zorder=3, linewidths=0)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups)
        ax.set_xlabel(group_name.replace("_", " "))
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(titles[j] if titles else metric.replace("_", " "))
    return _finish(fig, axes, suptitle, legend_title=hue_name.replace("_", " ") if hue_name else None)


def plot_token_allocation(panels, n_clusters=None, ncols=None, suptitle=None):
    """Tokens per ground-truth cluster (``metrics.token_allocation``), one bar panel per setting.

    ``panels``: list of dicts ``{title, indices, labels}``; the title gains the allocation
    entropy. An even allocation is a flat row of bars; tokens collapse piles them on a few.

    Tidy rows: one per bar (``cluster``, ``tokens``).
    """
    panels = _panels(panels, ("title", "indices", "labels"))
    rows = []
    for i, p in enumerate(panels):
        alloc = M.token_allocation(p["indices"], p["labels"], n_clusters)
        ent = M.alloc_entropy(p["indices"], p["labels"], n_clusters)
        title = f"{p['title']}\nalloc. entropy {ent:.2f}, min {int(alloc.min())}"
        rows += [{"panel": i, "title": title, "cluster": c, "tokens": int(t)} for c, t in enumerate(alloc)]
    return _draw("token_allocation", _frame(rows, ["panel", "title", "cluster", "tokens"]), ncols=ncols,
                 suptitle=suptitle)


@_drawer("token_allocation")
def draw_token_allocation(frame, ncols=None, suptitle=None):
    panels = list(_by_panel(frame))
    fig, axes = _grid(len(panels), ncols, width=3.6, height=3.0)
    for ax, (title, rows) in zip(axes, panels):
        alloc = rows.sort_values("cluster")["tokens"].to_numpy(float)
        ax.bar(np.arange(alloc.size), alloc, color=sns.color_palette("tab10", alloc.size))
        ax.axhline(alloc.sum() / alloc.size, color="black", linestyle="--", linewidth=1, label="even allocation")
        ax.set_xticks(np.arange(alloc.size))
        ax.set_xlabel("ground-truth cluster")
        ax.set_ylabel("tokens (majority cluster)")
        ax.set_title(title)
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


CHANNELS = ("red", "green", "blue")


def plot_image_grid(images, recon, n=8, titles=("originals", "reconstructions"), suptitle=None):
    """Originals (top row) above their reconstructions (bottom row), ``n`` columns.

    Accepts uint8 NHWC (as loaded), float NCHW in [-0.5, 0.5] (``cifar_to_tensor``, model
    output) or float in [0, 1]; reconstructions are clipped to the displayable range.

    Tidy rows: one per pixel shown (``row``, ``image``, ``y``, ``x`` and ``red``, ``green``,
    ``blue`` in [0, 1], or ``grey``).
    """
    orig = _as_images(images, "images")
    rec = _as_images(recon, "recon")
    if orig.shape[1:] != rec.shape[1:]:
        raise ConfigError(f"images are {orig.shape[1:]} but recon are {rec.shape[1:]}; they must match")
    n = min(M._positive_int(n, "n"), orig.shape[0], rec.shape[0])
    parts = []
    for label, batch in zip(titles, (orig, rec)):
        img = batch[:n]
        idx = np.indices(img.shape[:3]).reshape(3, -1)  # image, y, x of every pixel, in C order
        part = pd.DataFrame({"row": str(label), "image": idx[0], "y": idx[1], "x": idx[2]})
        if img.ndim == 3:
            part["grey"] = img.reshape(-1)
        else:
            for c, name in enumerate(CHANNELS):
                part[name] = img[..., c].reshape(-1)
        parts.append(part)
    return _draw("image_grid", pd.concat(parts, ignore_index=True), suptitle=suptitle)


@_drawer("image_grid")
def draw_image_grid(frame, suptitle=None):
    rows = _labels(frame["row"])
    n = int(frame["image"].max()) + 1
    height, width = int(frame["y"].max()) + 1, int(frame["x"].max()) + 1
    grey = "grey" in frame.columns
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n, 1.5 * len(rows)), squeeze=False, layout="constrained")
    for r, label in enumerate(rows):
        part = frame[frame["row"].astype(str) == label].sort_values(["image", "y", "x"])
        values = part[["grey"] if grey else list(CHANNELS)].to_numpy(float)
        batch = values.reshape(n, height, width, -1)
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(batch[i, ..., 0] if grey else batch[i], cmap="gray" if grey else None, vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        axes[r, 0].set_ylabel(label)
    return _finish(fig, [], suptitle)


HEATMAP_COLUMNS = ["remedy", "set", "metric", "higher_is_better", "relative", "low", "high", "pairs", "decided"]


def plot_remedy_heatmap(grid, clip=1.0, suptitle=None):
    """Recipes x metrics, coloured by the relative improvement over the baseline (notebook 06).

    ``grid``: ``verdicts.effect_grid`` (one dict per recipe and metric). Green: better than EMA-VQ
    from scratch, red: worse, clipped at ``clip`` (100%). Each cell shows the relative effect and
    its 95% interval; cells whose interval includes zero (or with a single pair) are faded.

    Tidy rows: one per cell (the grid's columns ``remedy``, ``set``, ``metric``, ``higher_is_better``,
    ``relative``, ``low``, ``high``, ``pairs``, ``decided``).
    """
    if not grid:
        raise ConfigError("plot_remedy_heatmap: the grid is empty (no recipe besides the baseline?)")
    return _draw("remedy_heatmap", _frame([{k: g[k] for k in HEATMAP_COLUMNS} for g in grid], HEATMAP_COLUMNS),
                 clip=clip, suptitle=suptitle)


def _flag(v) -> bool:
    return str(v).strip().lower() in ("true", "1", "1.0")


@_drawer("remedy_heatmap", styled=False)
def draw_remedy_heatmap(frame, clip=1.0, suptitle=None):
    grid = frame.to_dict("records")
    for g in grid:
        g["higher_is_better"], g["decided"] = _flag(g["higher_is_better"]), _flag(g["decided"])
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
                    else f"({int(g['pairs'])} pair)")
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


# --------------------------------------------------------------------------- a collapse report's figure

DIAGNOSIS_COLUMNS = ["panel", "title", "series", "x", "y", "bin_left", "bin_right", "value"]
TOKEN_USE, SPACE, PER_CLUSTER = "token use", "embeddings and tokens", "tokens per cluster"


def plot_diagnosis(embeddings, codebook, indices, labels=None, title="VQ collapse report", max_points=5000, seed=0):
    """The figure of a collapse report (``vqpaper.diagnose``): token use sorted by count; embeddings
    against tokens (a histogram with the tokens marked for 1-D tokens, else a 2-D projection on the
    embeddings' first two principal components); with ``labels``, tokens per cluster.

    Tidy rows: one per token (``token use``: ``x`` its rank, ``value`` latents assigned), per
    embedding drawn and per token (``embeddings and tokens``: ``x``, ``y``, or histogram bins), and
    per cluster (``tokens per cluster``: ``x`` the cluster, ``value`` its tokens).
    """
    z, cb, idx = M._np(embeddings, "embeddings"), M._np(codebook, "codebook"), M._np(indices, "indices")
    counts = np.bincount(idx.ravel(), minlength=cb.shape[0])
    used = counts > 0
    rows = [{"panel": 0, "title": TOKEN_USE, "series": "tokens", "x": rank, "value": c}
            for rank, c in enumerate(np.sort(counts)[::-1])]
    flat = z.reshape(-1, z.shape[-1])
    keep = np.random.default_rng(seed).choice(flat.shape[0], min(max_points, flat.shape[0]), replace=False)
    if z.shape[-1] == 1:
        lo, hi = min(flat.min(), cb.min()), max(flat.max(), cb.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1, 61)
        rows += _bins(1, SPACE, "embeddings", edges, np.histogram(flat[:, 0], bins=edges, density=True)[0])
        rows += [{"panel": 1, "title": SPACE, "series": name, "x": x}
                 for name, mask in (("used tokens", used), ("unused tokens", ~used)) for x in cb[mask, 0]]
        projection = "1-D"
    else:
        mean = flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat[keep] - mean, full_matrices=False)
        comps = vt[:2].T if vt.shape[0] >= 2 else np.c_[vt[0], np.zeros_like(vt[0])]
        pz, pc = (flat[keep] - mean) @ comps, (cb - mean) @ comps
        rows += [{"panel": 1, "title": SPACE, "series": "embeddings", "x": a, "y": b} for a, b in pz]
        rows += [{"panel": 1, "title": SPACE, "series": name, "x": a, "y": b}
                 for name, mask in (("used tokens", used), ("unused tokens", ~used)) for a, b in pc[mask]]
        projection = "PCA"
    if labels is not None:
        lab = M._np(labels, "labels")
        alloc = M.token_allocation(idx.reshape(idx.shape[0], -1), lab, int(lab.max()) + 1)
        rows += [{"panel": 2, "title": PER_CLUSTER, "series": "tokens", "x": c, "value": int(t)}
                 for c, t in enumerate(alloc)]
    return _draw("diagnosis", _frame(rows, DIAGNOSIS_COLUMNS), title=title, projection=projection)


@_drawer("diagnosis", styled=False)
def draw_diagnosis(frame, title="VQ collapse report", projection="PCA"):
    panels = dict(_by_panel(frame))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6))
    ax = axes[0]
    order = panels[TOKEN_USE]["value"].to_numpy(float)
    share = np.cumsum(order) / order.sum()
    ax.bar(np.arange(order.size), order, width=1.0, color="#c0392b")
    ax.set_yscale("symlog", linthresh=1)
    k90 = int(np.searchsorted(share, 0.9) + 1)
    ax.axvline(k90 - 0.5, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("tokens, most used first")
    ax.set_ylabel("latents assigned")
    ax.set_title(f"token use: {int((order > 0).sum()):,}/{order.size:,} used;\n{k90:,} hold 90% (dashed line)",
                 fontsize=10)
    ax, rows = axes[1], panels[SPACE]
    used, unused = rows[rows.series == "used tokens"], rows[rows.series == "unused tokens"]
    if projection == "1-D":
        emb = rows[rows.series == "embeddings"]
        ax.stairs(emb["value"].to_numpy(float), _edges(emb), fill=True, color="#7f8c8d", alpha=0.6, label="embeddings")
        ymax = ax.get_ylim()[1]
        ax.plot(used["x"], np.full(len(used), 0.02 * ymax), "|", color="#c0392b", markersize=12, label="used tokens")
        ax.plot(unused["x"], np.full(len(unused), 0.06 * ymax), "|", color="#2980b9", markersize=12,
                label="unused tokens")
        ax.set_xlabel("value")
        ax.set_title("embeddings (histogram) and tokens", fontsize=10)
    else:
        emb = rows[rows.series == "embeddings"]
        ax.scatter(emb["x"], emb["y"], s=3, alpha=0.25, color="#7f8c8d", linewidths=0, label="embeddings")
        ax.scatter(used["x"], used["y"], s=14, marker="x", color="#c0392b", label="used tokens")
        ax.scatter(unused["x"], unused["y"], s=14, marker="x", color="#2980b9", label="unused tokens")
        ax.set_xlabel("PC 1 (embeddings)")
        ax.set_ylabel("PC 2 (embeddings)")
        ax.set_title("embeddings and tokens, 2-D projection", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    if PER_CLUSTER in panels:
        ax, alloc = axes[2], panels[PER_CLUSTER].sort_values("x")["value"].to_numpy(float)
        ax.bar(np.arange(alloc.size), alloc, color="#27ae60")
        ax.axhline(order.size / alloc.size, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("cluster (label)")
        ax.set_ylabel("tokens (majority cluster)")
        ax.set_title("tokens per cluster (dashed: K / clusters)", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
