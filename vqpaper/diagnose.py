"""A collapse report for any VQ model's arrays: ``vqpaper.diagnose(...)`` and ``vqpaper diagnose run.npz``.

Give the encoder outputs (embeddings), the token index each was quantized to and the codebook
(optionally the data, its labels and the reconstructions); get the collapse metrics of
:mod:`vqpaper.metrics`, hints on the two collapses of Zhao et al. (§3.1 tokens collapse, §3.2
embeddings collapse), one figure, a table and a self-contained HTML page::

    report = vqpaper.diagnose(z, idx, codebook, data=x, labels=y, reconstructions=x_hat)
    report.hints            # ["tokens collapse likely: 12% of tokens hold 90% of assignments; ..."]
    report.to_frame()       # metric, value, meaning
    report.plot()           # usage, embeddings vs tokens, tokens per cluster
    report.to_html("report.html")

Array names and shapes (the ``.npz`` of the command line uses the same names):

* ``embeddings`` [N, D] or [N, L, D] (L latent vectors of D = token_dim numbers per data point);
* ``indices`` [N] or [N, L]: integers in 0 … K-1, the shape of ``embeddings`` without its last axis;
* ``codebook`` [K, D]: the tokens, as the decoder receives them;
* ``data`` [N, ...] (optional), ``labels`` [N] integers (optional), ``reconstructions`` the
  shape of ``data`` (optional, needs ``data``).

The hints' thresholds (``THRESHOLDS``) are rules of thumb measured on this book's runs, not
tests: a hint says where to look, the numbers beside it say how far off the model is.
This module imports only the standard library and two light modules of the package at import time,
so ``import vqpaper`` stays cheap: numpy, pandas, matplotlib and the metrics are imported when called.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .book import figure_png
from .errors import ConfigError

#: Rules of thumb behind the hints, measured on the synthetic runs of notebook 06 at short budgets
#: (2-D and 8-D, 3 seeds): EMA-VQ from scratch reached a perplexity of 0.11-0.21 K and 10-18% of
#: its tokens held 90% of the assignments; pretrained or with dead-code restarts 0.66-0.97 K and
#: 59-86%. The narrow encoder (hidden 4) kept 0.29-0.50 of the data's participation ratio, the
#: wide one (hidden 32) 0.61-0.96. The worst cluster's reconstruction spread (``min_spread_ratio``)
#: was near 0 for healthy models as well at such budgets, so it is reported but raises no hint.
THRESHOLDS = {
    "perplexity_share": 0.25,      # perplexity / K below this: the codebook is used very unevenly
    "usage": 0.5,                  # fewer than half of the tokens used at all
    "top90_share": 0.25,           # fewer than a quarter of the tokens hold 90% of the assignments
    "fair_share": 0.25,            # the worst-served cluster has under a quarter of K / #clusters tokens
    "pr_vs_data": 0.6,             # the embeddings keep under 0.6 of the data's participation ratio
}

#: What each metric of the report means (shown by ``to_frame`` and in the HTML page).
MEANINGS = {
    "codebook_size": "K, tokens in the codebook",
    "latents": "latent vectors quantized (N x L)",
    "usage": "fraction of tokens used at least once",
    "perplexity": "exp(entropy of token use) over all latents",
    "perplexity_share": "perplexity / K (1: every token used equally often)",
    "top90_share": "smallest fraction of tokens that holds 90% of the assignments",
    "dead_tokens": "tokens no latent chose",
    "dead_tokens_near_origin": "fraction of tokens unused and near the origin",
    "quantization_error": "mean squared distance from a latent to its token",
    "participation_ratio": "effective dimension of the embeddings / their dimension",
    "data_participation_ratio": "effective dimension of the data / its dimension",
    "pr_vs_data": "effective dimension of the embeddings / that of the data",
    "alloc_entropy": "evenness of tokens over the labelled clusters (1: even)",
    "min_tokens_per_cluster": "tokens whose majority cluster is the worst-served one",
    "fair_tokens_per_cluster": "K / number of clusters",
    "class_spread_min": "smallest within-class spread of the embeddings / overall spread",
    "mse": "mean squared reconstruction error",
    "coverage": "fraction of data points with a reconstruction among their 5 nearest neighbours' ball",
    "precision": "fraction of reconstructions inside the data's 5-NN balls",
    "min_spread_ratio": "worst cluster: reconstruction variance / data variance",
}


def _array(x, name: str, expected: str):
    import numpy as np

    from . import metrics as M  # heavy (scipy, scikit-learn): `import vqpaper` imports this module

    if x is None:
        raise ConfigError(f"{name} is missing; expected {expected}")
    try:
        arr = M._np(x, name)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; expected {expected}") from None
    if arr.size == 0:
        raise ConfigError(f"{name} is empty (shape {arr.shape}); expected {expected}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ConfigError(f"{name} must be numeric, got dtype {arr.dtype}; expected {expected}")
    return arr


def _check(embeddings, indices, codebook, data, labels, reconstructions):
    """The arrays as numpy, or a ConfigError naming the array, its shape and the shape expected."""
    import numpy as np

    z = _array(embeddings, "embeddings", "a float array [N, D] or [N, L, D]").astype(np.float64)
    if z.ndim not in (2, 3):
        raise ConfigError(f"embeddings has shape {z.shape}; expected [N, D] or [N, L, D] (D = token_dim)")
    if not np.all(np.isfinite(z)):
        raise ConfigError("embeddings contains NaN or infinite values")
    d = z.shape[-1]
    cb = _array(codebook, "codebook", f"a float array [K, {d}] (D = embeddings.shape[-1])").astype(np.float64)
    if cb.ndim != 2 or cb.shape[1] != d:
        raise ConfigError(f"codebook has shape {cb.shape}; expected [K, {d}] (K tokens of D = embeddings.shape[-1] "
                          f"= {d} numbers)")
    if not np.all(np.isfinite(cb)):
        raise ConfigError("codebook contains NaN or infinite values")
    k = cb.shape[0]
    idx = _array(indices, "indices", f"integers in 0 … {k - 1}, shape {z.shape[:-1]} (embeddings.shape[:-1])")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ConfigError(f"indices has dtype {idx.dtype}; expected integers in 0 … {k - 1}, shape {z.shape[:-1]}")
    if idx.shape != z.shape[:-1]:
        raise ConfigError(f"indices has shape {idx.shape}; expected {z.shape[:-1]} (embeddings.shape[:-1])")
    if idx.min() < 0 or idx.max() >= k:
        raise ConfigError(f"indices holds {int(idx.min())} … {int(idx.max())}; expected 0 … {k - 1} "
                          f"(the codebook has K = {k} rows)")
    n = z.shape[0]
    x = xh = y = None
    if data is not None:
        x = _array(data, "data", f"a float array [N = {n}, ...]").astype(np.float64)
        if x.shape[0] != n:
            raise ConfigError(f"data has {x.shape[0]} rows; expected N = {n} (one per row of embeddings)")
        x = x.reshape(n, -1)
    if reconstructions is not None:
        if x is None:
            raise ConfigError("reconstructions were given without data; give data too (the reconstructions are "
                              "compared with it)")
        xh = _array(reconstructions, "reconstructions", f"the shape of data, [{n}, ...]").astype(np.float64)
        if xh.size != x.size or xh.shape[0] != n:
            raise ConfigError(f"reconstructions has shape {xh.shape}; expected the shape of data, {np.shape(data)}")
        xh = xh.reshape(n, -1)
    if labels is not None:
        y = _array(labels, "labels", f"integers >= 0, shape ({n},)")
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,) or y.min() < 0:
            raise ConfigError(f"labels has shape {y.shape} and dtype {y.dtype}; expected integers >= 0, shape ({n},)")
    return z, idx.astype(np.int64), cb, x, y, xh


@dataclass
class Diagnosis:
    """The report of :func:`diagnose`: metrics, hints, and the arrays its figure needs."""

    metrics: dict
    hints: list
    tokens_collapse: bool
    embeddings_collapse: Optional[bool]     # None: no data to compare the embeddings with
    title: str = "VQ collapse report"
    arrays: dict = field(default_factory=dict, repr=False)

    def to_frame(self):
        """One row per metric: name, value, meaning."""
        import pandas as pd

        return pd.DataFrame([{"metric": k, "value": v, "meaning": MEANINGS.get(k, "")} for k, v in self.metrics.items()])

    def plot(self, max_points: int = 5000, seed: int = 0):
        """One figure: token use sorted by count; embeddings against tokens; tokens per cluster (with labels)."""
        import matplotlib.pyplot as plt
        import numpy as np

        from . import metrics as M  # heavy (scipy, scikit-learn): `import vqpaper` imports this module

        a = self.arrays
        z, cb, idx = a["embeddings"], a["codebook"], a["indices"]
        counts = np.bincount(idx.ravel(), minlength=cb.shape[0])
        used = counts > 0
        n_panels = 3 if a.get("labels") is not None else 2
        fig, axes = plt.subplots(1, n_panels, figsize=(4.4 * n_panels, 3.6))
        ax = axes[0]
        order = np.sort(counts)[::-1]
        share = np.cumsum(order) / order.sum()
        ax.bar(np.arange(order.size), order, width=1.0, color="#c0392b")
        ax.set_yscale("symlog", linthresh=1)
        k90 = int(np.searchsorted(share, 0.9) + 1)
        ax.axvline(k90 - 0.5, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("tokens, most used first")
        ax.set_ylabel("latents assigned")
        ax.set_title(f"token use: {used.sum():,}/{cb.shape[0]:,} used;\n{k90:,} hold 90% (dashed line)", fontsize=10)
        ax = axes[1]
        flat = z.reshape(-1, z.shape[-1])
        rng = np.random.default_rng(seed)
        rows = rng.choice(flat.shape[0], min(max_points, flat.shape[0]), replace=False)
        if z.shape[-1] == 1:
            lo, hi = min(flat.min(), cb.min()), max(flat.max(), cb.max())
            edges = np.linspace(lo, hi if hi > lo else lo + 1, 61)
            ax.hist(flat[:, 0], bins=edges, density=True, color="#7f8c8d", alpha=0.6, label="embeddings")
            ymax = ax.get_ylim()[1]
            ax.plot(cb[used, 0], np.full(used.sum(), 0.02 * ymax), "|", color="#c0392b", markersize=12,
                    label="used tokens")
            ax.plot(cb[~used, 0], np.full((~used).sum(), 0.06 * ymax), "|", color="#2980b9", markersize=12,
                    label="unused tokens")
            ax.set_xlabel("value")
            ax.set_title("embeddings (histogram) and tokens", fontsize=10)
        else:
            mean = flat.mean(axis=0)
            _, _, vt = np.linalg.svd(flat[rows] - mean, full_matrices=False)
            comps = vt[:2].T if vt.shape[0] >= 2 else np.c_[vt[0], np.zeros_like(vt[0])]
            pz, pc = (flat[rows] - mean) @ comps, (cb - mean) @ comps
            ax.scatter(pz[:, 0], pz[:, 1], s=3, alpha=0.25, color="#7f8c8d", linewidths=0, label="embeddings")
            ax.scatter(pc[used, 0], pc[used, 1], s=14, marker="x", color="#c0392b", label="used tokens")
            ax.scatter(pc[~used, 0], pc[~used, 1], s=14, marker="x", color="#2980b9", label="unused tokens")
            ax.set_xlabel("PC 1 (embeddings)")
            ax.set_ylabel("PC 2 (embeddings)")
            ax.set_title("embeddings and tokens, 2-D projection", fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
        if n_panels == 3:
            ax = axes[2]
            lab = a["labels"]
            idx2 = idx.reshape(idx.shape[0], -1)
            alloc = M.token_allocation(idx2, lab, int(lab.max()) + 1)
            ax.bar(np.arange(alloc.size), alloc, color="#27ae60")
            ax.axhline(cb.shape[0] / alloc.size, color="black", linestyle="--", linewidth=1)
            ax.set_xlabel("cluster (label)")
            ax.set_ylabel("tokens (majority cluster)")
            ax.set_title("tokens per cluster (dashed: K / clusters)", fontsize=10)
        fig.suptitle(self.title, fontsize=11)
        fig.tight_layout()
        return fig

    def hint_text(self) -> str:
        return "\n".join(f"- {h}" for h in self.hints)

    def to_html(self, path) -> Path:
        """A self-contained HTML page (the figure as an embedded PNG, no remote resources)."""
        import matplotlib.pyplot as plt  # heavy: only a report with a figure needs it

        fig = self.plot()
        png = base64.b64encode(figure_png(fig, dpi=110)).decode("ascii")
        plt.close(fig)
        rows = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td>{_fmt(v)}</td>"
                       f"<td>{html.escape(MEANINGS.get(k, ''))}</td></tr>" for k, v in self.metrics.items())
        hints = "".join(f"<li>{html.escape(h)}</li>" for h in self.hints)
        page = (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left}"
            "img{max-width:100%}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1><h2>Hints</h2><ul>{hints}</ul>"
            f"<img alt=\"token use, embeddings and tokens, tokens per cluster\" src=\"data:image/png;base64,{png}\">"
            "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>meaning</th></tr>"
            f"{rows}</table><p>Thresholds of the hints: {html.escape(str(THRESHOLDS))}. "
            "Made by <code>vqpaper diagnose</code> (tokens and embeddings collapse, Zhao et al. 2024, §3).</p>"
            "</body></html>\n")
        path = Path(path)
        path.write_text(page, encoding="utf-8")
        return path

    def _repr_html_(self):
        items = "".join(f"<li>{html.escape(h)}</li>" for h in self.hints)
        return f"<strong>{html.escape(self.title)}</strong><ul>{items}</ul>" + self.to_frame().to_html(index=False)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) else html.escape(str(v))


def diagnose(embeddings, indices, codebook, data=None, labels=None, reconstructions=None,
             title: str = "VQ collapse report", max_points: int = 10_000, seed: int = 0) -> Diagnosis:
    """The collapse report of one VQ model (see the module docstring for the arrays' shapes).

    Tokens collapse is *likely* when the codebook is used very unevenly (perplexity below
    ``THRESHOLDS["perplexity_share"]`` of K, or fewer than ``THRESHOLDS["top90_share"]`` of the
    tokens holding 90% of the assignments), when most tokens are unused, or, with labels, when
    the worst-served cluster gets under a quarter of its fair share of tokens. Embeddings
    collapse *signs* (needs ``data``): the embeddings keep under ``THRESHOLDS["pr_vs_data"]`` of
    the data's participation ratio (effective dimension of the data points' whole latents
    against that of the data points). With more than
    ``max_points`` rows, coverage and precision use a seeded subsample.
    """
    import numpy as np

    from . import metrics as M  # heavy (scipy, scikit-learn): `import vqpaper` imports this module

    z, idx, cb, x, y, xh = _check(embeddings, indices, codebook, data, labels, reconstructions)
    k = cb.shape[0]
    counts = np.bincount(idx.ravel(), minlength=k)
    order = np.sort(counts)[::-1]
    top90 = int(np.searchsorted(np.cumsum(order) / order.sum(), 0.9) + 1)
    m: dict = {"codebook_size": k, "latents": int(idx.size), "usage": M.usage(idx, k),
               "perplexity": M.perplexity(idx, k)}
    m["perplexity_share"] = m["perplexity"] / k
    m["top90_share"] = top90 / k
    m["dead_tokens"] = int((counts == 0).sum())
    m["dead_tokens_near_origin"] = M.dead_tokens_near_origin(cb, idx)
    m["quantization_error"] = M.quantization_error(z, cb, idx)
    m["participation_ratio"] = float(M.participation_ratio(z)) if z.shape[0] > 1 else float("nan")
    if x is not None and x.shape[0] > 1:
        m["data_participation_ratio"] = float(M.participation_ratio(x))
        pr_x = M.effective_dimension(x)
        m["pr_vs_data"] = float(M.effective_dimension(z) / pr_x) if pr_x > 0 else float("nan")
    if y is not None:
        n_clusters = int(y.max()) + 1
        idx2 = idx.reshape(idx.shape[0], -1)
        m["alloc_entropy"] = M.alloc_entropy(idx2, y, n_clusters)
        m["min_tokens_per_cluster"] = M.min_tokens_per_cluster(idx2, y, n_clusters)
        m["fair_tokens_per_cluster"] = k / n_clusters
        m["class_spread_min"] = M.class_spread(z, y)["min"]
    if xh is not None:
        m["mse"] = M.mse(x, xh)
        rows = np.arange(x.shape[0])
        if x.shape[0] > max_points:
            rows = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False))
        if rows.size > 5:
            m.update(M.precision_coverage(x[rows], xh[rows], k=5))
        if y is not None:
            try:
                m["min_spread_ratio"] = M.min_spread_ratio(x, xh, y)
            except ConfigError:
                pass  # a cluster with a single point or no spread: no ratio to report
    hints, tokens, emb = _hints(m)
    return Diagnosis(m, hints, tokens, emb, title,
                     {"embeddings": z, "indices": idx, "codebook": cb, "labels": y})


def _hints(m: dict):
    t = THRESHOLDS
    tokens_signs = []
    if m["perplexity_share"] < t["perplexity_share"] or m["top90_share"] < t["top90_share"]:
        tokens_signs.append(f"{m['top90_share']:.0%} of tokens hold 90% of assignments; perplexity "
                            f"{m['perplexity']:.3g} of {m['codebook_size']:,}")
    if m["usage"] < t["usage"]:
        tokens_signs.append(f"usage {m['usage']:.2f} ({m['dead_tokens']:,} of {m['codebook_size']:,} tokens unused)")
    if "min_tokens_per_cluster" in m and m["min_tokens_per_cluster"] < t["fair_share"] * m["fair_tokens_per_cluster"]:
        n = m["min_tokens_per_cluster"]
        tokens_signs.append(f"the worst-served cluster has {n} token{'' if n == 1 else 's'} (a fair share: "
                            f"{m['fair_tokens_per_cluster']:.3g})")
    hints = []
    if tokens_signs:
        hints.append("tokens collapse likely: " + "; ".join(tokens_signs))
    else:
        hints.append(f"no sign of tokens collapse: usage {m['usage']:.2f}, perplexity {m['perplexity']:.3g} of "
                     f"{m['codebook_size']:,}, {m['top90_share']:.0%} of tokens hold 90% of assignments")
    emb: Optional[bool] = None
    if "pr_vs_data" in m:
        signs = []
        if m["pr_vs_data"] < t["pr_vs_data"]:
            signs.append(f"participation ratio {m['pr_vs_data']:.2f} of the data's")
        emb = bool(signs)
        hints.append("embeddings collapse signs: " + "; ".join(signs) if signs else
                     f"no sign of embeddings collapse: participation ratio {m['pr_vs_data']:.2f} of the data's")
    else:
        hints.append("embeddings collapse not assessed: give the data to compare the embeddings with")
    return hints, bool(tokens_signs), emb


# ------------------------------------------------------------------ the command line's input
#: Array names of ``vqpaper diagnose``'s input; a run folder of the sweep cache (``arrays.npz``)
#: names them as train.py does (the second name).
ARRAYS = {"embeddings": "Z", "indices": "indices", "codebook": "codebook", "data": "X", "labels": "y",
          "reconstructions": "X_hat"}
REQUIRED = ("embeddings", "indices", "codebook")


def load_arrays(path) -> dict:
    """The arrays of an ``.npz`` (names of ``ARRAYS``) or of a cached run's folder (``arrays.npz``)."""
    import numpy as np

    path = Path(path)
    cache_entry = path.is_dir()
    npz = path / "arrays.npz" if cache_entry else path
    if not npz.is_file():
        raise ConfigError(f"{path}: no such file; give an .npz with arrays {list(ARRAYS)} "
                          f"(required: {list(REQUIRED)}) or a cached run's folder holding arrays.npz")
    try:
        with np.load(npz, allow_pickle=False) as f:
            stored = {name: f[name] for name in f.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{npz}: not a readable .npz ({exc}); save the arrays with numpy.savez") from None
    out = {}
    for name, alias in ARRAYS.items():
        if name in stored:
            out[name] = stored[name]
        elif alias in stored:
            out[name] = stored[alias]
    missing = [n for n in REQUIRED if n not in out]
    if missing:
        shapes = {"embeddings": "[N, D] or [N, L, D]", "indices": "embeddings.shape[:-1], integers",
                  "codebook": "[K, D]"}
        raise ConfigError(f"{npz} has no array {', '.join(repr(n) for n in missing)} (expected "
                          f"{'; '.join(f'{n}: {shapes[n]}' for n in missing)}); it holds {sorted(stored) or 'nothing'}")
    return out
