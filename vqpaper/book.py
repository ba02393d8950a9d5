"""Glue helpers: numbers, text, tables and figures from a notebook into the book.

Numbers quoted in the prose come from the executed notebooks through myst-nb's
``glue`` (SPEC §1), never typed by hand. In a notebook::

    from vqpaper import book
    book.glue_number("tc-synth-2d-perplexity-scratch", 43.2, ".1f")
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

import re
from typing import Any, Mapping

GLUE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _glue(name: str, value: Any) -> None:
    if not GLUE_KEY.match(name):
        # ":" would be read as a format spec and "::" as a document path by the roles.
        raise ValueError(f"glue key {name!r}: use letters, digits, '-', '_' and '.' only")
    from myst_nb import glue

    glue(name, value, display=False)


def _plain(value: Any) -> Any:
    """numpy/torch scalars -> Python numbers (their repr would not parse in the book)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    return value


def format_value(value: Any, fmt: str | None = None) -> str:
    """``fmt`` is a format spec (``".3f"``, ``","``) or a template (``"{:.1%}"``)."""
    value = _plain(value)
    if fmt is None:
        return str(value)
    return fmt.format(value) if "{" in fmt else format(value, fmt)


def glue_number(name: str, value: Any, fmt: str | None = None) -> Any:
    """Glue a number; with ``fmt`` it is stored already formatted (``"0.981"``).

    Without ``fmt`` the page chooses: ``{glue:text}`name:.2f```. Returns the value.
    """
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"glue_number({name!r}): expected a number, got {type(value).__name__}")
    _glue(name, format_value(value, fmt) if fmt is not None else value)
    return value


def glue_text(name: str, text: Any) -> str:
    """Glue a string (shown without quotes by ``{glue:text}``)."""
    text = str(text)
    _glue(name, text)
    return text


def glue_numbers(prefix: str, values: Mapping[str, Any], fmt: str | None = None) -> dict[str, Any]:
    """Glue every number of a (nested) dict as ``prefix.key.subkey``; returns the keys glued."""
    glued = {}
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            glued.update(glue_numbers(name, value, fmt))
            continue
        value = _plain(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            glued[name] = glue_number(name, value, fmt)
        elif isinstance(value, str):
            glued[name] = glue_text(name, value)
    return glued


def glue_table(name: str, table: Any) -> Any:
    """Glue a pandas DataFrame (or anything with an HTML repr) for ``{glue}`` directives."""
    _glue(name, table)
    return table


def figure_png(fig: Any, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes (tight bounding box, like the inline backend)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, bbox_inches="tight",
                facecolor=fig.get_facecolor())
    return buf.getvalue()


def glue_figure(figure_id: str, fig: Any) -> Any:
    """Glue a matplotlib figure under its stable id, as a PNG, and close it.

    The PNG is rendered here rather than left to IPython's formatters, which only
    produce an image under the inline backend (with ``MPLBACKEND=Agg`` a glued
    figure would be the text ``<Figure size …>``). Closing matters too: an open
    pyplot figure would also be shown at the end of the cell, so the page would
    show it twice (once unnumbered).
    """
    from IPython.display import Image

    _glue(figure_id, Image(data=figure_png(fig), format="png"))
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    return fig


def figure(fig: Any, figure_id: str) -> Any:
    """Save ``fig`` as ``FIGURES/<figure_id>.png`` and glue it under the same id.

    The numbered figure itself is a markdown cell (``{glue:figure}`` with
    ``:name: <figure_id>``), so its caption is prose in the notebook and may paste
    glued numbers.
    """
    from . import plots  # lazily: only notebooks need matplotlib's styles

    plots.save_figure(fig, figure_id)
    return glue_figure(figure_id, fig)


# --------------------------------------------------------------- Sphinx extension
# ``_config.yml`` loads this module as a local Sphinx extension so that
# ``book/provenance.md`` can show a table of every recorded figure at build time
# (``{vqpaper-provenance}``), read from ``_build/results/*.json``.

def _provenance_directive():
    from docutils import nodes
    from docutils.parsers.rst import Directive, directives

    from . import paths
    from .results import provenance_rows

    class ProvenanceDirective(Directive):
        """A table of the recorded figures: ``{vqpaper-provenance}`` (``:notebook: NN_name``)."""

        has_content = False
        option_spec = {"notebook": directives.unchanged}

        def run(self):
            env = self.state.document.settings.env
            # Rebuild this page whenever a result is added or rewritten.
            if paths.RESULTS.is_dir():
                env.note_dependency(str(paths.RESULTS))
                for path in paths.RESULTS.glob("*.json"):
                    env.note_dependency(str(path))
            rows = provenance_rows(self.options.get("notebook"))
            if not rows:
                para = nodes.paragraph(text=f"No recorded results in {paths.RESULTS}: "
                                            "run the notebooks first (vqpaper book).")
                return [para]
            out = []
            # The environment is usually the same for every figure: say it once.
            environments = sorted({r["environment"] for r in rows})
            if len(environments) == 1:
                out.append(nodes.paragraph(text=f"Environment of every figure: {environments[0]}."))
            # Three columns, several lines each: fits the page without scrolling.
            table = nodes.table(classes=["vqpaper-provenance"])
            group = nodes.tgroup(cols=3)
            table += group
            for width in (3, 4, 3):
                group += nodes.colspec(colwidth=width)
            head, body = nodes.thead(), nodes.tbody()
            group += head
            group += body

            def entry(*lines):
                cell, block = nodes.entry(), nodes.line_block()
                for line in lines:
                    block += nodes.line("", "", *(line if isinstance(line, list)
                                                  else [nodes.Text(str(line))]))
                cell += block
                return cell

            row = nodes.row()
            for title in ("figure", "parameters", "run"):
                row += entry(title)
            head += row
            for r in rows:
                row = nodes.row()
                row += entry([nodes.literal(r["figure"], r["figure"])],
                             f"{r['notebook']}, profile {r['profile']}")
                row += entry(r["parameters"] or "(none)")
                run_lines = [f"commit {r['commit']}", f"{r['wall time (s)']} s",
                             f"{r['created (UTC)'].replace('T', ' ')} UTC"]
                if len(environments) > 1:
                    run_lines.append(r["environment"])
                row += entry(*run_lines)
                body += row
            return out + [table]

    return ProvenanceDirective


def _clean_page_context(app, pagename, templatename, context, doctree):
    """Two console errors of the stock theme stack, fixed per page (tests/test_browser.py).

    Sphinx 7.4 lists an inline script registered after the builder started twice (filename
    None, then ''), so sphinx-thebe's ``const THEBE_JS_URL`` is declared twice (SyntaxError);
    and pydata-sphinx-theme reads ``default_mode`` from the context, where nothing sets it
    ("Got invalid theme mode" on a first visit).
    """
    context.setdefault("default_mode", "auto")
    scripts = context.get("script_files")
    if isinstance(scripts, list):
        seen, unique = set(), []
        for js in scripts:
            key = (getattr(js, "filename", js) or "", getattr(js, "priority", 0),
                   tuple(sorted(getattr(js, "attributes", {}).items())))
            if key not in seen:
                seen.add(key)
                unique.append(js)
        scripts[:] = unique


def setup(app):  # pragma: no cover - exercised by the book build
    """Sphinx entry point: registers ``{vqpaper-provenance}``."""
    app.add_directive("vqpaper-provenance", _provenance_directive())
    app.connect("html-page-context", _clean_page_context)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
