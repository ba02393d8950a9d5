"""Every notebook executes at the ci profile, the book builds, and the numbers match the references.

One session-wide run of ``vqpaper book --profile ci`` (fixture ``executed_book``) serves every
test here; a failure names the notebook.
"""
import json

import nbformat
import pytest

from conftest import NOTEBOOKS, REPO, RERUN
from vqpaper.regression import check_dirs, compare, format_report, format_table

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


def test_book_shows_progress_as_it_runs(executed_book):
    """Off a terminal, `vqpaper book` prints per notebook a line now and then with the section, the run
    (i/N), the epoch and an ETA; each notebook's log receives the same lines as they happen."""
    import re

    lines = [line for line in executed_book["stdout"].splitlines() if " | " in line]
    assert {line.split(" | ")[0] for line in lines} == set(NOTEBOOKS), "\n".join(lines[-40:])
    # a sweep that trained (not all read from the cache) shows i/N with i < N, then an ETA and epochs
    trained = {line.split(" | ")[0] for line in lines
               if any(int(i) < int(n) for i, n in re.findall(r" run (\d+)/(\d+) \|", line))}
    for name in trained:
        assert any(line.startswith(f"{name} | ") and re.search(r"\| ETA \d+:\d\d \|", line) for line in lines), \
            "\n".join(line for line in lines if line.startswith(name))
    if trained:
        assert any(re.search(r"\| ETA \d+:\d\d \| .* epoch \d+/\d+ \| ", line) for line in lines), \
            "\n".join(lines[-40:])
    assert "\r" not in executed_book["stdout"], "carriage-return fragments in non-terminal output"
    for name in NOTEBOOKS:
        log = (REPO / "_build" / "logs" / f"{name}.log").read_text()
        assert f"\n{name} | " in log and log.rstrip().endswith(" s"), log[-2000:]


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
    report = check_dirs(REFERENCES, RESULTS)
    print(format_report(report))
    assert report.ok, ("figure numbers moved (refresh on purpose with `make references`):\n"
                       + format_report(report))


# ----------------------------------------------------------- notebook 02 again
def test_executing_a_notebook_twice_gives_identical_numbers_under_load(reruns_of_02):
    """Determinism: an uncached re-execution of 02, while three other executions of it (the
    sensitivity suite's, conftest.reruns_of_02) load the machine's cores, reproduces every bit."""
    run = reruns_of_02["same"]
    assert run["returncode"] == 0, run["log"][-3000:]
    first = {p.name: json.loads(p.read_text()) for p in RESULTS.glob("*.json")
             if json.loads(p.read_text())["notebook"] == RERUN}
    assert first, f"{RERUN} recorded nothing in the session run"
    for fname, ref in first.items():
        new = json.loads((run["results"] / fname).read_text())
        assert new["provenance"]["environment"] == ref["provenance"]["environment"]
        mismatches = compare(ref, new, tolerances={"*": (0.0, 0.0)}, mode="same")
        assert not mismatches, format_table(mismatches)


# The results page shows every family recorded by this build, with its outcome:
# tests/test_pages.py::test_results_page_shows_every_recorded_claim_of_this_build.
