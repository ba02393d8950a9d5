"""Shared pytest fixtures."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def random_cifar(n_train: int, n_test: int, seed: int = 0):
    """Random CIFAR-shaped images (uint8 NHWC) with cycling labels: for tests of the machinery."""
    import numpy as np

    from vqpaper.data import CifarData

    rng = np.random.default_rng(seed)
    return CifarData(rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8), np.arange(n_train) % 10,
                     rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), np.arange(n_test) % 10,
                     source="test", description="random test images", is_full=False)


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


# The book's execution is most of CI's time and runs two notebooks at a time; the other tests run one
# process at a time. So the book starts in the background as soon as the tests are collected, and the
# tests that read it go last: the others run meanwhile, on the core the book leaves idle whenever
# only one notebook is left (03, the longest, ends alone). Tests that must see no other process
# write the default build folder (marker ``after_book``) run after the book's tests.
BOOK_FIXTURES = {"executed_book", "built_book", "reruns_of_02"}
_BOOK: dict = {}   # "proc", "out", "err": the background `vqpaper book`, once started


def _needs_book(item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    return bool(names & BOOK_FIXTURES) or ("site" in names and not os.environ.get("VQPAPER_SITE"))


def _book_env() -> dict:
    env = dict(os.environ)
    if not env.get("VQPAPER_CIFAR10"):
        subset = REPO.parent / "shared" / "data" / "cifar10-subset.npz"
        if subset.is_file():
            env["VQPAPER_CIFAR10"] = str(subset)
    return env


def _start_book() -> None:
    import tempfile

    _BOOK["out"], _BOOK["err"] = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    _BOOK["proc"] = subprocess.Popen([sys.executable, "-m", "vqpaper.cli", "book", "--profile", "ci", "--jobs", "2"],
                                     cwd=REPO, env=_book_env(), stdout=_BOOK["out"], stderr=_BOOK["err"], text=True,
                                     start_new_session=True)  # its own process group: _kill_book stops its workers too


def _kill_book() -> None:
    """Stop the background book with its notebook workers and their kernels (its process group)."""
    import signal

    proc = _BOOK["proc"]
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _wait_for_book() -> tuple:
    """(returncode, stdout, stderr) of the background book; kills it after BOOK_TIMEOUT_S of waiting."""
    proc = _BOOK["proc"]
    try:
        proc.wait(timeout=BOOK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_book()
    _BOOK["out"].seek(0)
    _BOOK["err"].seek(0)
    return proc.returncode, _BOOK["out"].read(), _BOOK["err"].read()


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected: `make test-fast` starts no book
def pytest_collection_modifyitems(session, config, items):
    """The tests that read the book last (then those marked ``after_book``); the book starts now."""
    items.sort(key=lambda item: 1 if _needs_book(item) else 2 if item.get_closest_marker("after_book") else 0)
    if any(map(_needs_book, items)) and not config.option.collectonly and _cifar_available():
        _start_book()


@pytest.fixture
def no_book_running():
    """Waits for the background book, if one runs: for a test that checks what it wrote itself."""
    if "proc" in _BOOK:
        _BOOK["proc"].wait(timeout=BOOK_TIMEOUT_S)


def pytest_unconfigure(config):
    proc = _BOOK.get("proc")
    if proc is not None and proc.poll() is None:  # the session stopped early (-x, Ctrl-C)
        _kill_book()


@pytest.fixture(scope="session")
def executed_book():
    """Execute every notebook at the ci profile and build the HTML, once per test session.

    The notebook, regression, determinism, site and browser tests all reuse this one run
    (``vqpaper book --profile ci``, its output captured as CI sees it: no terminal), so nothing
    is executed twice. It writes ``_build/executed``, ``results``, ``logs``, ``site`` and ``html``.
    Started in the background when the tests were collected (see above), else now.
    """
    if not _cifar_available():
        pytest.skip(f"{NO_CIFAR} data: set VQPAPER_CIFAR10 to an .npz or torchvision folder "
                    "(CI points it at ../shared/data/cifar10-subset.npz), or allow the download")
    if "proc" not in _BOOK:
        _start_book()
    returncode, stdout, stderr = _wait_for_book()
    print(stdout[-5000:])
    bench_path = REPO / "_build" / "bench" / "book.json"
    bench = json.loads(bench_path.read_text()) if bench_path.is_file() else {}
    return {"returncode": returncode, "stdout": stdout, "stderr": stderr, "bench": bench}


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


# ------------------------------------------------------------------ notebook 02 re-executed, four times at once
#: CI's share of benchmarks/sensitivity.py, on notebook 02 (the cheapest notebook that shows them).
#: Not chosen: decay (too close to the edge to stay caught) and threads2 (bit-identical numbers on
#: 02: a vacuous pass). Measured moves: see the closing note of issue 20 and tests/test_sensitivity.py.
CI_CHANGES = ("beta", "laplace")
CI_ENV = "default-kernels"
RERUN = "02_tokens_collapse_synthetic"


def execute_02(build, **env):
    """Start an uncached execution of notebook 02 at ``ci`` into ``build`` (a subprocess), one torch
    thread per run unless ``env`` sets ``VQPAPER_THREADS``."""
    env = {**os.environ, "VQPAPER_BUILD": str(build), "VQPAPER_NO_CACHE": "1", **env}
    if not env.get("VQPAPER_THREADS"):
        env.pop("VQPAPER_THREADS", None)  # the default: one thread per run
    code = ("import sys; from vqpaper import runner; "
            f"outcome = runner.execute(runner.prepare('{RERUN}', 'ci')); "
            "sys.exit(print(outcome.error) or 1) if not outcome.ok else None")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="session")
def reruns_of_02(executed_book, tmp_path_factory):
    """Four uncached executions of notebook 02 at once on the machine's cores (one torch thread each):
    the sensitivity suite's two deliberate changes and one environment change
    (``benchmarks/sensitivity.py``, three at a time), and beside them an unchanged re-execution in the
    session's environment, which the other three keep under load.

    tests/test_notebooks.py compares the unchanged one bit for bit with the session's book (determinism
    under load); tests/test_sensitivity.py reads the suite's table. One batch instead of two saves a
    whole execution of 02 on CI's two cores.
    """
    assert executed_book["returncode"] == 0, "the book did not build; see test_book_builds…"
    root = tmp_path_factory.mktemp("reruns")
    suite = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "sensitivity.py"), "--changes", ",".join(CI_CHANGES),
         "--envs", CI_ENV, "--notebooks", RERUN[:2], "--jobs", "3", "--root", str(root / "sensitivity"),
         "--json", str(root / "outcomes.json")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    same = execute_02(root / "same")
    try:
        same_log, _ = same.communicate(timeout=2400)
        suite_log, _ = suite.communicate(timeout=3600)
    finally:
        for proc in (same, suite):
            if proc.poll() is None:
                proc.kill()
    outcomes = root / "outcomes.json"
    return {"same": {"results": root / "same" / "results", "returncode": same.returncode, "log": same_log},
            "suite": {"returncode": suite.returncode, "log": suite_log,
                      "outcomes": json.loads(outcomes.read_text()) if outcomes.is_file() else []}}
