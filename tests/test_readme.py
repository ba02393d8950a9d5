"""README's re-run commands, run as README writes them (issue 22): they find the data `make` uses,
write only under the build folder they are given, and a failed re-run leaves the last good notebook
and its results as they were.

The commands are read from README.md's "Re-running a notebook" block, so this test follows README.
They run after the session's book (fixture ``executed_book``) with its run cache, so the re-run of
03 reads its trained runs instead of training them again; its build folder is a temporary one.
"""
import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from conftest import REPO
from vqpaper import paths

pytestmark = pytest.mark.notebooks
SECTION = "## Re-running a notebook with your own parameters"
VQPAPER = [sys.executable, "-m", "vqpaper.cli"]  # what the console script runs
PROGRAMS = {".venv/bin/vqpaper": VQPAPER, "vqpaper": VQPAPER}
NB03 = "03_tokens_collapse_cifar10"


def readme_commands() -> list[list[str]]:
    """The vqpaper commands of README's re-running block, split as a shell would."""
    text = (REPO / "README.md").read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    block = text.split(SECTION, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [c for c in commands if c and c[0] in PROGRAMS]


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def run(argv, build, timeout=900):
    """A README command as written, with no VQPAPER_CIFAR10 (as in a fresh shell) and the session's run cache."""
    env = {k: v for k, v in os.environ.items() if k != "VQPAPER_CIFAR10"}
    env.update(VQPAPER_BUILD=str(build), VQPAPER_CACHE=str(paths.CACHE))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    proc = subprocess.run(PROGRAMS[argv[0]] + argv[1:], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.perf_counter() - started


def _outputs(build):
    """The executed notebook 03 and every file of its results, as bytes."""
    files = [build / "executed" / f"{NB03}.ipynb"]
    files += [p for p in sorted((build / "results").glob("*.json")) if json.loads(p.read_text())["notebook"] == NB03]
    return {p: p.read_bytes() for p in files}


def test_readme_lists_the_commands_this_test_runs():
    commands = readme_commands()
    assert any(c[1] == "run" and NB03 in c[2] for c in commands), commands


def test_readme_rerun_of_03_works_as_written_and_a_failed_rerun_changes_nothing(executed_book, tmp_path):
    [command] = [c for c in readme_commands() if c[1] == "run" and NB03 in c[2]]
    default = REPO / "_build"
    default_before = {p: p.stat().st_mtime_ns for p in default.glob("*/*")
                      if p.parent.name in ("executed", "results", "html")}
    build = tmp_path / "build"
    proc, _ = run(command, build)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    good = _outputs(build)
    sizes = [json.loads(b)["params"].get("codebook_sizes") for p, b in good.items() if p.suffix == ".json"]
    assert len(good) > 1 and all(s == json.loads(command[command.index("codebook_sizes") + 1]) for s in sizes), sizes

    # the same notebook again, failing in its kernel (no data at that path): everything stays
    proc, _ = run(command + ["-p", "cifar10", str(tmp_path / "missing.npz")], build)
    assert proc.returncode == 1 and "DataNotFoundError" in proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _outputs(build) == good, "a failed re-run changed the last good notebook or its results"
    # and with a value config refuses: before any kernel starts
    proc, wall = run(command[:2] + [NB03, "-p", "codebook_sizes", "[16, -1]"], build)
    assert proc.returncode == 2 and "ConfigError" in proc.stderr and "codebook_sizes" in proc.stderr, proc.stderr
    assert _outputs(build) == good
    assert not (build / "staging").exists()

    after = {p: p.stat().st_mtime_ns for p in default.glob("*/*") if p.parent.name in ("executed", "results", "html")}
    assert after == default_before, "a run into another build folder changed the default one"
    assert not (REPO / "book" / "notebooks").exists(), "a run wrote into the source tree"


def test_readme_gpu_command_fails_at_once_without_a_gpu(tmp_path):
    """README's paper-profile command asks for CUDA: without a GPU it stops before any kernel, naming the device."""
    commands = [c for c in readme_commands() if c[1] == "run" and "cuda" in c]
    assert commands, "README's re-running block has no GPU example"
    if _gpu():
        pytest.skip("a GPU is here: the paper-profile command would run for hours")
    for command in commands:
        proc, wall = run(command, tmp_path / "build", timeout=120)
        assert proc.returncode == 2 and "device" in proc.stderr and "no CUDA GPU" in proc.stderr, proc.stderr
        assert not (tmp_path / "build" / "logs").exists(), "a kernel was started"
