"""Settings from the environment, read in one place.

Every environment variable the library reads is a field of :class:`Settings`; :func:`settings`
takes a snapshot of ``os.environ`` when called (so a test or a command that sets a variable is
seen at once). The command line sets some of them for the notebooks' kernels (``vqpaper run/book
--precision``, ``--executor``, ...). Values are stripped; an empty variable counts as unset.

=========================  ==========================================================  ===============
variable                   meaning                                                     read by
=========================  ==========================================================  ===============
``VQPAPER_BUILD``          build folder (default ``_build`` in the repository)         ``paths``
``VQPAPER_CACHE``          run cache (default ``<build>/cache``)                       ``paths``
``VQPAPER_STAGE``          a kernel's results/figures until its notebook succeeded     ``paths``
``VQPAPER_NO_CACHE``       ``1``/``true``/``yes``: compute every run, store nothing    ``sweeps``
``VQPAPER_CIFAR10``        CIFAR-10 ``.npz`` or torchvision folder                     ``data``
``VQPAPER_THREADS``        torch CPU threads per run (default 1)                       ``config``
``VQPAPER_PRECISION``      ``float32``, ``tf32`` or ``bf16`` (default: tf32 on CUDA)   ``train``, ``results``
``VQPAPER_COMPILE``        ``1``/``true``/``yes``: torch.compile encoder and decoder   ``train``
``VQPAPER_EXECUTOR``       ``auto``, ``local`` or ``ray``                              ``executors``
``RAY_ADDRESS``            an existing Ray cluster to send the runs to                 ``executors``
``VQPAPER_CPUS_PER_RUN``   CPUs a Ray task reserves                                    ``executors``
``VQPAPER_GPUS_PER_RUN``   GPUs a Ray task reserves (a fraction shares a GPU)          ``executors``
``VQPAPER_NOTEBOOK``       the notebook a record belongs to, when it does not say      ``results``
=========================  ==========================================================  ===============
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from .errors import ConfigError

CIFAR10 = "VQPAPER_CIFAR10"


@dataclass(frozen=True)
class Settings:
    """One snapshot of the variables above, as text ("" when unset); parsed where a type is needed."""

    build: str = ""
    cache: str = ""
    stage: str = ""
    no_cache_text: str = ""
    cifar10: str = ""
    threads_text: str = ""
    precision: str = ""
    compile_text: str = ""
    executor: str = ""
    ray_address: str = ""
    cpus_per_run: str = ""
    gpus_per_run: str = ""
    notebook: str = ""

    @property
    def no_cache(self) -> bool:
        return self.no_cache_text.lower() in ("1", "true", "yes")

    @property
    def compile(self) -> bool:
        return self.compile_text.lower() in ("1", "true", "yes")

    @property
    def threads(self) -> Optional[int]:
        """``VQPAPER_THREADS`` as a positive integer, None when unset."""
        if not self.threads_text:
            return None
        try:
            n = int(self.threads_text)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"VQPAPER_THREADS must be a positive integer, got {self.threads_text!r}")
        return n


_VARIABLES = {"build": "VQPAPER_BUILD", "cache": "VQPAPER_CACHE", "stage": "VQPAPER_STAGE",
              "no_cache_text": "VQPAPER_NO_CACHE",
              "cifar10": CIFAR10, "threads_text": "VQPAPER_THREADS", "precision": "VQPAPER_PRECISION",
              "compile_text": "VQPAPER_COMPILE",
              "executor": "VQPAPER_EXECUTOR", "ray_address": "RAY_ADDRESS",
              "cpus_per_run": "VQPAPER_CPUS_PER_RUN", "gpus_per_run": "VQPAPER_GPUS_PER_RUN",
              "notebook": "VQPAPER_NOTEBOOK"}
#: The variables read, by name.
VARIABLES = tuple(_VARIABLES.values())


def settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """The settings in ``environ`` (default ``os.environ``, read now)."""
    environ = os.environ if environ is None else environ
    return Settings(**{field: environ.get(name, "").strip() for field, name in _VARIABLES.items()})
