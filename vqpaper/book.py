"""Glue helpers: numbers, text, tables and figures from a notebook into the book.

Numbers quoted in the prose come from the executed notebooks through myst-nb's
``glue`` (SPEC §1), never typed by hand. In a notebook::

    from vqpaper import book
    book.glue_text("tc-synth-2d-perplexity-scratch", f"{43.2:.1f}")
    book.figure(fig, "fig-tokens-collapse-synthetic")

and in a markdown cell of the same notebook::

    Scratch reaches a perplexity of {glue:text}`tc-synth-2d-perplexity-scratch`.

    ```{glue:figure} fig-tokens-collapse-synthetic
    :name: fig-tokens-collapse-synthetic

    Caption, referenced elsewhere as {numref}`fig-tokens-collapse-synthetic`.
    ```

From another page (e.g. ``book/results.md``) the notebook's path, *with its
extension*, goes before ``::``; the role then needs a format spec (``:s`` for text),
because myst-nb splits the last ``:`` off as the format::

    {glue:text}`notebooks/02_tokens_collapse_synthetic.ipynb::tc-synth-2d-perplexity-scratch:s`
"""
from __future__ import annotations

import io
import re
from typing import Any, Mapping

GLUE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _glue(name: str, value: Any) -> None:
    if not GLUE_KEY.match(name):
        # ":" would be read as a format spec and "::" as a document path by the roles.
        raise ValueError(f"glue key {name!r}: use letters, digits, '-', '_' and '.' only")
    from myst_nb import glue  # heavy (IPython): only a notebook's kernel glues

    glue(name, value, display=False)


def glue_text(name: str, text: Any) -> str:
    """Glue a string (shown without quotes by ``{glue:text}``)."""
    text = str(text)
    _glue(name, text)
    return text


def glue_means(prefix: str, summaries: Mapping[str, Mapping[str, Any]], formats: Mapping[str, str]) -> None:
    """Glue one table of means: ``<prefix>.<group>.<metric>`` for every group and every metric of ``formats``.

    ``summaries``: ``{group: {metric: {"mean": ...}}}`` (``experiments.summary``, whose group labels
    ``"256/scratch"`` become key parts ``256.scratch``); ``formats``: ``{metric: format spec}``.
    """
    for group, summary in summaries.items():
        for metric, fmt in formats.items():
            glue_text(f"{prefix}.{group.replace('/', '.')}.{metric}", format(summary[metric]["mean"], fmt))


def glue_table(name: str, table: Any) -> Any:
    """Glue a pandas DataFrame for ``{glue}`` directives, as a plain HTML table; returns ``table``.

    Every cell in full (pandas' notebook repr cuts long text with "..."), without the row
    index; a page quoting it gets exactly the columns the notebook computed.
    """
    import pandas as pd  # heavy: only notebooks glue tables
    from IPython.display import HTML  # heavy, as above

    if isinstance(table, pd.DataFrame):
        with pd.option_context("display.max_colwidth", None):
            _glue(name, HTML(table.to_html(index=False, classes="vqpaper-table", border=0)))
    else:
        _glue(name, table)
    return table


def figure_png(fig: Any, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes (tight bounding box, like the inline backend)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, bbox_inches="tight",
                facecolor=fig.get_facecolor())
    return buf.getvalue()


def glue_figure(figure_id: str, fig: Any, png: bytes | None = None) -> None:
    """Glue a matplotlib figure under its stable id, as a PNG (``png``: already drawn by
    :func:`figure_png`), and close it.

    The PNG is rendered here rather than left to IPython's formatters, which only
    produce an image under the inline backend (with ``MPLBACKEND=Agg`` a glued
    figure would be the text ``<Figure size …>``). Closing matters too: an open
    pyplot figure would also be shown at the end of the cell, so the page would
    show it twice (once unnumbered). Returns None for the same reason: a cell
    ending with this call must display nothing.
    """
    from IPython.display import Image  # heavy: only notebooks glue figures

    _glue(figure_id, Image(data=png or figure_png(fig), format="png"))
    import matplotlib.pyplot as plt  # heavy: only called with a figure, which matplotlib made

    plt.close(fig)


def figure(fig: Any, figure_id: str) -> None:
    """Save ``fig`` and the numbers it plots, and glue it under its id; the page shows it once.

    Writes ``FIGURES/<figure_id>.png``, ``FIGURES/<figure_id>.csv`` (the tidy table the
    ``vqpaper.plots`` function drew it from: one row per point, bar, bin or pixel) and
    ``FIGURES/<figure_id>.plot.json`` (how to draw it again: ``vqpaper plot <figure_id>``); the
    book's caption links the CSV and the figure's results JSON (``vqpaper.sphinxext``). A figure
    not drawn by ``vqpaper.plots`` is refused: its numbers could not be published.

    Returns None, so that a cell ending with this call shows nothing: the figure appears once,
    numbered, where a markdown cell places it (``{glue:figure}`` with ``:name: <figure_id>``),
    so its caption is prose in the notebook and may paste glued numbers.
    """
    from . import plots  # heavy (matplotlib, seaborn): claims.publish imports this module without figures

    plots.save_data(fig, figure_id)  # first: it refuses a figure without data before anything is written
    path = plots.save_figure(fig, figure_id)
    # The saved file is the PNG the page shows when the figure's dpi is the file's (every figure in
    # the book's style): drawn once, not twice (drawing took a sixth to a third of a notebook's time
    # beside training).
    glue_figure(figure_id, fig, path.read_bytes() if fig.dpi == plots.DPI else None)
