#!/usr/bin/env python
"""Book benchmark: time per notebook and for the whole book, against the profile's budget.

    python benchmarks/book.py                  # report the last `vqpaper book` run
    python benchmarks/book.py --run            # run `vqpaper book --profile ci` first, then report
    python benchmarks/book.py --compare-executors   # the ci notebooks with Ray, then in-process

``--compare-executors`` executes every notebook twice, each time from a cold cache in a
temporary build folder (``VQPAPER_BUILD``; nothing is written to ``_build/`` or the book): once
with ``--executor ray`` (one local Ray instance for all notebooks, as `vqpaper book` starts it)
and once with ``--executor local``, ``--jobs`` notebooks at a time, and reports both times and
their ratio. Only the notebooks are timed: the HTML build does not depend on the executor.

`vqpaper book` writes ``_build/bench/book.json`` (``vqpaper.runner.BookTimings``):
``profile, jobs, threads, commit, cpu_count, created``, ``notebooks: {name: {wall_time_s, ok}}``,
``execute_s`` (elapsed for all notebooks, ``jobs`` at a time), ``book_build_s`` (jupyter-book),
``total_s`` (both; ``null`` when a notebook failed and the book was not built) and ``book_ok``.

Budgets (SPEC section 4): ``ci``: the whole book (notebooks + HTML) in <= 10 min on a 2-core CPU;
``paper``: all figures in <= 2 h on one GPU. Exit status: 0 within budget, 1 over budget or
failed, 2 no timings to report.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BUDGET_S = {"ci": 10 * 60, "paper": 2 * 60 * 60}


def default_path() -> Path:
    from vqpaper import paths

    return paths.BUILD / "bench" / "book.json"


def run_book(profile: str, jobs: int) -> int:
    cmd = [sys.executable, "-m", "vqpaper.cli", "book", "--profile", profile, "--jobs", str(jobs)]
    print("running: " + " ".join(["vqpaper"] + cmd[3:]), flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def compare_executors(profile: str, jobs: int, executors_: list[str], notebooks: list[str] | None = None) -> dict:
    """Wall time of all notebooks (``jobs`` at a time, cold cache) per executor; see the module doc."""
    import io
    import tempfile
    import time

    from vqpaper import runner
    from vqpaper.config import DEFAULT_THREADS

    nbs = [nb for nb in runner.available_notebooks() if not notebooks or nb.stem[:2] in notebooks
           or nb.stem in notebooks]
    out = {}
    for name in executors_:
        with tempfile.TemporaryDirectory(prefix=f"vqpaper-bench-{name}-") as build:
            threads = os.environ.get("VQPAPER_THREADS") or str(DEFAULT_THREADS)
            cache = str(Path(build) / "cache")  # cold, whatever VQPAPER_CACHE says
            prepared = [runner.prepare(nb, profile, build=Path(build),
                                       env={"VQPAPER_THREADS": threads, "VQPAPER_CACHE": cache}) for nb in nbs]
            print(f"executor {name}: {len(nbs)} notebooks, {jobs} at a time, cold cache in {build}", flush=True)
            started = time.perf_counter()
            with runner.executor_environment(name) as env:
                results = runner.run_notebooks([dataclasses.replace(j, env={**j.env, **env}) for j in prepared],
                                               workers=jobs, out=io.StringIO())
            total = time.perf_counter() - started
        for o in sorted(results, key=lambda o: o.name):
            print(f"  {'ok  ' if o.ok else 'FAIL'}  {o.name:<36} {o.wall_time_s:8.1f} s", flush=True)
            if not o.ok:
                print("        " + o.error.strip().replace("\n", "\n        "), flush=True)
        print(f"  all notebooks (elapsed, incl. starting and stopping Ray): {total:.1f} s", flush=True)
        out[name] = {"total_s": round(total, 1), "ok": all(o.ok for o in results),
                     "notebooks": {o.name: round(o.wall_time_s, 1) for o in results}}
    if len(out) == 2:
        a, b = (out[k]["total_s"] for k in executors_)
        print(f"{executors_[0]} / {executors_[1]}: {a / b:.2f}", flush=True)
    return out


def _s(x) -> str:
    return "-" if x is None else f"{float(x):.1f}"


def report(bench: dict, budget_s: float | None = None) -> tuple[str, bool]:
    """The per-notebook table and the verdict line; returns ``(text, within_budget)``."""
    profile = bench.get("profile", "?")
    budget = budget_s if budget_s is not None else BUDGET_S.get(profile)
    notebooks = bench.get("notebooks") or {}
    summed = sum(float(t.get("wall_time_s") or 0.0) for t in notebooks.values())
    lines = [f"book timings: profile {profile}, {bench.get('jobs', '?')} notebook(s) at a time, "
             f"{bench.get('threads', '?')} thread(s) each, {bench.get('cpu_count', '?')} CPUs, "
             f"commit {str(bench.get('commit') or '?')[:10]}, {bench.get('created', '?')}", ""]
    head = f"{'notebook':<40} {'status':<6} {'wall (s)':>9} {'share':>6}"
    lines += [head, "-" * len(head)]
    for name in sorted(notebooks):
        t = notebooks[name]
        wall = float(t.get("wall_time_s") or 0.0)
        share = f"{100 * wall / summed:5.0f}%" if summed else "     -"
        lines.append(f"{name:<40} {'ok' if t.get('ok') else 'FAIL':<6} {wall:9.1f} {share:>6}")
    lines.append("-" * len(head))
    lines.append(f"{'sum of notebook times':<40} {'':<6} {summed:9.1f}")
    lines.append(f"{'notebooks, elapsed (' + str(bench.get('jobs', '?')) + ' at a time)':<40} {'':<6} "
                 f"{_s(bench.get('execute_s')):>9}")
    lines.append(f"{'book build (jupyter-book)':<40} {'':<6} {_s(bench.get('book_build_s')):>9}")
    lines.append(f"{'total':<40} {'':<6} {_s(bench.get('total_s')):>9}")
    lines.append("")

    failed = sorted(name for name, t in notebooks.items() if not t.get("ok"))
    total = bench.get("total_s")
    skipped = not bench.get("execute_s") and bool(notebooks)
    if budget is None:
        verdict, ok = f"no budget known for profile {profile!r} (pass --budget-s)", False
    elif failed:
        verdict, ok = f"FAIL: {len(failed)} notebook(s) failed ({', '.join(failed)}); the book was not built", False
    elif total is None:
        verdict, ok = "FAIL: the run did not finish (no total time recorded)", False
    elif bench.get("book_ok") is False:
        verdict, ok = f"FAIL: jupyter-book build failed after {total:.1f} s", False
    else:
        ok = float(total) <= budget
        verdict = (f"{'PASS' if ok else 'FAIL'}: total {float(total) / 60:.1f} min "
                   f"{'<=' if ok else '>'} budget {budget / 60:g} min ({100 * float(total) / budget:.0f}% of it)")
        if skipped:
            verdict += ("; note: notebooks were not executed in this run (--skip-execute), so the total "
                        "covers the HTML build only; the notebook times above are from an earlier run")
    lines.append(f"budget (SPEC section 4, profile {profile}): "
                 + (f"{budget / 60:g} min for the whole book" if budget else "unknown"))
    lines.append("verdict: " + verdict)
    return "\n".join(lines), ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="store_true", help="run `vqpaper book --profile PROFILE` first")
    p.add_argument("--profile", default="ci", choices=sorted(BUDGET_S), help="profile for --run (default ci)")
    p.add_argument("--jobs", type=int, default=2, help="notebooks at once, for --run (default 2)")
    p.add_argument("--budget-s", type=float, help="override the budget (default: 600 s for ci, 7200 s for paper)")
    p.add_argument("--path", type=Path, help="timings file (default _build/bench/book.json)")
    p.add_argument("--compare-executors", action="store_true",
                   help="execute the notebooks with --executor ray, then local (cold caches, temporary build "
                        "folders), and report both times")
    p.add_argument("--executors", nargs="+", default=["ray", "local"], choices=["ray", "local"],
                   help="for --compare-executors: which, in this order (default: ray local)")
    p.add_argument("--notebooks", nargs="+", help="for --compare-executors: only these (numbers or names)")
    args = p.parse_args(argv)
    if args.compare_executors:
        result = compare_executors(args.profile, args.jobs, args.executors, args.notebooks)
        out = Path(os.environ.get("VQPAPER_BUILD", ROOT / "_build")) / "bench" / "executors.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"profile": args.profile, "jobs": args.jobs, "cpu_count": os.cpu_count(),
                                   "executors": result}, indent=1) + "\n")
        print(f"written {out}")
        return 0 if all(r["ok"] for r in result.values()) else 1
    path = args.path or default_path()
    if args.run:
        code = run_book(args.profile, args.jobs)
        if code != 0:
            print(f"`vqpaper book` exited with status {code}; reporting what it recorded", flush=True)
    if not path.is_file():
        print(f"no book timings at {path}: run `vqpaper book --profile ci` (or `make book`) first, "
              f"or `python benchmarks/book.py --run` to do both", file=sys.stderr)
        return 2
    try:
        bench = json.loads(path.read_text())
    except ValueError as exc:
        print(f"{path} is not valid JSON ({exc}); rerun `vqpaper book --profile ci`", file=sys.stderr)
        return 2
    if args.run and bench.get("profile") != args.profile:
        print(f"warning: {path} holds a {bench.get('profile')!r} run, not {args.profile!r}", file=sys.stderr)
    text, ok = report(bench, args.budget_s)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
