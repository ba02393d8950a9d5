"""Shared pytest fixtures."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cifar_subset_path():
    """The real CIFAR-10 subset shared next to the repository (skips when absent)."""
    path = REPO.parent / "shared" / "data" / "cifar10-subset.npz"
    if not path.is_file():
        pytest.skip(f"real CIFAR-10 subset not found at {path}")
    return path


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
    return (REPO.parent / "shared" / "data" / "cifar10-subset.npz").is_file() or (REPO / "data" / "cifar10").is_dir()


@pytest.fixture(scope="session")
def executed_book():
    """Execute every notebook at the ci profile and build the HTML, once per test session.

    The notebook, regression, determinism, site and browser tests all reuse this one run
    (``vqpaper book --profile ci``), so nothing is executed twice.
    """
    if not _cifar_available():
        pytest.skip("no CIFAR-10 data: set VQPAPER_CIFAR10 to an .npz or torchvision folder "
                    "(CI points it at ../shared/data/cifar10-subset.npz)")
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
    """Path of the built HTML (``_build/html``); fails with the build's output if it did not build."""
    html = REPO / "_build" / "html"
    if executed_book["returncode"] != 0 or not (html / "index.html").is_file():
        pytest.fail("`vqpaper book --profile ci` failed:\n" + executed_book["stdout"][-3000:]
                    + executed_book["stderr"][-3000:])
    return html
