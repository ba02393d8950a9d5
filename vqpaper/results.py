"""Recorded numbers: one JSON file per figure, with the provenance needed to trust it.

Every notebook ends a figure with ``record("fig-…", values, notebook=…, params=…,
profile=…)``; the file ``_build/results/<figure_id>.json`` is what the regression
check (``vqpaper check``) compares against ``tests/references/<profile>/``, and what
the "Provenance" tables of the book are made from.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from . import paths
from .config import default_precision
from .settings import settings


# --------------------------------------------------------------------------- JSON

def to_jsonable(obj: Any, _where: str = "values") -> Any:
    """Turn numpy/torch scalars and arrays, tuples and dataclasses into plain JSON types.

    Raises TypeError naming the offending entry (``values.scratch.model``) for anything
    that is not a number, string, bool, None or a container of those: a figure's record
    holds numbers, not objects.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj), _where)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, f"{_where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{_where}[{i}]") for i, v in enumerate(obj)]
    # torch tensors and numpy arrays/scalars, without importing either here
    if type(obj).__module__.startswith("torch") and hasattr(obj, "detach"):
        obj = obj.detach().cpu().numpy()
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy array or scalar
        return to_jsonable(obj.tolist(), _where)
    if hasattr(obj, "item") and callable(obj.item):
        return to_jsonable(obj.item(), _where)
    raise TypeError(
        f"{_where}: cannot record a {type(obj).__name__}; "
        "record numbers, strings, bools, None, or lists/dicts of them"
    )


# --------------------------------------------------------------------- provenance

def git_commit(root: Path | None = None) -> str:
    """HEAD's hash, with "-dirty" if tracked files changed; "unknown" outside git."""
    root = Path(root or paths.ROOT)
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = head.stdout.strip()
    return commit + ("-dirty" if status.stdout.strip() else "")


def _version(module: str) -> str:
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = __import__(module)
        except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
            return "not installed"
    version = getattr(mod, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as _meta_version

            version = _meta_version(module)
        except Exception:  # noqa: BLE001
            version = "unknown"
    return str(version)


def versions() -> dict[str, str]:
    """Versions of what decides the numbers: python, torch, numpy, vqpaper."""
    return {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "vqpaper": _version("vqpaper"),
    }


def describe_device(device: Any = None) -> str:
    """A short description of where the numbers were computed."""
    if device is not None and str(device) not in ("", "auto", "cpu"):
        text = str(device)
        torch = sys.modules.get("torch")
        if torch is not None and text.startswith("cuda"):
            try:
                text = f"{text} ({torch.cuda.get_device_name(torch.device(text))})"
            except Exception:  # noqa: BLE001 - a description, never a failure
                pass
        return text
    return f"cpu ({os.cpu_count()} cores, {platform.machine()})"


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_numerics(torch) -> dict[str, Any]:
    """What decides torch's CPU arithmetic: kernel path, BLAS, thread count."""
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config)
    return {
        # the kernels ATen dispatched to (AVX512, AVX2, DEFAULT...); ATEN_CPU_CAPABILITY lowers it
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "blas": (blas.group(1) if blas else "unknown") + (f" {mkl.group(1)}" if mkl else ""),
        "threads": int(torch.get_num_threads()),
    }


def environment(device: Any = None, executor: str | None = None) -> dict[str, Any]:
    """Where and how the numbers were computed; two records with equal environments must agree
    to the last bit (``vqpaper.regression`` compares them exactly), others statistically.

    ``executor``: where the runs were executed (``executors.resolve_name()``, told by the caller).
    """
    env: dict[str, Any] = {"device": describe_device(device), "cpu": cpu_model()}
    torch = sys.modules.get("torch")
    if torch is not None:
        env.update(_torch_numerics(torch))
    env.update({k: v for k, v in versions().items() if k in ("torch", "numpy")})
    # How the runs were executed: the encoder/decoder precision changes the numbers (bf16, tf32);
    # the executor does not (Ray tasks are bit-identical to in-process runs), it is recorded for
    # the reader. The precision comes from the environment `vqpaper run/book` sets for the notebook, else
    # the device's default (config.default_precision).
    env["precision"] = default_precision(device)
    env["executor"] = executor or "unknown"
    return env


def _wall_time(started: Any) -> float | None:
    """Seconds since ``started``, a ``time.time()`` value or a datetime (``None``: not timed)."""
    if started is None:
        return None
    if isinstance(started, _dt.datetime):
        return round((_dt.datetime.now(started.tzinfo) - started).total_seconds(), 3)
    return round(time.time() - float(started), 3)


# -------------------------------------------------------------------------- record

def _notebook_name(notebook: str | os.PathLike | None) -> str:
    if notebook is None:
        notebook = settings().notebook or "unknown"
    return Path(str(notebook)).stem if str(notebook).endswith((".py", ".ipynb")) else str(notebook)


def record(
    figure_id: str,
    values: Any,
    *,
    notebook: str | None = None,
    params: Mapping[str, Any] | None = None,
    profile: str | None = None,
    seeds: Any = None,
    started: Any = None,
    device: Any = None,
    executor: str | None = None,
    directory: str | os.PathLike | None = None,
) -> Path:
    """Write ``RESULTS/<figure_id>.json`` with the figure's numbers and their provenance.

    ``values`` is whatever the figure shows (nested dicts/lists of numbers: per seed
    and aggregated); numpy/torch scalars and arrays are converted. ``started`` is
    ``time.time()`` taken when the figure's work began; ``executor`` where its runs were executed.
    """
    paths.check_figure_id(figure_id)
    if profile is None:
        raise ValueError(f"record({figure_id!r}): pass profile= ('ci' or 'paper')")
    out_dir = Path(directory) if directory is not None else paths.RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "figure_id": figure_id,
        "notebook": _notebook_name(notebook),
        "profile": str(profile),
        "params": to_jsonable(dict(params or {}), "params"),
        "seeds": to_jsonable(seeds, "seeds"),
        "values": to_jsonable(values, "values"),
        "provenance": {
            "versions": versions(),
            "commit": git_commit(),
            "device": describe_device(device),
            "environment": environment(device, executor),
            "wall_time_s": _wall_time(started),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    path = out_dir / f"{figure_id}.json"
    # Write then rename: notebooks run in parallel and a reader never sees half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=1, allow_nan=True) + "\n")
    os.replace(tmp, path)
    return path


def load_results(directory: str | os.PathLike | None = None) -> dict[str, dict]:
    """Every recorded figure in ``directory`` (default RESULTS), keyed by figure id."""
    directory = Path(directory) if directory is not None else paths.RESULTS
    out: dict[str, dict] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        out[data.get("figure_id", path.stem)] = data
    return out


# ---------------------------------------------------------------------- provenance

def _short(value: Any, width: int = 60) -> str:
    if isinstance(value, Mapping):
        text = ", ".join(f"{k}={_short(v, width)}" for k, v in value.items())
    elif isinstance(value, list):
        text = "[" + ", ".join(_short(v, width) for v in value) + "]"
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _short_commit(commit: str) -> str:
    dirty = commit.endswith("-dirty")
    base = commit[: -len("-dirty")] if dirty else commit
    return base[:12] + ("-dirty" if dirty else "")


PROVENANCE_COLUMNS = ["figure", "notebook", "profile", "parameters", "commit", "environment",
                      "wall time (s)", "created (UTC)"]


def provenance_rows(notebook: str | None = None, directory=None) -> list[dict[str, Any]]:
    """One row per recorded figure (optionally of one notebook) for a provenance table."""
    wanted = _notebook_name(notebook) if notebook is not None else None
    rows = []
    for figure_id, data in load_results(directory).items():
        if wanted is not None and data.get("notebook") != wanted:
            continue
        prov = data.get("provenance", {})
        params = dict(data.get("params") or {})
        if data.get("seeds") is not None and "seeds" not in params:
            params["seeds"] = data["seeds"]
        versions = prov.get("versions", {})
        rows.append({
            "figure": figure_id,
            "notebook": data.get("notebook", ""),
            "profile": data.get("profile", ""),
            "parameters": _short(params, 120),
            "commit": _short_commit(str(prov.get("commit", ""))),
            "environment": "; ".join([str(prov.get("device", ""))]
                                     + [f"{k} {v}" for k, v in prov.get("environment", {}).items()
                                        if k in ("cpu", "cpu_capability", "blas", "threads", "precision", "executor")]
                                     + [f"{k} {v}" for k, v in versions.items()]),
            "wall time (s)": prov.get("wall_time_s"),
            "created (UTC)": str(prov.get("created", "")).replace("+00:00", ""),
        })
    return rows


def provenance_table(notebook: str | None = None, directory=None):
    """A pandas DataFrame of what produced each recorded figure (for a "Provenance" cell)."""
    import pandas as pd  # heavy: `vqpaper check` reads results without tables

    rows = provenance_rows(notebook, directory)
    columns = [c for c in PROVENANCE_COLUMNS if not (notebook is not None and c == "notebook")]
    table = pd.DataFrame(rows, columns=columns).set_index("figure")
    table.index.name = None  # one header row in the HTML
    return table
