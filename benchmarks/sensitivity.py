#!/usr/bin/env python
"""Sensitivity of the regression check: deliberate scientific changes must fail it, changes of
environment must pass it (issue 20).

    python benchmarks/sensitivity.py                       # every change on every notebook it affects
    python benchmarks/sensitivity.py --changes decay,beta --envs threads2 --notebooks 02
    python benchmarks/sensitivity.py --root DIR --no-execute   # check the executions kept in DIR again

Each run re-executes the notebooks a change affects at the ``ci`` profile, uncached
(``VQPAPER_NO_CACHE=1`` and a fresh ``VQPAPER_CACHE``), into a build folder of its own
(``VQPAPER_BUILD=<root>/<run>``; the repository and its ``_build`` are never written), then
compares the recorded figures with the committed references (``tests/references/ci``) in the
cross-environment mode of ``vqpaper check`` (``vqpaper.regression.check_dirs(mode="cross")``).

* A **deliberate change** (``tests/broken_science/sitecustomize.py``, put on the kernel's
  ``PYTHONPATH`` with ``VQPAPER_BREAK=<change>``; the repository's code is untouched) must fail
  the check and name the moved figures. One that fails nothing is reported as *below
  detection* with its largest move in band units: at this budget the seeds cannot tell it
  from noise. A change whose patch point applied nowhere (the log the sitecustomize writes
  stays empty) is an error of this suite, not a pass of the check.
* An **environment change** (generic CPU kernels, 2 or 3 torch threads per run) moves every
  number by float noise grown through training and must pass.

The table lists, per run: change, notebooks, outcome, the figures that failed and the largest
move of any compared number in band units (``regression.Report.largest_move``). It ends with
``caught N of M deliberate changes; passed P of Q environment changes``. Exit status 0 when
every deliberate change was caught or shown below detection and every environment passed;
1 otherwise. The whole suite is a benchmark (hours on 2 cores), not a timed test; CI runs two
deliberate changes and one environment on notebook 02 (tests/test_sensitivity.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BROKEN_SCIENCE = ROOT / "tests" / "broken_science"
REFERENCES = ROOT / "tests" / "references" / "ci"

SYNTHETIC_AND_CIFAR = ("01", "02", "03", "04", "05", "06")
CIFAR = ("03", "04", "05", "06")
#: deliberate change -> the notebooks it affects (by number). The changes themselves are
#: defined in tests/broken_science/sitecustomize.py.
CHANGES: dict[str, tuple[str, ...]] = {
    "decay": SYNTHETIC_AND_CIFAR,          # every EMA run
    "beta": SYNTHETIC_AND_CIFAR,           # every VQ run
    "kmeans-iters": SYNTHETIC_AND_CIFAR,   # every K-means initialisation
    "lr": SYNTHETIC_AND_CIFAR,
    "laplace": SYNTHETIC_AND_CIFAR,        # every EMA run (02's Laplace ablation becomes Laplace twice)
    "cifar-pretrain": ("03", "05", "06"),  # notebooks with CIFAR-10 runs that pretrain (04's are from scratch)
    "test-perplexity": CIFAR,              # every CIFAR-10 run's perplexity
}
#: environment change -> the variables it sets. These must pass.
ENVS: dict[str, dict[str, str]] = {
    "default-kernels": {"ATEN_CPU_CAPABILITY": "default"},  # generic CPU kernels, as on a CPU without AVX2
    "threads2": {"VQPAPER_THREADS": "2"},
    "threads3": {"VQPAPER_THREADS": "3"},
}


@dataclass
class Run:
    name: str                # "change:decay" or "env:threads2"
    kind: str                # "change" or "env"
    label: str               # decay, threads2, ...
    notebooks: list[Path]
    env: dict[str, str]
    build: Path
    executed: dict[str, dict] = field(default_factory=dict)   # notebook -> {ok, wall_s, log}


def _notebook_paths(numbers) -> list[Path]:
    from vqpaper.runner import available_notebooks

    known = {nb.stem[:2]: nb for nb in available_notebooks()}
    return [known[n] for n in numbers if n in known]


def _split(text: str | None, allowed, what: str) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise SystemExit(f"sensitivity.py: unknown {what} {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return names


def plan(changes, envs, notebooks, root: Path) -> list[Run]:
    """The runs to make: each change on the notebooks it affects (within ``notebooks``), each env on all."""
    wanted = None if notebooks is None else set(notebooks)
    base = {"VQPAPER_NO_CACHE": "1", "VQPAPER_EXECUTOR": "local", "PYTHONHASHSEED": "0"}
    runs = []
    for label in changes:
        numbers = [n for n in CHANGES[label] if wanted is None or n in wanted]
        runs.append(Run(f"change-{label}", "change", label, _notebook_paths(numbers),
                        {**base, "VQPAPER_BREAK": label}, root / f"change-{label}"))
    for label in envs:
        numbers = [n for n in SYNTHETIC_AND_CIFAR if wanted is None or n in wanted]
        runs.append(Run(f"env-{label}", "env", label, _notebook_paths(numbers), {**base, **ENVS[label]},
                        root / f"env-{label}"))
    return [r for r in runs if r.notebooks]


def _environment(run: Run) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VQPAPER_BREAK", "VQPAPER_THREADS",
                                                             "ATEN_CPU_CAPABILITY")}
    python_path = [str(ROOT)] + ([p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if run.kind == "change":
        python_path.insert(0, str(BROKEN_SCIENCE))
    cifar = ROOT.parent / "shared" / "data" / "cifar10-subset.npz"
    if "VQPAPER_CIFAR10" not in env and cifar.is_file():
        env["VQPAPER_CIFAR10"] = str(cifar)  # as the Makefile finds it
    env.update(run.env)
    env.update(PYTHONPATH=os.pathsep.join(python_path), VQPAPER_BUILD=str(run.build),
               VQPAPER_CACHE=str(run.build / "cache"), VQPAPER_BREAK_LOG=str(run.build / "applied.jsonl"))
    return env


def execute(run: Run, notebook: Path, timeout: float) -> dict:
    """Execute one notebook for ``run`` in a subprocess (its own kernel environment)."""
    run.build.mkdir(parents=True, exist_ok=True)
    log = run.build / f"{notebook.stem}.log"
    # runner.prepare/execute: outputs under VQPAPER_BUILD (this run's folder), never the book's
    code = ("import sys; from vqpaper import runner; "
            f"outcome = runner.execute(runner.prepare({str(notebook)!r}, 'ci', timeout_s=0)); "
            "sys.exit(print(outcome.error) or 1) if not outcome.ok else None")
    started = time.perf_counter()
    with log.open("w") as fh:
        try:
            proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_environment(run),
                                  stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
            ok = proc.returncode == 0
        except subprocess.TimeoutExpired:
            fh.write(f"\n[sensitivity.py] timed out after {timeout:.0f} s\n")
            ok = False
    return {"ok": ok, "wall_s": round(time.perf_counter() - started, 1), "log": str(log)}


def applied(run: Run) -> int:
    """How often the sitecustomize applied the change (lines in its log)."""
    path = run.build / "applied.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


@dataclass
class Outcome:
    run: Run
    status: str              # caught / below detection / not applied / passed / FAILED
    failed_figures: list[str]
    largest_move: float
    largest_key: str
    detail: str = ""


def judge(run: Run, references: Path, rule=None) -> Outcome:
    """Check ``run``'s results against ``references`` (cross environment) and classify the outcome."""
    from vqpaper import regression

    stems = [nb.stem for nb in run.notebooks]
    failed_nb = [s for s in stems if not run.executed.get(s, {}).get("ok", False)]
    results = run.build / "results"
    report = regression.check_dirs(references, results, notebooks=stems, mode="cross", rule=rule)
    move = report.largest_move
    largest_key = f"{move.figure}/{move.key}" if move is not None else "-"
    size = move.move if move is not None else 0.0
    figures = sorted({m.figure for m in report.failures})
    detail = "; ".join(f"{s} did not run to the end (see {run.build / (s + '.log')})" for s in failed_nb)
    if run.kind == "env":
        status = "passed" if report.ok and not failed_nb else "FAILED"
        same = regression.check_dirs(references, results, notebooks=stems, mode="same")
        if not any(m.reason == regression.MOVED for m in same.mismatches):
            detail = (detail + "; " if detail else "") + (
                "no number moved (bit-identical to the references): this environment does not change "
                "these notebooks' numbers, so its pass says nothing")
    elif applied(run) == 0:
        status = "not applied"
        detail = (detail + "; " if detail else "") + "the change's patch point applied nowhere (tests/broken_science)"
    elif not report.ok or failed_nb:
        status = "caught"
    else:
        status = "below detection"
    return Outcome(run, status, figures, size, largest_key, detail)


def table(outcomes: list[Outcome]) -> str:
    header = ("change", "kind", "notebooks", "outcome", "figures failed", "largest move (band units)")
    rows = [header]
    for o in outcomes:
        nbs = ",".join(nb.stem[:2] for nb in o.run.notebooks)
        figs = ", ".join(o.failed_figures) if o.failed_figures else "-"
        rows.append((o.run.label, o.run.kind, nbs, o.status, figs, f"{o.largest_move:.2f} ({o.largest_key})"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for o in outcomes:
        if o.detail:
            lines.append(f"  {o.run.label}: {o.detail}")
    changes = [o for o in outcomes if o.run.kind == "change"]
    envs = [o for o in outcomes if o.run.kind == "env"]
    lines.append(f"caught {sum(o.status == 'caught' for o in changes)} of {len(changes)} deliberate changes; "
                 f"passed {sum(o.status == 'passed' for o in envs)} of {len(envs)} environment changes")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--changes", help=f"comma-separated deliberate changes (default all: {','.join(CHANGES)}); "
                                     "'none' for no change")
    p.add_argument("--envs", help=f"comma-separated environment changes (default all: {','.join(ENVS)}); "
                                  "'none' for no environment")
    p.add_argument("--notebooks", help="comma-separated notebook numbers to restrict to, e.g. 02 or 01,02")
    p.add_argument("--root", help="folder for the runs' build folders (default _build/sensitivity); "
                                  "an existing run folder there is replaced")
    p.add_argument("--references", default=str(REFERENCES), help="references to check against (default %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="notebook executions at a time (default 2)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds one notebook execution may take")
    p.add_argument("--no-execute", action="store_true", help="check the executions already in --root again")
    p.add_argument("--json", help="also write the outcomes here")
    p.add_argument("--rule", action="append", default=[], metavar="NAME=VALUE",
                   help="check with another constant of regression.CrossRule, e.g. confidence=0.95 (repeatable; "
                        "with --no-execute: what the kept runs would give under it)")
    args = p.parse_args(argv)
    from vqpaper import regression

    try:
        rule = regression.cross_rule(args.rule)
    except ValueError as exc:
        p.error(str(exc))

    changes = [] if args.changes == "none" else _split(args.changes, CHANGES, "change") or list(CHANGES)
    envs = [] if args.envs == "none" else _split(args.envs, ENVS, "environment") or list(ENVS)
    notebooks = None if args.notebooks is None else _split(
        ",".join(n.strip()[:2] for n in args.notebooks.split(",")), SYNTHETIC_AND_CIFAR, "notebook")
    root = Path(args.root).resolve() if args.root else ROOT / "_build" / "sensitivity"
    runs = plan(changes, envs, notebooks, root)
    if not runs:
        raise SystemExit("sensitivity.py: nothing to run (no selected change or environment affects "
                         "the selected notebooks)")

    jobs = [(run, nb) for run in runs for nb in run.notebooks]
    if args.no_execute:
        for run, nb in jobs:
            run.executed[nb.stem] = {"ok": (run.build / "executed" / f"{nb.stem}.ipynb").is_file()}
    else:
        for run in runs:
            if run.build.exists():
                shutil.rmtree(run.build)
        print(f"{len(jobs)} notebook execution(s), {args.jobs} at a time, into {root}", flush=True)

        def one(item):
            run, nb = item
            result = execute(run, nb, args.timeout)
            run.executed[nb.stem] = result
            print(f"  {run.name:24s} {nb.stem:32s} {'ok' if result['ok'] else 'FAILED':6s} "
                  f"{result['wall_s']:.0f} s", flush=True)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(one, jobs))

    outcomes = [judge(run, Path(args.references), rule) for run in runs]
    if args.rule:
        print(f"rule: {rule}")
    print(table(outcomes))
    if args.json:
        Path(args.json).write_text(json.dumps([{
            "change": o.run.label, "kind": o.run.kind, "notebooks": [nb.stem for nb in o.run.notebooks],
            "outcome": o.status, "failed_figures": o.failed_figures, "largest_move": o.largest_move,
            "largest_key": o.largest_key, "applied": applied(o.run), "detail": o.detail,
            "executed": o.run.executed} for o in outcomes], indent=1))
    bad = [o for o in outcomes if o.status in ("FAILED", "not applied")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
