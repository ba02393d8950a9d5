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
from .errors import ConfigError, DataFormatError, DataNotFoundError, check_positive_int

#: Rules of thumb behind the hints. Tokens collapse: measured on the synthetic runs of notebook 06
#: at short budgets (2-D and 8-D, 3 seeds): EMA-VQ from scratch reached a perplexity of 0.11-0.21 K
#: and 10-18% of its tokens held 90% of the assignments; pretrained or with dead-code restarts
#: 0.66-0.97 K and 59-86%. The worst cluster's reconstruction spread (``min_spread_ratio``) was near
#: 0 for healthy models as well at such budgets, so it is reported but raises no hint.
#:
#: Embeddings collapse (§3.2) is judged against what a healthy code of the same size keeps: the
#: data reduced to its top ``code_dim`` principal components (code_dim = L x D numbers per point;
#: the data itself when the code has as many numbers as the data or more), so a code with fewer
#: numbers than the data is not flagged for that alone. Measured by ``python
#: benchmarks/diagnose_thresholds.py`` with this module's own metrics: notebook 04's ci runs
#: (scratch: hidden 4, 8, 32; pretrained: hidden 4, 32), notebook 06's ci base (hidden 32) and
#: narrow (hidden 4) runs, and 4-D codes of 8-D data (encoders 8 -> H -> H -> 4, 04's budget);
#: 2-D data with 1-D tokens, 8-D data with 4-D tokens, 3 seeds each (float32, one thread):
#:
#: * ``pr_kept``: the 21 wide-encoder runs (hidden 32) kept 0.551-0.948 (0.691-0.880 as 4-D codes
#:   of 8-D data; the old comparison with the data's whole participation ratio gave those
#:   0.54-0.69 and flagged them); hidden 4: 0.503-0.515 where the 2-D embeddings fell onto one
#:   line, 0.363-0.446 in 8-D, 0.522-0.568 as 4-D codes, 0.661-0.711 for the 2-D seed whose
#:   clusters stayed apart. 0.53 lies between the wide runs' 0.551 and the 2-D collapses' 0.515, a
#:   narrow gap: near 0.53 the hint says where to look, the label agreement says more.
#: * ``agreement_kept`` (needs labels): every wide run 1.000; the 2-D hidden-4 runs whose clusters
#:   merged 0.718-0.959; every other hidden-4 run 0.985-1.000. 0.98 lies between.
THRESHOLDS = {
    "perplexity_share": 0.25,      # perplexity / K below this: the codebook is used very unevenly
    "usage": 0.5,                  # fewer than half of the tokens used at all
    "top90_share": 0.25,           # fewer than a quarter of the tokens hold 90% of the assignments
    "fair_share": 0.25,            # the worst-served cluster has under a quarter of K / #clusters tokens
    "pr_kept": 0.53,               # the embeddings keep under 0.53 of a healthy code's effective dimension
    "agreement_kept": 0.98,        # 5-NN label agreement under 0.98 of the data's: classes merged
}
#: Neighbours and query points of the label-agreement metric (a seeded subsample keeps it cheap).
NEIGHBOURS, AGREEMENT_QUERIES = 5, 1000

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
    "code_dim": "numbers per data point in the embeddings (L x D)",
    "effective_dim": "participation ratio of the embeddings, (sum of eigenvalues)^2 / sum of squares: 1 to code_dim",
    "participation_ratio": "effective_dim / code_dim",
    "data_dim": "numbers per data point in the data",
    "data_participation_ratio": "effective dimension of the data / its dimension",
    "data_pr_at_code_dim": "effective dimension of the data's top code_dim principal components "
                           "(what a healthy code of that size keeps)",
    "pr_kept": "effective dimension of the embeddings / data_pr_at_code_dim",
    "label_agreement": "fraction of an embedding's 5 nearest embeddings that share its label",
    "data_label_agreement": "the same for the data's top code_dim principal components",
    "agreement_kept": "label_agreement / data_label_agreement (below 1: classes merged)",
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


def _finite(arr, name: str) -> None:
    import numpy as np

    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise ConfigError(f"{name} (shape {arr.shape}) holds {bad:,} NaN or infinite value{'' if bad == 1 else 's'}; "
                          f"expected finite numbers")


def _check(embeddings, indices, codebook, data, labels, reconstructions):
    """The arrays as numpy, or a ConfigError naming the array, its shape and the shape expected."""
    import numpy as np

    z = _array(embeddings, "embeddings", "a float array [N, D] or [N, L, D]").astype(np.float64)
    if z.ndim not in (2, 3):
        raise ConfigError(f"embeddings has shape {z.shape}; expected [N, D] or [N, L, D] (D = token_dim)")
    _finite(z, "embeddings")
    d = z.shape[-1]
    cb = _array(codebook, "codebook", f"a float array [K, {d}] (D = embeddings.shape[-1])").astype(np.float64)
    if cb.ndim != 2 or cb.shape[1] != d:
        raise ConfigError(f"codebook has shape {cb.shape}; expected [K, {d}] (K tokens of D = embeddings.shape[-1] "
                          f"= {d} numbers)")
    _finite(cb, "codebook")
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
        data_shape = x.shape
        if x.shape[0] != n:
            raise ConfigError(f"data has shape {x.shape}: {x.shape[0]} rows; expected N = {n} rows (one per row of "
                              f"embeddings)")
        _finite(x, "data")
        x = x.reshape(n, -1)
    if reconstructions is not None:
        xh = _array(reconstructions, "reconstructions", f"the shape of data, [{n}, ...]").astype(np.float64)
        if x is None:
            raise ConfigError(f"reconstructions (shape {xh.shape}) were given without data; give data too, shape "
                              f"[N = {n}, ...] (the reconstructions are compared with it)")
        if xh.size != x.size or xh.shape[0] != n:
            raise ConfigError(f"reconstructions has shape {xh.shape}; expected the shape of data, {data_shape}")
        _finite(xh, "reconstructions")
        xh = xh.reshape(n, -1)
    if labels is not None:
        y = _array(labels, "labels", f"integers >= 0, shape ({n},)")
        if y.shape != (n,):
            raise ConfigError(f"labels has shape {y.shape}; expected ({n},) (one integer >= 0 per row of embeddings)")
        if not np.issubdtype(y.dtype, np.integer):
            raise ConfigError(f"labels has dtype {y.dtype}; expected integers >= 0 (cluster or class ids), shape ({n},)")
        if y.min() < 0:
            raise ConfigError(f"labels holds {int(y.min())}; expected integers >= 0 (cluster or class ids)")
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
        """One figure: token use sorted by count; embeddings against tokens; tokens per cluster (with labels).

        Drawn by ``vqpaper.plots.plot_diagnosis`` from a tidy table, so the book can publish its numbers.
        """
        from .plots import plot_diagnosis  # heavy (matplotlib, seaborn): `import vqpaper` imports this module

        a = self.arrays
        return plot_diagnosis(a["embeddings"], a["codebook"], a["indices"], labels=a.get("labels"), title=self.title,
                              max_points=max_points, seed=seed)

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
    collapse *signs* (needs ``data``) compare the embeddings with what a healthy code of their
    size keeps, the data reduced to its top ``code_dim`` principal components: the embeddings'
    effective dimension (participation ratio) is under ``THRESHOLDS["pr_kept"]`` of that
    reference's, or (with labels) a point's nearest embeddings share its label less often than
    in the reference (under ``THRESHOLDS["agreement_kept"]`` of it: classes merged, §3.2). With
    more than ``max_points`` rows, coverage, precision and label agreement use a seeded subsample.
    """
    import numpy as np

    from . import metrics as M  # heavy (scipy, scikit-learn): `import vqpaper` imports this module

    max_points = check_positive_int("max_points", max_points)
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
    n = z.shape[0]
    m["code_dim"] = int(np.prod(z.shape[1:]))
    m["effective_dim"] = float(M.effective_dimension(z)) if n > 1 else float("nan")
    m["participation_ratio"] = m["effective_dim"] / m["code_dim"]
    rows = np.arange(n) if n <= max_points else np.sort(np.random.default_rng(seed).choice(n, max_points,
                                                                                          replace=False))
    if x is not None and n > 1:
        m["data_dim"] = x.shape[1]
        m["data_participation_ratio"] = float(M.participation_ratio(x))
        reference = _top_components(x, m["code_dim"])  # what a healthy code of this size keeps of the data
        m["data_pr_at_code_dim"] = float(M.effective_dimension(reference))
        m["pr_kept"] = _ratio(m["effective_dim"], m["data_pr_at_code_dim"])
        if y is not None and rows.size > NEIGHBOURS + 1:
            queries = np.random.default_rng(seed).permutation(rows.size)[:AGREEMENT_QUERIES]
            m["label_agreement"] = _label_agreement(z.reshape(n, -1)[rows], y[rows], queries)
            m["data_label_agreement"] = _label_agreement(reference[rows], y[rows], queries)
            m["agreement_kept"] = _ratio(m["label_agreement"], m["data_label_agreement"])
    if y is not None:
        n_clusters = int(y.max()) + 1
        idx2 = idx.reshape(idx.shape[0], -1)
        m["alloc_entropy"] = M.alloc_entropy(idx2, y, n_clusters)
        m["min_tokens_per_cluster"] = M.min_tokens_per_cluster(idx2, y, n_clusters)
        m["fair_tokens_per_cluster"] = k / n_clusters
        m["class_spread_min"] = M.class_spread(z, y)["min"]
    if xh is not None:
        m["mse"] = M.mse(x, xh)
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


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def _top_components(x, dim: int):
    """``x`` centred, on its top ``dim`` principal components (all of ``x`` when ``dim`` >= its width)."""
    import numpy as np

    x = x - x.mean(axis=0)
    if dim >= x.shape[1]:
        return x
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:dim].T


def _label_agreement(points, labels, queries) -> float:
    """Fraction of the ``NEIGHBOURS`` nearest points (Euclidean, self excluded) of ``points[queries]``
    that share their label: "outputs of input data from different categories clustering
    together" (§1, §3.2) lowers it."""
    import numpy as np
    from sklearn.neighbors import NearestNeighbors  # heavy import, only when labels are given

    _, nb = NearestNeighbors(n_neighbors=NEIGHBOURS + 1).fit(points).kneighbors(points[queries])
    own = nb == queries[:, None]
    own[~own.any(axis=1), -1] = True  # the query not among them (duplicates at distance 0): drop the farthest
    nb = nb[~own].reshape(len(queries), NEIGHBOURS)
    return float((labels[nb] == labels[queries, None]).mean())


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
    if "pr_kept" in m:
        reference = (f"the data's {m['data_pr_at_code_dim']:.2f}" if m["code_dim"] >= m["data_dim"] else
                     f"the {m['data_pr_at_code_dim']:.2f} of the data's top {m['code_dim']} principal components "
                     f"(a healthy code of {m['code_dim']} numbers)")
        spread = (f"effective dimension {m['effective_dim']:.2f} of {m['code_dim']} numbers per point, "
                  f"{m['pr_kept']:.2f} of {reference}")
        agreement = ""
        if "agreement_kept" in m:
            agreement = (f"{m['label_agreement']:.1%} of a point's {NEIGHBOURS} nearest embeddings share its label, "
                         f"{m['agreement_kept']:.3f} of the data's {m['data_label_agreement']:.1%}")
        signs = []
        if m["pr_kept"] < t["pr_kept"]:
            signs.append(f"{spread} (below {t['pr_kept']}: spread over fewer directions)")
        if agreement and m["agreement_kept"] < t["agreement_kept"]:
            signs.append(f"{agreement} (below {t['agreement_kept']}: classes merged)")
        emb = bool(signs)
        hints.append("embeddings collapse signs: " + "; ".join(signs) if signs else
                     "no sign of embeddings collapse: " + "; ".join(filter(None, (spread, agreement))))
    else:
        hints.append("embeddings collapse not assessed: give the data (and labels) to compare the embeddings with")
    return hints, bool(tokens_signs), emb


# ------------------------------------------------------------------ the command line's input
#: Array names of ``vqpaper diagnose``'s input; a run folder of the sweep cache (``arrays.npz``)
#: names them as train.py does (the second name).
ARRAYS = {"embeddings": "Z", "indices": "indices", "codebook": "codebook", "data": "X", "labels": "y",
          "reconstructions": "X_hat"}
REQUIRED = ("embeddings", "indices", "codebook")


#: What the command line reads, and how to make it; every loading error ends with these two lines.
EXPECTED = ("\n  expected: an .npz with arrays embeddings [N, D] or [N, L, D], indices [N] or [N, L], codebook [K, D] "
            "(optionally data [N, ...], labels [N], reconstructions; a run cache's names Z, indices, codebook, X, y, "
            "X_hat are read too), or one run's folder of the sweep cache, holding result.json + arrays.npz")
HOW_TO_MAKE = ("\n  make one: numpy.savez('run.npz', embeddings=z, indices=idx, codebook=codebook, data=x, labels=y), "
               "or run a notebook: vqpaper.sweeps stores each of its runs in _build/cache/<key>/")
#: First bytes of an .npz (a zip archive: a local file header, or the end record of an empty archive) and of an .npy.
_ZIP_MAGIC, _EMPTY_ZIP_MAGIC, _NPY_MAGIC = b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY"


def _npz_of(path: Path) -> Path:
    """The .npz to read for ``path`` (a file, or a run-cache folder's arrays.npz), or an error saying what it is."""
    if not path.exists():
        raise DataNotFoundError(f"arrays '{path}': no such file or folder{EXPECTED}{HOW_TO_MAKE}")
    if not path.is_dir():
        return path
    if (path / "arrays.npz").is_file():
        return path / "arrays.npz"
    names = sorted(p.name for p in path.iterdir())
    runs = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / "result.json").is_file())
    if runs:  # the cache itself (or a copy of it): name one of its runs
        raise DataNotFoundError(f"arrays '{path}' is a folder of {len(runs)} cached run(s), not one run; give one "
                                f"run's folder, e.g. '{path / runs[0]}' (it holds result.json + arrays.npz)")
    shown = ", ".join(names[:8]) + (f", … ({len(names)} entries)" if len(names) > 8 else "") if names else "nothing"
    raise DataNotFoundError(f"arrays '{path}' is a folder but not a run cache: it has no arrays.npz (it holds "
                            f"{shown}){EXPECTED}{HOW_TO_MAKE}")


def _not_npz(npz: Path) -> str:
    """What the file ``npz`` is instead of an .npz, from its first bytes (empty, an .npy, text, other)."""
    with open(npz, "rb") as f:
        head = f.read(64)
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(_NPY_MAGIC):
        return "is a single .npy array, not an .npz of named arrays"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"is not an .npz (a zip archive of .npy arrays, starting with b'PK'): it starts with {head[:16]!r}"
    first = text.splitlines()[0] if text.strip() else repr(text)
    return f"is a text file, not an .npz (a zip archive of .npy arrays): it starts with {first[:40]!r}"


def _read_npz(npz: Path) -> dict:
    """Every array of ``npz`` (no pickles), or a DataFormatError saying what the file or member is instead."""
    import zipfile

    import numpy as np

    with open(npz, "rb") as f:
        head = f.read(4)
    if head not in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
        raise DataFormatError(f"arrays '{npz}' {_not_npz(npz)}{EXPECTED}{HOW_TO_MAKE}")
    try:
        f = np.load(npz, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"arrays '{npz}' starts like a zip archive but numpy cannot open it as an .npz "
                              f"({type(exc).__name__}: {exc}; a file cut short?){HOW_TO_MAKE}") from None
    stored = {}
    with f:
        for name in f.files:
            try:
                value = f[name]
            except ValueError:  # numpy refuses object arrays without allow_pickle; we never unpickle a file
                raise DataFormatError(f"array '{name}' of '{npz}' holds Python objects (a pickled object array); "
                                      f"expected a numeric array: save numbers, e.g. numpy.asarray({name}, "
                                      f"dtype=float)") from None
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DataFormatError(f"array '{name}' of '{npz}' cannot be read ({type(exc).__name__}: {exc}; "
                                      f"a file cut short?){HOW_TO_MAKE}") from None
            if not isinstance(value, np.ndarray):  # a zip member that is not an .npy (numpy returns its bytes)
                raise DataFormatError(f"arrays '{npz}' is a zip archive but not an .npz: its member '{name}' "
                                      f"({len(value):,} bytes) is not a numpy array (.npy){EXPECTED}{HOW_TO_MAKE}")
            stored[name] = value
    return stored


def load_arrays(path) -> dict:
    """The arrays of an ``.npz`` (names of ``ARRAYS``) or of a cached run's folder (``arrays.npz``).

    A missing path raises :class:`~vqpaper.errors.DataNotFoundError`; a file that is not an
    .npz of numeric arrays, a :class:`~vqpaper.errors.DataFormatError`; a missing required array,
    a ConfigError. Each says what the path is, what was expected and how to make it.
    """
    npz = _npz_of(Path(path))
    stored = _read_npz(npz)
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
        held = ", ".join(f"{n} {tuple(a.shape)}" for n, a in sorted(stored.items())) or "nothing"
        raise ConfigError(f"'{npz}' has no array {', '.join(repr(n) for n in missing)} (expected "
                          f"{'; '.join(f'{n}: {shapes[n]}' for n in missing)}); it holds {held}{HOW_TO_MAKE}")
    return out


def report_file(source, output=None) -> tuple[Diagnosis, Path]:
    """``vqpaper diagnose``: the report of the arrays at ``source`` written as HTML to ``output``
    (default ``<name>-diagnosis.html`` in the working folder); returns the report and the path.

    Every problem is a ConfigError, DataFormatError or DataNotFoundError naming the path or array,
    what it is and what is expected (an ``-o`` in a folder that does not exist included).
    """
    source = Path(source)
    out = Path(output) if output else Path(f"{source.resolve().name.removesuffix('.npz')}-diagnosis.html")
    report = diagnose(**load_arrays(source), title=f"VQ collapse report: {source.name}")
    if not out.parent.is_dir():
        raise ConfigError(f"-o {out}: the folder {out.parent} does not exist; create it or give a path in an existing "
                          "folder")
    return report, report.to_html(out)
