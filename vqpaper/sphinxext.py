"""The book's Sphinx extension: ``{vqpaper-provenance}``, ``{vqpaper-effects}``, ``{vqpaper-claims}``,
each figure's data linked from its caption, launch buttons that point somewhere, and two fixes of
the stock theme.

``_config.yml`` loads this module as a local Sphinx extension so that ``book/provenance.md``
can show a table of every recorded figure at build time, read from ``_build/results/*.json``,
``book/results.md`` the smallest effects of interest of ``vqpaper.claims.EFFECTS`` (the
code's table, never a copy) and the claims of every notebook at a glance (``vqpaper.overview``,
read from the recorded claims), and every numbered figure its numbers: its results JSON and the
CSV of what it plots (``vqpaper.plots``), copied into ``_static/data/`` and linked from the caption.
Kept apart from ``vqpaper.book`` (what notebooks call): nothing here runs in a notebook.
"""
from __future__ import annotations

import posixpath
import shutil
from pathlib import Path

from . import overview, paths, publish
from .results import provenance_rows

#: Where the figures' data files go in the HTML (``BUILD/html/_static/data/``).
DATA_DIR = "_static/data"


def _provenance_directive():
    from docutils import nodes  # only a Sphinx build has docutils loaded: the class is made when Sphinx asks
    from docutils.parsers.rst import Directive, directives

    class ProvenanceDirective(Directive):
        """A table of the recorded figures: ``{vqpaper-provenance}`` (``:notebook: NN_name``)."""

        has_content = False
        option_spec = {"notebook": directives.unchanged}

        def run(self):
            _note_results(self.state.document.settings.env)
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

    from .claims import effect_rows  # claims imports results and config (torch): only this directive needs it

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


def _note_results(env) -> None:
    """Rebuild the page whenever a result is added or rewritten."""
    if paths.RESULTS.is_dir():
        env.note_dependency(str(paths.RESULTS))
        for path in paths.RESULTS.glob("*.json"):
            env.note_dependency(str(path))


def _table(columns, rows, widths, classes=(), row_classes=None):
    """A docutils table: ``columns`` (header texts), ``rows`` (lists of cells: a node, a text or a
    list of lines), ``row_classes`` (one list of CSS classes per row)."""
    from docutils import nodes  # only a Sphinx build has docutils loaded

    def cell(content):
        entry = nodes.entry()
        if isinstance(content, nodes.Node):
            entry += content
        elif isinstance(content, (list, tuple)):
            block = nodes.line_block()
            for line in content:
                block += line if isinstance(line, nodes.Node) else nodes.line(text=str(line))
            entry += block
        else:
            entry += nodes.paragraph(text=str(content))
        return entry

    table = nodes.table(classes=["vqpaper-table", *classes])
    group = nodes.tgroup(cols=len(columns))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head, body = nodes.thead(), nodes.tbody()
    group += head
    group += body
    row = nodes.row()
    for title in columns:
        row += cell(title)
    head += row
    for i, cells in enumerate(rows):
        row = nodes.row(classes=list(row_classes[i]) if row_classes else [])
        if isinstance(cells, Span):  # one cell across every column
            entry = cell(cells.content)
            entry["morecols"] = len(columns) - 1
            row += entry
        else:
            for content in cells:
                row += cell(content)
        body += row
    return table


class Span:
    """A row of :func:`_table` that is one cell across all columns."""

    def __init__(self, content):
        self.content = content


def _outcome_class(outcome: str) -> str:
    return "vqpaper-" + outcome.replace(" ", "-")


def _claims_directive():
    from docutils import nodes
    from docutils.parsers.rst import Directive, directives
    from sphinx import addnodes

    class ClaimsDirective(Directive):
        """The recorded claims at a glance (``vqpaper.overview``): ``{vqpaper-claims}`` with ``:show:``
        ``count`` (the sentence), ``overview`` (claim x outcome), ``power`` (n for 80% / 95%) or
        ``parameters`` (notebooks run with other parameters than their profile's), and ``:claims:``
        ``paper`` (default), ``beyond`` (the companion's questions) or ``all``."""

        has_content = False
        option_spec = {"show": lambda text: directives.choice(text, ("count", "overview", "power", "parameters")),
                       "claims": lambda text: directives.choice(text, ("paper", "beyond", "all"))}

        def run(self):
            env = self.state.document.settings.env
            _note_results(env)
            show, which = self.options.get("show", "overview"), self.options.get("claims", "paper")
            if show == "parameters":
                return self.parameters()
            found = overview.families()
            if which != "all":
                found = [f for f in found if overview.is_paper(f) == (which == "paper")]
            if not found:
                return [nodes.paragraph(text=f"No recorded claims in {paths.RESULTS}: run the notebooks first "
                                             "(vqpaper book).")]
            if show == "count":
                what = "claims of the paper" if which == "paper" else "questions beyond the paper"
                para = nodes.paragraph(classes=["vqpaper-count"])
                para += nodes.strong(text=overview.count_sentence(found, what) + ".")
                return [para]
            if show == "power":
                return [self.power(found)]
            return [self.overview(found)] + self.missing(found)

        def notebook_link(self, notebook: str):
            """The notebook's page, as a cross-reference (a missing page is a warning of the build)."""
            ref = addnodes.pending_xref("", refdomain="std", reftype="doc", reftarget=f"/book/notebooks/{notebook}",
                                        refexplicit=True, refwarn=True,
                                        refdoc=self.state.document.settings.env.docname)
            ref += nodes.inline(text=f"notebook {notebook[:2]}")
            return ref

        def overview(self, found):
            rows, classes = [], []
            for r in overview.overview_rows(found):
                claim = nodes.paragraph()
                claim += nodes.emphasis(text=f"“{r['claim']}”") if r["quoted"] else nodes.Text(r["claim"])
                where = nodes.paragraph(classes=["vqpaper-claim-id"])
                where += nodes.literal(text=r["id"])
                if r["notebook"]:
                    where += nodes.Text(", ")
                    where += self.notebook_link(r["notebook"])
                outcome = nodes.paragraph()
                outcome += nodes.strong(text=r["outcome"])
                if r["decision"] and r["decision"] != r["outcome"]:
                    outcome += nodes.Text(f" ({r['decision']})")
                rows.append([[claim, where], r["source"], outcome, r["effects"]])
                classes.append([_outcome_class(r["outcome"])])
                if r["why"]:  # undecided or not tested: why, and what would decide it, across the table
                    left_out = r["outcome"] == overview.NOT_TESTED
                    text = nodes.paragraph()
                    text += nodes.strong(text="Not tested: " if left_out else "Undecided: ")
                    text += nodes.Text(r["why"] + ". ")
                    if r["decide"]:
                        text += nodes.strong(text="Would test it: " if left_out else "Would decide it: ")
                        text += nodes.Text(r["decide"] + ".")
                    rows.append(Span(text))
                    classes.append([_outcome_class(r["outcome"]), "vqpaper-why"])
            return _table(["claim", "source", "outcome", "effect [95% interval], pairs"], rows,
                          (5, 2, 2, 5), ["vqpaper-claims"], classes)

        def power(self, found):
            rows = overview.power_rows(found)
            columns = list(rows[0])
            body = [[nodes.literal(text=r["claim"]) if c == "claim" else r[c] for c in columns] for r in rows]
            return _table(columns, body, (4, 3, 2, 4, 2, 1, 2, 2), ["vqpaper-power"],
                          [[_outcome_class(r["outcome"])] for r in rows])

        def missing(self, found):
            gone = overview.missing_fields(found)
            names = [f"{k} (of a claim)" for k in gone["family"]] + [f"{k} (of a check)" for k in gone["check"]]
            if not names:
                return []
            note = " The claims are given in the book's words, not quoted." if "quote" in gone["family"] else ""
            return [nodes.paragraph(classes=["vqpaper-note"],
                                    text=f"Not recorded by every notebook of this build: {', '.join(names)}.{note}")]

        def parameters(self):
            changes, profiles = overview.parameter_changes()
            at = f"the {profiles[0]} profile" if len(profiles) == 1 else "the profiles " + ", ".join(profiles)
            if not changes:
                return [nodes.paragraph(text=f"Every notebook ran with the parameters of {at}.")]
            items = nodes.bullet_list()
            for c in changes:
                item = nodes.list_item()
                para = nodes.paragraph()
                para += self.notebook_link(c["notebook"])
                para += nodes.Text(f" ({c['profile']}): " + "; ".join(
                    f"{name} = {value!r} instead of {preset!r}" for name, value, preset in c["changes"]))
                item += para
                items += item
            return [nodes.paragraph(text=f"Notebooks run with parameters other than those of {at}:"), items]

    return ClaimsDirective


# ------------------------------------------------------------------ the data behind each figure

def figure_data_files(figure_id: str) -> dict[str, Path]:
    """The files of a figure in the build: ``{"JSON": results, "CSV": what it plots, "PNG": the image at
    full size}`` (those that exist).

    The JSON is the figure's own results file, or that of the group it belongs to (the longest
    recorded id that the figure id extends: ``fig-remedies-diagnosis`` for ``fig-remedies-diagnosis-scratch``).
    The PNG is there for a figure too wide to read in the page's column (notebook 06's heat map).
    """
    found = {}
    parts = figure_id.split("-")
    for n in range(len(parts), 1, -1):
        candidate = paths.RESULTS / f"{'-'.join(parts[:n])}.json"
        if candidate.is_file():
            found["JSON"] = candidate
            break
    for label, suffix in (("CSV", "csv"), ("PNG", "png")):
        path = paths.FIGURES / f"{figure_id}.{suffix}"
        if path.is_file():
            found[label] = path
    return found


def _link_figure_data(app, doctree, docname):
    """Each numbered figure's caption ends with links to its data files ("Data: JSON, CSV")."""
    from docutils import nodes

    if app.builder.format != "html":
        return
    here = posixpath.dirname(docname)
    for figure in doctree.findall(nodes.figure):
        ids = [i for i in figure["ids"] if paths.FIGURE_ID.match(i)]
        captions = list(figure.findall(nodes.caption))
        files = figure_data_files(ids[0]) if ids and captions else {}
        if not files:
            continue
        def link(label, path):
            uri = posixpath.relpath(f"{DATA_DIR}/{path.name}", here or ".")
            return nodes.reference("", label, refuri=uri, internal=False, classes=["vqpaper-data-link"])

        links = nodes.inline(classes=["vqpaper-data"])
        data = [label for label in ("JSON", "CSV") if label in files]
        if data:
            links += nodes.Text(" Data: ")
            for i, label in enumerate(data):
                links += [nodes.Text(", ")] if i else []
                links += link(label, files[label])
            links += nodes.Text(".")
        if "PNG" in files:
            links += nodes.Text(" Full size: ")
            links += link("PNG", files["PNG"])
            links += nodes.Text(".")
        captions[0] += links


def _copy_figure_data(app, exception):
    """Copy every figure's data files into ``_static/data/`` of the HTML (after a successful build)."""
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir) / DATA_DIR
    out.mkdir(parents=True, exist_ok=True)
    sources = list(paths.RESULTS.glob("fig-*.json")) + [
        path for pattern in ("fig-*.csv", "fig-*.plot.json", "fig-*.png") for path in paths.FIGURES.glob(pattern)]
    for path in sources:
        shutil.copyfile(path, out / path.name)


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
    """Sphinx entry point: registers ``{vqpaper-provenance}``, ``{vqpaper-effects}``, ``{vqpaper-claims}``,
    the figures' data links and the launch-button repository."""
    app.add_directive("vqpaper-provenance", _provenance_directive())
    app.add_directive("vqpaper-effects", _effects_directive())
    app.add_directive("vqpaper-claims", _claims_directive())
    app.connect("doctree-resolved", _link_figure_data)
    app.connect("build-finished", _copy_figure_data)
    app.connect("config-inited", _launch_repository)
    app.connect("html-page-context", _clean_page_context)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
