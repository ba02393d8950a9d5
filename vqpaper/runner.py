"""Executing the notebooks: convert (jupytext) -> execute (papermill) -> collect the outcome as data.

The data flow (SPEC §1): ``notebooks/NN_name.py`` (jupytext percent) is converted to
``_build/jupytext/NN_name.ipynb``, executed by papermill with the profile and the overrides
injected after its ``parameters`` cell, written to ``_build/executed/NN_name.ipynb`` and copied
to ``book/notebooks/`` where ``jupyter-book`` (execution off) renders it. ``vqpaper.cli`` is the
argparse layer over these functions; tests and benchmarks call them directly.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import paths

NOTEBOOK_GLOB = "[0-9][0-9]_*.py"
BOOK_NOTEBOOKS = paths.ROOT / "book" / "notebooks"  # git-ignored; listed in _toc.yml


class RunnerError(Exception):
    """A failure with a message that says what to do; the CLI prints it without a traceback."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


CLIError = RunnerError  # the name the command line and its tests use


@dataclass
class Outcome:
    """How one notebook's execution ended: data, not a log to scrape."""

    name: str
    ok: bool
    wall_time_s: float
    error: str = ""      # the cell, the exception and where the traceback is, when not ok
    log: str = ""        # path of the full output


# ---------------------------------------------------------------------- notebooks

def available_notebooks(directory: Path | None = None) -> list[Path]:
    """The book's notebooks, ``notebooks/NN_name.py``, in order."""
    return sorted((directory or paths.NOTEBOOKS).glob(NOTEBOOK_GLOB))


def resolve_notebook(name: str) -> Path:
    """A path to a percent-format ``.py``, or a book notebook's name or number ("03")."""
    path = Path(name)
    if path.suffix == ".py" and path.is_file():
        return path.resolve()
    known = available_notebooks()
    for nb in known:
        if name in (nb.stem, nb.name, nb.stem[:2]) or path.name in (nb.name, nb.stem + ".py"):
            return nb.resolve()
    listing = "\n  ".join(str(nb.relative_to(paths.ROOT)) for nb in known) or "(none found)"
    raise CLIError(f"unknown notebook {name!r}; available notebooks:\n  {listing}", code=2)


def _book_extra(module: str):
    """Import a package of the ``book`` extra, or say how to install it (no traceback)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CLIError(f"running notebooks needs {module}, part of the 'book' extra: "
                       "pip install -e '.[book]' -c constraints.txt (or `make venv`)") from None


def convert(py_path: Path, out_dir: Path | None = None) -> Path:
    """jupytext percent ``.py`` -> ``_build/jupytext/<name>.ipynb`` (kernel python3)."""
    jupytext = _book_extra("jupytext")

    out_dir = out_dir or paths.BUILD / "jupytext"
    out_dir.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(py_path, fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    if not any("parameters" in cell.metadata.get("tags", []) for cell in nb.cells):
        raise CLIError(f"{py_path.name}: no cell is tagged 'parameters' "
                       "(write it as  # %% tags=[\"parameters\"]  )")
    out = out_dir / f"{py_path.stem}.ipynb"
    jupytext.write(nb, out, fmt="ipynb")
    return out


def notebook_parameters(ipynb: Path) -> dict[str, Any]:
    """Names and defaults of the notebook's ``parameters`` cell."""
    papermill = _book_extra("papermill")

    return {name: p.get("default") for name, p in papermill.inspect_notebook(str(ipynb)).items()}


def kernel_env(extra: dict[str, str] | None = None) -> None:
    """The one place that sets the kernels' environment (a kernel inherits this process's).

    Matplotlib's backend is left to ipykernel (inline): e.g. ``MPLBACKEND=Agg`` exported for
    the tests would turn every figure in the executed notebook into text. ``vqpaper`` itself
    is installed (editable), so nothing is added to ``PYTHONPATH``.
    """
    if "inline" not in os.environ.get("MPLBACKEND", "inline"):
        del os.environ["MPLBACKEND"]
    os.environ.update(extra or {})


def execute(py_path: Path, profile: str, overrides: dict[str, Any], *,
            timeout: int | None = None, book_copy: bool | None = None,
            ignore_unknown: bool = False, progress: bool = False) -> tuple[Path, float]:
    """Convert, execute with papermill, copy to the book; returns (executed path, seconds)."""
    papermill = _book_extra("papermill")
    from papermill.exceptions import PapermillExecutionError

    name = py_path.stem
    ipynb = convert(py_path)
    declared = notebook_parameters(ipynb)
    unknown = sorted(set(overrides) - set(declared))
    if unknown and ignore_unknown:
        overrides = {k: v for k, v in overrides.items() if k in declared}
    elif unknown:
        raise CLIError(f"{name}: unknown parameter(s) {', '.join(unknown)}; "
                       f"its parameters cell declares: {', '.join(declared) or '(nothing)'}",
                       code=2)
    parameters = {"profile": profile, **overrides}
    # papermill writes while it runs; only a notebook that ran to the end becomes
    # EXECUTED/<name>.ipynb, a failed one is kept as <name>.failed.ipynb for its traceback.
    executed = paths.EXECUTED / f"{name}.ipynb"
    running = paths.EXECUTED / f"{name}.running.ipynb"
    failed = paths.EXECUTED / f"{name}.failed.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    if book_copy is None:
        book_copy = py_path.resolve().parent == paths.NOTEBOOKS.resolve()
    book_path = BOOK_NOTEBOOKS / f"{name}.ipynb"
    kernel_env({"VQPAPER_NOTEBOOK": name})
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(ipynb), str(running), parameters=parameters, kernel_name="python3",
            progress_bar=progress, cwd=str(paths.ROOT), execution_timeout=timeout,
            start_timeout=120,
        )
    except BaseException as exc:
        # never leave a stale page in the book or a stale executed notebook
        for stale in (executed, book_path if book_copy else None):
            if stale is not None:
                stale.unlink(missing_ok=True)
        if running.exists():
            os.replace(running, failed)
        if isinstance(exc, PapermillExecutionError):
            first_line = next((line for line in exc.source.splitlines() if line.strip()), "")
            raise CLIError(
                f"notebook {name} failed in cell In [{exc.exec_count}] "
                f"({first_line.strip()!r} …):\n"
                f"  {exc.ename}: {exc.evalue}\n"
                f"  full traceback in {_rel(failed)}"
            ) from None
        if isinstance(exc, Exception):  # a cell timeout, a dead kernel: still name it
            detail = str(exc).strip().splitlines()
            raise CLIError(f"notebook {name} failed: {type(exc).__name__}: "
                           f"{detail[0] if detail else ''}\n"
                           f"  partial output in {_rel(failed)}") from None
        raise  # KeyboardInterrupt
    wall = time.perf_counter() - started
    os.replace(running, executed)
    failed.unlink(missing_ok=True)
    if book_copy:
        BOOK_NOTEBOOKS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(executed, book_path)
    return executed, wall


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ------------------------------------------------------------- many notebooks at once

def _run_child(py_path: Path, profile: str, params: Sequence[Sequence[str]], timeout: int | None,
               env: dict[str, str], log_dir: Path) -> Outcome:
    """``vqpaper run`` in a subprocess (its own kernel environment), outcome read from a status file."""
    status = log_dir / f"{py_path.stem}.status.json"
    status.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "vqpaper.cli", "run", str(py_path), "--profile", profile, "--ignore-unknown",
           "--status", str(status)]
    for name, value in params or []:
        cmd += ["-p", name, value]
    if timeout:
        cmd += ["--timeout", str(timeout)]
    log = log_dir / f"{py_path.stem}.log"
    started = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=paths.ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    data = read_json(status)
    if proc.returncode == 0 and data.get("ok"):
        return Outcome(py_path.stem, True, wall, log=str(log))
    error = data.get("error") or f"exit code {proc.returncode} before any status was written; see {_rel(log)}"
    return Outcome(py_path.stem, False, wall, error, str(log))


def run_notebooks(notebooks: Iterable[Path], profile: str, params: Sequence[Sequence[str]] | None = None, *,
                  jobs: int = 2, timeout: int | None = None, env: dict[str, str] | None = None,
                  on_done=None) -> list[Outcome]:
    """Execute ``notebooks``, ``jobs`` at a time, each in its own process; ``on_done(outcome)`` as each ends."""
    log_dir = paths.BUILD / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    out = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run_child, nb, profile, params or [], timeout, env, log_dir) for nb in notebooks]
        for fut in as_completed(futures):
            outcome = fut.result()
            out.append(outcome)
            if on_done is not None:
                on_done(outcome)
    return out


def build_book() -> int:
    """``jupyter-book build . --builder html --all -W -n --keep-going`` (execution off in _config).

    ``--all``: Sphinx re-reads only pages whose source changed, but ``book/results.md`` quotes
    the notebooks through glue, so an incremental build kept the last build's numbers there
    (seen: a stale results page after re-executing the notebooks). A full build takes seconds.
    """
    script = Path(sys.executable).with_name("jupyter-book")
    launcher = [str(script)] if script.is_file() else [
        sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]
    cmd = launcher + ["build", str(paths.ROOT), "--builder", "html", "--all", "-W", "-n", "--keep-going"]
    return subprocess.run(cmd, cwd=paths.ROOT).returncode


def time_table(timings: dict[str, dict[str, Any]], execute_s: float) -> str:
    lines = [f"{'notebook':<38} {'status':<6} {'wall (s)':>9}"]
    lines.append("-" * len(lines[0]))
    for name in sorted(timings):
        t = timings[name]
        lines.append(f"{name:<38} {'ok' if t['ok'] else 'FAIL':<6} {t['wall_time_s']:9.1f}")
    lines.append(f"{'all notebooks (elapsed)':<38} {'':<6} {execute_s:9.1f}")
    return "\n".join(lines)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


