"""The numbers behind each figure (issue 23): book.figure writes a tidy CSV of what is plotted, and
`vqpaper plot FIGURE-ID` draws the same figure again from it, without training."""
import io
import json
from contextlib import redirect_stderr, redirect_stdout

import matplotlib

matplotlib.use("Agg")  # tests never open windows, whatever the environment says

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vqpaper import book, cli, paths, plots  # noqa: E402
from vqpaper.errors import ConfigError  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _pixels(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba(), dtype=float)[..., :3]


def _rows(seeds=3):
    return [{"dim": d, "method": m, "seed": s, "alloc_entropy": 0.9 - 0.2 * (m == "scratch") + 0.01 * s,
             "coverage": 0.5 + 0.1 * s, "mse": 1 / (d + s + 1)}
            for d in (2, 3, 8) for m in ("scratch", "pretrained") for s in range(seeds)]


def _clusters(dim=2, n=90, seed=0):
    r = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    return r.normal(size=(3, dim))[y] * 4 + r.normal(size=(n, dim)) * 0.3, y


def _figures():
    """One figure of every kind the book draws, made from small inputs."""
    r = np.random.default_rng(0)
    emb = np.concatenate([r.normal(-2, 0.3, 400), r.normal(2, 0.3, 400)])
    used = np.zeros(16, dtype=bool)
    used[:10] = True
    X, y = _clusters(3)
    images = r.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    sweep = [{"method": m, "codebook_size": k, "seed": s, "mse": 1 / k + 0.01 * s, "perplexity": k / (1 + s)}
             for m in ("scratch", "pretrained") for k in (16, 64, 256) for s in range(2)]
    grid = [{"remedy": rem, "set": "2-D", "metric": met, "higher_is_better": met != "mse", "relative": rel,
             "low": rel - 0.1, "high": rel + 0.1 if rem != "one" else float("inf"), "pairs": 3, "decided": rel > 0.2}
            for rem, rel in (("restart", 0.4), ("one", -0.3)) for met in ("perplexity", "mse")]
    return {
        "histograms": plots.plot_histograms([{"title": "scratch", "embeddings": emb, "tokens": r.normal(size=(16, 1)),
                                              "used_tokens": used},
                                             {"title": "pretrained", "embeddings": emb, "tokens": r.normal(size=(8, 2))}],
                                            ncols=2, suptitle="tokens"),
        "reconstructions": plots.plot_reconstructions([{"title": "labels", "X": X, "X_hat": X * 0.5, "y": y},
                                                       {"title": "none", "X": X[:, :2], "X_hat": X[:, :2] + 0.1}]),
        "encoder_outputs": plots.plot_encoder_outputs([{"title": "trained", "embeddings": emb}]),
        "sweep": plots.plot_sweep(sweep, x="codebook_size", ys=["mse", "perplexity"], hue="method", ylog="perplexity"),
        "metric_bars": plots.plot_metric_bars(_rows(), ["alloc_entropy", "coverage"], group="dim", hue="method"),
        "token_allocation": plots.plot_token_allocation([{"title": "t", "indices": np.arange(30) % 6,
                                                          "labels": np.arange(30) % 3}]),
        "image_grid": plots.plot_image_grid(images, images[:, ::-1], n=3),
        "remedy_heatmap": plots.plot_remedy_heatmap(grid),
        "diagnosis": plots.plot_diagnosis(r.normal(size=(200, 2)), r.normal(size=(16, 2)), r.integers(0, 12, 200),
                                          labels=r.integers(0, 4, 200), title="report"),
    }


def test_every_kind_of_figure_is_drawn_again_from_its_csv(tmp_path):
    """The CSV has one row per plotted thing, named columns, and re-plots to the same picture."""
    figures = _figures()
    assert sorted(figures) == sorted(plots.DRAWERS), "a kind of figure without a round-trip test"
    for kind, fig in figures.items():
        figure_id = f"fig-{kind.replace('_', '-')}"
        csv_path, spec_path = plots.save_data(fig, figure_id, directory=tmp_path)
        frame = pd.read_csv(csv_path)
        assert len(frame) == len(plots.plot_data(fig).frame) > 0 and not any(c.startswith("Unnamed") for c in frame)
        assert json.loads(spec_path.read_text())["kind"] == kind
        again = plots.replot(figure_id, tmp_path)
        assert [ax.get_title() for ax in again.axes] == [ax.get_title() for ax in fig.axes], kind
        before, after = _pixels(fig), _pixels(again)
        assert before.shape == after.shape, kind
        # the CSV keeps 6 significant digits: the same picture up to a few anti-aliased pixels
        assert np.mean(np.abs(before - after) > 8) < 0.002, kind
    assert plots.known_figures(tmp_path) == sorted(f"fig-{k.replace('_', '-')}" for k in figures)


def test_tidy_rows_are_what_is_plotted():
    bars = plots.plot_data(plots.plot_metric_bars(_rows(), "coverage", group="dim", hue="method")).frame
    assert len(bars[bars.mark == "bar"]) == 6 and len(bars[bars.mark == "seed"]) == 18
    first = bars[(bars.mark == "bar") & (bars.group == 2) & (bars.hue == "scratch")].iloc[0]
    assert first["value"] == pytest.approx(0.6) and first["sd"] == pytest.approx(0.1) and first["n"] == 3
    scratch = [r for r in _rows(seeds=1) if r["method"] == "scratch"]
    one_seed = plots.plot_data(plots.plot_metric_bars(scratch, "coverage", group="dim")).frame
    assert one_seed[one_seed.mark == "bar"]["sd"].isna().all(), "one seed: the spread is unknown, not 0"
    hist = plots.plot_data(plots.plot_histograms([{"title": "t", "embeddings": np.arange(100.0),
                                                   "tokens": np.array([[1.0], [50.0], [99.0]])}], bins=10)).frame
    assert len(hist[hist.series == "embeddings"]) == 10 and hist[hist.series == "tokens"]["value"].sum() == 3
    assert sorted(hist.loc[hist.series == "token positions", "position"]) == [1.0, 50.0, 99.0]


def test_book_figure_writes_png_csv_and_plot_spec_and_displays_nothing(tmp_path, monkeypatch):
    glued = {}
    monkeypatch.setattr(paths, "FIGURES", tmp_path / "figures")
    monkeypatch.setattr(book, "_glue", lambda name, value: glued.__setitem__(name, value))
    fig = plots.plot_metric_bars(_rows(), "mse", group="dim", hue="method")
    assert book.figure(fig, "fig-bars") is None, "a cell ending with book.figure would show the figure twice"
    assert plt.fignum_exists(fig.number) is False, "left open, inline matplotlib shows it again"
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["fig-bars.csv", "fig-bars.plot.json",
                                                                      "fig-bars.png"]
    assert list(glued) == ["fig-bars"]
    plain, ax = plt.subplots()
    ax.plot([0, 1])
    with pytest.raises(ConfigError, match="not drawn by a vqpaper.plots function"):
        book.figure(plain, "fig-plain")
    assert not (tmp_path / "figures" / "fig-plain.png").exists()


def test_book_figure_glues_the_png_it_saved_when_the_dpi_agrees_and_draws_again_when_not(tmp_path, monkeypatch):
    """The page shows what ``figure_png`` draws: the saved file for a figure at the file's dpi
    (drawn once), a second drawing for one at another dpi (the heat map draws at matplotlib's)."""
    glued = {}
    monkeypatch.setattr(paths, "FIGURES", tmp_path / "figures")
    monkeypatch.setattr(book, "_glue", lambda name, value: glued.__setitem__(name, value.data))
    kinds = _figures()
    styled, other = kinds["metric_bars"], kinds["remedy_heatmap"]
    assert styled.dpi == plots.DPI and other.dpi != plots.DPI
    expected = {"fig-styled": book.figure_png(styled), "fig-other": book.figure_png(other)}
    drawn = []
    savefig = type(styled).savefig
    monkeypatch.setattr(type(styled), "savefig", lambda fig, *a, **k: (drawn.append(fig), savefig(fig, *a, **k))[1])
    book.figure(styled, "fig-styled")
    assert drawn == [styled], "a figure in the book's style is drawn once"
    book.figure(other, "fig-other")
    assert drawn == [styled, other, other]
    assert glued["fig-styled"] == expected["fig-styled"] == (tmp_path / "figures" / "fig-styled.png").read_bytes()
    assert glued["fig-other"] == expected["fig-other"] != (tmp_path / "figures" / "fig-other.png").read_bytes()


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_vqpaper_plot_redraws_a_figure_and_names_the_known_ones(tmp_path):
    data = tmp_path / "figures"
    fig = plots.plot_sweep([{"k": k, "mse": 1 / k, "seed": 0} for k in (4, 16, 64)], x="k", ys="mse")
    plots.save_data(fig, "fig-sweep", directory=data)
    code, out, _ = _cli("plot", "fig-sweep", "-o", str(tmp_path / "again.png"), "--data", str(data))
    assert code == 0 and "again.png" in out
    assert (tmp_path / "again.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = _cli("plot", "fig-nope", "--data", str(data))
    assert code == 2 and "unknown figure id 'fig-nope'" in err and "known figures: fig-sweep" in err
    code, _, err = _cli("plot", "fig-sweep", "--data", str(tmp_path / "empty"))
    assert code == 2 and "known figures: none" in err and "vqpaper book" in err
    code, _, err = _cli("plot", "fig-sweep", "--data", str(data), "-o", str(tmp_path / "no" / "x.png"))
    assert code == 2 and "does not exist" in err
