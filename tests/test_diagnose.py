"""vqpaper.diagnose and `vqpaper diagnose`: known answers on a collapsed and a healthy codebook, clear errors."""
import subprocess
import sys

import numpy as np
import pytest

import vqpaper
from vqpaper.cli import main
from vqpaper.data import make_clusters
from vqpaper.diagnose import THRESHOLDS, load_arrays
from vqpaper.errors import ConfigError


@pytest.fixture(scope="module")
def blobs():
    X, y = make_clusters(200, 2, seed=0)  # 10 clusters, standardised
    return X, y


def _nearest(z, codebook):
    return ((z[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(1)


def healthy(X, y, k=40):
    """4 tokens per cluster, each at a data point of its cluster: every token used, evenly over clusters."""
    rng = np.random.default_rng(0)
    codebook = np.concatenate([X[rng.choice(np.flatnonzero(y == c), 4, replace=False)] for c in range(10)])
    z = X.copy()
    idx = _nearest(z, codebook)
    return z, idx, codebook, codebook[idx]


def collapsed(X, y, k=40):
    """Tokens crowded in a narrow range around one cluster (K-means on an untrained encoder's outputs)."""
    rng = np.random.default_rng(1)
    centre = X[y == 0].mean(0)
    codebook = centre + 0.05 * rng.standard_normal((k, 2))
    idx = _nearest(X, codebook)
    return X.copy(), idx, codebook, codebook[idx]


def test_a_collapsed_codebook_is_diagnosed_as_tokens_collapse(blobs):
    X, y = blobs
    z, idx, cb, rec = collapsed(X, y)
    report = vqpaper.diagnose(z, idx, cb, data=X, labels=y, reconstructions=rec)
    assert report.tokens_collapse
    assert report.hints[0].startswith("tokens collapse likely:")
    assert "of tokens hold 90% of assignments" in report.hints[0] and "worst-served cluster" in report.hints[0]
    assert report.metrics["min_tokens_per_cluster"] == 0 and report.metrics["alloc_entropy"] < 0.5


def test_a_healthy_codebook_is_not(blobs):
    X, y = blobs
    z, idx, cb, rec = healthy(X, y)
    report = vqpaper.diagnose(z, idx, cb, data=X, labels=y, reconstructions=rec)
    assert not report.tokens_collapse and report.hints[0].startswith("no sign of tokens collapse")
    assert report.metrics["usage"] == 1.0 and report.metrics["perplexity_share"] > THRESHOLDS["perplexity_share"]
    assert report.embeddings_collapse is False and report.metrics["pr_vs_data"] == pytest.approx(1.0)


def test_embeddings_squeezed_onto_one_direction_show_embeddings_collapse(blobs):
    X, y = blobs
    z = (X @ np.array([[1.0], [0.3]])) @ np.array([[1.0, 0.5]])  # rank 1: one effective dimension of two
    cb = z[::25]
    report = vqpaper.diagnose(z, _nearest(z, cb), cb, data=X, labels=y)
    assert report.embeddings_collapse and report.metrics["pr_vs_data"] < THRESHOLDS["pr_vs_data"]
    assert "embeddings collapse signs: participation ratio" in report.hints[1]
    # without data there is nothing to compare the embeddings with: not assessed, not "healthy"
    alone = vqpaper.diagnose(z, _nearest(z, cb), cb)
    assert alone.embeddings_collapse is None and "not assessed" in alone.hints[1]


def test_several_latents_per_point_and_torch_tensors_are_accepted(blobs):
    torch = pytest.importorskip("torch")
    X, y = blobs
    z = np.stack([X, X[::-1]], axis=1)[..., :1]             # [N, 2, 1]
    cb = np.linspace(-2, 2, 16)[:, None]
    idx = np.abs(z - cb[:, 0]).argmin(-1)                   # [N, 2]
    report = vqpaper.diagnose(torch.from_numpy(z), torch.from_numpy(idx), torch.from_numpy(cb), data=X, labels=y)
    assert report.metrics["latents"] == 2 * len(X)
    assert list(report.to_frame().columns) == ["metric", "value", "meaning"]


@pytest.mark.parametrize("change, words", [
    (dict(indices=np.zeros((5,), dtype=int)), ["indices has shape (5,)", "expected (400,)"]),
    (dict(indices=np.full((400,), 99)), ["indices holds 99", "0 … 39"]),
    (dict(indices=np.zeros((400,))), ["indices has dtype float64", "integers"]),
    (dict(codebook=np.zeros((40, 3))), ["codebook has shape (40, 3)", "[K, 2]"]),
    (dict(embeddings=np.zeros((400,))), ["embeddings has shape (400,)", "[N, D] or [N, L, D]"]),
    (dict(labels=np.zeros((7,), dtype=int)), ["labels has shape (7,)", "shape (400,)"]),
    (dict(data=None), ["reconstructions were given without data"]),
    (dict(embeddings=np.full((400, 2), np.nan)), ["embeddings contains NaN"]),
])
def test_bad_arrays_name_the_array_and_the_shape_expected(change, words):
    X, y = make_clusters(40, 2, seed=0)
    z, idx, cb, rec = healthy(X, y)
    arrays = dict(embeddings=z, indices=idx, codebook=cb, data=X, labels=y, reconstructions=rec)
    arrays.update(change)
    with pytest.raises(ConfigError) as err:
        vqpaper.diagnose(**arrays)
    for w in words:
        assert w in str(err.value)


def test_plot_has_a_panel_per_view_and_html_is_self_contained(blobs, tmp_path):
    X, y = blobs
    z, idx, cb, rec = collapsed(X, y)
    report = vqpaper.diagnose(z, idx, cb, data=X, labels=y, reconstructions=rec)
    fig = report.plot()
    assert len(fig.axes) == 3 and "hold 90%" in fig.axes[0].get_title()
    assert len(vqpaper.diagnose(z, idx, cb).plot().axes) == 2  # no labels: no per-cluster panel
    page = report.to_html(tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in page and "tokens collapse likely" in page
    assert 'src="http' not in page and 'href="http' not in page and "<script" not in page


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_cli_writes_the_report_and_prints_the_hints(blobs, tmp_path, capsys):
    X, y = blobs
    z, idx, cb, rec = collapsed(X, y)
    npz = _save(tmp_path / "run.npz", embeddings=z, indices=idx, codebook=cb, data=X, labels=y, reconstructions=rec)
    out = tmp_path / "report.html"
    assert main(["diagnose", str(npz), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tokens collapse likely" in printed and out.is_file()
    assert "data:image/png;base64," in out.read_text()


def test_cli_reads_a_cached_run_folder(blobs, tmp_path):
    X, y = blobs
    z, idx, cb, rec = healthy(X, y)
    entry = tmp_path / "0123abcd"
    entry.mkdir()
    _save(entry / "arrays.npz", Z=z, indices=idx, codebook=cb, X=X, y=y, X_hat=rec, Z_init=z)
    arrays = load_arrays(entry)
    assert sorted(arrays) == sorted(["embeddings", "indices", "codebook", "data", "labels", "reconstructions"])
    assert main(["diagnose", str(entry), "-o", str(tmp_path / "r.html")]) == 0


def test_cli_names_a_missing_array_and_its_shape_without_a_traceback(blobs, tmp_path):
    X, y = blobs
    z, idx, cb, _ = healthy(X, y)
    npz = _save(tmp_path / "bad.npz", embeddings=z, indices=idx)
    proc = subprocess.run([sys.executable, "-m", "vqpaper.cli", "diagnose", str(npz), "-o", str(tmp_path / "r.html")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no array 'codebook'" in proc.stderr and "codebook: [K, D]" in proc.stderr
    assert "holds ['embeddings', 'indices']" in proc.stderr
    assert not (tmp_path / "r.html").exists()
    proc = subprocess.run([sys.executable, "-m", "vqpaper.cli", "diagnose", str(tmp_path / "none.npz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
