#!/usr/bin/env python
"""A sweep trained as one model (issue 19): training steps per second at several group sizes, and
notebook 02's ``ci`` sweep one run at a time against batched, on the current device.

    python benchmarks/batched.py                  # about 10-20 min on 2 busy cores
    python benchmarks/batched.py --quick          # a smoke test: small shapes, a short sweep
    python benchmarks/batched.py --device cuda
    python benchmarks/batched.py --device cuda --skip-sweep   # only the steps/s tables (1. and 2.)
    python benchmarks/batched.py --baseline /tmp/base   # also the sweep with another checkout's code
                                                        # (e.g. `git archive <commit> vqpaper | tar -x -C /tmp/base`;
                                                        # one whose notebook 02 ci sweep has as many runs as this one's)

1. **MLP steps/s** at N = 1, 3, 8, 32 models per group, notebook 02's ``ci`` shapes (2-D data
   with token_dim 1, 8-D with token_dim 4; K = 128, batch 256, EMA-VQ): ``train.train_step`` on
   a group built by ``train.new_model`` / ``new_quantizer`` / ``new_optimizer``, after warm-up
   steps. ``run-steps/s`` counts each model's step (N per group step); ``per-run speed-up`` is
   run-steps/s over that of N = 1.
2. **Conv model steps/s** at N = 1 and 4 (on CUDA also 8): notebook 03's ``ci`` shape (``config.CI_CIFAR``: token_dim 16,
   channels 16, residual 8; K = 256, batch 128) and, on CUDA, the paper's (channels 128, residual 64, K = 512).
3. **Notebook 02's ``ci`` sweep**, its real configs (``experiments.runs_02`` of
   ``config.notebook_config("02_tokens_collapse_synthetic", "ci")``, the Laplace ablation's included),
   grouped as ``sweeps.sweep`` groups them (``train.groups_of``). For each group, in turn: every run
   alone (``train.run_group([cfg])``: a group of one), then the group (``train.run_group(group)``);
   interleaved group by group so that a change of load on a shared machine hits both, and the
   cache of data-only metric parts is emptied before each. The results of both must be identical
   (grouping invariance). With ``--baseline DIR``, the same configs also run one at a time with the
   ``vqpaper`` package found in ``DIR`` (``train.run_synthetic``, in a subprocess): the code before
   a change. The last line: ``notebook 02 ci sweep: one at a time X s, batched Y s, speed-up Z``.

One torch thread (``config.set_threads``), as every run of the book. Results also go to
``_build/bench/batched.json`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vqpaper import config, experiments, metrics, train  # noqa: E402
from vqpaper.config import CifarRun, SyntheticRun  # noqa: E402


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def steps_per_second(configs, device: str, steps: int, warmup: int = 5) -> float:
    """Group steps per second of ``train.train_step`` for the group of ``configs`` on random data."""
    cfg = configs[0]
    model = train.new_model(configs, device).attach_quantizer(train.new_quantizer(configs, device))
    optimizer = train.new_optimizer(model, cfg)
    g = torch.Generator().manual_seed(0)
    shape = (cfg.dim,) if isinstance(cfg, SyntheticRun) else (3, 32, 32)
    x = (torch.rand(len(configs), cfg.batch_size, *shape, generator=g) - 0.5).to(device)
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # first-batch K-means on random data
        for _ in range(warmup):
            train.train_step(model, optimizer, x)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train.train_step(model, optimizer, x)
    _sync(device)
    return steps / (time.perf_counter() - t0)


def _group(cfg, n: int, device: str):
    return [dataclasses.replace(cfg, seed=s, device=device, kmeans_init="batch") for s in range(n)]


def mlp_table(device: str, steps: int, sizes) -> list[dict]:
    rows = []
    for dim, token_dim in ((2, 1), (8, 4)):
        base = None
        for n in sizes:
            rate = steps_per_second(_group(SyntheticRun(dim=dim, token_dim=token_dim), n, device), device, steps)
            base = base or rate
            rows.append({"model": f"MLP {dim}-D token_dim {token_dim}", "N": n, "steps_per_s": rate,
                         "run_steps_per_s": rate * n, "per_run_speed_up": rate * n / base})
            _print_row(rows[-1])
    return rows


def conv_table(device: str, steps: int, sizes) -> list[dict]:
    ci = {k: config.CI_CIFAR[k] for k in ("token_dim", "channels", "residual_channels")}
    shapes = [(f"conv ci (ch {ci['channels']}/{ci['residual_channels']}, D {ci['token_dim']}, K 256)",
               CifarRun(**ci, codebook_size=256))]
    if device.startswith("cuda"):
        shapes.append(("conv paper (ch 128/64, D 32, K 512)", CifarRun(token_dim=32, codebook_size=512)))
    rows = []
    for name, cfg in shapes:
        base = None
        for n in sizes:
            rate = steps_per_second(_group(cfg, n, device), device, steps, warmup=2)
            base = base or rate
            rows.append({"model": name, "N": n, "steps_per_s": rate, "run_steps_per_s": rate * n,
                         "per_run_speed_up": rate * n / base})
            _print_row(rows[-1])
    return rows


def _print_row(r: dict):
    print(f"{r['model']:<38} N={r['N']:<3} {r['steps_per_s']:>9.1f} steps/s {r['run_steps_per_s']:>9.1f} run-steps/s "
          f"{r['per_run_speed_up']:>6.2f}x per run", flush=True)


#: --quick: notebook 02's ci sweep shortened to a smoke test (the baseline's subprocess gets it too).
QUICK = dict(scratch_epochs=2, pretrain_epochs=1, finetune_epochs=1, n_per_cluster=100)


def notebook_02_configs(device: str, quick: bool) -> list:
    short = QUICK if quick else {}
    cfg = config.notebook_config("02_tokens_collapse_synthetic", "ci", device=device, **short)
    return [run for runs in experiments.runs_02(cfg).values() for run in runs]


def _same(a, b) -> bool:
    return (a.history == b.history and a.metrics == b.metrics and a.checkpoint == b.checkpoint
            and all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays))


def sweep_comparison(configs) -> dict:
    alone_s = batched_s = 0.0
    identical = True
    groups = train.groups_of(configs)
    for g in groups:
        members = [configs[i] for i in g]
        metrics._DATA_CACHE.clear()
        t0 = time.perf_counter()
        alone = [train.run_group([c])[0] for c in members]
        t_alone = time.perf_counter() - t0
        metrics._DATA_CACHE.clear()
        t0 = time.perf_counter()
        together = train.run_group(members)
        t_group = time.perf_counter() - t0
        same = all(_same(a, b) for a, b in zip(alone, together))
        identical &= same
        alone_s += t_alone
        batched_s += t_group
        c = members[0]
        rules = "+".join(sorted({m.ema_update for m in members}))
        print(f"  {c.dim}-D {c.method:<10} {rules:<11} {len(members)} runs: one at a time {t_alone:7.1f} s, "
              f"batched {t_group:6.1f} s ({t_alone / t_group:4.2f}x), identical: {'yes' if same else 'NO'}", flush=True)
    return {"runs": len(configs), "groups": len(groups), "one_at_a_time_s": alone_s, "batched_s": batched_s,
            "speed_up": alone_s / batched_s, "identical": identical}


BASELINE = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
from vqpaper import config, experiments, train
assert train.__file__.startswith(sys.argv[1]), train.__file__
if not hasattr(experiments, "runs_02"):
    sys.exit("its vqpaper has no experiments.runs_02 (added in c29167c), so notebook 02's run list cannot be built")
cfg = config.notebook_config("02_tokens_collapse_synthetic", "ci", device=sys.argv[2], **json.loads(sys.argv[3]))
configs = [run for runs in experiments.runs_02(cfg).values() for run in runs]
t0 = time.perf_counter()
for c in configs:
    train.run_synthetic(c)
print(len(configs), time.perf_counter() - t0)
"""


def baseline_seconds(directory: Path, device: str, quick: bool, runs: int) -> float:
    """Notebook 02's ci sweep, one run at a time, with the ``vqpaper`` of ``directory`` (a subprocess).

    That checkout builds the sweep from its own preset: a version whose sweep has another number of
    runs than ``runs`` (this one's) is refused, since it would time another sweep.
    """
    import os
    import subprocess

    if not (directory / "vqpaper" / "train.py").is_file():
        raise SystemExit(f"{directory} holds no vqpaper package (expected {directory / 'vqpaper'})")
    env = dict(os.environ, PYTHONPATH=str(directory))
    proc = subprocess.run([sys.executable, "-c", BASELINE, str(directory), device, json.dumps(QUICK if quick else {})],
                          env=env, cwd=directory, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise SystemExit(f"the baseline in {directory} failed: {last}")
    theirs, seconds = proc.stdout.strip().splitlines()[-1].split()
    if int(theirs) != runs:
        raise SystemExit(f"the baseline in {directory} builds notebook 02's ci sweep with {theirs} runs, this "
                         f"checkout with {runs}: not the same sweep")
    return float(seconds)


def main(argv=None) -> int:
    from vqpaper import paths
    from vqpaper.config import resolve_device, set_threads

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 100; --quick 10)")
    p.add_argument("--quick", action="store_true", help="a smoke test: fewer steps, a short sweep")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default VQPAPER_THREADS or 1)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="a folder holding another version's vqpaper package: its one-at-a-time sweep is timed too")
    p.add_argument("--skip-sweep", action="store_true",
                   help="only the steps/s tables, not notebook 02's sweep (one at a time it takes minutes on a GPU)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    steps = args.steps or (10 if args.quick else 100)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU, {threads} thread(s)"
    print(f"device {device} ({name}), torch {torch.__version__}, {steps} timed steps per measurement", flush=True)
    print("\ntraining steps (train.train_step), notebook 02's MLP shapes, K = 128, batch 256:", flush=True)
    mlp = mlp_table(device, steps, (1, 3, 8, 32))
    print("\nconv VQ-VAE, batch 128:", flush=True)
    conv = conv_table(device, max(2, steps // 20), (1, 4, 8) if device.startswith("cuda") else (1, 4))
    out = args.out or paths.BUILD / "bench" / "batched.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"device": device, "device_name": name, "threads": threads, "steps": steps, "quick": args.quick,
              "torch": torch.__version__, "mlp": mlp, "conv": conv}
    if args.skip_sweep:
        out.write_text(json.dumps(report, indent=1))
        print(f"written {out} (--skip-sweep: notebook 02's sweep not timed)")
        return 0
    configs = notebook_02_configs(device, args.quick)
    print(f"\nnotebook 02 ci sweep{' (quick: 2 / 1 + 1 epochs, 100 points per cluster)' if args.quick else ''}: "
          f"{len(configs)} runs in {len(train.groups_of(configs))} groups", flush=True)
    sweep = sweep_comparison(configs)
    if args.baseline:
        sweep["baseline_dir"] = str(args.baseline)
        try:
            sweep["baseline_one_at_a_time_s"] = baseline_seconds(args.baseline.resolve(), device, args.quick,
                                                                 len(configs))
            print(f"  the same sweep one at a time with {args.baseline}: {sweep['baseline_one_at_a_time_s']:.1f} s "
                  f"({sweep['baseline_one_at_a_time_s'] / sweep['batched_s']:.2f}x the batched time)", flush=True)
        except SystemExit as exc:  # the sweep's own numbers above still count
            sweep["baseline_error"] = str(exc)
            print(f"  no baseline: {exc}", flush=True)
    out.write_text(json.dumps({**report, "sweep_02_ci": sweep}, indent=1))
    print(f"written {out}")
    if not sweep["identical"]:
        print("ERROR: a run's results depended on its group", file=sys.stderr)
    print(f"notebook 02 ci sweep: one at a time {sweep['one_at_a_time_s']:.1f} s, batched {sweep['batched_s']:.1f} s, "
          f"speed-up {sweep['speed_up']:.2f}", flush=True)
    return 0 if sweep["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
