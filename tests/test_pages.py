"""How the book's pages read (issue 22 "Pages", issue 23 items 2 and 4).

Source checks (fast): the parameters cell is hidden, every executed notebook starts with the hidden
install cell, headings and captions use the book's figure numbers, the intro names every notebook,
the results page's overview is computed from the recorded claims (``vqpaper.overview``).
Built-site checks (marker ``notebooks``; they skip without a built book, like tests/test_browser.py):
each figure once, its caption links its data files and they exist, the results page opens with the
count and the colour-coded table, the parameters cell is not shown.
"""
from __future__ import annotations

import html as _html
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vqpaper import overview, paths, publish, runner

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))


# ------------------------------------------------------------------ the notebooks' sources

def _cells(path):
    jupytext = pytest.importorskip("jupytext")
    return jupytext.read(path, fmt="py:percent").cells


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_parameters_cell_is_hidden_from_the_page(path):
    """Papermill's injected cell shows the values; the cell of Nones would show them a second time."""
    [cell] = [c for c in _cells(path) if "parameters" in c.metadata.get("tags", [])]
    assert runner.HIDDEN in cell.metadata["tags"], f"{path.name}: tag its parameters cell {runner.HIDDEN!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_headings_and_captions_use_the_books_figure_numbers(path):
    """The book numbers its figures; the paper's numbers are named as the paper's ("the paper's Fig. 4")."""
    markdown = "\n".join(c.source for c in _cells(path) if c.cell_type == "markdown")
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    assert not [h for h in headings if re.search(r"\bFigs?\.", h)], headings
    captions = re.findall(r"```\{glue:figure\}.*?```", markdown, flags=re.S)
    assert captions, f"{path.name} has no numbered figure"
    for caption in captions:
        for match in re.finditer(r"\bFigs?\. \d", caption):
            assert caption[:match.start()].endswith("paper's "), caption


def test_the_intro_names_every_notebook_and_the_results_page_no_papers_numbers_as_headings():
    intro = (REPO / "book" / "intro.md").read_text()
    missing = [p.stem for p in NOTEBOOKS if f"{{doc}}`notebooks/{p.stem}`" not in intro]
    assert not missing, f"book/intro.md does not introduce {missing}"
    for page in sorted((REPO / "book").glob("*.md")):
        headings = [line for line in page.read_text().splitlines() if line.startswith("#")]
        assert not [h for h in headings if re.search(r"\bFigs?\.", h)], (page.name, headings)


def test_every_executed_notebook_starts_with_the_hidden_install_cell(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    out = runner.convert(NOTEBOOKS[0], tmp_path)
    first = nbformat.read(out, as_version=4).cells[0]
    assert first.cell_type == "code" and first.metadata["tags"] == [runner.HIDDEN]
    assert first.source == publish.install_cell(paths.ROOT)
    compile(first.source, "install cell", "exec")


def _install(monkeypatch, tmp_path, repository, installed, env=None):
    """Run the install cell for a checkout whose GitHub repository is ``repository``; return the commands."""
    monkeypatch.setattr(publish, "repository_url", lambda root: repository)
    source = publish.install_cell(paths.ROOT)
    calls = []

    def run(cmd, check):
        calls.append(cmd)
        if cmd[:2] == ["git", "clone"]:
            Path(cmd[-1]).mkdir()

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if installed else None)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the cell inserts the checkout
    exec(compile(source, "install cell", "exec"), {})
    return calls


def test_the_install_cell_does_nothing_where_vqpaper_is_installed(monkeypatch, tmp_path):
    assert _install(monkeypatch, tmp_path, "https://github.com/o/r", installed=True) == []
    assert Path.cwd() == tmp_path


def test_the_install_cell_clones_the_launch_branch_and_installs_it(monkeypatch, tmp_path):
    calls = _install(monkeypatch, tmp_path, "https://github.com/o/r", installed=False)
    checkout = str(tmp_path / "vqpaper-checkout")
    assert calls[0] == ["git", "clone", "--quiet", "--depth", "1", "--branch", publish.launch_branch(paths.ROOT),
                        "https://github.com/o/r", checkout]
    assert calls[1][1:] == ["-m", "pip", "install", "--quiet", "-e", checkout]
    assert Path.cwd() == Path(checkout)
    (tmp_path / "fork").mkdir()
    fork = _install(monkeypatch, tmp_path / "fork", "https://github.com/o/r", installed=False,
                    env={"VQPAPER_REPOSITORY": "https://github.com/me/fork"})
    assert fork[0][:2] == ["git", "clone"] and "https://github.com/me/fork" in fork[0]


def test_the_install_cell_says_what_to_set_without_a_repository(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match="VQPAPER_REPOSITORY"):
        _install(monkeypatch, tmp_path, None, installed=False)


# ------------------------------------------------------------------ the results page's overview

def _check(setting, outcome, effect=0.3, low=0.1, high=0.5, n=3, **more):
    return {"id": f"c-{setting}", "setting": setting, "outcome": outcome, "reason": more.pop("reason", "why"),
            "effect": effect, "low": low, "high": high, "n": n, "sd": more.pop("sd", 0.1), "decision": "positive",
            **more}


def _family(fid, source, outcome, checks, **more):
    return {"id": fid, "source": source, "paper": f"claim {fid}", "outcome": outcome, "verdict": outcome,
            "checks": {c["id"]: c for c in checks}, **more}


def _write_claims(directory, families, notebook="02_tokens_collapse_synthetic", params=None, name="fig-x-claims"):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps({
        "figure_id": name, "notebook": notebook, "profile": "ci", "params": params or {},
        "values": {f["id"]: f for f in families}}))


def test_count_and_rows_are_computed_from_the_recorded_claims(tmp_path):
    families = [
        _family("a", "§3.1.1, Fig. 3", "held", [_check("2-D", "held"), _check("3-D", "held")]),
        _family("b", "Fig. 4", "not held", [_check("K = 256", "not held")], decision="no effect"),
        _family("c", "§3.2, Fig. 5", "inconclusive",
                [_check("2-D", "held"), _check("8-D", "inconclusive", reason="the runs had not converged (seed 1)"),
                 _check("3-D", "inconclusive", low=-0.1, n_80=5, n_95=7),
                 _check("K = 16", "inconclusive", n_80=4, n_95=5,
                        reason="still moving: the effect changed by ×0.926 over the last quarter of training"),
                 _check("4-D", "inconclusive", n_80=None, n_95=None)]),
        _family("d", "companion question (SimVQ against §3.1)", "held", [_check("2-D", "held")]),
        _family("e", "SimVQ (Zhu, Li et al. 2024), abstract", "inconclusive", [_check("x", "inconclusive")]),
        _family("f", "beyond the paper: remedies", "held", [_check("x", "held")], is_paper=False),
        _family("g", "the paper's §4 in other words", "held", [_check("x", "held")], is_paper=True),
    ]
    _write_claims(tmp_path, families)
    found = overview.families(tmp_path)
    paper = [f for f in found if overview.is_paper(f)]
    assert [f["id"] for f in paper] == ["a", "b", "c", "g"]
    assert overview.count_sentence(paper) == "2 of 4 claims of the paper held, 1 not held, 1 inconclusive"
    rows = {r["id"]: r for r in overview.overview_rows(paper)}
    assert rows["a"]["effects"] == ["2-D: +0.3 [0.1,\xa00.5], n\xa0=\xa03", "3-D: +0.3 [0.1,\xa00.5], n\xa0=\xa03"]
    assert rows["b"]["effects"] == ["+0.3 [0.1,\xa00.5], n\xa0=\xa03"] and rows["b"]["decision"] == "no effect"
    assert rows["a"]["why"] == "" and "8-D: the runs had not converged" in rows["c"]["why"]
    assert rows["c"]["decide"] == ("8-D: longer training; 3-D: n = 5 (80% power), 7 (95%); K = 16: longer training "
                                   "(the effect was still moving), then n = 4 (80% power), 5 (95%) at this spread; "
                                   "4-D: n > 1000 (80% power), > 1000 (95%)")
    power = overview.power_rows(paper)
    assert len(power) == 9 and power[0]["claim"] == "a" and power[0]["n for 80%"] == "not recorded"
    assert overview.missing_fields(found) == {"family": ["quote"], "check": ["n_80", "n_95"]}


def test_a_claim_left_out_at_these_parameters_is_counted_and_says_what_would_test_it(tmp_path):
    """A family these parameters cannot test (claims.LeftOut: no checks, a ``why``) is a row of its own
    and part of the count, never silently dropped from the page."""
    left_out = {"id": "s", "source": "§3.1.2, Fig. 4 caption", "is_paper": True, "quote": "from 2^12 ...",
                "outcome": "not tested", "verdict": "not tested (...)",
                "why": "Stagnation from 2^12 needs two sizes of 4,096 or more; add 8,192 to codebook_sizes."}
    _write_claims(tmp_path, [_family("a", "§3.1.1", "held", [_check("2-D", "held")], quote="q", verdict="held"),
                             left_out])
    found = overview.families(tmp_path)
    assert [f["id"] for f in found] == ["a", "s"]
    assert overview.count_sentence(found) == "1 of 2 claims of the paper held, 0 not held, 0 inconclusive, 1 not tested"
    row = {r["id"]: r for r in overview.overview_rows(found)}["s"]
    assert row["effects"] == [] and row["why"] == "not tested at these parameters"
    assert row["decide"].endswith("add 8,192 to codebook_sizes")
    assert overview.power_rows(found) == overview.power_rows(found[:1])
    assert overview.missing_fields(found) == {"family": [], "check": ["n_80", "n_95"]}
    # without any left-out family the count does not mention the outcome
    assert "not tested" not in overview.count_sentence(found[:1])


def test_the_overview_tolerates_what_a_build_does_not_record(tmp_path):
    """A quote is shown as the paper's words; a check without an interval or spread still gets a row."""
    bare = {"id": "k", "outcome": "inconclusive"}  # no setting, effect, interval, n, sd ...
    families = [_family("q", "§3.1.2", "inconclusive", [bare], quote="tokens collapse at 2^12"),
                _family("log", "§3.1.2", "held", [_check("K", "held", effect=0.693, low=0.1, high=1.0, scale="log",
                                                         n_80=None, n_95=None, sd=float("nan"))])]
    _write_claims(tmp_path, families)
    rows = {r["id"]: r for r in overview.overview_rows(overview.families(tmp_path))}
    assert rows["q"]["claim"] == "tokens collapse at 2^12" and rows["q"]["quoted"]
    assert rows["q"]["effects"] == ["? no interval"] and "no reason recorded" in rows["q"]["why"]
    assert rows["log"]["effects"] == ["×2 [×1.11,\xa0×2.72], n\xa0=\xa03"] and not rows["log"]["quoted"]
    power = {r["claim"]: r for r in overview.power_rows(overview.families(tmp_path))}
    assert power["log"]["n for 80%"] == "unknown" and power["log"]["sd"] == "unknown"
    assert power["q"]["sd"] == "not recorded"
    assert overview.families(tmp_path / "nothing") == []


def test_notebooks_run_with_other_parameters_are_listed(tmp_path):
    from vqpaper.config import PRESETS

    preset = PRESETS["02_tokens_collapse_synthetic"]["ci"].parameters()
    _write_claims(tmp_path, [], params={**preset, "device": "cpu"}, name="fig-a")
    assert overview.parameter_changes(tmp_path) == ([], ["ci"]), "a resolved device 'auto' is no change"
    _write_claims(tmp_path, [], params={**preset, "seeds": [0, 1]}, name="fig-a")
    changes, _ = overview.parameter_changes(tmp_path)
    assert changes == [{"notebook": "02_tokens_collapse_synthetic", "profile": "ci",
                        "changes": [("seeds", [0, 1], preset["seeds"])]}]


def test_a_figure_links_its_own_results_or_its_groups(tmp_path, monkeypatch):
    from vqpaper import sphinxext

    monkeypatch.setattr(paths, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(paths, "FIGURES", tmp_path / "figures")
    for folder in ("results", "figures"):
        (tmp_path / folder).mkdir()
    for name in ("fig-remedies-diagnosis.json", "fig-remedies-heatmap.json"):
        (tmp_path / "results" / name).write_text("{}")
    (tmp_path / "figures" / "fig-remedies-heatmap.csv").write_text("a\n1\n")
    (tmp_path / "figures" / "fig-remedies-heatmap.png").write_bytes(b"png")
    assert sphinxext.figure_data_files("fig-remedies-heatmap") == {"PNG": tmp_path / "figures" / "fig-remedies-heatmap.png",
        "JSON": tmp_path / "results" / "fig-remedies-heatmap.json", "CSV": tmp_path / "figures" / "fig-remedies-heatmap.csv"}
    assert sphinxext.figure_data_files("fig-remedies-diagnosis-scratch") == {
        "JSON": tmp_path / "results" / "fig-remedies-diagnosis.json"}
    assert sphinxext.figure_data_files("fig-nothing") == {}


# ------------------------------------------------------------------ the built site

# ``site``: the built book (tests/conftest.py); without one these tests skip.


def _notebook_pages(site):
    pages = sorted((site / "book" / "notebooks").glob("*.html"))
    assert pages, f"no notebook pages in {site}"
    return pages


@pytest.mark.notebooks
def test_each_figure_appears_once_and_links_its_data(site):
    for page in _notebook_pages(site):
        text = page.read_text()
        images = re.findall(r'<img[^>]*\ssrc="([^"]+)"', text)
        repeated = sorted({src for src in images if images.count(src) > 1})
        assert not repeated, f"{page.name} shows the same image twice: {repeated}"
        figures = re.findall(r'<figure[^>]*id="(fig-[a-z0-9-]+)".*?</figure>', text, flags=re.S)
        blocks = re.findall(r'<figure[^>]*id="fig-[a-z0-9-]+".*?</figure>', text, flags=re.S)
        for figure_id, block in zip(figures, blocks):
            links = dict(re.findall(r'<a class="[^"]*vqpaper-data-link[^"]*" href="([^"]+)"[^>]*>(JSON|CSV|PNG)</a>',
                                    block))
            assert sorted(links.values()) == ["CSV", "JSON", "PNG"], f"{page.name}: {figure_id} does not link its data"
            for href in links:
                target = (page.parent / href).resolve()
                assert target.is_file() and target.is_relative_to(site / "_static" / "data"), (figure_id, href)
            csv = next(h for h, label in links.items() if label == "CSV")
            assert Path(csv).name == f"{figure_id}.csv"


@pytest.mark.notebooks
def test_notebook_pages_show_the_parameters_once_and_no_install_cell(site):
    for page in _notebook_pages(site):
        text = _html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        assert "# Parameters" in text, f"{page.name}: papermill's injected values are not shown"
        assert not re.search(r"seeds\s*=\s*None", text), f"{page.name} shows the parameters cell of Nones"
        assert "VQPAPER_REPOSITORY" not in text, f"{page.name} shows the install cell"
        from vqpaper.config import describe

        cut = [row["meaning"] for row in describe(page.stem) if _html.escape(row["meaning"], quote=False) not in
               page.read_text()]
        assert not cut, f"{page.name}: the parameters table does not show these meanings in full: {cut}"


@pytest.mark.notebooks
def test_results_page_opens_with_the_count_and_one_colour_coded_table(site):
    page = (site / "book" / "results.html").read_text()
    text = _html.unescape(re.sub(r"<[^>]+>", "", page))
    count = re.search(r"(\d+) of (\d+) claims of the paper held, (\d+) not held, (\d+) inconclusive"
                      r"(?:, (\d+) not tested)?", text)
    assert count, "the results page does not give the count of the paper's claims"
    held, total, not_held, open_ = map(int, count.group(1, 2, 3, 4))
    not_tested = int(count.group(5) or 0)
    assert held + not_held + open_ + not_tested == total > 0
    assert page.index("vqpaper-count") < page.index('<table class="vqpaper-table vqpaper-claims'), \
        "the count comes first, then the table"
    rows = re.findall(r'<tr class="(vqpaper-(?:held|not-held|inconclusive|not-tested))[ "]', page)
    assert len(rows) >= total, "the claims' rows are not colour-coded by outcome"
    assert 'class="vqpaper-table vqpaper-power' in page, "no power table"
    assert "Every notebook ran with the parameters of" in text or "parameters other than those of" in text
    css = site / "_static" / "vqpaper.css"
    assert css.is_file() and "vqpaper.css" in page


@pytest.mark.notebooks
def test_results_page_shows_every_recorded_claim_of_this_build(site):
    """Each family the notebooks recorded is a row with its outcome (no stale page)."""
    page = (site / "book" / "results.html").read_text()
    found = overview.families()
    assert found, "no claims recorded"
    for family in found:
        row = re.search(r'<tr class="(vqpaper-[a-z-]+)[^"]*">(?:(?!</tr>).)*?<code[^>]*><span class="pre">'
                        + re.escape(family["id"]) + r"</span>", page, flags=re.S)
        assert row, f"{family['id']} is not on the results page"
        assert row.group(1) == "vqpaper-" + family["outcome"].replace(" ", "-"), family["id"]
