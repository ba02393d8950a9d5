"""Command line: run the notebooks, build the book, check numbers against references.

    vqpaper run notebooks/03_tokens_collapse_cifar10.py -p codebook_sizes "[16, 256]"
    vqpaper book --profile ci            # every notebook, then the HTML book
    vqpaper check --profile ci           # recorded numbers vs tests/references/ci
    vqpaper references --accept          # refresh the references on purpose
    vqpaper clean-cache
    vqpaper diagnose run.npz -o report.html   # collapse report of any VQ model's arrays

A thin argparse layer: executing notebooks is ``vqpaper.runner``'s job.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import paths
from .runner import (BOOK_NOTEBOOKS, NOTEBOOK_GLOB, CLIError, _rel, available_notebooks,  # noqa: F401
                     build_book, convert, execute, notebook_parameters, read_json, resolve_notebook,
                     run_notebooks, time_table, write_json)

PROFILES = ("ci", "paper")


# ------------------------------------------------------------------ -p values

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


# ------------------------------------------------------------------------ commands

def cmd_run(args: argparse.Namespace) -> int:
    try:
        py_path = resolve_notebook(args.notebook)
        overrides = parse_overrides(args.param)
        executed, wall = execute(py_path, args.profile, overrides, timeout=args.timeout,
                                 ignore_unknown=args.ignore_unknown, progress=sys.stderr.isatty())
    except CLIError as exc:
        if args.status:  # `vqpaper book` reads the outcome from here (runner.run_notebooks)
            write_json(Path(args.status), {"ok": False, "error": str(exc)})
        raise
    if args.status:
        write_json(Path(args.status), {"ok": True, "wall_time_s": round(wall, 2)})
    print(f"{py_path.stem}: {wall:.1f} s (profile {args.profile}) -> {_rel(executed)}")
    return 0


def _check_book_overrides(notebooks, overrides) -> None:
    """Every ``-p`` of ``vqpaper book`` must mean something to at least one notebook."""
    declared: set[str] = set()
    for nb in notebooks:
        declared |= set(notebook_parameters(convert(nb)))
    unknown = sorted(set(overrides) - declared)
    if unknown:
        raise CLIError(f"no notebook declares the parameter(s) {', '.join(unknown)}", code=2)


def _execute_all(args, notebooks, bench_path: Path, threads: str) -> tuple[dict, float]:
    """Execute every notebook, longest first (from the last run) to keep the workers busy."""
    _check_book_overrides(notebooks, parse_overrides(args.param))
    previous = read_json(bench_path).get("notebooks", {})
    order = sorted(notebooks, key=lambda nb: -float(previous.get(nb.stem, {}).get("wall_time_s") or 0.0))
    print(f"executing {len(notebooks)} notebooks, profile {args.profile}, {args.jobs} at a time, "
          f"VQPAPER_THREADS={threads}; logs in {_rel(paths.BUILD / 'logs')}", flush=True)

    def report(o):
        print(f"  {'ok  ' if o.ok else 'FAIL'}  {o.name:<36} {o.wall_time_s:8.1f} s", flush=True)
        if not o.ok:
            print("        " + o.error.replace("\n", "\n        "), flush=True)

    started = time.perf_counter()
    outcomes = run_notebooks(order, args.profile, args.param, jobs=args.jobs, timeout=args.timeout,
                             env=dict(os.environ, VQPAPER_THREADS=threads), on_done=report)
    execute_s = time.perf_counter() - started
    timings = {o.name: {"wall_time_s": round(o.wall_time_s, 2), "ok": o.ok} for o in outcomes}
    print(time_table(timings, execute_s))
    return timings, execute_s


def _reuse_executed(notebooks) -> None:
    """``--skip-execute``: the book pages are the notebooks executed before."""
    missing = [nb.stem for nb in notebooks if not (BOOK_NOTEBOOKS / f"{nb.stem}.ipynb").is_file()]
    for name in list(missing):
        if (paths.EXECUTED / f"{name}.ipynb").is_file():
            BOOK_NOTEBOOKS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(paths.EXECUTED / f"{name}.ipynb", BOOK_NOTEBOOKS / f"{name}.ipynb")
            missing.remove(name)
    if missing:
        raise CLIError("--skip-execute, but these notebooks were never executed: "
                       + ", ".join(missing) + "; run them with `vqpaper run`")


def cmd_book(args: argparse.Namespace) -> int:
    from .config import DEFAULT_THREADS
    from .results import git_commit

    notebooks = available_notebooks()
    if not notebooks:
        raise CLIError(f"no notebooks match {paths.NOTEBOOKS / NOTEBOOK_GLOB}")
    bench_path = paths.BUILD / "bench" / "book.json"
    total_started = time.perf_counter()
    threads = os.environ.get("VQPAPER_THREADS") or str(DEFAULT_THREADS)  # per notebook, fixed
    timings, execute_s = {}, 0.0
    if args.skip_execute:
        _reuse_executed(notebooks)
    else:
        timings, execute_s = _execute_all(args, notebooks, bench_path, threads)
    bench = {
        "profile": args.profile, "jobs": args.jobs, "threads": int(threads),
        "commit": git_commit(), "cpu_count": os.cpu_count(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notebooks": timings or read_json(bench_path).get("notebooks", {}),
        "execute_s": round(execute_s, 2), "book_build_s": None, "total_s": None,
    }
    failed = [name for name, t in timings.items() if not t["ok"]]
    if failed:
        write_json(bench_path, bench)
        raise CLIError(f"{len(failed)} notebook(s) failed: {', '.join(failed)}; "
                       "the book was not built (details above and in _build/logs/)")
    build_started = time.perf_counter()
    code = build_book()
    bench.update(book_build_s=round(time.perf_counter() - build_started, 2),
                 total_s=round(time.perf_counter() - total_started, 2), book_ok=code == 0)
    write_json(bench_path, bench)
    print(f"book build: {bench['book_build_s']:.1f} s; total {bench['total_s']:.1f} s; "
          f"timings in {_rel(bench_path)}")
    if code != 0:
        raise CLIError("jupyter-book build failed (warnings count as errors); see above")
    print(f"HTML: {_rel(paths.ROOT / '_build' / 'html' / 'index.html')}")
    return 0


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

    return bool(environment_differences(read_json(reference_path), data))


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


# ------------------------------------------------------------------------ diagnose

def cmd_diagnose(args: argparse.Namespace) -> int:
    """``vqpaper diagnose run.npz [-o report.html]``: the collapse report of any VQ model's arrays."""
    from .diagnose import ARRAYS, REQUIRED, diagnose, load_arrays
    from .errors import ConfigError

    source = Path(args.arrays)
    out = Path(args.output) if args.output else Path(f"{source.resolve().name.removesuffix('.npz')}-diagnosis.html")
    try:
        arrays = load_arrays(source)
        report = diagnose(**arrays, title=f"VQ collapse report: {source.name}")
    except ConfigError as exc:  # a missing or misshapen array: say which, and what is expected
        raise CLIError(f"{exc}\n  arrays: {', '.join(ARRAYS)} (required: {', '.join(REQUIRED)})", code=2) from None
    if not out.parent.is_dir():
        raise CLIError(f"-o {out}: the folder {out.parent} does not exist", code=2)
    report.to_html(out)
    print(report.hint_text())
    print(f"wrote {_rel(out)}")
    return 0


def _add_diagnose(sub) -> None:
    p = sub.add_parser("diagnose", help="collapse report (HTML) of a VQ model's arrays",
                       description="Tokens and embeddings collapse metrics, hints and one figure for a "
                                   "VQ model's arrays, as a self-contained HTML page.")
    p.add_argument("arrays", help="an .npz with embeddings [N, (L,) D], indices [N, (L)], codebook [K, D] and "
                                  "optionally data [N, ...], labels [N], reconstructions (the shape of data); "
                                  "or a cached run's folder (_build/cache/<key>)")
    p.add_argument("-o", "--output", help="the HTML file to write (default: <name>-diagnosis.html here)")
    p.set_defaults(func=cmd_diagnose)


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
    p.add_argument("--status", help=argparse.SUPPRESS)  # vqpaper book: where to write the outcome
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
    _add_diagnose(sub)
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
