#!/usr/bin/env python
"""Calibrate the cross-environment rule (``vqpaper.regression.CROSS``): how far each figure's
numbers move, in band units, when only the environment changes.

    python benchmarks/calibrate_bands.py RESULTS_DIR [RESULTS_DIR ...]
    python benchmarks/calibrate_bands.py --references tests/references/ci \\
        generic=_build/sensitivity/env-default-kernels/results threads2=_build/sensitivity/env-threads2/results

Each RESULTS_DIR (optionally ``label=DIR``) holds ``<figure-id>.json`` records made by the same
code in another environment (generic CPU kernels, another thread count, another machine):
``benchmarks/sensitivity.py --changes none`` makes them under ``_build/sensitivity/env-*``.
The script prints, per figure and per metric, the largest move of a mean and of a seed spread
in band units (1 = the edge of the band: above it the check fails) with where it happened,
and the overall largest. Choose ``CrossRule``'s constants so that these pass with room, and
write the table into ``vqpaper/regression.py`` (``CALIBRATED``). Exit status 0 when every folder
passes the current rule, 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from vqpaper import regression

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="result folders from other environments, as DIR or LABEL=DIR")
    p.add_argument("--references", default=str(ROOT / "tests" / "references" / "ci"),
                   help="the references (default %(default)s)")
    p.add_argument("--notebook", action="append",
                   help="only this notebook's figures: 02, its name or path (repeatable)")
    p.add_argument("--rule", action="append", default=[], metavar="NAME=VALUE",
                   help="try another constant of regression.CrossRule, e.g. confidence=0.95 (repeatable)")
    args = p.parse_args(argv)
    try:
        rule = regression.cross_rule(args.rule)
    except ValueError as exc:
        p.error(str(exc))

    folders = {}
    for item in args.results:
        label, sep, folder = item.partition("=")
        if not sep:
            label, folder = item, item
        if not Path(folder).is_dir():
            p.error(f"{folder}: no such folder")
        folders[label] = folder
    notebooks = None
    if args.notebook:
        from vqpaper.runner import RunnerError, resolve_notebook

        notebooks = []
        for name in args.notebook:  # "02", "02_tokens_collapse_synthetic" or a path
            try:
                notebooks.append(resolve_notebook(name).stem)
            except RunnerError:
                notebooks.append(name)
    cal = regression.calibrate(args.references, folders, notebooks=notebooks, rule=rule)
    print(f"rule: {rule}")
    print(regression.format_calibration(cal))
    for label, report in cal.reports.items():
        if not report.ok:
            print(f"\n{label} fails the current rule:")
            print(regression.format_report(report))
    return 0 if all(r.ok for r in cal.reports.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
