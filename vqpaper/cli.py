"""Command line: run the notebooks, build the book, check numbers against references.

    vqpaper run 03 -p codebook_sizes "[16, 256]"     # one notebook; `vqpaper run 03 --help`: its parameters
    vqpaper book --profile ci                         # every notebook, then the HTML book
    vqpaper check --profile ci                        # recorded numbers vs tests/references/ci
    vqpaper references --accept                       # refresh the references on purpose
    vqpaper plan --profile paper                      # every run of the book, its cost
    vqpaper diagnose run.npz -o report.html           # collapse report of any VQ model's arrays
    vqpaper plot fig-tokens-collapse-cifar10 -o a.png # a figure again from its CSV, no training
    vqpaper clean-cache

Only arguments and printing: notebooks are ``vqpaper.runner``'s job, references ``vqpaper.regression``'s.
"""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from . import paths, publish, regression, runner
from .config import DEFAULT_THREADS, PROFILES, set_threads
from .errors import ConfigError, DataFormatError, DataNotFoundError
from .executors import EXECUTORS
from .runner import RunnerError, _rel
from .settings import settings

PRECISIONS = ("float32", "tf32", "bf16")  # train.PRECISIONS, without importing the trainer for --help


def _execute(args: argparse.Namespace, jobs: list, order: tuple = (None, None)) -> tuple[list, float]:
    with runner.executor_environment(args.executor, args.ray_address, cpus_per_run=args.cpus_per_run,
                                     gpus_per_run=args.gpus_per_run, precision=args.precision) as env:
        if env.get("VQPAPER_EXECUTOR") == "ray":
            print(f"executor ray at {env.get('RAY_ADDRESS') or settings().ray_address}", flush=True)
        started = time.perf_counter()
        outcomes = runner.run_notebooks([dataclasses.replace(job, env={**job.env, **env}) for job in jobs],
                                        workers=getattr(args, "jobs", 1), every_s=args.progress_every,
                                        show_errors=args.command == "book", priority=order[0], after=order[1])
    return outcomes, time.perf_counter() - started


def cmd_run(args: argparse.Namespace) -> int:
    job = runner.prepare(args.notebook, args.profile, dict(args.param or []), timeout_s=args.timeout)  # -p: as text
    print(f"{job.name}: profile {args.profile}, log in {_rel(job.build / 'logs' / f'{job.name}.log')}", flush=True)
    (outcome,), _ = _execute(args, [job])
    if not outcome.ok:
        raise RunnerError(outcome.error)
    print(f"{outcome.name}: {outcome.wall_time_s:.1f} s (profile {args.profile}) -> {_rel(outcome.executed)}; "
          "the HTML: vqpaper book --skip-execute")
    return 0


def _book_order(jobs: list, profile: str) -> tuple[dict, dict]:
    """``(priority, after)`` for runner.run_notebooks: which notebook the workers take first
    (plan.book_priority) and which ones each waits for (plan.book_dependencies: those whose runs it
    reuses). Weighted by the last book's times at this profile, else by the measured cold ``ci`` times."""
    from . import plan  # the run lists: which notebook reuses which one's runs

    triples = [(job.name, job.profile, job.parameters) for job in jobs]
    seconds = {**(plan.COLD_CI_BOOK_S if profile == "ci" else {}), **runner.previous_times(profile=profile)}
    after = plan.book_dependencies(triples)
    return plan.book_priority(triples, seconds, after), after


def cmd_book(args: argparse.Namespace) -> int:
    threads = str(settings().threads or DEFAULT_THREADS)  # per notebook, fixed
    started, outcomes, execute_s = time.perf_counter(), [], 0.0
    if not args.skip_execute:
        jobs = runner.prepare_book(runner.available_notebooks(), args.profile, dict(args.param or []),
                                   timeout_s=args.timeout, env={"VQPAPER_THREADS": threads})
        print(f"executing {len(jobs)} notebooks, profile {args.profile}, {args.jobs} at a time, "
              f"VQPAPER_THREADS={threads}; logs in {_rel(paths.BUILD / 'logs')}", flush=True)
        outcomes, execute_s = _execute(args, jobs, _book_order(jobs, args.profile))
        print(runner.time_table(outcomes, execute_s))
    failed = [o.name for o in outcomes if not o.ok]
    record = runner.BookTimings(args.profile, args.jobs, int(threads), outcomes, execute_s)
    if failed:
        record.write(paths.BUILD)
        raise RunnerError(f"{len(failed)} notebook(s) failed: {', '.join(failed)}; the book was not built "
                          f"(details above and in {_rel(paths.BUILD / 'logs')}); the last good pages are kept")
    build_started = time.perf_counter()
    overrides, launch = publish.site_config_overrides(paths.ROOT)
    print(launch, flush=True)
    code = runner.build_book(paths.BUILD, overrides)
    path = record.write(paths.BUILD, book_build_s=time.perf_counter() - build_started,
                        total_s=time.perf_counter() - started, book_ok=code == 0)
    if code != 0:
        raise RunnerError("jupyter-book build failed (warnings count as errors); see above. "
                          "The previous HTML is kept")
    print(f"book build: {time.perf_counter() - build_started:.1f} s; total {time.perf_counter() - started:.1f} s; "
          f"timings in {_rel(path)}\nHTML: {_rel(paths.BUILD / 'html' / 'index.html')}")
    return 0


def _dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    results = Path(args.results) if args.results else paths.RESULTS
    references = Path(args.references) if args.references else paths.REFERENCES / args.profile
    return results, references


def _report(args: argparse.Namespace, mode: str):
    results, references = _dirs(args)
    if not any(results.glob("*.json")):
        raise RunnerError(f"no recorded results in {results}; run the notebooks first "
                          f"(`vqpaper book --profile {args.profile}` or `vqpaper run …`)")
    report = regression.check_dirs(references, results, notebooks=runner.notebook_stems(args.notebook), mode=mode,
                                   figures=getattr(args, "figure", None))
    print(f"results {_rel(results)} vs references {_rel(references)}")
    return results, references, report


def cmd_check(args: argparse.Namespace) -> int:
    _, references, report = _report(args, args.mode)
    if not any(references.glob("*.json")):
        raise RunnerError(f"no references in {references}; create them with "
                          f"`vqpaper references --profile {args.profile} --accept`")
    print(regression.format_report(report, args.format))
    return 0 if report.ok else 1


def cmd_references(args: argparse.Namespace) -> int:
    results, references, report = _report(args, "same")  # accepted = exactly these numbers
    print(regression.format_table(report.mismatches))
    if not args.accept:
        if report.mismatches:
            print("\nrun again with --accept to make these results the new references")
        return 0
    wanted = runner.notebook_stems(args.notebook)
    for action, path in regression.accept_references(results, references, args.profile, wanted,
                                                     prune=args.prune, report=report):
        print(f"  {action:<8} {_rel(path)}")
    return 0


def cmd_clean_cache(args: argparse.Namespace) -> int:
    from .sweeps import clear_cache  # imports the trainer: only this command needs it

    existed = paths.CACHE.exists()
    n = clear_cache()
    print(f"removed {_rel(paths.CACHE)}: {n} stored runs" if existed else f"nothing to remove: {_rel(paths.CACHE)} "
          "does not exist")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """``vqpaper diagnose run.npz [-o report.html]``: the collapse report of any VQ model's arrays."""
    from .diagnose import report_file  # matplotlib and the metrics: only here

    try:
        report, out = report_file(args.arrays, args.output)
    except (ConfigError, DataFormatError, DataNotFoundError) as exc:  # no such path, not an .npz, a bad array
        raise RunnerError(str(exc), code=2) from None  # each names the path or array, what it is and what is expected
    print(report.hint_text() + f"\nwrote {_rel(out)}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``vqpaper plot FIGURE-ID [-o out.png]``: a figure drawn again from its CSV, without training."""
    from .plots import replot_to  # matplotlib: only this command draws

    try:
        print(f"wrote {_rel(replot_to(args.figure, args.output, args.data))}")
    except ConfigError as exc:  # an unknown figure id (the message lists the known ones), a bad -o
        raise RunnerError(str(exc), code=2) from None
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """``vqpaper plan``: every run the book would execute, what is cached, and the time it would take."""
    from . import plan  # imports the trainer and the run lists: only this command needs them

    if args.gpus < 1:
        raise RunnerError(f"--gpus must be at least 1, got {args.gpus}", code=2)
    notebooks = [runner.resolve_notebook(n).stem for n in args.notebook] if args.notebook else None
    try:
        set_threads()
        data, (n_train, n_test) = None, plan.CIFAR_IMAGES[args.profile]
        note = (f"CIFAR-10: {n_train:,} / {n_test:,} images, as the {args.profile} profile implies; CIFAR runs not "
                "looked up in the cache (their key hashes the pixels: pass --cifar10 PATH)")
        if args.cifar10:
            from .data import load_cifar10  # only with --cifar10

            data = load_cifar10(args.cifar10, download=False)
            note = (f"CIFAR-10: {data.n_train:,} / {data.n_test:,} images from {args.cifar10} "
                    "(their runs looked up in the cache)")
        runs, timings = plan.make_plan(args.profile, devices=args.gpus, notebooks=notebooks, data=data,
                                       device=args.device, steps=args.steps, precision=args.precision,
                                       progress=(lambda m: print("  " + m, file=sys.stderr, flush=True)))
    except ConfigError as exc:
        raise RunnerError(str(exc), code=2) from None
    print(plan.report(runs, timings, args.gpus, args.profile, listing=not args.summary, data_note=note))
    return 0


# -------------------------------------------------------------------------- parser

def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter of the notebook; VALUE is text such as 3, 0.5, \"[16, 256]\", True or cpu, "
                        "parsed and checked (config.parse_value, notebook_config) before a kernel starts")
    _add_profile(p)
    p.add_argument("--timeout", type=float, help="seconds a whole notebook may run (default runner.TIMEOUT_S; 0: none)")
    p.add_argument("--progress-every", type=float, default=runner.LINE_EVERY_S, metavar="S", help="off a terminal "
                   f"and in the logs: a progress line at most every S s (default {runner.LINE_EVERY_S:g})")
    g = p.add_argument_group("where the runs go (vqpaper.executors)")
    g.add_argument("--executor", choices=EXECUTORS, help="local: in the kernel, one run after another; ray: every "
                   "run a Ray task; auto (default, env VQPAPER_EXECUTOR): ray with a cluster, a GPU or >= 8 cores")
    g.add_argument("--ray-address", help="an existing Ray cluster (host:port); default env RAY_ADDRESS, else local")
    g.add_argument("--cpus-per-run", type=float, help="CPUs a Ray task reserves (default: the run's torch threads)")
    g.add_argument("--gpus-per-run", type=float, help="GPUs a CUDA run reserves; a fraction shares one (default 0.25)")
    g.add_argument("--precision", choices=PRECISIONS, help="encoder/decoder precision (default float32; tf32 needs "
                   "CUDA), part of each run's cache key")


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="ci", choices=PROFILES,
                   help="ci: small, CPU, minutes; paper: the paper's settings, one GPU (default: ci)")


def _add_compare(p: argparse.ArgumentParser) -> None:
    _add_profile(p)
    p.add_argument("--results", help="folder of recorded results (default: _build/results)")
    p.add_argument("--references", help="folder of references (default: tests/references/PROFILE)")
    p.add_argument("--notebook", action="append", help="only the figures of this notebook (repeatable)")
    p.add_argument("--mode", choices=("auto", "same", "cross"), default="auto",
                   help="auto (default): exact where the reference was made in this environment "
                        "(CPU, kernels, BLAS, threads, versions), statistical elsewhere; same / cross force one")


def build_parser(run_epilog: str | None = None) -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="vqpaper", description=__doc__.split("\n\n")[0], formatter_class=raw)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="execute one notebook with papermill", formatter_class=raw, epilog=run_epilog,
                       description="Check the parameters, execute the notebook (progress on the terminal and in "
                                   "_build/logs/NN.log) and, if every cell ran, put the executed notebook and its "
                                   "results in the build folder. `vqpaper run NB --help` lists NB's parameters.")
    p.add_argument("notebook", help="notebooks/NN_name.py, its name, or its number (03)")
    _add_run_options(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("book", help="execute every notebook, then build the HTML book")
    _add_run_options(p)
    p.add_argument("--jobs", type=int, default=2, help="notebooks executed at once (default 2)")
    p.add_argument("--skip-execute", action="store_true", help="build the book from the notebooks executed before")
    p.set_defaults(func=cmd_book)
    p = sub.add_parser("references", help="the diff against the references; --accept makes the results the new ones")
    _add_compare(p)
    p.add_argument("--accept", action="store_true", help="copy the changed results over the references")
    p.add_argument("--prune", action="store_true", help="with --accept: remove references that have no result")
    p.set_defaults(func=cmd_references)
    p = sub.add_parser("check", help="compare results with references; exit 1 on a difference")
    _add_compare(p)
    p.add_argument("--figure", action="append", help="only this figure, e.g. fig-tokens-collapse-cifar10 (repeatable)")
    p.add_argument("--format", choices=("text", "markdown"), default="text",
                   help="text (default) or markdown: the table as GitHub Markdown, for a pull request's job summary")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("clean-cache", help="remove the cache folder (VQPAPER_CACHE, default _build/cache)")
    p.set_defaults(func=cmd_clean_cache)
    p = sub.add_parser("diagnose", help="collapse report (HTML) of a VQ model's arrays",
                       description="Tokens and embeddings collapse metrics, hints and one figure for a "
                                   "VQ model's arrays, as a self-contained HTML page.")
    p.add_argument("arrays", help="an .npz with embeddings [N, (L,) D], indices [N, (L)], codebook [K, D] and "
                                  "optionally data [N, ...], labels [N], reconstructions (the shape of data); "
                                  "or a cached run's folder (_build/cache/<key>)")
    p.add_argument("-o", "--output", help="the HTML file to write (default: <name>-diagnosis.html here)")
    p.set_defaults(func=cmd_diagnose)
    p = sub.add_parser("plot", help="draw a figure again from its numbers (CSV), without training")
    p.add_argument("figure", help="a figure id, e.g. fig-tokens-collapse-cifar10 (its caption in the book links the CSV)")
    p.add_argument("-o", "--output", help="the PNG to write (default: FIGURE.png here)")
    p.add_argument("--data", help="the folder holding FIGURE.csv and FIGURE.plot.json (default: _build/figures)")
    p.set_defaults(func=cmd_plot)
    p = sub.add_parser("plan", help="list every run of the book, skip the cached, estimate the time",
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
    p.add_argument("--cifar10", help="the CIFAR-10 data the book would use (its runs looked up in the cache)")
    p.add_argument("--precision", choices=PRECISIONS, help="the precision the book would run at (in each cache key)")
    p.add_argument("--summary", action="store_true", help="only the per-notebook table, not every run")
    p.set_defaults(func=cmd_plan)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit), raised in the main thread like Ctrl-C's
    KeyboardInterrupt, so that the same clean-up runs: the notebooks' workers and kernels stop."""


def _terminated(signum, frame):
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(runner.run_help_epilog(argv))
    args = parser.parse_args(argv)
    if getattr(args, "jobs", 1) < 1:
        parser.error("--jobs must be at least 1")
    in_main_thread = threading.current_thread() is threading.main_thread()  # where signals can be handled
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    try:
        return args.func(args)
    except RunnerError as exc:
        print(f"vqpaper {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
