"""Executing the notebooks as data: check -> execute (papermill, a process pool) -> move into place.

The data flow (SPEC §1), every output under the build folder it is given (``VQPAPER_BUILD``):

1. :func:`prepare` converts ``notebooks/NN_name.py`` (jupytext percent) to
   ``BUILD/jupytext/NN_name.ipynb`` and checks what can be checked before a kernel starts: the
   parameter names its ``parameters`` cell declares and, for the book's notebooks, every value
   (``config.notebook_config``; ``-p`` text is parsed by ``config.parse_value``, the one parser).
2. :func:`run_notebooks` executes the prepared :class:`Job` s in a pool of worker processes,
   each running papermill with the profile and the values injected after the parameters cell.
   The kernel's output streams into ``BUILD/logs/NN_name.log`` and, read by
   :mod:`vqpaper.progress`, into one progress line per running notebook on the terminal.
   The kernel writes its results and figures into a staging folder (``VQPAPER_STAGE``,
   ``paths.STAGE``); only when every cell ran are they, and the executed notebook
   ``BUILD/executed/NN_name.ipynb``, moved into place (the notebook's stale results and figures
   removed). A failed run leaves the last good notebook, results and page as they were.
3. :func:`build_book` stages the book's source (``_config.yml`` with overrides, ``_toc.yml``,
   ``book/``) and the executed notebooks in ``BUILD/site`` and builds the HTML from there into
   ``BUILD/html``; the source tree is never written.

``vqpaper.cli`` only parses arguments and prints; tests and benchmarks call these functions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib
import json
import multiprocessing
import os
import queue as queues
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import yaml

from . import paths, progress, publish
from .errors import ConfigError
from .executors import book_instance
from .results import git_commit

NOTEBOOK_GLOB = "[0-9][0-9]_*.py"

#: Wall-clock limit of one whole notebook in seconds, per profile (``--timeout`` overrides; 0: none): it stops
#: a notebook that hangs, not a slow one. ci: a notebook takes 28-166 s cold on 2 idle cores (README), but on
#: a shared 2-core machine at load 8 the ci book measured 144-860 s per notebook (02 the longest), so each
#: limit leaves 3x that. paper: hours on one GPU (`vqpaper plan`).
TIMEOUT_S = {
    "ci": {"01_preliminaries": 900, "02_tokens_collapse_synthetic": 2700, "03_tokens_collapse_cifar10": 2400,
           "04_embeddings_collapse": 2400, "05_simvq_comparison": 2400, "06_remedies": 2400},
    "paper": {"01_preliminaries": 2 * 3600, "02_tokens_collapse_synthetic": 8 * 3600,
              "03_tokens_collapse_cifar10": 8 * 3600, "04_embeddings_collapse": 8 * 3600,
              "05_simvq_comparison": 8 * 3600, "06_remedies": 8 * 3600},
}
#: A notebook outside the table (your own): limited at ci like the book's longest, not at paper.
OTHER_TIMEOUT_S = {"ci": 2700, "paper": None}
#: Where nobody watches a live bar (a log file, CI output): a progress line at most this often per
#: notebook, besides the milestones (a new section or sweep, the first ETA, a finished sweep).
LINE_EVERY_S = 10.0
KERNEL_START_S = 120
#: A kernel that dies before it answers (before any cell ran) is started again, at most this many
#: more times. Kernels started at the same moment by separate processes can race for one TCP port
#: (jupyter_client picks free ports, then the kernel binds them: "ZMQError: Address already in
#: use"); seen when CI's four executions of notebook 02 start at once.
KERNEL_START_RETRIES = 2


class RunnerError(Exception):
    """A failure with a message that says what to do; the CLI prints it without a traceback."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class Outcome:
    """How one notebook's execution ended: data, not a log to scrape."""

    name: str
    ok: bool
    wall_time_s: float
    error: str = ""      # the cell, the exception and where the traceback is, when not ok
    log: str = ""        # path of the full output
    executed: str = ""   # path of the executed notebook, when ok


@dataclasses.dataclass(frozen=True)
class Job:
    """One notebook, checked and ready for a kernel (:func:`prepare`)."""

    name: str
    ipynb: Path                     # the converted notebook
    profile: str
    parameters: dict                # injected after the parameters cell (``profile`` aside)
    build: Path
    timeout_s: Optional[float]      # the whole notebook's wall-clock limit; None: none
    env: dict = dataclasses.field(default_factory=dict)  # added to the kernel's environment


# ---------------------------------------------------------------------- notebooks

def available_notebooks(directory: Path | None = None) -> list[Path]:
    """The book's notebooks, ``notebooks/NN_name.py``, in order."""
    return sorted((directory or paths.NOTEBOOKS).glob(NOTEBOOK_GLOB))


def resolve_notebook(name: str | Path) -> Path:
    """A path to a percent-format ``.py``, or a book notebook's name or number ("03")."""
    path = Path(name)
    if path.suffix == ".py" and path.is_file():
        return path.resolve()
    known = available_notebooks()
    for nb in known:
        if str(name) in (nb.stem, nb.name, nb.stem[:2]) or path.name in (nb.name, nb.stem + ".py"):
            return nb.resolve()
    listing = "\n  ".join(str(nb.relative_to(paths.ROOT)) for nb in known) or "(none found)"
    raise RunnerError(f"unknown notebook {str(name)!r}; available notebooks:\n  {listing}", code=2)


def notebook_stems(names: Sequence[str] | None) -> list[str] | None:
    """Notebook names as results record them: a path's stem, a book notebook's full name for "03", else as given."""
    if not names:
        return None
    stems = []
    for name in names:
        try:
            stems.append(Path(name).stem if name.endswith((".py", ".ipynb")) else resolve_notebook(name).stem)
        except RunnerError:
            stems.append(name)  # a notebook outside notebooks/ that recorded results
    return stems


def _book_extra(module: str):
    """Import a package of the ``book`` extra, or say how to install it (no traceback)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RunnerError(f"running notebooks needs {module}, part of the 'book' extra: "
                          "pip install -e '.[book]' -c constraints.txt (or `make venv`)") from None


#: The tag that keeps a cell out of the book's page (Jupyter Book): the parameters cell (papermill's
#: injected cell shows the values) and the install cell.
HIDDEN = "remove-cell"


def convert(py_path: Path, out_dir: Path) -> Path:
    """jupytext percent ``.py`` -> ``out_dir/<name>.ipynb`` (kernel python3).

    The notebook gets a first cell that installs vqpaper where it is missing (``publish.install_cell``:
    a notebook opened from a launch button on Colab), hidden from the book's page.
    """
    jupytext = _book_extra("jupytext")
    nbformat = _book_extra("nbformat")

    out_dir.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(py_path, fmt="py:percent")
    nb.cells.insert(0, nbformat.v4.new_code_cell(publish.install_cell(paths.ROOT), metadata={"tags": [HIDDEN]}))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    if not any("parameters" in cell.metadata.get("tags", []) for cell in nb.cells):
        raise RunnerError(f"{py_path.name}: no cell is tagged 'parameters' "
                          "(write it as  # %% tags=[\"parameters\"]  )")
    out = out_dir / f"{py_path.stem}.ipynb"
    jupytext.write(nb, out, fmt="ipynb")
    return out


def notebook_parameters(ipynb: Path) -> dict[str, Any]:
    """Names and defaults of the notebook's ``parameters`` cell."""
    papermill = _book_extra("papermill")

    return {name: p.get("default") for name, p in papermill.inspect_notebook(str(ipynb)).items()}


#: What each kind of parameter accepts, in words (``vqpaper run NB --help``).
ALLOWED = {"positive": "an integer >= 1", "non-negative": "an integer >= 0",
           "positive list": "a list of integers >= 1, e.g. \"[16, 256]\"",
           "seed list": "a list of integers >= 0, e.g. \"[0, 1]\"", "optional positive": "None or an integer >= 1",
           "optional path": "None or a path (.npz or torchvision folder)", "flag": "True or False",
           "device": "auto, cpu or cuda[:N]", "remedy list": "a list of recipes, e.g. \"[ema, pretrained+restart]\""}


def parameters_help(notebook: str) -> str:
    """A notebook's parameters for ``vqpaper run NB --help``: name, meaning, ci and paper values, allowed."""
    from .config import describe  # imports torch: not needed by a pool worker (see prepare)

    name = resolve_notebook(notebook).stem
    rows = describe(name)
    lines = [f"parameters of {name} (-p NAME VALUE; left out: the profile's value):"]
    for row in rows:
        kind = row["accepts"]
        lines.append(f"  {row['parameter']:<24} {row['meaning']}")
        lines.append(f"  {'':<24} ci: {row['ci']!r}   paper: {row['paper']!r}   allowed: {ALLOWED.get(kind, kind)}")
    return "\n".join(lines)


def run_help_epilog(argv: Sequence[str]) -> Optional[str]:
    """``vqpaper run NB --help``: NB's parameters (:func:`parameters_help`) when NB is one of the book's
    notebooks, else None (the plain help)."""
    if len(argv) < 2 or argv[0] != "run" or not {"-h", "--help"} & set(argv):
        return None
    names = [a for a in argv[1:] if not a.startswith("-")]
    try:
        return parameters_help(names[0]) if names else None
    except (RunnerError, KeyError):
        return None


def timeout_for(name: str, profile: str, override: Optional[float] = None) -> Optional[float]:
    """The notebook's wall-clock limit: ``override`` (0: none), else :data:`TIMEOUT_S`."""
    if override is not None:
        return float(override) if override > 0 else None
    return TIMEOUT_S.get(profile, {}).get(name, OTHER_TIMEOUT_S.get(profile))


def prepare(notebook: str | Path, profile: str = "ci", texts: Mapping[str, Any] | None = None, *,
            build: Path | None = None, timeout_s: Optional[float] = None, env: Mapping[str, str] | None = None,
            only_declared: bool = False) -> Job:
    """Check everything a kernel start is not needed for; a :class:`RunnerError` (code 2) names the problem.

    ``texts``: parameter -> value, as text (``"[16, 256]"``, parsed by ``config.parse_value``) or
    already a value. ``only_declared``: drop the parameters the notebook does not declare
    (``vqpaper book -p`` passes the same parameters to every notebook).
    """
    from . import config  # imports torch: not needed by a pool worker, which imports this module too

    if profile not in config.PROFILES:
        raise RunnerError(f"unknown profile {profile!r}; allowed: {list(config.PROFILES)}", code=2)
    py = resolve_notebook(notebook)
    build = Path(build or paths.BUILD)
    ipynb = convert(py, build / "jupytext")
    declared = notebook_parameters(ipynb)
    texts = dict(texts or {})
    for name in texts:
        if not name.isidentifier():
            raise RunnerError(f"-p {name!r}: a parameter name must be a Python identifier", code=2)
        if name == "profile":
            raise RunnerError("set the profile with --profile, not -p profile", code=2)
    unknown = sorted(set(texts) - set(declared))
    if unknown and not only_declared:
        raise RunnerError(f"{py.stem}: unknown parameter(s) {', '.join(unknown)}; "
                          f"its parameters cell declares: {', '.join(declared) or '(nothing)'}", code=2)
    try:
        values = {k: config.parse_value(v, k) if isinstance(v, str) else v
                  for k, v in texts.items() if k in declared}
        if py.stem in config.PRESETS:  # the book's notebooks: every value checked now, not in the kernel
            config.notebook_config(py.stem, profile, **values)
    except ConfigError as exc:
        raise RunnerError(f"{py.stem}: ConfigError: {exc}", code=2) from None
    return Job(py.stem, ipynb, profile, values, build, timeout_for(py.stem, profile, timeout_s), dict(env or {}))


def prepare_book(notebooks: Sequence[Path], profile: str, texts: Mapping[str, Any] | None = None,
                 **kwargs) -> list[Job]:
    """:func:`prepare` for every notebook; each ``-p`` must be declared by at least one of them."""
    if not notebooks:
        raise RunnerError(f"no notebooks match {paths.NOTEBOOKS / NOTEBOOK_GLOB}")
    jobs = [prepare(nb, profile, texts, only_declared=True, **kwargs) for nb in notebooks]
    declared: set[str] = set()
    for job in jobs:
        declared |= set(notebook_parameters(job.ipynb))
    unknown = sorted(set(texts or {}) - declared)
    if unknown:
        raise RunnerError(f"no notebook declares the parameter(s) {', '.join(unknown)}", code=2)
    return jobs


# ------------------------------------------------------------------ one notebook

def _rel(path: Path | str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _heading(markdown: str) -> str:
    """The last heading of a markdown cell ("## Train both recipes" -> "Train both recipes")."""
    titles = [line.lstrip("#").strip() for line in markdown.splitlines() if line.startswith("#")]
    return titles[-1] if titles else ""


class _KernelEnvironment:
    """The kernel inherits this process's environment: set the job's for its run, then restore it.

    Matplotlib's backend is left to ipykernel (inline): e.g. ``MPLBACKEND=Agg`` exported for the
    tests would turn every figure in the executed notebook into text. ``TQDM_MININTERVAL``: a bar
    updates at most once a second (it feeds the progress line; the notebook keeps less output).
    """

    def __init__(self, values: Mapping[str, str]):
        self.values = dict(values)
        self.saved: dict[str, Optional[str]] = {}

    def __enter__(self):
        keys = set(self.values) | {"MPLBACKEND", "TQDM_MININTERVAL"}
        self.saved = {k: os.environ.get(k) for k in keys}
        if "inline" not in os.environ.get("MPLBACKEND", "inline"):
            del os.environ["MPLBACKEND"]
        os.environ.setdefault("TQDM_MININTERVAL", "1")
        os.environ.update(self.values)
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        return False


def execute(job: Job, report: Callable[[progress.State, bool], None] | None = None,
            every_s: float = LINE_EVERY_S) -> Outcome:
    """Execute ``job`` in this process's kernel; its outputs move into place only if every cell ran.

    ``report(state, milestone)`` receives each progress change (the pool sends it to the
    terminal); the log ``BUILD/logs/<name>.log`` receives the kernel's output and the progress
    lines as they happen (milestones, else at most every ``every_s`` seconds).
    """
    papermill = _book_extra("papermill")

    name, build = job.name, job.build
    executed_dir, stage = build / "executed", build / "staging" / name
    running, failed = executed_dir / f"{name}.running.ipynb", executed_dir / f"{name}.failed.ipynb"
    log_path = build / "logs" / f"{name}.log"
    for folder in (executed_dir, log_path.parent):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)

    state, throttle = progress.State(name), progress.Throttle(every_s)
    log_path.write_text("")
    log = log_path.open("a", buffering=1)  # appending: the kernel may write to the same file (_work)

    def on_state(st: progress.State, milestone: bool) -> None:
        if throttle(name, milestone):
            log.write(progress.line(st) + "\n")
        if report is not None:
            report(st, milestone)

    output = progress.KernelOutput(state, lambda text: log.write(text + "\n"), on_state)
    deadline = None if job.timeout_s is None else time.time() + job.timeout_s

    limit = f"{job.timeout_s:.0f} s" if job.timeout_s else "none"
    given = job.parameters or "(the profile's)"
    log.write(f"{name}: profile {job.profile}, parameters {given}, limit {limit}\n")
    kernel_env = {"VQPAPER_BUILD": str(build), "VQPAPER_STAGE": str(stage), "VQPAPER_NOTEBOOK": name,
                  **job.env}
    started = time.perf_counter()
    cells_started = []

    def on_cell_start(cell, cell_index):  # counts the cells run, and names the section
        cells_started.append(cell_index)
        if cell.cell_type == "markdown":
            output.section(_heading(cell.source))

    try:
        with _KernelEnvironment(kernel_env):
            for attempt in range(KERNEL_START_RETRIES + 1):
                try:
                    papermill.execute_notebook(
                        str(job.ipynb), str(running), parameters={"profile": job.profile, **job.parameters},
                        kernel_name="python3", progress_bar=False, cwd=str(paths.ROOT),
                        start_timeout=KERNEL_START_S, stdout_file=output, stderr_file=output,
                        on_cell_start=on_cell_start,
                        # the whole notebook's limit: each cell may take what is left of it
                        timeout_func=None if deadline is None else (lambda cell: max(1, int(deadline - time.time()))),
                    )
                    break
                except RuntimeError as exc:
                    if cells_started or attempt == KERNEL_START_RETRIES or "kernel" not in str(exc).lower():
                        raise
                    log.write(f"the kernel died before it started ({exc}); starting it again "
                              f"({attempt + 1} of {KERNEL_START_RETRIES})\n")
                    time.sleep(1.0 + attempt)
    except BaseException as exc:
        wall = time.perf_counter() - started
        output.close()
        _remove_stage(stage)
        if running.exists():
            os.replace(running, failed)
        if not isinstance(exc, Exception):
            log.close()
            raise  # KeyboardInterrupt
        error = _describe_failure(name, exc, failed, job.timeout_s)
        for text in getattr(exc, "traceback", None) or []:  # the cell's traceback, for the log's reader
            log.write(progress.ANSI.sub("", text) + "\n")
        log.write(f"FAILED after {wall:.1f} s: {error}\n")
        log.close()
        return Outcome(name, False, wall, error, str(log_path))
    wall = time.perf_counter() - started
    output.close()
    _move_into_place(name, build, stage, running)
    failed.unlink(missing_ok=True)
    log.write(f"ok in {wall:.1f} s\n")
    log.close()
    return Outcome(name, True, wall, log=str(log_path), executed=str(executed_dir / f"{name}.ipynb"))


def _describe_failure(name: str, exc: Exception, failed: Path, timeout_s: Optional[float]) -> str:
    from papermill.exceptions import PapermillExecutionError  # the book extra: present once execute ran

    if isinstance(exc, PapermillExecutionError):
        first_line = next((line for line in exc.source.splitlines() if line.strip()), "")
        return (f"notebook {name} failed in cell In [{exc.exec_count}] ({first_line.strip()!r} …):\n"
                f"  {exc.ename}: {exc.evalue}\n  full traceback in {_rel(failed)}")
    if isinstance(exc, TimeoutError) and timeout_s:
        return (f"notebook {name} stopped: it ran longer than its limit of {timeout_s:.0f} s "
                f"(runner.TIMEOUT_S; --timeout SECONDS, 0 for none)\n  partial output in {_rel(failed)}")
    detail = str(exc).strip().splitlines()
    return (f"notebook {name} failed: {type(exc).__name__}: {detail[0] if detail else ''}\n"
            f"  partial output in {_rel(failed)}")


def _move_into_place(name: str, build: Path, stage: Path, running: Path) -> None:
    """The run succeeded: its results and figures replace the notebook's previous ones, then its page.

    Stale files go: those the notebook's previous run wrote (``executed/<name>.outputs.json``)
    and any result recorded under its name that this run did not write again.
    """
    manifest = build / "executed" / f"{name}.outputs.json"
    previous = read_json(manifest).get("files", [])
    new = {}
    for kind in ("results", "figures"):
        for path in sorted((stage / kind).glob("*")) if (stage / kind).is_dir() else []:
            if path.is_file() and not path.name.startswith("."):
                new[f"{kind}/{path.name}"] = path
    stale = {rel for rel in previous if rel not in new}
    for path in (build / "results").glob("*.json"):
        if f"results/{path.name}" not in new and read_json(path).get("notebook") == name:
            stale.add(f"results/{path.name}")
    for rel in sorted(stale):
        (build / rel).unlink(missing_ok=True)
    for rel, path in new.items():
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, build / rel)
    os.replace(running, build / "executed" / f"{name}.ipynb")
    write_json(manifest, {"notebook": name, "files": sorted(new)})
    _remove_stage(stage)


def _remove_stage(stage: Path) -> None:
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.parent.rmdir()  # BUILD/staging, when no other notebook is running
    except OSError:
        pass


# ------------------------------------------------------------- many notebooks at once

@contextlib.contextmanager
def executor_environment(name: Optional[str] = None, address: Optional[str] = None, *, cpus_per_run=None,
                         gpus_per_run=None, precision: Optional[str] = None):
    """The environment that carries the executor and precision to every kernel; with Ray and no cluster,
    one local instance for all the notebooks, stopped at the end (``executors.book_instance``)."""
    with contextlib.ExitStack() as stack:
        try:
            env = dict(stack.enter_context(book_instance(name, address, cpus_per_run=cpus_per_run,
                                                         gpus_per_run=gpus_per_run)))
        except ConfigError as exc:
            raise RunnerError(str(exc), code=2) from None
        yield {**env, **({"VQPAPER_PRECISION": precision} if precision else {})}


_WORKER: dict = {}  # a pool worker's channel to the parent's display, and its line interval (_init_worker)


def _init_worker(channel, every_s: float) -> None:
    _WORKER.update(channel=channel, every_s=every_s)


def _work(job: Job) -> Outcome:
    """A pool worker's task: ``execute`` with this process's and the kernel's output in the log."""
    log_path = job.build / "logs" / f"{job.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)  # the kernel inherits these: its own warnings land in the log, not on the terminal
    os.dup2(fd, 2)
    os.close(fd)
    try:
        channel = _WORKER.get("channel")
        report = None if channel is None else (lambda state, milestone: channel.put((state, milestone)))
        return execute(job, report, _WORKER.get("every_s", LINE_EVERY_S))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def previous_times(build: Path | None = None, profile: Optional[str] = None) -> dict:
    """``{notebook: seconds}`` of the last book built in ``build`` (empty before the first), of the
    notebooks that ran through; with ``profile``, only if that book was of this profile."""
    book = read_json((build or paths.BUILD) / "bench" / "book.json")
    if profile is not None and book.get("profile") != profile:
        return {}
    return {name: float(t["wall_time_s"]) for name, t in book.get("notebooks", {}).items()
            if t.get("ok") and t.get("wall_time_s")}


def _order(jobs: Sequence[Job], priority: Mapping[str, float] | None = None) -> list[Job]:
    """Highest ``priority`` first (``vqpaper book``: plan.book_priority); without one, longest
    first by the last book's timings, so that the workers stay busy to the end."""
    if not jobs:
        return []
    if priority is None:
        priority = previous_times(jobs[0].build)
    return sorted(jobs, key=lambda j: -float(priority.get(j.name) or 0.0))


def _ready(pending: Sequence[Job], after: Mapping[str, set], ended: set, free: int) -> list[Job]:
    """The next jobs to start, at most ``free``, in ``pending``'s order: those whose notebooks in
    ``after[name]`` have all ended (ok or not: a failed one leaves its runs to be trained again)."""
    return [job for job in pending if set(after.get(job.name, ())) <= ended][:max(0, free)]


def run_notebooks(jobs: Sequence[Job], *, workers: int = 2, on_done: Callable[[Outcome], None] | None = None,
                  out=None, live: Optional[bool] = None, every_s: float = LINE_EVERY_S,
                  show_errors: bool = True, priority: Mapping[str, float] | None = None,
                  after: Mapping[str, set] | None = None) -> list[Outcome]:
    """Execute ``jobs``, ``workers`` at a time, each in a worker process (spawned) with its own kernel.

    They start in the order of ``priority`` (see :func:`_order`); a job named in ``after`` starts
    only once the notebooks listed for it have ended (``vqpaper book``: those whose runs it reuses
    from the cache, plan.book_dependencies), so that it reads their runs instead of training them
    a second time beside them.

    While they run, ``out`` (default stdout) shows one progress line per running notebook: a tqdm
    line each on a terminal (``live``), else (and in each notebook's log) a line at each milestone
    and at most every ``every_s`` seconds. ``on_done(outcome)`` is called as each notebook ends; its ``ok``/``FAIL``
    line shows the error too with ``show_errors``.
    """
    out = out or sys.stdout
    live = out.isatty() if live is None else live
    display = progress.Display(out, live, every_s)
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter per worker: no inherited threads or state
    channel = ctx.Queue()
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            try:
                state, milestone = channel.get(timeout=1.0)
            except queues.Empty:
                display.tick()
                continue
            display.update(state, milestone)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    outcomes = []
    others = set(multiprocessing.active_children())  # a caller's own children: not ours to stop
    slots = max(1, min(workers, len(jobs)))
    pool = ProcessPoolExecutor(max_workers=slots, mp_context=ctx, initializer=_init_worker,
                               initargs=(channel, every_s))
    names = {job.name for job in jobs}
    waits = {name: set(before) & names - {name} for name, before in (after or {}).items()}
    pending, running, ended = _order(jobs, priority), {}, set()
    try:
        while pending or running:
            # nothing running and nothing ready can only be a cycle in ``after``: then the first one starts
            starting = _ready(pending, waits, ended, slots - len(running)) or ([] if running else pending[:1])
            for job in starting:
                pending.remove(job)
                running[pool.submit(_work, job)] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # a worker that died (killed, out of memory): still an outcome
                    outcome = Outcome(job.name, False, 0.0, f"notebook {job.name}: its worker process ended: "
                                      f"{type(exc).__name__}: {exc}", str(job.build / "logs" / f"{job.name}.log"))
                display.done(outcome.name, outcome.ok, outcome.wall_time_s, outcome.error if show_errors else "")
                outcomes.append(outcome)
                ended.add(job.name)
                if on_done is not None:
                    on_done(outcome)
    except BaseException:
        # interrupted (Ctrl-C, or SIGTERM via cli): the running notebooks stop too. A worker would
        # otherwise finish its notebook first (shutdown waits for it), or outlive a killed parent;
        # its kernel exits with it (ipykernel watches its parent).
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in set(multiprocessing.active_children()) - others:  # the pool's workers
            worker.terminate()
        raise
    finally:
        pool.shutdown(wait=True)
        stop.set()
        listener.join()
        display.close()
    return outcomes


# --------------------------------------------------------------------------- the book

def book_notebooks() -> list[str]:
    """The executed notebooks ``_toc.yml`` lists (``book/notebooks/NN_name``), in order."""
    toc = yaml.safe_load((paths.ROOT / "_toc.yml").read_text())
    files = [entry["file"] for entry in toc.get("chapters", []) if "file" in entry]
    return [Path(f).name for f in files if f.startswith("book/notebooks/")]


def stage_site(build: Path | None = None, config_overrides: Mapping | None = None) -> Path:
    """``BUILD/site``: the book's source and its executed notebooks, ready for jupyter-book.

    ``_config.yml`` is written with ``config_overrides`` deep-merged into it (e.g. a repository
    URL and launch buttons); the local Sphinx extension is loaded from this checkout.
    """
    build = Path(build or paths.BUILD)
    names = book_notebooks()
    missing = [n for n in names if not (build / "executed" / f"{n}.ipynb").is_file()]
    if missing:
        raise RunnerError(f"no executed notebook in {_rel(build / 'executed')} for: {', '.join(missing)}; "
                          "execute them first (`vqpaper book`, or `vqpaper run NN`)")
    site = build / "site"
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(paths.ROOT / "book", site / "book",
                    ignore=shutil.ignore_patterns("notebooks", "__pycache__", ".ipynb_checkpoints"))
    shutil.copyfile(paths.ROOT / "_toc.yml", site / "_toc.yml")
    cfg = yaml.safe_load((paths.ROOT / "_config.yml").read_text())
    cfg = publish.merge_config(cfg, {"sphinx": {"local_extensions": {"vqpaper.sphinxext": str(paths.ROOT)}}})
    cfg = publish.merge_config(cfg, dict(config_overrides or {}))
    (site / "_config.yml").write_text("# staged by vqpaper.runner.stage_site from the checkout's _config.yml\n"
                                      + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    (site / "book" / "notebooks").mkdir()
    for n in names:
        shutil.copyfile(build / "executed" / f"{n}.ipynb", site / "book" / "notebooks" / f"{n}.ipynb")
    return site


def build_book(build: Path | None = None, config_overrides: Mapping | None = None) -> int:
    """Stage the site and run ``jupyter-book build --all -W -n --keep-going``; the HTML goes to ``BUILD/html``.

    ``--all``: Sphinx re-reads only pages whose source changed, but ``book/results.md`` quotes
    the notebooks through glue, so an incremental build kept the last build's numbers there.
    The previous ``BUILD/html`` is replaced only by a build that succeeded. Returns the exit status.
    """
    build = Path(build or paths.BUILD)
    site = stage_site(build, config_overrides)
    script = Path(sys.executable).with_name("jupyter-book")
    launcher = [str(script)] if script.is_file() else [
        sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]
    env = dict(os.environ, VQPAPER_BUILD=str(build))  # the provenance directive reads BUILD/results
    env.pop("VQPAPER_STAGE", None)
    cmd = launcher + ["build", str(site), "--builder", "html", "--all", "-W", "-n", "--keep-going"]
    code = subprocess.run(cmd, cwd=site, env=env).returncode
    if code == 0:
        html, old = build / "html", build / "html.old"
        shutil.rmtree(old, ignore_errors=True)
        if html.exists():
            os.replace(html, old)
        os.replace(site / "_build" / "html", html)
        shutil.rmtree(old, ignore_errors=True)
    return code


# ---------------------------------------------------------------------- timings

@dataclasses.dataclass
class BookTimings:
    """What ``vqpaper book`` measured; ``BUILD/bench/book.json`` (read by benchmarks/book.py and :func:`_order`)."""

    profile: str
    jobs: int
    threads: int
    outcomes: list
    execute_s: float

    def write(self, build: Path, book_build_s: float | None = None, total_s: float | None = None,
              book_ok: bool | None = None) -> Path:
        path = Path(build) / "bench" / "book.json"
        notebooks = {o.name: {"wall_time_s": round(o.wall_time_s, 2), "ok": o.ok} for o in self.outcomes}
        data = {"profile": self.profile, "jobs": self.jobs, "threads": self.threads, "commit": git_commit(),
                "cpu_count": os.cpu_count(),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                # --skip-execute: the notebook times of the run that executed them
                "notebooks": notebooks or read_json(path).get("notebooks", {}),
                "execute_s": round(self.execute_s, 2),
                "book_build_s": None if book_build_s is None else round(book_build_s, 2),
                "total_s": None if total_s is None else round(total_s, 2)}
        if book_ok is not None:
            data["book_ok"] = book_ok
        write_json(path, data)
        return path


def time_table(outcomes: Iterable[Outcome], execute_s: float) -> str:
    lines = [f"{'notebook':<38} {'status':<6} {'wall (s)':>9}"]
    lines.append("-" * len(lines[0]))
    for o in sorted(outcomes, key=lambda o: o.name):
        lines.append(f"{o.name:<38} {'ok' if o.ok else 'FAIL':<6} {o.wall_time_s:9.1f}")
    lines.append(f"{'all notebooks (elapsed)':<38} {'':<6} {execute_s:9.1f}")
    return "\n".join(lines)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
