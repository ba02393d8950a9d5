"""The book's Sphinx extension: ``{vqpaper-provenance}``, ``{vqpaper-effects}``, launch buttons that
point somewhere, and two fixes of the stock theme.

``_config.yml`` loads this module as a local Sphinx extension so that ``book/provenance.md``
can show a table of every recorded figure at build time, read from ``_build/results/*.json``,
and ``book/results.md`` the smallest effects of interest of ``vqpaper.claims.EFFECTS`` (the
code's table, never a copy).
Kept apart from ``vqpaper.book`` (what notebooks call): nothing here runs in a notebook.
"""
from __future__ import annotations

from . import paths, publish
from .results import provenance_rows


def _provenance_directive():
    from docutils import nodes  # only a Sphinx build has docutils loaded: the class is made when Sphinx asks
    from docutils.parsers.rst import Directive, directives

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


def _effects_directive():
    from docutils import nodes
    from docutils.parsers.rst import Directive

    from .claims import effect_rows

    class EffectsDirective(Directive):
        """``{vqpaper-effects}``: metric, scale, smallest effect of interest and its reason."""

        has_content = False

        def run(self):
            rows = effect_rows()
            columns = list(rows[0])
            table = nodes.table(classes=["vqpaper-effects"])
            group = nodes.tgroup(cols=len(columns))
            table += group
            for width in (3, 2, 2, 8):
                group += nodes.colspec(colwidth=width)
            head, body = nodes.thead(), nodes.tbody()
            group += head
            group += body
            for cells, part in [(columns, head)] + [([r[c] for c in columns], body) for r in rows]:
                row = nodes.row()
                for i, text in enumerate(cells):
                    entry = nodes.entry()
                    para = nodes.paragraph()
                    para += nodes.literal(text, text) if part is body and i == 0 else nodes.Text(str(text))
                    entry += para
                    row += entry
                part += row
            return [table]

    return EffectsDirective


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


def _launch_repository(app, config):
    """Launch buttons with a repository, or none: for a book built by ``jupyter-book`` itself from
    the committed ``_config.yml`` (its URL is empty), as ``vqpaper.publish`` decides for the build;
    the repository is the git checkout holding the book's folder."""
    from sphinx.util import logging  # Sphinx comes with the book extra only

    options, message = publish.launch_theme_options(config.html_theme_options or {}, app.srcdir)
    if message is not None:
        config.html_theme_options = options
        logging.getLogger(__name__).info(message)


def setup(app):  # pragma: no cover - exercised by the book build
    """Sphinx entry point: registers ``{vqpaper-provenance}``, ``{vqpaper-effects}`` and the launch-button
    repository."""
    app.add_directive("vqpaper-provenance", _provenance_directive())
    app.add_directive("vqpaper-effects", _effects_directive())
    app.connect("config-inited", _launch_repository)
    app.connect("html-page-context", _clean_page_context)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
