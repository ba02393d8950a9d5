"""Figure functions run headless and save_figure writes PNGs (vqpaper/plots.py)."""
import matplotlib

matplotlib.use("Agg")  # tests never open windows, whatever the environment says

import math  # noqa: E402

import matplotlib.collections  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vqpaper import plots  # noqa: E402
from vqpaper.errors import ConfigError  # noqa: E402

torch.set_num_threads(1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def saved_png(fig, tmp_path, figure_id="fig-test"):
    assert isinstance(fig, Figure)
    path = plots.save_figure(fig, figure_id, directory=tmp_path / "figures")
    assert path == tmp_path / "figures" / f"{figure_id}.png"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    return path


def clusters(dim=2, n=60, seed=0):
    r = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    X = r.normal(size=(3, dim))[y] * 4 + r.normal(size=(n, dim)) * 0.3
    return X, y


def test_save_figure_default_directory_and_bad_ids(tmp_path, monkeypatch):
    from vqpaper import paths

    monkeypatch.setattr(paths, "FIGURES", tmp_path / "default")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = plots.save_figure(fig, "fig-line-2")
    assert path == tmp_path / "default" / "fig-line-2.png" and path.stat().st_size > 0
    for bad in ("line", "fig_line", "fig-Line", "fig-a/b", "fig-", "", None, "fig-a.png"):
        with pytest.raises(ConfigError):
            plots.save_figure(fig, bad, directory=tmp_path)
    with pytest.raises(ConfigError):
        plots.save_figure("not a figure", "fig-x", directory=tmp_path)


def test_plot_histograms(tmp_path):
    r = np.random.default_rng(0)
    emb = np.concatenate([r.normal(-2, 0.3, 500), r.normal(2, 0.3, 500)])
    tokens = r.normal(0, 0.5, size=(16, 1))
    used = np.zeros(16, dtype=bool)
    used[:10] = True
    fig = plots.plot_histograms([
        {"title": "scratch", "embeddings": emb, "tokens": tokens, "used_tokens": used},
        {"title": "pretrained", "embeddings": torch.from_numpy(emb), "tokens": tokens, "used_tokens": [0, 3]},
        {"title": "token dim 2", "embeddings": emb.reshape(-1, 2), "tokens": r.normal(size=(8, 2))},
    ], suptitle="tokens vs embeddings")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 6  # each panel has a twin axis
    assert "10/16 tokens used" in fig.axes[0].get_title()
    saved_png(fig, tmp_path)
    with pytest.raises(ConfigError):
        plots.plot_histograms([{"title": "x", "embeddings": emb}])
    with pytest.raises(ConfigError):
        plots.plot_histograms([{"title": "x", "embeddings": emb, "tokens": tokens, "used_tokens": used[:3]}])


@pytest.mark.parametrize("dim", [2, 3, 8])
def test_plot_reconstructions(tmp_path, dim):
    X, y = clusters(dim)
    fig = plots.plot_reconstructions([
        {"title": "scratch", "X": X, "X_hat": X * 0.5, "y": y},
        {"title": "pretrained", "X": torch.from_numpy(X), "X_hat": X + 0.01},
    ])
    ax = fig.axes[0]
    assert ax.get_xlabel() == ("$x_1$" if dim == 2 else "PC 1 (data)")
    saved_png(fig, tmp_path)
    with pytest.raises(ConfigError):
        plots.plot_reconstructions([{"title": "bad", "X": X, "X_hat": X[:-1]}])


def test_plot_encoder_outputs_marks_peaks_and_range(tmp_path):
    r = np.random.default_rng(0)
    trained = np.concatenate([r.normal(m, 0.3, 400) for m in (-4, 0, 4)])
    untrained = r.normal(0.05, 0.05, 1200)
    fig = plots.plot_encoder_outputs([
        {"title": "untrained", "embeddings": untrained},
        {"title": "trained", "embeddings": trained.reshape(-1, 2)},
    ])
    assert "3 peaks" in fig.axes[1].get_title()
    assert "1 peaks" in fig.axes[0].get_title()
    assert f"[{trained.min():.2f}, {trained.max():.2f}]" in fig.axes[1].get_title()
    saved_png(fig, tmp_path)


def sweep_rows():
    rows = []
    for method in ("scratch", "pretrained"):
        for K in (16, 64, 256, 1024):
            for seed in range(3):
                rows.append({"method": method, "codebook_size": K, "seed": seed,
                             "mse": 1 / K + 0.01 * seed, "perplexity": K / (2 if method == "scratch" else 1)})
    return rows


def test_plot_sweep(tmp_path):
    fig = plots.plot_sweep(sweep_rows(), x="codebook_size", ys=["mse", "perplexity"], hue="method",
                           ylog=["perplexity"])
    assert len(fig.axes) == 2
    assert fig.axes[0].get_xscale() == "log" and fig.axes[1].get_yscale() == "log"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["scratch (n=3)", "pretrained (n=3)"]
    # each point is the mean over seeds, with the std (ddof 1) as error bar
    line = fig.axes[0].lines[0]
    assert np.allclose(line.get_ydata(), [1 / K + 0.01 for K in (16, 64, 256, 1024)])
    saved_png(fig, tmp_path)
    fig = plots.plot_sweep(sweep_rows(), x="codebook_size", ys="mse", xscale="linear")
    assert fig.axes[0].get_xscale() == "linear"
    with pytest.raises(ConfigError):
        plots.plot_sweep(sweep_rows(), x="codebook_size", ys=["missing"], hue="method")
    with pytest.raises(ConfigError):
        plots.plot_sweep([], x="codebook_size", ys=["mse"])


def test_plot_metric_bars(tmp_path):
    rows = [{"dim": d, "method": m, "seed": s, "alloc_entropy": 0.9 - 0.1 * (m == "scratch") + 0.01 * s,
             "coverage": 0.5}
            for d in (2, 3, 8) for m in ("scratch", "pretrained") for s in range(3)]
    fig = plots.plot_metric_bars(rows, ["alloc_entropy", "coverage"], group="dim", hue="method")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "3", "8"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["scratch", "pretrained"]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights[0] == pytest.approx(0.81) and heights[-1] == pytest.approx(0.91)
    saved_png(fig, tmp_path)
    saved_png(plots.plot_metric_bars(rows, "coverage", group="method"), tmp_path, "fig-bars-one")


def test_plot_token_allocation(tmp_path):
    labels = np.repeat(np.arange(4), 30)
    indices = labels * 3 + np.tile(np.arange(3), 40)
    fig = plots.plot_token_allocation([{"title": "even", "indices": indices, "labels": labels}])
    assert "alloc. entropy 1.00" in fig.axes[0].get_title()
    saved_png(fig, tmp_path)


@pytest.mark.parametrize("layout", ["uint8_nhwc", "float_nchw", "grey"])
def test_plot_image_grid(tmp_path, layout):
    r = np.random.default_rng(0)
    imgs = r.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    if layout == "uint8_nhwc":
        orig, recon = imgs, imgs[:, ::-1]
    elif layout == "float_nchw":  # vqpaper.data.cifar_to_tensor's range, model output may overshoot
        orig = torch.from_numpy(imgs.transpose(0, 3, 1, 2).astype(np.float32) / 255 - 0.5)
        recon = orig * 1.2
    else:
        orig, recon = imgs[..., 0], imgs[..., 1]
    fig = plots.plot_image_grid(orig, recon, n=6)
    assert len(fig.axes) == 12
    saved_png(fig, tmp_path)
    with pytest.raises(ConfigError, match="batch"):
        plots.plot_image_grid(imgs[0], imgs[0])
    with pytest.raises(ConfigError, match="must match"):
        plots.plot_image_grid(imgs, imgs[:, :16])


def test_plot_functions_reject_empty_panels():
    for func in (plots.plot_histograms, plots.plot_reconstructions, plots.plot_encoder_outputs):
        with pytest.raises(ConfigError):
            func([])


def test_text_is_readable():
    X, y = clusters()
    fig = plots.plot_reconstructions([{"title": "t", "X": X, "X_hat": X, "y": y}])
    fig.canvas.draw()
    ax = fig.axes[0]
    sizes = [ax.title.get_fontsize(), ax.xaxis.label.get_fontsize()]
    sizes += [t.get_fontsize() for t in ax.get_xticklabels()]
    sizes += [t.get_fontsize() for t in fig.legends[0].get_texts()]
    assert min(sizes) >= 9


def _error_bar_lengths(ax):
    """Lengths of every error bar drawn on ``ax`` (NaN: none drawn)."""
    out = []
    for coll in ax.collections:
        if isinstance(coll, matplotlib.collections.LineCollection):
            out += [float(abs(seg[1][1] - seg[0][1])) if len(seg) == 2 else math.nan for seg in coll.get_segments()]
    return out


def test_one_seed_draws_no_error_bar_never_a_zero_one():
    """A spread from one value is unknown: no error bar, never a bar of length 0 (± 0)."""
    rows = [{"dim": 2, "method": "scratch", "coverage": 0.5, "seed": 0},
            {"dim": 8, "method": "scratch", "coverage": 0.4, "seed": 0},
            {"dim": 8, "method": "scratch", "coverage": 0.6, "seed": 1}]
    ax = plots.plot_metric_bars(rows, ["coverage"], group="dim").axes[0]
    lengths = _error_bar_lengths(ax)
    assert len(lengths) == 2 and math.isnan(lengths[0]) and lengths[1] > 0
    sweep = [{"codebook_size": k, "method": "scratch", "mse": m, "seed": s}
             for k, m, s in ((16, 0.1, 0), (256, 0.05, 0), (256, 0.07, 1))]
    ax = plots.plot_sweep(sweep, x="codebook_size", ys=["mse"], hue="method").axes[0]
    lengths = _error_bar_lengths(ax)
    assert 0.0 not in lengths and any(math.isnan(v) for v in lengths) and any(v > 0 for v in lengths)
