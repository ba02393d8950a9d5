"""Content-addressed CIFAR-10 subsets: the ``ci`` profile sees the same images on every machine.

A manifest (``vqpaper/manifests/cifar10-<name>.json``) lists, per split and in order, each
image's label and a hash of its pixels (the first 16 hex digits of the sha256 of its 3,072
bytes: uint8, 32 x 32 x 3, row-major HWC), its index in the official arrays where known, and
the sha256 of the whole subset (:func:`content_sha256`), whose first 16 hex digits are the
manifest's id. :func:`select` finds the manifest's images in any CIFAR arrays (the subset
itself, or a superset such as full CIFAR-10) by hash and returns them in the manifest's order,
or raises a :class:`~vqpaper.errors.DataFormatError` naming the split, the position and what
differs. :func:`write_manifest` (re)writes a manifest from the subset's arrays;
:func:`vqpaper.data.write_subset_manifest` from an ``.npz``, also as a command::

    python -m vqpaper.data ../shared/data/cifar10-subset.npz
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataFormatError

MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"
SPLITS = ("train", "test")
HASH_CHARS = 16
FORMAT = 1
_SHOWN = 3  # how many differing positions an error message lists


def manifest_path(name: str) -> Path:
    return MANIFEST_DIR / f"cifar10-{name}.json"


def available() -> tuple:
    return tuple(sorted(p.stem[len("cifar10-"):] for p in MANIFEST_DIR.glob("cifar10-*.json")))


def image_hashes(x) -> list:
    """Per image: the first 16 hex digits of the sha256 of its 3,072 uint8 HWC bytes."""
    rows = np.ascontiguousarray(x, dtype=np.uint8).reshape(len(x), -1)
    return [hashlib.sha256(row).hexdigest()[:HASH_CHARS] for row in rows]


def content_sha256(x_train, y_train, x_test, y_test) -> str:
    """sha256 of a whole subset: per split its name, its count, its pixels (uint8 NHWC) and labels (uint8)."""
    h = hashlib.sha256()
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        h.update(f"{split}:{len(x)}:".encode())
        h.update(np.ascontiguousarray(x, dtype=np.uint8).tobytes())
        h.update(np.asarray(y).astype(np.uint8).tobytes())
    return h.hexdigest()


@lru_cache(maxsize=None)
def load_manifest(name: str) -> dict:
    """The manifest ``name`` (e.g. ``"ci"``), checked for consistency; labels as int64 arrays."""
    path = manifest_path(name) if isinstance(name, str) and name.isidentifier() else None
    if path is None or not path.is_file():
        raise ConfigError(f"subset={name!r} is not allowed: known CIFAR-10 subsets are "
                          f"{', '.join(map(repr, available()))} (manifests in {MANIFEST_DIR}), or None for all images")
    raw = json.loads(path.read_text())
    manifest = dict(raw, path=path, splits={})
    for split in SPLITS:
        entry = raw["splits"][split]
        hashes, labels = entry["hashes"], np.array([int(c) for c in entry["labels"]], dtype=np.int64)
        if not (entry["count"] == len(hashes) == len(labels)) or raw["id"] != raw["sha256"][:HASH_CHARS]:
            raise DataFormatError(f"{path} is inconsistent ({split}: count, hashes and labels differ, "
                                  "or the id is not the start of the sha256): regenerate it with write_manifest")
        manifest["splits"][split] = dict(entry, labels=labels)
    return manifest


def _describe_missing(split, pos, want_hash, want_label, x_hashes, y, by_hash, same_size):
    where = f"{split} image at position {pos}"
    found = by_hash.get(want_hash)
    if found:  # the pixels are there, under another label
        return (f"{where}: the image (hash {want_hash}) is at index {found[0]} but labelled {int(y[found[0]])}; "
                f"the manifest says label {want_label}")
    if same_size:
        diff = []
        if x_hashes[pos] != want_hash:
            diff.append(f"pixels differ (hash {x_hashes[pos]}, manifest {want_hash})")
        if int(y[pos]) != want_label:
            diff.append(f"label {int(y[pos])}, manifest {want_label}")
        return f"{where}: " + ", ".join(diff)
    return f"{where} (hash {want_hash}, label {want_label}) is not there"


def select(manifest: dict, x_train, y_train, x_test, y_test, origin) -> tuple:
    """The manifest's images found in these arrays by hash, in the manifest's order.

    Arrays that already are the subset come back as they are; a superset is searched. Raises
    DataFormatError naming the split, the position and what differs when an image is missing.
    """
    out = []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        entry = manifest["splits"][split]
        want_hashes, want_labels = entry["hashes"], entry["labels"]
        x_hashes = image_hashes(x)
        if x_hashes == want_hashes and np.array_equal(y, want_labels):
            out += [x, y]
            continue
        by_hash, by_hash_label = {}, {}
        for i, (h, label) in enumerate(zip(x_hashes, np.asarray(y).tolist())):
            by_hash.setdefault(h, []).append(i)
            by_hash_label.setdefault((h, label), i)
        chosen = [by_hash_label.get((h, int(label)), -1) for h, label in zip(want_hashes, want_labels)]
        missing = [pos for pos, i in enumerate(chosen) if i < 0]
        if missing:
            same_size = len(x) == len(want_hashes)
            details = "; ".join(_describe_missing(split, pos, want_hashes[pos], int(want_labels[pos]), x_hashes,
                                                  y, by_hash, same_size) for pos in missing[:_SHOWN])
            more = f" (and {len(missing) - _SHOWN:,} more)" if len(missing) > _SHOWN else ""
            kind = ("it has the subset's number of images, but" if same_size
                    else f"it has {len(x):,} {split} images without all of the subset's:")
            raise DataFormatError(
                f"{origin} does not hold the CIFAR-10 '{manifest['name']}' subset (manifest {manifest['id']}, "
                f"{manifest['path'].name}): {kind} {len(missing):,} of {len(want_hashes):,} {split} images "
                f"differ: {details}{more}. The '{manifest['name']}' profile needs exactly these images: give it "
                "the shared cifar10-subset.npz or full CIFAR-10 (a torchvision folder or the download), or use "
                "another profile to run on all images of your data.")
        index = np.asarray(chosen, dtype=np.int64)
        out += [x[index], y[index]]
    digest = content_sha256(*out)
    if digest != manifest["sha256"]:  # only a 64-bit hash collision gets here
        raise DataFormatError(f"the images selected from {origin} match the per-image hashes of manifest "
                              f"{manifest['id']} but not its sha256 ({digest[:HASH_CHARS]}): refusing them")
    return tuple(out)


def write_manifest(x_train, y_train, x_test, y_test, name: str = "ci", official_indices=None,
                   about: str = "") -> Path:
    """(Re)write ``manifests/cifar10-<name>.json`` for exactly these arrays (uint8 NHWC, labels 0..9).

    ``official_indices`` optionally maps ``"train"``/``"test"`` to each image's index in the
    official CIFAR-10 arrays; unknown ones are stored as null.
    """
    digest = content_sha256(x_train, y_train, x_test, y_test)
    manifest = {
        "format": FORMAT,
        "name": name,
        "dataset": "CIFAR-10",
        "about": about or f"The CIFAR-10 images of the '{name}' subset, written by vqpaper.cifar_manifest.",
        "image_hash": f"first {HASH_CHARS} hex digits of sha256 of the image's 3,072 bytes (uint8, 32x32x3, "
                      "row-major HWC)",
        "sha256": digest,
        "sha256_of": "per split (train, then test): '<split>:<count>:', the uint8 NHWC pixels, the labels as uint8",
        "id": digest[:HASH_CHARS],
        "splits": {},
    }
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        indices = (official_indices or {}).get(split)
        manifest["splits"][split] = {
            "count": len(x),
            "labels": "".join(str(int(v)) for v in y),  # one digit per image
            "official_indices": None if indices is None else [int(i) for i in indices],
            "hashes": image_hashes(x),
        }
    MANIFEST_DIR.mkdir(exist_ok=True)
    path = manifest_path(name)
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    load_manifest.cache_clear()
    return path
