"""vqpaper.diagnose and `vqpaper diagnose`: known answers on a collapsed and a healthy codebook, clear errors."""
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import vqpaper
from vqpaper import config, experiments as ex, train
from vqpaper.cli import main
from vqpaper.data import make_clusters
from vqpaper.diagnose import THRESHOLDS, load_arrays
from vqpaper.errors import ConfigError, DataFormatError, DataNotFoundError


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
    assert report.embeddings_collapse is False and report.metrics["pr_kept"] == pytest.approx(1.0)
    assert report.metrics["agreement_kept"] == pytest.approx(1.0)


def test_embeddings_squeezed_onto_one_direction_show_embeddings_collapse(blobs):
    X, y = blobs
    z = (X @ np.array([[1.0], [0.3]])) @ np.array([[1.0, 0.5]])  # rank 1: one effective dimension of two
    cb = z[::25]
    report = vqpaper.diagnose(z, _nearest(z, cb), cb, data=X, labels=y)
    assert report.embeddings_collapse and report.metrics["pr_kept"] < THRESHOLDS["pr_kept"]
    assert report.hints[1].startswith("embeddings collapse signs: effective dimension 1.00 of 2 numbers per point")
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
    (dict(labels=np.zeros((7,), dtype=int)), ["labels has shape (7,)", "expected (400,)"]),
    (dict(labels=np.zeros((400,))), ["labels has dtype float64", "integers >= 0"]),
    (dict(labels=np.full((400,), -1)), ["labels holds -1", "integers >= 0"]),
    (dict(data=None), ["reconstructions (shape (400, 2)) were given without data", "[N = 400, ...]"]),
    (dict(data=np.zeros((9, 2))), ["data has shape (9, 2)", "N = 400 rows"]),
    (dict(data=np.full((400, 2), np.inf)), ["data (shape (400, 2)) holds 800 NaN or infinite values", "finite"]),
    (dict(embeddings=np.full((400, 2), np.nan)), ["embeddings (shape (400, 2)) holds 800 NaN", "finite numbers"]),
    (dict(codebook=np.full((40, 2), np.nan)), ["codebook (shape (40, 2)) holds 80 NaN", "finite numbers"]),
    (dict(reconstructions=np.zeros((400, 3))), ["reconstructions has shape (400, 3)", "the shape of data, (400, 2)"]),
    (dict(max_points=0), ["max_points must be a positive integer, got 0"]),
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
    assert "it holds embeddings (2000, 2), indices (2000,)" in proc.stderr and "make one: numpy.savez(" in proc.stderr
    assert not (tmp_path / "r.html").exists()
    proc = subprocess.run([sys.executable, "-m", "vqpaper.cli", "diagnose", str(tmp_path / "none.npz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ what the command line is given

def _text_npz(path):
    path.write_text("epoch,loss\n1,0.5\n")
    return path


def _empty_npz(path):
    path.write_bytes(b"")
    return path


def _npy_npz(path):
    np.save(path.with_suffix(".npy"), np.zeros(3))
    path.with_suffix(".npy").rename(path)
    return path


def _zip_npz(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "no arrays here")
    return path


def _object_npz(path):
    np.savez(path, embeddings=np.array([{"z": 1}], dtype=object))
    return path


def _cut_npz(path):
    np.savez(path, embeddings=np.zeros((50, 2)), indices=np.zeros(50, dtype=int), codebook=np.zeros((4, 2)))
    path.write_bytes(path.read_bytes()[:60])
    return path


@pytest.mark.parametrize("make, words", [
    (_text_npz, ["is a text file, not an .npz (a zip archive of .npy arrays): it starts with 'epoch,loss'"]),
    (_empty_npz, ["is empty (0 bytes)"]),
    (_npy_npz, ["is a single .npy array, not an .npz of named arrays"]),
    (_zip_npz, ["is a zip archive but not an .npz: its member 'readme.txt'", "is not a numpy array (.npy)"]),
    (_object_npz, ["array 'embeddings'", "holds Python objects", "expected a numeric array"]),
    (_cut_npz, ["starts like a zip archive but numpy cannot open it as an .npz", "a file cut short?"]),
])
def test_a_file_that_is_not_an_npz_of_numbers_is_named_for_what_it_is(tmp_path, make, words):
    path = make(tmp_path / "run.npz")
    with pytest.raises(DataFormatError) as err:
        load_arrays(path)
    text = str(err.value)
    for w in words:
        assert w in text
    assert str(path) in text
    if make is not _object_npz:  # the file itself is wrong: say what was expected and how to make one
        assert "make one: numpy.savez('run.npz', embeddings=z, indices=idx, codebook=codebook" in text
    assert "allow_pickle" not in text and "This file contains pickled" not in text  # numpy's wording stays out


def test_a_folder_that_is_not_a_run_cache_says_so_and_what_a_run_cache_holds(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi")
    with pytest.raises(DataNotFoundError) as err:
        load_arrays(folder)
    text = str(err.value)
    assert f"arrays '{folder}' is a folder but not a run cache: it has no arrays.npz (it holds notes.txt)" in text
    assert "one run's folder of the sweep cache, holding result.json + arrays.npz" in text
    assert "vqpaper.sweeps stores each of its runs in _build/cache/<key>/" in text
    assert "no such file" not in text


def test_the_cache_itself_points_to_one_of_its_runs(tmp_path):
    run = tmp_path / "cache" / "0123abcd"
    run.mkdir(parents=True)
    (run / "result.json").write_text("{}")
    with pytest.raises(DataNotFoundError, match="is a folder of 1 cached run\\(s\\), not one run; give one run's "
                                                "folder, e.g. '.*0123abcd'"):
        load_arrays(tmp_path / "cache")


def test_cli_names_a_renamed_text_file_and_a_plain_folder_without_a_traceback(tmp_path):
    for path, words in [(_text_npz(tmp_path / "run.npz"), "is a text file, not an .npz"),
                        (tmp_path, "is a folder but not a run cache")]:
        proc = subprocess.run([sys.executable, "-m", "vqpaper.cli", "diagnose", str(path), "-o",
                               str(tmp_path / "r.html")], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert words in proc.stderr and "expected: an .npz with arrays embeddings" in proc.stderr
        assert "pickled" not in proc.stderr


# ------------------------------------------------------------------ embeddings collapse vs a healthy code's size

def test_a_linear_code_smaller_than_the_data_is_compared_with_the_data_at_its_size():
    """A 4-D code of 8-D data that keeps the data's top 4 principal directions (any rotation and
    scale) is what a healthy code of that size can be: it keeps all of the reference's spread."""
    X, y = make_clusters(200, 8, seed=0)
    centred = X - X.mean(0)
    top4 = np.linalg.svd(centred, full_matrices=False)[2][:4].T
    rotation = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))[0]
    z = 3.0 * centred @ top4 @ rotation
    cb = z[::20]
    report = vqpaper.diagnose(z, _nearest(z, cb), cb, data=X, labels=y)
    m = report.metrics
    assert m["code_dim"] == 4 and m["data_dim"] == 8
    assert m["pr_kept"] == pytest.approx(1.0) and m["agreement_kept"] == pytest.approx(1.0)
    assert report.embeddings_collapse is False
    assert "of the data's top 4 principal components (a healthy code of 4 numbers)" in report.hints[1]
    # squeezing the code onto its first direction loses that spread: flagged
    flat = z @ np.diag([1.0, 0.02, 0.02, 0.02])
    squeezed = vqpaper.diagnose(flat, _nearest(flat, flat[::20]), flat[::20], data=X)
    assert squeezed.embeddings_collapse and squeezed.metrics["pr_kept"] < THRESHOLDS["pr_kept"]


def test_merged_classes_are_flagged_by_label_agreement_even_with_the_spread_kept(blobs):
    X, y = blobs
    z = X.copy()
    z[y == 1] = z[y == 0][: (y == 1).sum()] + 0.01  # class 1 lands on class 0: the paper's "clustering together"
    cb = z[::10]
    report = vqpaper.diagnose(z, _nearest(z, cb), cb, data=X, labels=y)
    m = report.metrics
    assert m["pr_kept"] > THRESHOLDS["pr_kept"] and m["agreement_kept"] < THRESHOLDS["agreement_kept"]
    assert report.embeddings_collapse
    assert "share its label" in report.hints[1] and "classes merged" in report.hints[1]
    assert "spread over fewer directions" not in report.hints[1]


# The book's own runs, trained here at the budgets the thresholds were measured at
# (benchmarks/diagnose_thresholds.py; a few seconds each on one thread).
_spec = importlib.util.spec_from_file_location(
    "diagnose_thresholds", Path(__file__).resolve().parents[1] / "benchmarks" / "diagnose_thresholds.py")
thresholds_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(thresholds_bench)


def test_a_wide_encoders_4d_code_of_8d_data_is_not_flagged():
    c04 = config.notebook_config("04_embeddings_collapse", "ci")
    cfg = config.SyntheticRun(dim=8, token_dim=4, encoder_hidden=32, epochs=c04.epochs,
                              n_per_cluster=c04.n_per_cluster, data_seed=c04.data_seed, seed=0)
    result = thresholds_bench.run_code(cfg)
    assert result.arrays["Z"].shape == (10 * c04.n_per_cluster, 1, 4)  # one 4-D code per 8-D point
    report = thresholds_bench.report(result)
    m = report.metrics
    assert report.embeddings_collapse is False, report.hints[1]
    assert m["pr_kept"] > THRESHOLDS["pr_kept"] + 0.1  # measured 0.691


def test_the_narrow_encoder_of_notebook_06_is_flagged():
    narrow = ex.run_list(config.notebook_config("06_remedies", "ci"))["narrow-encoder runs"]
    cfg = next(c for c in narrow if c.seed == 0 and c.quantizer == "ema" and c.method == "scratch")  # 2-D, hidden 4: its embeddings fall onto one line
    report = thresholds_bench.report(train.run_synthetic(cfg))
    m = report.metrics
    assert report.embeddings_collapse is True
    assert m["pr_kept"] < THRESHOLDS["pr_kept"] and m["agreement_kept"] < THRESHOLDS["agreement_kept"]
    assert "spread over fewer directions" in report.hints[1] and "classes merged" in report.hints[1]
