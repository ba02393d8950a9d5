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
    os.environ.update(_executor_env(args))  # the kernel inherits the executor settings
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
        with _book_executor(args):
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


# ------------------------------------------------------------- executors and plan

def _add_executor(p: argparse.ArgumentParser) -> None:
    """Where the sweeps' points run, and at which precision (``vqpaper.executors``, ``train.PRECISIONS``)."""
    from .executors import EXECUTORS

    g = p.add_argument_group("where the runs go (vqpaper.executors)")
    g.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="local: one run after another in the notebook's kernel; ray: every run a Ray task; "
                        "auto (default; env VQPAPER_EXECUTOR): ray with --ray-address/RAY_ADDRESS, a GPU or "
                        ">= 8 cores, else local")
    g.add_argument("--ray-address", default=None,
                   help="an existing Ray cluster (host:port); default: env RAY_ADDRESS, else a local instance")
    g.add_argument("--cpus-per-run", type=float, default=None,
                   help="CPUs a Ray task reserves (default: the run's torch threads, VQPAPER_THREADS or 1)")
    g.add_argument("--gpus-per-run", type=float, default=None,
                   help="GPUs a run on CUDA reserves, a fraction packs runs on one GPU (default 0.25)")
    g.add_argument("--precision", choices=("float32", "tf32", "bf16"), default=None,
                   help="encoder/decoder precision of the training steps (default: tf32 on CUDA, float32 "
                        "otherwise; tf32 needs CUDA); recorded in each run's config and cache key")


def _executor_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment variables that carry the executor options to the notebooks' kernels."""
    from .errors import ConfigError
    from .executors import check_cpus_per_run, check_gpus_per_run

    env = {}
    try:
        if args.executor:
            env["VQPAPER_EXECUTOR"] = args.executor
        if args.ray_address:
            env["RAY_ADDRESS"] = args.ray_address
        if args.cpus_per_run is not None:
            env["VQPAPER_CPUS_PER_RUN"] = str(check_cpus_per_run(args.cpus_per_run))
        if args.gpus_per_run is not None:
            env["VQPAPER_GPUS_PER_RUN"] = str(check_gpus_per_run(args.gpus_per_run))
    except ConfigError as exc:
        raise CLIError(str(exc), code=2) from None
    if args.precision:
        env["VQPAPER_PRECISION"] = args.precision
    return env


class _book_executor:
    """``vqpaper book``: the executor options for every kernel and, with Ray, one instance for all.

    A local Ray instance started here is shared by the notebooks (their kernels join it through
    ``RAY_ADDRESS``), so the points of two notebooks running at once share the machine instead
    of splitting it between two instances; it is stopped when the notebooks are done, failed or
    interrupted. Our own environment is restored afterwards.
    """

    def __init__(self, args: argparse.Namespace):
        self.env = _executor_env(args)
        self.saved: dict = {}
        self.instance = None

    def __enter__(self):
        from .errors import ConfigError
        from .executors import book_instance

        os.environ.update(self.env)  # read by book_instance and inherited by the kernels
        try:
            self.instance = book_instance(None, None)
            extra = self.instance.__enter__()
        except ConfigError as exc:
            raise CLIError(str(exc), code=2) from None
        self.saved = {k: os.environ.get(k) for k in set(extra) | set(self.env)}
        os.environ.update(extra)
        if extra.get("VQPAPER_EXECUTOR") == "ray":
            print(f"executor ray at {extra.get('RAY_ADDRESS')} (one instance for every notebook)", flush=True)
        return self

    def __exit__(self, *exc):
        try:
            if self.instance is not None:
                self.instance.__exit__(*exc)
        finally:
            for k, v in self.saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return False


def cmd_plan(args: argparse.Namespace) -> int:
    """``vqpaper plan``: every run the book would execute, what is cached, and the time it would take."""
    from . import plan
    from .config import set_threads
    from .errors import ConfigError

    if args.gpus < 1:
        raise CLIError(f"--gpus must be at least 1, got {args.gpus}", code=2)
    notebooks = [resolve_notebook(n).stem for n in args.notebook] if args.notebook else None
    data, note = None, ""
    try:
        set_threads()
        if args.cifar10:
            from .data import load_cifar10

            data = load_cifar10(args.cifar10, download=False)
            note = (f"CIFAR-10: {data.n_train:,} / {data.n_test:,} images from {args.cifar10} "
                    f"(their runs looked up in the cache)")
        else:
            n_train, n_test = plan.CIFAR_IMAGES[args.profile]
            note = (f"CIFAR-10: {n_train:,} / {n_test:,} images, as the {args.profile} profile implies; CIFAR runs "
                    f"not looked up in the cache (their key hashes the pixels: pass --cifar10 PATH)")
        runs, timings = plan.make_plan(args.profile, devices=args.gpus, notebooks=notebooks, data=data,
                                       device=args.device, steps=args.steps, precision=args.precision,
                                       progress=(lambda m: print("  " + m, file=sys.stderr, flush=True)))
    except ConfigError as exc:
        raise CLIError(str(exc), code=2) from None
    print(plan.report(runs, timings, args.gpus, args.profile, listing=not args.summary, data_note=note))
    return 0


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="list every run of the book, skip the cached, count FLOPs, estimate the time",
                       description="Every run `vqpaper book` would execute (notebook, config, epochs, steps), "
                                   "the cached ones skipped, the groups they train in, their FLOPs (forward + "
                                   "backward) and the lower bound on one H100 at fp32/TF32/bf16, a few steps of "
                                   "each distinct model, codebook size and group size timed on this device, and "
                                   "the estimated wall time on 1 and N devices.")
    _add_profile(p)
    p.add_argument("--gpus", type=int, default=1, help="devices to estimate the wall time for (default 1)")
    p.add_argument("--notebook", action="append", help="only this notebook (repeatable)")
    p.add_argument("--device", default="auto", help="where to time the steps: auto (default), cpu, cuda[:N]")
    p.add_argument("--steps", type=int, default=2, help="timed steps per model shape (default 2)")
    p.add_argument("--cifar10", default=None, help="the CIFAR-10 data the book would use, to look its runs up "
                                                   "in the cache and count its images")
    p.add_argument("--precision", choices=("float32", "tf32", "bf16"), default=None,
                   help="the precision the book would run at (part of every run's cache key)")
    p.add_argument("--summary", action="store_true", help="only the per-notebook table, not every run")
    p.set_defaults(func=cmd_plan)


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
    _add_executor(p)
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
    _add_executor(p)
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
    _add_plan(sub)
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
