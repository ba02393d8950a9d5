"""Command line: run the notebooks, build the book, check numbers against references.

    vqpaper run notebooks/03_tokens_collapse_cifar10.py -p codebook_sizes "[16, 256]"
    vqpaper book --profile ci            # every notebook, then the HTML book
    vqpaper check --profile ci           # recorded numbers vs tests/references/ci
    vqpaper references --accept          # refresh the references on purpose
    vqpaper clean-cache

The data flow (SPEC §1): ``notebooks/NN_name.py`` (jupytext percent) is converted to
``_build/jupytext/NN_name.ipynb``, executed by papermill with the profile and the
overrides injected after its ``parameters`` cell, written to
``_build/executed/NN_name.ipynb`` and copied to ``book/notebooks/`` where
``jupyter-book`` (execution off) renders it.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Sequence

from . import paths

PROFILES = ("ci", "paper")
NOTEBOOK_GLOB = "[0-9][0-9]_*.py"
BOOK_NOTEBOOKS = paths.ROOT / "book" / "notebooks"  # git-ignored; listed in _toc.yml


class CLIError(Exception):
    """A failure with a message that says what to do; printed without a traceback."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


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


def parse_value(text: str) -> Any:
    """A ``-p`` value: a Python literal (``3``, ``0.5``, ``[0, 1, 2]``, ``True``), a
    YAML/JSON list or mapping (``[ema, simvq]``), ``true``/``false``/``null``, or else
    the string itself (``cpu``)."""
    stripped = text.strip()
    lowered = {"true": True, "false": False, "null": None, "none": None}
    if stripped in lowered:
        return lowered[stripped]
    try:
        value = ast.literal_eval(stripped)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if stripped[:1] not in ("[", "{"):
            return text
        import yaml

        try:
            value = yaml.safe_load(stripped)
        except yaml.YAMLError as exc:
            raise CLIError(f"cannot parse the value {text!r}: {exc}", code=2) from None
    return _plain_literal(value, text)


def _plain_literal(value: Any, text: str) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain_literal(v, text) for v in value]
    if isinstance(value, dict):
        return {k: _plain_literal(v, text) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CLIError(f"the value {text!r} is a {type(value).__name__}; use numbers, "
                   "strings, booleans, None, lists or dicts", code=2)


def parse_overrides(pairs: Sequence[Sequence[str]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs or []:
        if not name.isidentifier():
            raise CLIError(f"-p {name!r}: a parameter name must be a Python identifier", code=2)
        if name == "profile":
            raise CLIError("set the profile with --profile, not -p profile", code=2)
        out[name] = parse_value(value)
    return out


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


def _kernel_env(extra: dict[str, str] | None = None) -> None:
    """The kernel inherits this process's environment: make ``import vqpaper`` work, and
    leave matplotlib's backend to ipykernel (inline), since e.g. ``MPLBACKEND=Agg``
    exported for the tests would turn every figure in the executed notebook into text."""
    pythonpath = os.environ.get("PYTHONPATH", "")
    if str(paths.ROOT) not in pythonpath.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(paths.ROOT), pythonpath) if p)
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
    _kernel_env({"VQPAPER_NOTEBOOK": name})
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


# ------------------------------------------------------------------------ commands

def cmd_run(args: argparse.Namespace) -> int:
    py_path = resolve_notebook(args.notebook)
    overrides = parse_overrides(args.param)
    executed, wall = execute(py_path, args.profile, overrides, timeout=args.timeout,
                             ignore_unknown=args.ignore_unknown,
                             progress=sys.stderr.isatty())
    print(f"{py_path.stem}: {wall:.1f} s (profile {args.profile}) -> {_rel(executed)}")
    return 0


def _run_one(py_path: Path, args: argparse.Namespace, env: dict[str, str], log_dir: Path
             ) -> tuple[str, bool, float, str]:
    cmd = [sys.executable, "-m", "vqpaper.cli", "run", str(py_path), "--profile", args.profile,
           "--ignore-unknown"]
    for name, value in args.param or []:
        cmd += ["-p", name, value]
    if args.timeout:
        cmd += ["--timeout", str(args.timeout)]
    log = log_dir / f"{py_path.stem}.log"
    started = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=paths.ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    message = ""
    if proc.returncode != 0:
        # the run command's own message names the cell and the error; skip kernel noise
        lines = log.read_text().strip().splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("vqpaper run: error:")]
        message = "\n".join(lines[starts[-1]:] if starts else lines[-4:])
    return py_path.stem, proc.returncode == 0, wall, message


def cmd_book(args: argparse.Namespace) -> int:
    from .results import git_commit

    notebooks = available_notebooks()
    if not notebooks:
        raise CLIError(f"no notebooks match {paths.NOTEBOOKS / NOTEBOOK_GLOB}")
    bench_path = paths.BUILD / "bench" / "book.json"
    total_started = time.perf_counter()
    timings: dict[str, dict[str, Any]] = {}
    from .config import DEFAULT_THREADS
    threads = os.environ.get("VQPAPER_THREADS") or str(DEFAULT_THREADS)  # per notebook, fixed
    execute_s = 0.0
    if not args.skip_execute:
        overrides = parse_overrides(args.param)
        if overrides:  # every override must mean something to at least one notebook
            declared: set[str] = set()
            for nb in notebooks:
                declared |= set(notebook_parameters(convert(nb)))
            unknown = sorted(set(overrides) - declared)
            if unknown:
                raise CLIError(f"no notebook declares the parameter(s) {', '.join(unknown)}",
                               code=2)
        # longest first (from the last run) keeps both workers busy
        previous = _read_json(bench_path).get("notebooks", {})
        order = sorted(notebooks, key=lambda nb: -float(
            previous.get(nb.stem, {}).get("wall_time_s") or 0.0))
        env = dict(os.environ, VQPAPER_THREADS=threads)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(paths.ROOT), env.get("PYTHONPATH", "")) if p)
        log_dir = paths.BUILD / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        print(f"executing {len(notebooks)} notebooks, profile {args.profile}, "
              f"{args.jobs} at a time, VQPAPER_THREADS={threads}; logs in {_rel(log_dir)}",
              flush=True)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(_run_one, nb, args, env, log_dir) for nb in order]
            for fut in as_completed(futures):
                name, ok, wall, message = fut.result()
                timings[name] = {"wall_time_s": round(wall, 2), "ok": ok}
                print(f"  {'ok  ' if ok else 'FAIL'}  {name:<36} {wall:8.1f} s", flush=True)
                if not ok:
                    print("        " + message.replace("\n", "\n        "), flush=True)
        execute_s = time.perf_counter() - started
        print(_time_table(timings, execute_s))
    else:
        missing = [nb.stem for nb in notebooks if not (BOOK_NOTEBOOKS / f"{nb.stem}.ipynb").is_file()]
        for name in list(missing):
            if (paths.EXECUTED / f"{name}.ipynb").is_file():
                BOOK_NOTEBOOKS.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(paths.EXECUTED / f"{name}.ipynb", BOOK_NOTEBOOKS / f"{name}.ipynb")
                missing.remove(name)
        if missing:
            raise CLIError("--skip-execute, but these notebooks were never executed: "
                           + ", ".join(missing) + "; run them with `vqpaper run`")

    failed = [name for name, t in timings.items() if not t["ok"]]
    bench = {
        "profile": args.profile, "jobs": args.jobs, "threads": int(threads),
        "commit": git_commit(), "cpu_count": os.cpu_count(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notebooks": timings or _read_json(bench_path).get("notebooks", {}),
        "execute_s": round(execute_s, 2), "book_build_s": None, "total_s": None,
    }
    if failed:
        _write_json(bench_path, bench)
        raise CLIError(f"{len(failed)} notebook(s) failed: {', '.join(failed)}; "
                       "the book was not built (details above and in _build/logs/)")
    build_started = time.perf_counter()
    code = build_book()
    bench["book_build_s"] = round(time.perf_counter() - build_started, 2)
    bench["total_s"] = round(time.perf_counter() - total_started, 2)
    bench["book_ok"] = code == 0
    _write_json(bench_path, bench)
    print(f"book build: {bench['book_build_s']:.1f} s; total {bench['total_s']:.1f} s; "
          f"timings in {_rel(bench_path)}")
    if code != 0:
        raise CLIError("jupyter-book build failed (warnings count as errors); see above")
    print(f"HTML: {_rel(paths.ROOT / '_build' / 'html' / 'index.html')}")
    return 0


def build_book() -> int:
    """``jupyter-book build . --builder html -W -n --keep-going`` (execution off in _config)."""
    script = Path(sys.executable).with_name("jupyter-book")
    launcher = [str(script)] if script.is_file() else [
        sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]
    cmd = launcher + ["build", str(paths.ROOT), "--builder", "html", "-W", "-n", "--keep-going"]
    return subprocess.run(cmd, cwd=paths.ROOT).returncode


def _time_table(timings: dict[str, dict[str, Any]], execute_s: float) -> str:
    lines = [f"{'notebook':<38} {'status':<6} {'wall (s)':>9}"]
    lines.append("-" * len(lines[0]))
    for name in sorted(timings):
        t = timings[name]
        lines.append(f"{name:<38} {'ok' if t['ok'] else 'FAIL':<6} {t['wall_time_s']:9.1f}")
    lines.append(f"{'all notebooks (elapsed)':<38} {'':<6} {execute_s:9.1f}")
    return "\n".join(lines)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def _dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    results = Path(args.results) if args.results else paths.RESULTS
    references = Path(args.references) if args.references else paths.REFERENCES / args.profile
    return results, references


def _notebook_filter(args: argparse.Namespace) -> list[str] | None:
    if not args.notebook:
        return None
    stems = []
    for name in args.notebook:
        if name.endswith((".py", ".ipynb")):
            stems.append(Path(name).stem)
            continue
        try:
            stems.append(resolve_notebook(name).stem)
        except CLIError:
            stems.append(name)  # a notebook outside notebooks/ that recorded results
    return stems


def _report(args: argparse.Namespace, mode: str):
    from . import regression

    results, references = _dirs(args)
    if not any(results.glob("*.json")):
        raise CLIError(f"no recorded results in {results}; run the notebooks first "
                       f"(`vqpaper book --profile {args.profile}` or `vqpaper run …`)")
    report = regression.check_dirs(references, results, notebooks=_notebook_filter(args), mode=mode)
    return regression, results, references, report


def cmd_check(args: argparse.Namespace) -> int:
    regression, results, references, report = _report(args, args.mode)
    if not any(references.glob("*.json")):
        raise CLIError(f"no references in {references}; create them with "
                       f"`vqpaper references --profile {args.profile} --accept`")
    print(f"results {_rel(results)} vs references {_rel(references)}")
    print(regression.format_modes(report))
    print(regression.format_table(report.mismatches))
    return 0 if report.ok else 1


def cmd_references(args: argparse.Namespace) -> int:
    # every difference counts here, as in the same environment: accepted references are
    # the new numbers exactly, with the environment that produced them
    regression, results, references, report = _report(args, "same")
    mismatches = report.mismatches
    print(f"results {_rel(results)} vs references {_rel(references)}")
    print(regression.format_table(mismatches))
    if not args.accept:
        if mismatches:
            print("\nrun again with --accept to make these results the new references")
        return 0
    references.mkdir(parents=True, exist_ok=True)
    wanted = _notebook_filter(args)
    changed_figures = {m.figure for m in mismatches}
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        figure = data.get("figure_id", path.stem)
        if wanted is not None and data.get("notebook") not in wanted:
            continue
        if data.get("profile") != args.profile:
            print(f"  skipped  {figure}: recorded with profile {data.get('profile')!r}, "
                  f"not {args.profile!r}")
            continue
        target = references / path.name
        if figure in changed_figures or not target.exists() or _environment_changed(target, data):
            action = "updated" if target.exists() else "added  "
            shutil.copyfile(path, target)
            print(f"  {action}  {_rel(target)}")
    for m in mismatches:
        if m.reason == regression.FIGURE_MISSING:
            stale = references / f"{m.figure}.json"
            if args.prune:
                stale.unlink(missing_ok=True)
                print(f"  removed  {_rel(stale)}")
            else:
                print(f"  kept     {_rel(stale)} (no result for it; --prune removes it)")
    return 0


def _environment_changed(reference_path: Path, data: dict) -> bool:
    from .regression import environment_differences

    return bool(environment_differences(_read_json(reference_path), data))


def cmd_clean_cache(args: argparse.Namespace) -> int:
    cache = paths.CACHE
    if not cache.exists():
        print(f"nothing to remove: {_rel(cache)} does not exist")
        return 0
    files = [p for p in cache.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    shutil.rmtree(cache)
    print(f"removed {_rel(cache)}: {len(files)} files, {size / 2**20:.1f} MiB")
    return 0


# -------------------------------------------------------------------------- parser

def _add_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="override a parameter of the notebook's parameters cell; VALUE is "
                        "parsed as a literal: 3, 0.5, \"[16, 256]\", True, cpu")


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="ci", choices=PROFILES,
                   help="ci: small, CPU, minutes; paper: the paper's settings, one GPU "
                        "(default: ci)")


def _add_compare(p: argparse.ArgumentParser) -> None:
    _add_profile(p)
    p.add_argument("--results", help="folder of recorded results (default: _build/results)")
    p.add_argument("--references", help="folder of references (default: tests/references/PROFILE)")
    p.add_argument("--notebook", action="append",
                   help="only the figures of this notebook (repeatable)")
    p.add_argument("--mode", choices=("auto", "same", "cross"), default="auto",
                   help="auto (default): exact where the reference was made in this environment "
                        "(CPU, kernels, BLAS, threads, versions), statistical elsewhere; "
                        "same / cross force one")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqpaper", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="execute one notebook with papermill",
                       description="Convert a percent-format notebook, execute it with "
                                   "papermill and place it in the book.")
    p.add_argument("notebook", help="notebooks/NN_name.py, its name, or its number (03)")
    _add_params(p)
    _add_profile(p)
    p.add_argument("--timeout", type=int, default=None,
                   help="seconds one cell may run (default: no limit)")
    p.add_argument("--ignore-unknown", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("book", help="execute every notebook, then build the HTML book")
    _add_params(p)
    _add_profile(p)
    p.add_argument("--jobs", type=int, default=2, help="notebooks executed at once (default 2)")
    p.add_argument("--timeout", type=int, default=None,
                   help="seconds one cell may run (default: no limit)")
    p.add_argument("--skip-execute", action="store_true",
                   help="build the book from the notebooks executed before")
    p.set_defaults(func=cmd_book)

    p = sub.add_parser("references", help="show the diff against the references; "
                                          "--accept makes the results the new references")
    _add_compare(p)
    p.add_argument("--accept", action="store_true", help="copy the changed results over the references")
    p.add_argument("--prune", action="store_true",
                   help="with --accept: remove references that have no result")
    p.set_defaults(func=cmd_references)

    p = sub.add_parser("check", help="compare results with references; exit 1 on a difference")
    _add_compare(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("clean-cache", help="remove the cache folder (VQPAPER_CACHE, default _build/cache)")
    p.set_defaults(func=cmd_clean_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "jobs", 1) < 1:
        parser.error("--jobs must be at least 1")
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"vqpaper {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
