"""The code fingerprint: a hash of the source of every module that decides a run's numbers.

It is part of every run's cache key (:func:`vqpaper.sweeps.run_key`), so editing any of these
modules makes every stored run stale. A Ray worker compares :data:`LOADED` with the fingerprint
of the points it is sent (:mod:`vqpaper.executors`): a long-lived worker that imported other code
must not store its results under this code's key. Imports nothing from the package.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

#: The modules whose code decides a run's numbers (given its config, which the key hashes too).
CODE_MODULES = ("quantizers.py", "remedies.py", "search_cpu.py", "models.py", "train.py", "data.py", "metrics.py",
                "config.py")
PACKAGE = Path(__file__).resolve().parent


def code_fingerprint(directory: Optional[Path] = None) -> str:
    """16 hex digits of the sha256 of :data:`CODE_MODULES` as they are on disk now."""
    h = hashlib.sha256()
    for name in CODE_MODULES:
        h.update((Path(directory or PACKAGE) / name).read_bytes())
    return h.hexdigest()[:16]


#: The fingerprint of the code as this process imported it (:func:`code_fingerprint` reads the files now).
LOADED = code_fingerprint()
