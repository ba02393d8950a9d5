"""Names: the library's quantizers, and the remedy recipes of notebook 06 built from them.

The quantizers of vector-quantize-pytorch (adapted in :mod:`vqpaper.remedies`) are named ``"vq-lib"``
plus the remedies switched on (``"vq-lib-restart-rotation"``, flags in the order of
:data:`LIBRARY_VQ_FLAGS`), and ``"fsq"``. A recipe is a quantizer, a training method and a K-means
setting: parts of :data:`PARTS` joined by ``+`` (``"pretrained+restart"``). :func:`parse_remedy`
turns it into the run-config fields it sets (``quantizer``, ``method``, ``kmeans_init``) and
:func:`with_remedy` applies them to run configs; the verdicts of each recipe against the
:data:`BASELINE` are in :mod:`vqpaper.verdicts`. Imports nothing but ``errors``: the adapters and
the configs below it read these names.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from .errors import ConfigError

# ------------------------------------------------------------------ the library's quantizers by name
#: Flags of the library's ``VectorQuantize`` that a quantizer name can switch on, in name order
#: (``remedies.LibraryVQ`` turns each into the library's argument).
LIBRARY_VQ_FLAGS = ("restart", "rotation", "l2")


def vq_name(flags: Iterable[str]) -> str:
    """The library VQ with these flags: ``("l2", "restart")`` -> ``"vq-lib-restart-l2"``."""
    flags = [f for f in LIBRARY_VQ_FLAGS if f in set(flags)]
    return "-".join(["vq-lib", *flags])


#: The library's quantizers by name: VectorQuantize with every subset of the flags, then FSQ.
LIBRARY_QUANTIZERS = tuple(vq_name(c) for n in range(len(LIBRARY_VQ_FLAGS) + 1)
                           for c in itertools.combinations(LIBRARY_VQ_FLAGS, n)) + ("fsq",)


def vq_flags(name: str) -> tuple[str, ...]:
    """The flags of a library VQ name: ``"vq-lib-restart-l2"`` -> ``("restart", "l2")``."""
    if name not in LIBRARY_QUANTIZERS or name == "fsq":
        raise ConfigError(f"{name!r} is not a vector-quantize-pytorch VQ name; allowed: "
                          f"{[n for n in LIBRARY_QUANTIZERS if n != 'fsq']}")
    return tuple(name.split("-")[2:])


# ------------------------------------------------------------------ recipes
#: The parts a remedy recipe is made of; join them with "+" (``"pretrained+restart"``).
#: Each part sets fields of a run config (quantizer, method, K-means); the library flags combine.
PARTS = {
    "ema": "EMA-VQ from scratch, ours (the baseline)",
    "pretrained": "pretrain the autoencoder, then VQ (the paper's remedy)",
    "simvq": "SimVQ (codebook = W(B), B frozen)",
    "batch-kmeans": "K-means on the first training batch instead of the whole training set",
    "lib": "EMA-VQ of vector-quantize-pytorch with our settings",
    "restart": "dead-code restart (vector-quantize-pytorch)",
    "rotation": "rotation trick (vector-quantize-pytorch)",
    "l2": "l2-normalised low-dimensional codes (vector-quantize-pytorch)",
    "fsq": "FSQ (vector-quantize-pytorch)",
}
#: Short names for tables and figures.
LABELS = {"ema": "EMA scratch", "pretrained": "pretrained", "simvq": "SimVQ", "batch-kmeans": "first-batch K-means",
          "lib": "library EMA", "restart": "dead-code restart", "rotation": "rotation trick", "l2": "l2 low-dim codes",
          "fsq": "FSQ"}
#: The recipe every other one is compared with: the paper's EMA-VQ from scratch, K-means on the
#: outputs of the untrained encoder over the whole training set (notebooks 02-04).
BASELINE = "ema"
_QUANTIZER_PARTS = ("ema", "simvq", "fsq", "lib")


@dataclass(frozen=True)
class Remedy:
    """A parsed recipe: its name (as given), its parts, and the run-config fields it sets."""
    name: str
    parts: tuple
    quantizer: str
    method: str
    kmeans_init: str

    @property
    def label(self) -> str:
        return " + ".join(LABELS[p] for p in self.parts)

    @property
    def changes(self) -> dict:
        return {"quantizer": self.quantizer, "method": self.method, "kmeans_init": self.kmeans_init}


def parse_remedy(name: str) -> Remedy:
    """``"pretrained+restart"`` -> the run-config fields of that recipe (see ``PARTS``).

    At most one quantizer (``ema``, ``simvq``, ``fsq``, or the library's VQ, which ``restart``,
    ``rotation`` and ``l2`` switch on and combine); ``batch-kmeans`` needs a codebook that
    K-means initialises (ours or the library's VQ); ``lib`` alone is the library's VQ without a
    flag (with a flag it is implied: ``"restart"``, not ``"lib+restart"``).
    """
    allowed = f"parts {list(PARTS)} joined by '+', e.g. 'pretrained+restart'"
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"remedies: each remedy must be a non-empty string of {allowed}, got {name!r}")
    parts = tuple(p.strip() for p in name.split("+"))
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"remedies: unknown part(s) {unknown} in {name!r}; allowed: {allowed}")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"remedies: {name!r} repeats a part; allowed: {allowed}")
    flags = [p for p in parts if p in LIBRARY_VQ_FLAGS]
    chosen = [p for p in parts if p in _QUANTIZER_PARTS] + (["lib"] if flags and "lib" not in parts else [])
    if "lib" in parts and flags:
        raise ConfigError(f"remedies: {name!r}: 'lib' is implied by {flags}; write {'+'.join(p for p in parts if p != 'lib')!r}")
    if len(chosen) > 1:
        raise ConfigError(f"remedies: {name!r} names more than one quantizer ({chosen}); a recipe has one of "
                          f"'ema', 'simvq', 'fsq' or the library's VQ (lib, restart, rotation, l2)")
    quantizer = {"ema": "ema", "simvq": "simvq", "fsq": "fsq"}.get(chosen[0], vq_name(flags)) if chosen else "ema"
    if "batch-kmeans" in parts and quantizer in ("simvq", "fsq"):
        raise ConfigError(f"remedies: {name!r}: {quantizer} has no codebook for K-means to initialise; "
                          f"'batch-kmeans' combines with 'ema' or the library's VQ")
    return Remedy(name, parts, quantizer, "pretrained" if "pretrained" in parts else "scratch",
                  "batch" if "batch-kmeans" in parts else "dataset")


def parse_remedies(names: Sequence[str]) -> list[Remedy]:
    """Parse a list of recipes; two that set the same fields (``"a+b"``, ``"b+a"``) are an error."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
        raise ConfigError(f"remedies must be a non-empty list like ['ema', 'pretrained', 'restart'], got {names!r}")
    out = [parse_remedy(n) for n in names]
    seen = {}
    for r in out:
        key = tuple(sorted(r.changes.items()))
        if key in seen:
            raise ConfigError(f"remedies: {seen[key]!r} and {r.name!r} are the same recipe; keep one")
        seen[key] = r.name
    return out


def with_remedy(configs: Iterable, remedy: Remedy) -> list:
    """The run configs with the recipe's quantizer, method and K-means set (others unchanged)."""
    return [replace(c, **remedy.changes).validate() for c in configs]


def key(name: str) -> str:
    """A recipe's name as a glue key / claim id part: ``"pretrained+restart"`` -> ``"pretrained-and-restart"``."""
    return name.replace("+", "-and-")


def pick_recipe(names: Sequence[str], wanted: Sequence[str]) -> str:
    """The first recipe of ``names`` that has a part of ``wanted`` (in ``wanted``'s order), else the baseline."""
    for part in wanted:
        for name in names:
            if part in parse_remedy(name).parts:
                return name
    return BASELINE


def describe(name: str) -> str:
    """A recipe in words, saying which implementation it runs: ``"dead-code restart (vector-quantize-pytorch)"``."""
    r = parse_remedy(name)
    where = " (vector-quantize-pytorch)" if r.quantizer in LIBRARY_QUANTIZERS else ""
    words = {BASELINE: "EMA-VQ from scratch", "pretrained": "pretrained, then EMA-VQ (the paper's remedy)"}
    return words.get(r.name, r.label) + where
