"""Every notebook executes at the ci profile, the book builds, and the numbers match the references.

One session-wide run of ``vqpaper book --profile ci`` (fixture ``executed_book``) serves every
test here; a failure names the notebook.
"""
import json
import os
import subprocess
import sys

import nbformat
import pytest

from conftest import NOTEBOOKS, REPO
from vqpaper.regression import compare, compare_dirs, format_table

pytestmark = pytest.mark.notebooks
RESULTS = REPO / "_build" / "results"
REFERENCES = REPO / "tests" / "references" / "ci"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_at_ci(executed_book, name):
    status = executed_book["bench"].get("notebooks", {}).get(name)
    log = REPO / "_build" / "logs" / f"{name}.log"
    tail = log.read_text()[-3000:] if log.is_file() else executed_book["stdout"][-3000:]
    assert status is not None, f"{name} was not executed:\n{tail}"
    assert status["ok"], f"{name} failed at the ci profile:\n{tail}"
    nb = nbformat.read(REPO / "_build" / "executed" / f"{name}.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{name} has error outputs: {[e.get('ename') for e in errors]}"
    recorded = [json.loads(p.read_text()) for p in RESULTS.glob("fig-*.json")]
    assert any(r["notebook"] == name for r in recorded), f"{name} recorded no figure numbers"


def test_book_builds_with_every_notebook_and_figure(built_book):
    for name in NOTEBOOKS:
        page = built_book / "book" / "notebooks" / f"{name}.html"
        assert page.is_file(), f"{name} is not in the book"
        assert "<img" in page.read_text(), f"{name}'s page shows no figure"
    for page in ("intro", "reproduce", "results"):
        assert (built_book / "book" / f"{page}.html").is_file(), f"book/{page} missing from the HTML"


def test_recorded_numbers_match_the_committed_references(executed_book):
    assert executed_book["returncode"] == 0, "the book did not build; see test_book_builds…"
    assert REFERENCES.is_dir() and any(REFERENCES.glob("*.json")), (
        f"no references in {REFERENCES}; create them on purpose with `make references`")
    mismatches = compare_dirs(REFERENCES, RESULTS)
    assert not mismatches, ("figure numbers moved (refresh on purpose with `make references`):\n"
                            + format_table(mismatches))


def test_executing_a_notebook_twice_gives_identical_numbers(executed_book, tmp_path):
    """Determinism: a second, uncached execution of notebook 02 reproduces every number."""
    assert executed_book["returncode"] == 0
    name = "02_tokens_collapse_synthetic"
    env = dict(os.environ, VQPAPER_BUILD=str(tmp_path / "build"), VQPAPER_NO_CACHE="1", VQPAPER_THREADS="1")
    code = ("from pathlib import Path; from vqpaper.cli import execute; "
            f"execute(Path('notebooks/{name}.py'), 'ci', {{}}, book_copy=False)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = tmp_path / "build" / "results"
    first = {p.name: json.loads(p.read_text()) for p in RESULTS.glob("*.json")
             if json.loads(p.read_text())["notebook"] == name}
    assert first, f"{name} recorded nothing in the session run"
    for fname, ref in first.items():
        new = json.loads((again / fname).read_text())
        mismatches = compare(ref, new, tolerances={"*": (0.0, 0.0)})
        assert not mismatches, format_table(mismatches)
