"""Where the points of a sweep run: one after another in this process, or as tasks on Ray.

:func:`vqpaper.sweeps.sweep` decides *what* to run (every point not already in the cache, in
groups that train as one model: :func:`vqpaper.train.run_group`) and stores each result as it
arrives; an executor decides *where* each group runs:

* ``local`` — in this process, in order. What a one-core run, a debugger or a test uses.
* ``ray`` — every group is a Ray task with declared resources (``cpus_per_run``,
  ``gpus_per_run``, fractional GPUs allowed so that small groups share a GPU), on a local Ray
  instance sized to the machine, or on an existing cluster (``RAY_ADDRESS`` /
  ``--ray-address``). The CIFAR data travel once, through the object store.
* ``auto`` (default) — ``ray`` when a cluster address is given, or the machine has a CUDA GPU
  or at least :data:`AUTO_RAY_MIN_CPUS` cores; ``local`` otherwise. Measured on the 2-core CI
  machine (book/reproduce.md): starting Ray costs 4-11 s and ~0.5 GB per instance plus a
  torch import per worker, and `vqpaper book` already keeps both cores busy with two notebooks
  at a time, so there Ray only adds time.

Both give bit-identical results: a Ray task sets torch's CPU threads to the count of the
process that submitted it (``config.set_threads``: 1 per run unless ``VQPAPER_THREADS`` says
otherwise) and the run seeds itself from its config. ``ray`` is imported only when a Ray
executor is used, so ``import vqpaper`` (and every notebook start) stays fast.

Environment (the command line's ``--executor``, ``--ray-address``, ``--cpus-per-run`` and
``--gpus-per-run`` set them for the notebooks' kernels): ``VQPAPER_EXECUTOR``, ``RAY_ADDRESS``,
``VQPAPER_CPUS_PER_RUN``, ``VQPAPER_GPUS_PER_RUN``.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import fingerprint
from .config import CifarRun, set_threads
from .errors import ConfigError, VQPaperError
from .settings import settings

EXECUTORS = ("auto", "local", "ray")
#: ``auto`` picks Ray on a machine with at least this many cores (or a GPU). Below it, the
#: book's notebooks (2 at a time, 1 thread per run) already fill the cores without Ray's
#: start-up; the threshold itself is a judgement, not a measurement: only 2 cores were available.
AUTO_RAY_MIN_CPUS = 8
#: GPUs a run on a CUDA device reserves unless ``gpus_per_run`` says otherwise: four runs share
#: a GPU. A batch-128 step of the paper's conv VQ-VAE is too small to fill a modern GPU alone.
DEFAULT_GPUS_PER_RUN = 0.25
#: Environment variables that decide a run's numbers or imports, passed to Ray's workers (a
#: worker of an already running instance does not inherit the submitting process's environment).
FORWARDED_ENV = ("PYTHONPATH", "ATEN_CPU_CAPABILITY", "PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG",
                 "VQPAPER_THREADS", "VQPAPER_PRECISION", "VQPAPER_COMPILE", "OMP_WAIT_POLICY")


class ExecutorError(VQPaperError, RuntimeError):
    """A sweep could not be run where it was asked to (Ray missing, a cluster timing out, ...)."""


#: One group to compute: the positions of its points in the sweep, their configs, the function
#: that trains them as one model (``train.run_group``) and the precision.
Task = tuple  # (indices, configs, runner, precision)
#: Called with (index, RunResult) for each point of a group that finished.
OnDone = Callable[[int, object], None]


def _threads() -> int:
    """Torch CPU threads of this process: what an in-process run uses, so what a task must use."""
    import torch

    return torch.get_num_threads()


def _call(runner, configs, data, precision, progress=False):
    return runner(configs, data, precision=precision, progress=progress)


def _deliver(indices, results, on_done: OnDone) -> None:
    """Hand each finished run of a group to ``on_done``; then raise the first run's error, if any
    (a diverged run stops the sweep, but only after the others of its group are stored)."""
    errors = []
    for index, result in zip(indices, results):
        if isinstance(result, BaseException):
            errors.append(result)
        else:
            on_done(index, result)
    if errors:
        raise errors[0]


class LocalExecutor:
    """Every group in this process, in the order given."""

    name = "local"

    def run(self, tasks: Sequence[Task], data, on_done: OnDone, progress: bool = False) -> None:
        """``progress``: each group shows its own bar (one step per epoch), read by vqpaper.progress."""
        for indices, configs, runner, precision in tasks:
            _deliver(indices, _call(runner, configs, data if _needs_data(configs[0]) else None, precision, progress),
                     on_done)

    def close(self) -> None:
        pass


def _needs_data(cfg) -> bool:
    return isinstance(cfg, CifarRun)


def _ray_task(runner, configs, data, precision, threads, code):
    """Body of one Ray task: a group's runs, on the same thread count and code as the submitting process.

    Errors come back as values (not Ray's wrapped exceptions), so the caller re-raises the
    original type with its attributes, e.g. ``TrainingDiverged.history``; so do the runs of the
    group (a list of results and errors).
    """
    import warnings

    try:
        if fingerprint.LOADED != code:
            # the result would be stored under the key of other code than the one computing it
            raise ExecutorError(
                f"a Ray worker runs other vqpaper code (fingerprint {fingerprint.LOADED}) than the code the "
                f"sweep's keys were made with ({code}): the source files changed after the worker started, "
                f"or its node has another checkout (install this one on every node: pip install -e .). Finished "
                f"points are stored; start the sweep again (a new Ray job starts new workers)")
        set_threads(threads)
        with warnings.catch_warnings():
            # arrays from the object store are read-only; the runs copy them to tensors anyway
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return "ok", _call(runner, configs, data, precision)
    except Exception as exc:  # noqa: BLE001 - handed back to the driver, which re-raises it
        return "error", exc


class _LocalHead:
    """A local Ray instance that cannot outlive the process that started it.

    ``ray.init()`` alone leaves Ray's dashboard and runtime-env agents running when the driver
    is killed (seen with SIGKILL: gcs_server, raylet and the workers exit within 3 s, the two
    agents stay). So the instance is started by a supervisor process (``python -m
    vqpaper.executors supervise``) in a session of its own; it holds the read end of a pipe
    whose write end only this process has, and when the pipe closes (``stop()``, exit, or any
    death of this process) it ends every process of its session, which is every Ray process of
    this instance and nothing else.
    """

    START_TIMEOUT_S = 180

    def __init__(self, num_cpus: Optional[int] = None, num_gpus: Optional[int] = None):
        import secrets
        import select
        import subprocess
        import tempfile

        if num_gpus is None:
            import torch

            num_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.log = Path(tempfile.gettempdir()) / f"vqpaper-ray-{os.getpid()}-{id(self):x}.log"
        #: What a process needs to join this instance: token authentication with a token of its own,
        #: made here and handed over in the environment (never read from or written to ~/.ray, so
        #: a machine that never ran Ray starts it as well as one that did; `ray start` does not
        #: create a missing ~/.ray/auth_token).
        self.auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        env.update(self.auth_env)  # we start our own
        cmd = [sys.executable, "-m", "vqpaper.executors", "supervise", "--num-cpus", str(num_cpus or os.cpu_count()),
               "--num-gpus", str(num_gpus), "--log", str(self.log)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     start_new_session=True, env=env)
        ready, _, _ = select.select([self.proc.stdout], [], [], self.START_TIMEOUT_S)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("ready "):
            self.stop()
            why = line or f"no answer within {self.START_TIMEOUT_S} s"
            raise ExecutorError(f"the local Ray instance did not start ({why}); its log: {self.log}")
        self.address = line.split()[1]

    def stop(self, timeout_s: float = 30) -> None:
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the supervisor's signal to end the session
            try:
                proc.wait(timeout=timeout_s)
            except Exception:  # noqa: BLE001 - it did not end: end its session from here
                _end_session(proc.pid, grace_s=0)
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()


def _use_token_auth(auth_env: dict) -> None:
    """Make this driver send the token of the instance it started (``_LocalHead.auth_env``).

    Ray reads the authentication mode and token when imported, so once ``ray`` is imported
    the environment variables alone are not enough: Ray's own helpers (private in ray 2.60,
    which constraints.txt pins) refresh them. Our notebook kernels get the variables before
    they import Ray (``book_instance``).
    """
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ.update(auth_env)
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # another Ray version: the variables, read at import, have to do
        return
    _enable_token_auth()
    AuthenticationTokenLoader.instance().reset_cache()


def _session_pids(sid: int) -> list:
    """Processes whose session id is ``sid`` (from /proc; Linux)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":  # a zombie has ended already
            out.append(int(entry))
    return out


def _end_session(sid: int, grace_s: float = 2.0) -> None:
    """SIGTERM every process of session ``sid`` but this one, then SIGKILL what is left after ``grace_s``."""
    import signal
    import time

    me = os.getpid()
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0)):
        pids = [p for p in _session_pids(sid) if p != me]
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while wait and time.monotonic() < deadline and [p for p in _session_pids(sid) if p != me]:
            time.sleep(0.1)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _supervise(num_cpus: int, num_gpus: int, log: str) -> int:
    """Body of the supervisor (see :class:`_LocalHead`): start Ray, say where, wait, end the session."""
    import signal
    import subprocess

    sid = os.getsid(0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a plain kill still ends the session (finally)
    from ray.util import get_node_ip_address

    ip, port = get_node_ip_address(), _free_port()  # the IP a driver on this node will look for
    ray_cli = Path(sys.executable).with_name("ray")
    launcher = [str(ray_cli)] if ray_cli.is_file() else [sys.executable, "-c",
                                                         "from ray.scripts.scripts import main; main()"]
    # every port our own, so that two instances on one machine (two tests, two books) never clash
    cmd = launcher + ["start", "--head", f"--port={port}", f"--node-ip-address={ip}", f"--num-cpus={num_cpus}",
                      f"--num-gpus={num_gpus}", "--include-dashboard=false", "--disable-usage-stats",
                      f"--dashboard-agent-listen-port={_free_port()}",
                      f"--dashboard-agent-grpc-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
                      f"--metrics-export-port={_free_port()}"]
    try:
        with open(log, "ab") as fh:
            code = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, timeout=150).returncode
        if code != 0:
            print(f"failed: `ray start` exited with {code}", flush=True)
            return 1
        print(f"ready {ip}:{port}", flush=True)
        sys.stdout.close()
        sys.stdin.buffer.read()  # returns when the driver closes the pipe or dies
        return 0
    except subprocess.TimeoutExpired:
        print("failed: `ray start` did not return within 150 s", flush=True)
        return 1
    finally:
        _end_session(sid)


class RayExecutor:
    """Every group as a Ray task; results are handed to ``on_done`` as their groups finish.

    ``address``: an existing cluster (``"host:port"``); ``None`` starts a local instance sized to
    the machine (``num_cpus``, ``num_gpus``: default all; see :class:`_LocalHead`), stopped by
    :meth:`close`, at exit, or when this process dies. ``cpus_per_run`` defaults to this
    process's torch thread count; ``gpus_per_run`` (default :data:`DEFAULT_GPUS_PER_RUN`) applies
    to runs whose device is CUDA, a CPU run reserves none. ``timeout_s``: give up when no point
    finishes for that long.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, *, cpus_per_run: Optional[float] = None,
                 gpus_per_run: Optional[float] = None, num_cpus: Optional[int] = None,
                 num_gpus: Optional[int] = None, timeout_s: Optional[float] = None):
        self.address = address or None
        self.cpus_per_run = None if cpus_per_run is None else check_cpus_per_run(cpus_per_run)
        self.gpus_per_run = DEFAULT_GPUS_PER_RUN if gpus_per_run is None else check_gpus_per_run(gpus_per_run)
        self.num_cpus, self.num_gpus, self.timeout_s = num_cpus, num_gpus, timeout_s
        self._ray = None
        self._head: Optional[_LocalHead] = None  # the local instance we started, if any
        self._connected = False                   # ray.init was called by us
        self._data_refs: dict = {}  # id(data) -> (data, ObjectRef): each data set is put once

    # ---------------------------------------------------------------- the instance
    def start(self):
        """Connect to the cluster, or start the local instance; returns the ``ray`` module."""
        if self._ray is not None:
            return self._ray
        try:
            import ray
        except ImportError:
            raise ExecutorError("executor 'ray' needs the ray package: pip install -c constraints.txt ray "
                                "(or `make venv`); or run with --executor local") from None
        import logging

        if not ray.is_initialized():
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            common = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                          runtime_env={"env_vars": env} if env else None)
            address = self.address
            try:
                if address is None:
                    self._head = _LocalHead(self.num_cpus, self.num_gpus)
                    address = self._head.address
                    _use_token_auth(self._head.auth_env)
                ray.init(address=address, **common)
            except Exception as exc:  # ConnectionError, TimeoutError, RuntimeError from ray.init
                self.close()
                where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
                raise ExecutorError(f"could not start or reach {where}: {type(exc).__name__}: {exc}; "
                                    f"check the address, or run with --executor local") from None
            self._connected = True
            atexit.register(self.close)
        self._ray = ray
        return ray

    @property
    def auth_env(self) -> dict:
        """The environment another process needs to join the local instance we started ({} for a cluster)."""
        self.start()
        return dict(self._head.auth_env) if self._head is not None else {}

    @property
    def gcs_address(self) -> str:
        """The address other processes (the book's notebook kernels) use to join this instance."""
        self.start()
        return self._head.address if self._head is not None else self._ray.get_runtime_context().gcs_address

    def close(self) -> None:
        """Disconnect; stop the local instance this executor started (never a cluster it only joined)."""
        ray, self._ray = self._ray, None
        self._data_refs.clear()
        if self._connected and ray is not None:
            self._connected = False
            with contextlib.suppress(Exception):
                ray.shutdown()
        head, self._head = self._head, None
        if head is not None:
            head.stop()

    # ---------------------------------------------------------------- the points
    def _data_ref(self, data):
        if data is None:
            return None
        held = self._data_refs.get(id(data))
        if held is None or held[0] is not data:
            held = self._data_refs[id(data)] = (data, self._ray.put(data))
        return held[1]

    def _options(self, cfg, threads: int) -> dict:
        on_gpu = str(getattr(cfg, "device", "cpu")).startswith("cuda")
        return {"num_cpus": self.cpus_per_run if self.cpus_per_run is not None else threads,
                "num_gpus": self.gpus_per_run if on_gpu else 0}

    @staticmethod
    def _check_feasible(ray, options: Sequence[dict]) -> None:
        """A task asking for more CPUs or GPUs than the whole cluster has would wait for ever: say so now."""
        total = ray.cluster_resources()
        for what, key in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            need = max((o[what] for o in options), default=0)
            if need > total.get(key, 0):
                raise ExecutorError(f"each sweep group asks for {what}={need:g} but the Ray cluster has "
                                    f"{total.get(key, 0):g} {key} in all, so it would never start; set "
                                    f"--cpus-per-run/--gpus-per-run (VQPAPER_CPUS_PER_RUN, VQPAPER_GPUS_PER_RUN) "
                                    f"or VQPAPER_THREADS to at most that")

    def run(self, tasks: Sequence[Task], data, on_done: OnDone, progress: bool = False) -> None:
        """``progress`` is not used: a task's per-epoch bar would go to its worker's log, not to this process."""
        if not tasks:
            return
        ray = self.start()
        threads, code = _threads(), fingerprint.code_fingerprint()
        self._check_feasible(ray, [self._options(configs[0], threads) for _, configs, _, _ in tasks])
        remote = ray.remote(_ray_task)
        data_ref = self._data_ref(data) if any(_needs_data(configs[0]) for _, configs, _, _ in tasks) else None
        pending = {}
        try:
            for indices, configs, runner, precision in tasks:
                ref = remote.options(**self._options(configs[0], threads), max_retries=1).remote(
                    runner, configs, data_ref if _needs_data(configs[0]) else None, precision, threads, code)
                pending[ref] = indices
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.timeout_s)
                if not ready:
                    raise ExecutorError(f"no sweep group finished within timeout_s={self.timeout_s} s "
                                        f"({len(pending)} still running on Ray)")
                for ref in ready:
                    indices = pending.pop(ref)
                    status, value = ray.get(ref)
                    if status == "error":
                        raise value
                    _deliver(indices, value, on_done)
        finally:
            for ref in pending:  # a failure or an interrupt: stop what is still queued or running
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)


# ------------------------------------------------------------------------ choosing one
def check_executor(name) -> str:
    if name not in EXECUTORS:
        raise ConfigError(f"executor must be one of {list(EXECUTORS)}, got {name!r} "
                          f"(vqpaper run/book: --executor local; environment: VQPAPER_EXECUTOR=local)")
    return name


def check_cpus_per_run(value) -> float:
    if isinstance(value, str):
        value = _number(value, "cpus_per_run")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"cpus_per_run must be a positive number, got {value!r}")
    return value


def check_gpus_per_run(value) -> float:
    """Ray accepts a fraction of one GPU (0.25: four runs share it) or whole GPUs (1, 2, ...)."""
    if isinstance(value, str):
        value = _number(value, "gpus_per_run")
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0
          and (value <= 1 or float(value).is_integer()))
    if not ok:
        raise ConfigError(f"gpus_per_run must be 0, a fraction of one GPU like 0.25, or a whole number of GPUs, "
                          f"got {value!r}")
    return value


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {text!r}") from None


def resolve_name(name: Optional[str] = None, address: Optional[str] = None) -> str:
    """``local`` or ``ray`` for ``name`` (default ``VQPAPER_EXECUTOR``, else ``auto``); see the module doc."""
    name = check_executor(name or settings().executor or "auto")
    if name != "auto":
        return name
    if address or settings().ray_address:
        return "ray"
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        gpu = False
    if gpu or (os.cpu_count() or 1) >= AUTO_RAY_MIN_CPUS:
        try:
            import importlib.util

            if importlib.util.find_spec("ray") is not None:
                return "ray"
        except (ImportError, ValueError):  # pragma: no cover
            pass
    return "local"


_shared: dict = {}


def default_executor():
    """The executor a sweep uses when given none: from the environment, one per process.

    A Ray executor is kept for the process (notebooks run several sweeps; starting Ray for each
    would cost seconds every time) and shut down at exit if it started the instance.
    """
    env = settings()
    address = env.ray_address or None
    name = resolve_name(None, address)
    if name == "local":
        return LocalExecutor()
    key = (address, env.cpus_per_run or None, env.gpus_per_run or None)
    if key not in _shared:
        _shared[key] = RayExecutor(address, cpus_per_run=key[1] or None, gpus_per_run=key[2] or None)
    return _shared[key]


def get_executor(executor=None):
    """An executor object from ``None`` (the default), a name (``"local"``, ``"ray"``, ``"auto"``) or itself."""
    if executor is None:
        return default_executor()
    if isinstance(executor, str):
        name = resolve_name(executor)
        if name == "local":
            return LocalExecutor()
        saved = os.environ.get("VQPAPER_EXECUTOR")
        os.environ["VQPAPER_EXECUTOR"] = "ray"
        try:
            return default_executor()
        finally:
            if saved is None:
                del os.environ["VQPAPER_EXECUTOR"]
            else:
                os.environ["VQPAPER_EXECUTOR"] = saved
    if hasattr(executor, "run"):
        return executor
    raise ConfigError(f"executor must be one of {list(EXECUTORS)} or an executor object, got {executor!r}")


@contextlib.contextmanager
def book_instance(name: Optional[str], address: Optional[str], *, cpus_per_run=None, gpus_per_run=None):
    """For ``vqpaper book``: one Ray instance for every notebook it executes.

    Yields the environment the notebooks' kernels get: with Ray and no cluster address, a local
    instance is started here and its address exported, so the points of all notebooks share the
    machine's cores and GPUs instead of each notebook starting (and splitting them with) its own.
    The instance is shut down when the block ends, whatever happens inside.
    """
    env = {}
    if cpus_per_run is not None:
        env["VQPAPER_CPUS_PER_RUN"] = str(check_cpus_per_run(cpus_per_run))
    if gpus_per_run is not None:
        env["VQPAPER_GPUS_PER_RUN"] = str(check_gpus_per_run(gpus_per_run))
    resolved = resolve_name(name, address)
    env["VQPAPER_EXECUTOR"] = resolved
    if resolved == "local":
        yield env
        return
    if address:
        env["RAY_ADDRESS"] = address
        yield env
        return
    if settings().ray_address:
        yield env
        return
    executor = RayExecutor()
    try:
        env["RAY_ADDRESS"] = executor.gcs_address
        env.update(executor.auth_env)
        yield env
    finally:
        executor.close()


def _main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m vqpaper.executors",
                                description="internal: the supervisor of a local Ray instance (see _LocalHead)")
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("supervise")
    q.add_argument("--num-cpus", type=int, required=True)
    q.add_argument("--num-gpus", type=int, required=True)
    q.add_argument("--log", required=True)
    args = p.parse_args(argv)
    return _supervise(args.num_cpus, args.num_gpus, args.log)


if __name__ == "__main__":
    sys.exit(_main())
