#!/usr/bin/env python
"""Quantizer benchmark (issue 5): our EMA-VQ and SimVQ against vector-quantize-pytorch and the bound.

    python benchmarks/quantizer.py              # K in 512, 4,096, 65,536; D in 32, 64; N = 8,192 (~5-6 min)
    python benchmarks/quantizer.py --quick      # tiny grid, a smoke test (seconds)
    python benchmarks/quantizer.py --device cuda --chunk-size 1048576

What is timed, on the same seeded inputs (N latents ``z`` ~ N(0, 1), codebook ``C`` ~ N(0, 1)):

* ``ema``: ``EMAQuantizer(K, D, decay=0.99, beta=0.25)`` in train mode, one forward; the forward
  does the nearest-token search (eq. 1) *and* the codebook update (eq. 3-5). Starts from ``C``.
* ``simvq``: ``SimVQQuantizer(K, D, beta=0.25)``: forward + backward + one Adam step on its
  projection ``W``. SimVQ learns its codebook by gradient, so backward + step *is* its codebook
  update; a forward alone would flatter it. Its codebook is ``W(B)`` (own seeded basis).
* reference: ``vector_quantize_pytorch.VectorQuantize(dim=D, codebook_size=K, decay=0.99,
  kmeans_init=False, rotation_trick=False, commitment_weight=0.25)`` in train mode, one forward
  (its EMA update runs inside the forward), its codebook and EMA sums set to ``C``. The same
  measurement is the reference for the SimVQ rows: the library's EMA quantizer is the common
  yardstick for "search + codebook update" at these shapes (its own SimVQ is not what the issue
  compares against).
* bound: ``torch.addmm(c_sq, z, C.T, alpha=-2).argmin(1)`` with ``c_sq = ||C||^2`` precomputed:
  one N x D @ D x K matmul plus argmin, the least work an exact search does.

Protocol, for every (implementation, K, D): a fresh child process (multiprocessing
``forkserver``; torch and the libraries are preloaded in the server, which allocates no
tensors, so children start in well under a second); ``torch.set_num_threads(--threads)``
(default 1: on a busy 2-core machine more threads only add noise; on CUDA irrelevant); build
inputs and module; one tiny call on a throw-away instance (loads kernels, thread pools) ->
baseline; one full-size warm-up call; at least ``--repeats`` (5) timed calls, more until they add
up to ``--min-time-s`` (2 s; at most ``--max-repeats``), median reported. The reference stops
repeating once its timed calls add up to more than ``--reference-budget-s`` (30 s): at K = 65,536
one call takes 20-50 s on 2 CPU cores, so there it is timed only once or twice, and its warm-up
uses the first N/16 latents. The JSON records how many calls each median is over.

Peak memory (CPU): the child's resident-set high-water mark minus its RSS at the baseline
(Linux: ``VmHWM`` after resetting it through ``/proc/self/clear_refs``; elsewhere
``ru_maxrss``), over the warm-up and all timed calls; inputs, module and codebook are in the
baseline. CUDA: ``torch.cuda.max_memory_allocated()`` minus the allocated bytes at the baseline.

Exactness: in every child the first full call's indices are compared with the bound's argmin
on the same codebook (for SimVQ: ``W(B)``); indices may differ only where two tokens are tied to
float32 rounding. A mismatch beyond ties makes the script exit 1.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/quantizer.py` without an installed package
    sys.path.insert(0, str(ROOT))

FULL = dict(ks=(512, 4096, 65536), dims=(32, 64), n=128 * 8 * 8, repeats=5)
QUICK = dict(ks=(64, 512), dims=(8,), n=512, repeats=2)
TARGET_SPEEDUP = 5.0      # ours at least this many times faster than the reference
TARGET_MEMORY = 0.25      # ours at most this fraction of the reference's peak memory
TARGET_BOUND = 1.5        # ours at most this many times the bare matmul + argmin
IMPLS = ("ema", "simvq", "reference", "bound")
PRELOAD = ["torch", "vector_quantize_pytorch", "vqpaper.quantizers"]


# ----------------------------------------------------------------------------- memory probes
def _status_kb(field: str):
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M)
    return int(m.group(1)) if m else None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: reset the peak RSS
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class PeakMemory:
    """Peak memory above a baseline: RSS high-water mark on CPU, allocator peak on CUDA."""

    def __init__(self, device: str):
        import torch

        self.device, self.torch = device, torch
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.method = "torch.cuda.max_memory_allocated"
            self.base = torch.cuda.memory_allocated() / 2**20
            return
        rss = _status_kb("VmRSS")
        if rss is not None and _reset_hwm() and _status_kb("VmHWM") is not None:
            self.method = "VmHWM (reset) - VmRSS"
            self.base = rss / 1024
        else:
            self.method = "ru_maxrss"
            self.base = _maxrss_mb()

    def peak_mb(self) -> float:
        if self.method.startswith("torch.cuda"):
            self.torch.cuda.synchronize()
            return max(0.0, self.torch.cuda.max_memory_allocated() / 2**20 - self.base)
        if self.method.startswith("VmHWM"):
            return max(0.0, _status_kb("VmHWM") / 1024 - self.base)
        return max(0.0, _maxrss_mb() - self.base)


# ----------------------------------------------------------------------------- child side
def _inputs(n: int, k: int, d: int, device: str):
    import torch

    g = torch.Generator().manual_seed(1000 * k + d)
    z = torch.randn(n, d, generator=g).to(device)
    codebook = torch.randn(k, d, generator=g).to(device)
    return z, codebook


def _build(impl: str, k: int, d: int, codebook, chunk_size: int, device: str):
    """Return ``(step, current_codebook)``; ``step(z)`` runs one timed call and returns indices [N]."""
    import torch

    if impl == "ema":
        from vqpaper.quantizers import EMAQuantizer

        q = EMAQuantizer(k, d, decay=0.99, beta=0.25, kmeans_init="none", chunk_size=chunk_size).to(device).train()
        with torch.no_grad():
            q.codebook.copy_(codebook)
            q.embed_sum.copy_(codebook)
            q.cluster_size.fill_(1.0)

        def step(z):
            return q(z)[1]

        return step, lambda: q.codebook.detach().clone()
    if impl == "simvq":
        from vqpaper.quantizers import SimVQQuantizer

        q = SimVQQuantizer(k, d, beta=0.25, chunk_size=chunk_size).to(device).train()
        opt = torch.optim.Adam(q.parameters(), lr=1e-3)

        def step(z):
            z = z.detach().requires_grad_(True)  # as if it came from an encoder
            opt.zero_grad(set_to_none=True)
            _, indices, loss = q(z)
            loss.backward()
            opt.step()
            return indices

        def current():
            with torch.no_grad():
                return q.codebook.detach().clone()

        return step, current
    if impl == "reference":
        from vector_quantize_pytorch import VectorQuantize

        vq = VectorQuantize(dim=d, codebook_size=k, decay=0.99, kmeans_init=False, rotation_trick=False,
                            commitment_weight=0.25).to(device).train()
        cb = vq._codebook
        with torch.no_grad():
            cb.embed.copy_(codebook[None])
            cb.embed_avg.copy_(codebook[None])
            cb.cluster_size.fill_(1.0)

        def step(z):
            return vq(z[None])[1].reshape(-1)  # [1, N, D]: the library's [batch, seq, dim] layout

        return step, lambda: cb.embed[0].detach().clone()
    if impl == "bound":
        c_sq = codebook.pow(2).sum(1)

        def step(z):
            return torch.addmm(c_sq, z, codebook.T, alpha=-2).argmin(1)

        return step, lambda: codebook
    raise ValueError(impl)


def _sync(device: str):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _exactness(z, codebook, indices, rows: int = 1024) -> dict:
    """Compare ``indices`` with the bound's argmin on ``codebook``; differences must be ties."""
    import torch

    c_sq = codebook.pow(2).sum(1)
    ref = torch.cat([torch.addmm(c_sq, z[r:r + rows], codebook.T, alpha=-2).argmin(1)
                     for r in range(0, z.shape[0], rows)])
    differ = (indices != ref).nonzero().squeeze(1)
    beyond = 0
    if differ.numel():
        zd, cd = z[differ].double(), codebook.double()
        d_ours = (zd - cd[indices[differ]]).pow(2).sum(1)
        d_ref = (zd - cd[ref[differ]]).pow(2).sum(1)
        # float32 rounding of ||z||^2 - 2 z.t + ||t||^2 is ~1e-6 of its terms' size
        scale = zd.pow(2).sum(1) + cd[indices[differ]].pow(2).sum(1) + cd[ref[differ]].pow(2).sum(1)
        beyond = int((d_ours > d_ref + 1e-5 * scale).sum())
    return {"index_differences": int(differ.numel()), "index_mismatches_beyond_ties": beyond}


def measure(job: dict) -> dict:
    """One (impl, K, D) measurement; runs in a fresh child process."""
    import torch

    torch.set_num_threads(job["threads"])
    impl, k, d, n, device = job["impl"], job["K"], job["D"], job["N"], job["device"]
    torch.manual_seed(0)
    # throw-away tiny call: kernels, thread pools, lazy imports are not anybody's peak memory
    z_small, c_small = _inputs(16, 8, d, device)
    small_step, _ = _build(impl, 8, d, c_small, job["chunk_size"], device)
    small_step(z_small)
    del z_small, c_small, small_step

    z, codebook = _inputs(n, k, d, device)
    step, current = _build(impl, k, d, codebook, job["chunk_size"], device)
    slow = impl == "reference" and k >= 32768 and n >= 1024 and not device.startswith("cuda")
    warm_z = z[: max(1, n // 16)] if slow else z
    before = current()  # the codebook the warm-up call searches (copied before the baseline)
    _sync(device)
    memory = PeakMemory(device)
    started = time.perf_counter()
    warm_idx = step(warm_z)
    _sync(device)
    warm_s = time.perf_counter() - started

    times = []
    while len(times) < job["max_repeats"]:
        _sync(device)
        started = time.perf_counter()
        step(z)
        _sync(device)
        times.append(time.perf_counter() - started)
        if impl == "reference" and sum(times) > job["reference_budget_s"]:
            break
        if len(times) >= job["repeats"] and sum(times) >= job["min_time_s"]:
            break
    peak = memory.peak_mb()
    result = {"impl": impl, "K": k, "D": d, "N": n, "seconds": statistics.median(times), "times_s": times,
              "repeats": len(times), "warmup_s": warm_s, "warmup_latents": int(warm_z.shape[0]),
              "peak_mb": peak, "memory_method": memory.method}
    result.update(_exactness(warm_z, before.to(z.dtype), warm_idx.reshape(-1)))
    return result


def agreement(job: dict) -> dict:
    """One EMA step of ours and of the reference from the same codebook, on the same latents.

    An independent implementation of eq. (1), (3)-(5) should pick the same tokens (ties aside)
    and move the codebook to the same place (to float32 rounding). At K >= 32,768 on CPU the
    reference is slow, so the step uses the first N/16 latents there.
    """
    import torch

    torch.set_num_threads(job["threads"])
    k, d, n, device = job["K"], job["D"], job["N"], job["device"]
    z, codebook = _inputs(n, k, d, device)
    if k >= 32768 and n >= 1024 and not device.startswith("cuda"):
        z = z[: n // 16]
    ours, ours_cb = _build("ema", k, d, codebook, job["chunk_size"], device)
    ref, ref_cb = _build("reference", k, d, codebook, job["chunk_size"], device)
    idx_ours, idx_ref = ours(z).reshape(-1), ref(z).reshape(-1)
    diff = (ours_cb() - ref_cb()).abs().max().item()
    return {"K": k, "D": d, "latents": int(z.shape[0]),
            "index_agreement": (idx_ours == idx_ref).float().mean().item(),
            "codebook_max_abs_diff": diff, "codebook_max_abs": codebook.abs().max().item()}


def _child(job: dict, conn) -> None:
    try:
        conn.send(agreement(job) if job["impl"] == "agreement" else measure(job))
    except BaseException as exc:  # report, never hang the parent
        import traceback

        conn.send({"impl": job["impl"], "K": job["K"], "D": job["D"], "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()})
    finally:
        conn.close()


def run_in_child(ctx, job: dict) -> dict:
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(job, send))
    proc.start()
    send.close()
    try:
        result = recv.recv()
    except EOFError:
        result = None
    proc.join()
    if result is None:
        result = {"impl": job["impl"], "K": job["K"], "D": job["D"],
                  "error": f"child process died (exit code {proc.exitcode}; killed for memory?)"}
    return result


# ----------------------------------------------------------------------------- parent side
def _context():
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _fmt(x, spec=".1f", none="-"):
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _ratio(a, b):
    if a is None or b is None or b <= 0:
        return None
    return a / b


def build_rows(results: dict, args, device: str, meta: dict) -> list[dict]:
    rows = []
    for k in args.ks:
        for d in args.dims:
            ref, bound = results.get(("reference", k, d), {}), results.get(("bound", k, d), {})
            for name in ("ema", "simvq"):
                ours = results.get((name, k, d), {})
                row = {
                    "quantizer": name, "K": k, "D": d, "N": args.n, "device": device,
                    "ours_s": ours.get("seconds"), "reference_s": ref.get("seconds"), "bound_s": bound.get("seconds"),
                    "ours_peak_mb": ours.get("peak_mb"), "reference_peak_mb": ref.get("peak_mb"),
                    "bound_peak_mb": bound.get("peak_mb"),
                    "ours_repeats": ours.get("repeats"), "reference_repeats": ref.get("repeats"),
                    "bound_repeats": bound.get("repeats"),
                    "ours_times_s": ours.get("times_s"), "reference_times_s": ref.get("times_s"),
                    "bound_times_s": bound.get("times_s"),
                    "reference_warmup_latents": ref.get("warmup_latents"),
                    "index_differences": ours.get("index_differences"),
                    "index_mismatches_beyond_ties": ours.get("index_mismatches_beyond_ties"),
                    "reference_index_mismatches_beyond_ties": ref.get("index_mismatches_beyond_ties"),
                    "ema_vs_reference_index_agreement": results.get(("agreement", k, d), {}).get("index_agreement"),
                    "ema_vs_reference_codebook_max_abs_diff":
                        results.get(("agreement", k, d), {}).get("codebook_max_abs_diff"),
                    "errors": {imp: r["error"] for imp, r in (("ours", ours), ("reference", ref), ("bound", bound))
                               if "error" in r} or None,
                    **meta,
                }
                row["speedup_vs_reference"] = _ratio(row["reference_s"], row["ours_s"])
                row["ratio_to_bound"] = _ratio(row["ours_s"], row["bound_s"])
                row["memory_ratio"] = _ratio(row["ours_peak_mb"], row["reference_peak_mb"])
                row["pass_speedup"] = (row["speedup_vs_reference"] is not None
                                       and row["speedup_vs_reference"] >= TARGET_SPEEDUP)
                row["pass_memory"] = row["memory_ratio"] is not None and row["memory_ratio"] <= TARGET_MEMORY
                row["pass_bound"] = row["ratio_to_bound"] is not None and row["ratio_to_bound"] <= TARGET_BOUND
                row["exact"] = row["index_mismatches_beyond_ties"] == 0
                rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    head = (f"{'quantizer':<9} {'K':>6} {'D':>3} {'ours ms':>9} {'ref ms':>9} {'bound ms':>9} {'speed-up':>8} "
            f"{'/bound':>7} {'ours MB':>8} {'ref MB':>8} {'mem':>6}  {'exact':<5} verdict")
    lines = [head, "-" * len(head)]
    for r in rows:
        ms = lambda s: None if s is None else 1e3 * s  # noqa: E731
        fails = [name for name, ok in (("speed", r["pass_speedup"]), ("memory", r["pass_memory"]),
                                       ("bound", r["pass_bound"])) if not ok]
        ref_ms = _fmt(ms(r["reference_s"]))
        if r["reference_repeats"] is not None and r["reference_repeats"] < r["repeats_requested"]:
            ref_ms += f"/{r['reference_repeats']}"
        lines.append(
            f"{r['quantizer']:<9} {r['K']:>6} {r['D']:>3} {_fmt(ms(r['ours_s'])):>9} {ref_ms:>9} "
            f"{_fmt(ms(r['bound_s'])):>9} {_fmt(r['speedup_vs_reference'], '.1f') + 'x':>8} "
            f"{_fmt(r['ratio_to_bound'], '.2f') + 'x':>7} {_fmt(r['ours_peak_mb']):>8} "
            f"{_fmt(r['reference_peak_mb']):>8} {_fmt(r['memory_ratio'], '.3f'):>6}  "
            f"{'yes' if r['exact'] else 'NO':<5} {'PASS' if not fails else 'FAIL (' + ', '.join(fails) + ')'}")
    return "\n".join(lines)


def parse_args(argv=None):
    from vqpaper.quantizers import DEFAULT_CHUNK_SIZE

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"tiny grid for a smoke test: {QUICK}")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda[:N] (default cpu)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                   help=f"our search's tile bound in elements (default {DEFAULT_CHUNK_SIZE:,})")
    p.add_argument("--ks", type=int, nargs="+", help="codebook sizes (default 512 4096 65536)")
    p.add_argument("--dims", type=int, nargs="+", help="token dims (default 32 64)")
    p.add_argument("--n", type=int, help="latents per call (default 8192 = 128 x 8 x 8)")
    p.add_argument("--repeats", type=int, help="timed calls per measurement after one warm-up (default 5)")
    p.add_argument("--min-time-s", type=float, help="keep repeating (up to --max-repeats) until the timed "
                   "calls add up to this, for a stabler median on a busy machine (default 2 s; 0 with --quick)")
    p.add_argument("--max-repeats", type=int, default=100, help="cap on timed calls per measurement (default 100)")
    p.add_argument("--reference-budget-s", type=float, default=30.0,
                   help="stop timing the reference once its timed calls exceed this (default 30 s; >= 1 call)")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS, help="what to measure")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every child (default 1)")
    p.add_argument("--out", type=Path, help="JSON path (default _build/bench/quantizer.json; "
                                            "quantizer-quick.json with --quick)")
    p.add_argument("--no-agreement", action="store_true",
                   help="skip the check that one EMA step of ours and of the reference agree")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    args.ks = tuple(args.ks or defaults["ks"])
    args.dims = tuple(args.dims or defaults["dims"])
    args.n = args.n or defaults["n"]
    args.repeats = args.repeats or defaults["repeats"]
    if args.min_time_s is None:
        args.min_time_s = 0.0 if args.quick else 2.0
    if args.out is None:
        from vqpaper import paths

        args.out = paths.BUILD / "bench" / ("quantizer-quick.json" if args.quick else "quantizer.json")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from vqpaper.config import resolve_device

    device = resolve_device(args.device)
    import importlib.util

    import torch

    if importlib.util.find_spec("vector_quantize_pytorch") is None:  # fail early, before any child runs
        print("vector-quantize-pytorch (the reference) is not installed: pip install 'vqpaper[test]' "
              "or vector-quantize-pytorch==1.32.0", file=sys.stderr)
        return 2

    try:
        from importlib.metadata import version
        vqp_version = version("vector-quantize-pytorch")
    except Exception:  # pragma: no cover
        vqp_version = "?"
    meta = {"threads": args.threads, "chunk_size": args.chunk_size, "torch": torch.__version__,
            "vector_quantize_pytorch": vqp_version, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "quick": args.quick,
            "repeats_requested": args.repeats, "min_time_s": args.min_time_s}
    ctx = _context()
    print(f"quantizer benchmark: N={args.n:,}, K in {list(args.ks)}, D in {list(args.dims)}, device {device}, "
          f"{args.threads} thread(s), chunk_size {args.chunk_size:,}, median of >= {args.repeats} "
          f"(and >= {args.min_time_s:g} s, <= {args.max_repeats}) after 1 warm-up (reference: until "
          f"{args.reference_budget_s:g} s); one {ctx.get_start_method()} child per measurement",
          flush=True)
    started = time.perf_counter()
    results = {}
    for k in args.ks:
        for d in args.dims:
            for impl in args.impls:
                job = {"impl": impl, "K": k, "D": d, "N": args.n, "device": device, "threads": args.threads,
                       "chunk_size": args.chunk_size, "repeats": args.repeats,
                       "reference_budget_s": args.reference_budget_s, "min_time_s": args.min_time_s,
                       "max_repeats": max(args.repeats, args.max_repeats)}
                t0 = time.perf_counter()
                res = run_in_child(ctx, job)
                results[(impl, k, d)] = res
                if "error" in res:
                    print(f"  {impl:<9} K={k:<6} D={d:<3} ERROR {res['error']}", flush=True)
                    if res.get("traceback"):
                        print(res["traceback"], file=sys.stderr)
                else:
                    print(f"  {impl:<9} K={k:<6} D={d:<3} {1e3 * res['seconds']:10.1f} ms (median of "
                          f"{res['repeats']}), peak +{res['peak_mb']:.1f} MB, "
                          f"index differences {res['index_differences']} "
                          f"(beyond ties {res['index_mismatches_beyond_ties']}) "
                          f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    if not args.no_agreement:
        for k in args.ks:
            for d in args.dims:
                job = {"impl": "agreement", "K": k, "D": d, "N": args.n, "device": device, "threads": args.threads,
                       "chunk_size": args.chunk_size}
                res = run_in_child(ctx, job)
                results[("agreement", k, d)] = res
                if "error" in res:
                    print(f"  agreement K={k:<6} D={d:<3} ERROR {res['error']}", flush=True)
                else:
                    print(f"  agreement K={k:<6} D={d:<3} one EMA step on {res['latents']:,} latents, ours vs "
                          f"VectorQuantize: same token for {100 * res['index_agreement']:.2f}% of latents, "
                          f"codebooks differ by <= {res['codebook_max_abs_diff']:.1e} "
                          f"(entries up to {res['codebook_max_abs']:.1f})", flush=True)
    rows = build_rows(results, args, device, meta)
    for row in rows:
        row["benchmark_wall_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print()
    print(table(rows))
    print(f"\ntargets: speed-up >= {TARGET_SPEEDUP:g}x vs VectorQuantize, peak memory <= {TARGET_MEMORY:g} of it, "
          f"time <= {TARGET_BOUND:g}x the bound (addmm + argmin). 'ref ms' x/n: median of only n calls.")
    print("reference = vector_quantize_pytorch.VectorQuantize (EMA) for both quantizers; simvq = forward + "
          "backward + Adam step; memory = peak RSS above baseline" if not device.startswith("cuda") else
          "reference = VectorQuantize (EMA) for both; memory = torch.cuda.max_memory_allocated above baseline")
    ok_targets = all(r["pass_speedup"] and r["pass_memory"] and r["pass_bound"] for r in rows)
    errors = any(r["errors"] for r in rows)
    exact = all(r["exact"] for r in rows if r["quantizer"] in args.impls)
    if args.quick:
        print("--quick: tiny sizes, where fixed per-call overheads dominate; the targets are meant for the full grid")
    print(f"verdict: targets {'PASS' if ok_targets else 'FAIL'}; exactness {'PASS' if exact else 'FAIL'}; "
          f"{'errors: see above; ' if errors else ''}wall {time.perf_counter() - started:.0f} s; "
          f"rows in {args.out}")
    if errors or not exact:
        return 1
    return 1 if (args.strict and not ok_targets) else 0


if __name__ == "__main__":
    sys.exit(main())
