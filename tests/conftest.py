"""Shared pytest fixtures."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cifar_subset_path(tmp_path_factory):
    """An .npz holding exactly the real `ci` CIFAR-10 subset: the one shared next to the repository,
    else one written from what load_cifar10 finds ($VQPAPER_CIFAR10, data/, the download); skips without."""
    path = REPO.parent / "shared" / "data" / "cifar10-subset.npz"
    if path.is_file():
        return path
    cifar = _ci_cifar()
    if cifar is None:
        pytest.skip(f"{NO_CIFAR}: set VQPAPER_CIFAR10 or allow the download (why: the WARNING at the end)")
    import numpy as np

    path = tmp_path_factory.mktemp("cifar") / "cifar10-subset.npz"
    np.savez(path, x_train=cifar.x_train, y_train=cifar.y_train, x_test=cifar.x_test, y_test=cifar.y_test)
    return path


# ------------------------------------------------------------------ no vacuous pass without CIFAR-10 (issue 14)
# Without $VQPAPER_CIFAR10 or the shared subset, the `ci` subset is obtained via torchvision
# (data/cifar10, downloaded where the network allows; the selection is cached under data/).
# Where that fails, the tests needing CIFAR skip with NO_CIFAR in their reason, the run ends with
# a WARNING line, and with VQPAPER_REQUIRE_CIFAR=1 (CI) those skips fail the run.
NO_CIFAR = "no CIFAR-10"
REQUIRE_CIFAR = "VQPAPER_REQUIRE_CIFAR"
_CIFAR_OBTAINED, _CIFAR_PROBLEM, _NO_CIFAR_SKIPS = [], [], []


def _ci_cifar():
    """The `ci` subset as load_cifar10 finds it without the shared file (once per session), or None."""
    if not _CIFAR_OBTAINED:
        from vqpaper.data import load_cifar10

        try:
            _CIFAR_OBTAINED.append(load_cifar10(subset="ci"))
        except Exception as exc:  # shown once, in the WARNING at the end
            _CIFAR_OBTAINED.append(None)
            _CIFAR_PROBLEM.append(f"{type(exc).__name__}: {exc}")
    return _CIFAR_OBTAINED[0]


def pytest_runtest_logreport(report):
    if report.skipped and NO_CIFAR in str(report.longrepr):
        _NO_CIFAR_SKIPS.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _NO_CIFAR_SKIPS and os.environ.get(REQUIRE_CIFAR) and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter):
    yield  # after pytest's own summary, so that these are the last lines before the counts
    if _NO_CIFAR_SKIPS:
        terminalreporter.write_line(f"WARNING: {len(_NO_CIFAR_SKIPS)} tests skipped: {NO_CIFAR} (set VQPAPER_CIFAR10 "
                                    "or allow the download)", yellow=True, bold=True)
        for problem in _CIFAR_PROBLEM:
            terminalreporter.write_line(f"  why: {problem}")
        if os.environ.get(REQUIRE_CIFAR):
            terminalreporter.write_line(f"ERROR: {REQUIRE_CIFAR} is set, so these skips fail the run", red=True,
                                        bold=True)


# ------------------------------------------------------------------ the executed book
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py"))
BOOK_TIMEOUT_S = int(os.environ.get("VQPAPER_BOOK_TIMEOUT", "1800"))


def _cifar_available() -> bool:
    if os.environ.get("VQPAPER_CIFAR10"):
        return True
    return (REPO.parent / "shared" / "data" / "cifar10-subset.npz").is_file() or _ci_cifar() is not None


@pytest.fixture(scope="session")
def executed_book():
    """Execute every notebook at the ci profile and build the HTML, once per test session.

    The notebook, regression, determinism, site and browser tests all reuse this one run
    (``vqpaper book --profile ci``, its output captured as CI sees it: no terminal), so nothing
    is executed twice. It writes ``_build/executed``, ``results``, ``logs``, ``site`` and ``html``.
    """
    if not _cifar_available():
        pytest.skip(f"{NO_CIFAR} data: set VQPAPER_CIFAR10 to an .npz or torchvision folder "
                    "(CI points it at ../shared/data/cifar10-subset.npz), or allow the download")
    env = dict(os.environ)
    if not env.get("VQPAPER_CIFAR10"):
        subset = REPO.parent / "shared" / "data" / "cifar10-subset.npz"
        if subset.is_file():
            env["VQPAPER_CIFAR10"] = str(subset)
    proc = subprocess.run([sys.executable, "-m", "vqpaper.cli", "book", "--profile", "ci", "--jobs", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=BOOK_TIMEOUT_S)
    print(proc.stdout[-5000:])
    bench_path = REPO / "_build" / "bench" / "book.json"
    bench = json.loads(bench_path.read_text()) if bench_path.is_file() else {}
    return {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr, "bench": bench}


@pytest.fixture(scope="session")
def built_book(executed_book):
    """Path of the built HTML (``_build/html``, built from the staged ``_build/site``); fails with the
    build's output if it did not build."""
    html = REPO / "_build" / "html"
    if executed_book["returncode"] != 0 or not (html / "index.html").is_file():
        pytest.fail("`vqpaper book --profile ci` failed:\n" + executed_book["stdout"][-3000:]
                    + executed_book["stderr"][-3000:])
    return html


@pytest.fixture(scope="session")
def site(request) -> Path:
    """``_build/html`` of a built book for the site's checks (tests/test_browser.py, tests/test_pages.py):
    ``VQPAPER_SITE`` when set, else the session's book (``built_book``); skips when there is none."""
    override = os.environ.get("VQPAPER_SITE")
    html = Path(override).resolve() if override else Path(request.getfixturevalue("built_book"))
    if not (html / "index.html").is_file():
        pytest.skip(f"no built book: {html / 'index.html'} does not exist (build it with `vqpaper book`)")
    return html
