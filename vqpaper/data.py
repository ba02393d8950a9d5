"""Data: the synthetic Gaussian clusters and CIFAR-10 (SPEC §3, §8).

CIFAR-10 is looked for, in this order, and never silently swapped for other data:

1. the ``location`` argument of :func:`load_cifar10` (a notebook's ``cifar10`` parameter);
2. the environment variable ``VQPAPER_CIFAR10``;
3. ``../shared/data/cifar10-subset.npz`` beside the checkout (where ``make`` and CI find the `ci` subset);
4. ``data/``: ``data/cifar10-subset.npz``, then torchvision's folder ``data/cifar10/``;
5. torchvision's download into ``data/cifar10/``, where the network allows.

The first place that exists is used; a wrong file there is an error, not a reason to look further.

A location is either an ``.npz`` file with ``x_train, y_train, x_test, y_test`` (uint8 images
``[N, 32, 32, 3]``; ``[N, 3, 32, 32]`` is accepted and transposed; labels ``[N]`` or ``[N, 1]``
in 0..9) or a folder in torchvision layout (holding ``cifar-10-batches-py/``, or being it).

``subset="ci"`` gives the ``ci`` profile's images, the same on every machine: the manifest
``vqpaper/manifests/cifar10-ci.json`` (see :mod:`vqpaper.cifar_manifest`) names them by hash, and
they are found by hash in whatever the source holds (the subset itself, or full CIFAR-10), in
the manifest's order, or the load fails saying which images differ. Selected from full CIFAR-10
they are cached as ``data/cifar10-ci-<manifest id>.npz`` (verified on every read).
"""
from __future__ import annotations

import json
import numbers
import os
import pickle
import socket
import sys
import threading
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import cifar_manifest, paths
from .errors import ConfigError, DataFormatError, DataNotFoundError, check_positive_int
from .settings import CIFAR10 as ENV_VAR
from .settings import settings

__all__ = [
    "ENV_VAR",
    "CifarData",
    "make_clusters",
    "load_cifar10",
    "subset_cache_path",
    "write_subset_manifest",
    "cifar_to_tensor",
    "tensor_to_images",
]

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
BATCHES_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
N_CLASSES = 10
FULL_COUNTS = (50_000, 10_000)
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# Without network a download must fail in seconds, not hang a notebook: we probe first with a
# short timeout, and bound every socket operation of the download itself.
PROBE_TIMEOUT_S = 5.0
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0
# Where a manifest subset selected from full CIFAR-10 is cached (git-ignored).
SUBSET_CACHE_DIR = paths.ROOT / "data"
# Places 3 and 4 of the lookup (module docstring): the subset shared beside the checkout, one in data/.
SHARED_SUBSET = paths.ROOT.parent / "shared" / "data" / "cifar10-subset.npz"
DATA_SUBSET = paths.ROOT / "data" / "cifar10-subset.npz"

_HOW_TO_PROVIDE = (
    f"To provide CIFAR-10, set {ENV_VAR} (or pass location=...) to either an .npz file with keys "
    "x_train, y_train, x_test, y_test (uint8 images [N, 32, 32, 3], labels 0..9) or a "
    f"torchvision-layout folder (one holding {BATCHES_FOLDER}/, or that folder itself); "
    "or run where the network allows torchvision's download (download=True)."
)


# --------------------------------------------------------------------------- synthetic data


def make_clusters(n_per_cluster=1000, dim=2, n_clusters=10, cluster_std=0.5, seed=0):
    """Gaussian clusters (``make_blobs``) standardised per feature, as in the paper's §5.2.

    Returns ``X`` float32 ``[n_per_cluster * n_clusters, dim]`` and labels ``y`` int64.
    """
    from sklearn.datasets import make_blobs  # heavy (1 s): CIFAR-10 runs never need it
    from sklearn.preprocessing import StandardScaler

    n_per_cluster = check_positive_int("n_per_cluster", n_per_cluster)
    dim = check_positive_int("dim", dim)
    n_clusters = check_positive_int("n_clusters", n_clusters)
    seed = check_positive_int("seed", seed, maximum=2**32 - 1, minimum=0)  # numpy RandomState's range
    if (
        isinstance(cluster_std, bool)
        or not isinstance(cluster_std, numbers.Real)
        or not np.isfinite(cluster_std)
        or cluster_std <= 0
    ):
        raise ConfigError(f"cluster_std={cluster_std!r} is not allowed: expected a finite number > 0")

    X, y = make_blobs(
        n_samples=n_per_cluster * n_clusters,
        centers=n_clusters,
        n_features=dim,
        cluster_std=float(cluster_std),
        random_state=seed,
    )
    X = StandardScaler().fit_transform(X)
    return X.astype(np.float32), y.astype(np.int64)


# --------------------------------------------------------------------------- CIFAR-10 container


@dataclass
class CifarData:
    """CIFAR-10 images (uint8 NHWC) and labels (int64), with where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    description: str
    is_full: bool

    @property
    def n_train(self) -> int:
        return int(len(self.x_train))

    @property
    def n_test(self) -> int:
        return int(len(self.x_test))

    def subset(self, n_train=None, n_test=None, seed=0) -> "CifarData":
        """A seeded, class-stratified subset (``None`` keeps a split whole); order is preserved."""
        seed = check_positive_int("seed", seed, minimum=0)
        n_train = self.n_train if n_train is None else check_positive_int("n_train", n_train, maximum=self.n_train)
        n_test = self.n_test if n_test is None else check_positive_int("n_test", n_test, maximum=self.n_test)
        # Separate streams, so that changing n_test leaves the training subset unchanged.
        train_idx = _stratified_indices(self.y_train, n_train, np.random.default_rng([seed, 0]))
        test_idx = _stratified_indices(self.y_test, n_test, np.random.default_rng([seed, 1]))
        return replace(
            self,
            x_train=self.x_train[train_idx],
            y_train=self.y_train[train_idx],
            x_test=self.x_test[test_idx],
            y_test=self.y_test[test_idx],
            description=(
                f"{self.description}; subsampled (class-stratified, seed {seed}) to "
                f"{n_train:,} train / {n_test:,} test images"
            ),
            is_full=(n_train, n_test) == FULL_COUNTS and self.is_full,
        )


def _stratified_indices(y, n, rng):
    if n == len(y):
        return np.arange(len(y))
    perm = rng.permutation(len(y))
    ys = np.asarray(y)[perm]
    # Each image's rank within its class (in shuffled order) as a fraction of the class size:
    # the n smallest fractions keep every class's share to within one image.
    frac = np.empty(len(ys))
    for c in np.unique(ys):
        members = ys == c
        k = int(members.sum())
        frac[members] = (np.arange(k) + 0.5) / k
    chosen = perm[np.argsort(frac, kind="stable")[:n]]
    return np.sort(chosen)


# --------------------------------------------------------------------------- validation


def _check_images(x, key, origin):
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[1:] == (3, 32, 32):
        x = x.transpose(0, 2, 3, 1)  # NCHW as written by some pipelines: we keep NHWC
    if x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise DataFormatError(
            f"{key} in {origin} has shape {list(x.shape)}; expected [N, 32, 32, 3] "
            "(uint8 NHWC) or [N, 3, 32, 32]"
        )
    if len(x) == 0:
        raise DataFormatError(f"{key} in {origin} is empty (0 images)")
    if x.dtype != np.uint8:
        if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.integer):
            raise DataFormatError(
                f"{key} in {origin} has dtype {x.dtype}; expected uint8 pixel values 0..255 "
                "(images in [0, 1] floats are ambiguous: convert with (x * 255).round().astype(np.uint8))"
            )
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataFormatError(
                f"{key} in {origin} has {x.dtype} values in [{lo}, {hi}]; expected pixel values 0..255"
            )
        x = x.astype(np.uint8)
    return np.ascontiguousarray(x)


def _check_labels(y, key, n_images, origin):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # Keras-style [N, 1] labels
    if y.ndim != 1:
        raise DataFormatError(f"{key} in {origin} has shape {list(y.shape)}; expected 1-D labels [N]")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(f"{key} in {origin} has dtype {y.dtype}; expected integer class labels 0..9")
    if len(y) != n_images:
        raise DataFormatError(
            f"{key} in {origin} has {len(y):,} labels but there are {n_images:,} images"
        )
    bad = (y < 0) | (y >= N_CLASSES)
    if bad.any():
        raise DataFormatError(
            f"{key} in {origin} has labels outside 0..{N_CLASSES - 1}: "
            f"e.g. {int(y[bad][0])} ({int(bad.sum()):,} such labels; min {int(y.min())}, max {int(y.max())})"
        )
    return y.astype(np.int64)


def _checked_arrays(x_train, y_train, x_test, y_test, origin):
    x_train = _check_images(x_train, "x_train", origin)
    x_test = _check_images(x_test, "x_test", origin)
    y_train = _check_labels(y_train, "y_train", len(x_train), origin)
    y_test = _check_labels(y_test, "y_test", len(x_test), origin)
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------- readers


def _load_npz(path: Path):
    # np.load would try to unpickle a non-zip file; a truncated zip loses its directory.
    if not zipfile.is_zipfile(path):
        raise DataFormatError(
            f"{path} is not a valid .npz file (not a zip archive: corrupt or truncated?)"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in NPZ_KEYS if k not in archive.files]
            if missing:
                raise DataFormatError(
                    f"{path} lacks the key(s) {', '.join(missing)}; it has {', '.join(archive.files) or 'none'} "
                    f"and needs {', '.join(NPZ_KEYS)}"
                )
            arrays = [archive[k] for k in NPZ_KEYS]
    except DataFormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataFormatError(f"{path} could not be read as .npz ({type(exc).__name__}: {exc})") from exc
    return _checked_arrays(*arrays, origin=path)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: numpy arrays, lists, dicts and strings, nothing executable."""

    # Why not torchvision.datasets.CIFAR10(root, download=False) (issue 11)? It unpickles with
    # plain pickle.load, which runs whatever a crafted file names; its only guard is the md5 of
    # the official files, checked first. That check refuses any folder not byte-identical to the
    # official release (a re-pickled copy, a fake folder in the tests) with "Dataset not found or
    # corrupted" naming no file, and also needs batches.meta. Here any folder in the official
    # format is read safely, each error names its file, and the `ci` subset is verified by its
    # manifest instead of by md5. torchvision still downloads and md5-checks the archive.

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol 2 stores bytes
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")
        return super().find_class(module, name)


def _read_batch(path: Path):
    try:
        with open(path, "rb") as f:
            # latin1 is how Python 3 reads the Python 2 pickles of the official archive.
            entry = _BatchUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise DataFormatError(f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(entry, dict):
        raise DataFormatError(f"{path} holds a {type(entry).__name__}, expected a dict with 'data' and 'labels'")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise DataFormatError(f"{path} lacks 'data' or 'labels' (keys: {sorted(map(str, entry))})")
    data = np.asarray(entry["data"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(f"'data' in {path} has shape {list(data.shape)}; expected [N, 3072]")
    # Rows are 1024 red, then green, then blue values (the official format): to NHWC.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(entry["labels"])


def _batches_folder(folder: Path):
    """The ``cifar-10-batches-py`` folder at or under ``folder``, or None."""
    if (folder / BATCHES_FOLDER).is_dir():
        return folder / BATCHES_FOLDER
    if any((folder / name).exists() for name in TRAIN_BATCHES + (TEST_BATCH,)):
        return folder
    return None


def _missing_batches(folder: Path):
    return [name for name in TRAIN_BATCHES + (TEST_BATCH,) if not (folder / name).is_file()]


def _load_batches(folder: Path):
    missing = _missing_batches(folder)
    if missing:
        raise DataFormatError(f"{folder} is incomplete: missing {', '.join(missing)}")
    train = [_read_batch(folder / name) for name in TRAIN_BATCHES]
    test_x, test_y = _read_batch(folder / TEST_BATCH)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return _checked_arrays(x_train, y_train, test_x, test_y, origin=folder)


def _display_path(path: Path) -> str:
    """Path as the book shows it: relative to the repository when nearby, else absolute."""
    try:
        rel = os.path.relpath(path, paths.ROOT)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith(os.pardir + os.sep + os.pardir) else rel


def _make(arrays, source, where):
    x_train, y_train, x_test, y_test = arrays
    is_full = (len(x_train), len(x_test)) == FULL_COUNTS
    what = "full CIFAR-10" if is_full else "CIFAR-10 subset"
    return CifarData(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        source=source,
        description=f"{what} {where}: {len(x_train):,} train / {len(x_test):,} test images",
        is_full=is_full,
    )


def _load_location(location, how_given, manifest=None, cache_dir=None):
    path = Path(location).expanduser()
    if not path.exists():
        # An explicit location that is wrong must stop here: falling back to other data
        # would quietly change what the book reports.
        raise DataNotFoundError(
            f"CIFAR-10 location {str(path)!r} ({how_given}) does not exist. "
            f"Nothing else was tried. {_HOW_TO_PROVIDE}"
        )
    path = path.resolve()
    if path.is_dir():
        folder = _batches_folder(path)
        if folder is None:
            raise DataNotFoundError(
                f"CIFAR-10 location {str(path)!r} ({how_given}) is a folder without CIFAR-10: "
                f"it holds neither {BATCHES_FOLDER}/ nor {TRAIN_BATCHES[0]}..{TRAIN_BATCHES[-1]}, "
                f"{TEST_BATCH}. {_HOW_TO_PROVIDE}"
            )
        return _from_batches(folder, str(folder), f"from torchvision-layout folder {_display_path(folder)}",
                             manifest, cache_dir)
    if path.suffix.lower() != ".npz":
        raise DataFormatError(
            f"CIFAR-10 location {str(path)!r} ({how_given}) is a file but not an .npz. "
            f"If it is the cifar-10-python.tar.gz archive, extract it and point at the folder. {_HOW_TO_PROVIDE}"
        )
    if manifest is not None:
        return _make_subset(_load_npz(path), manifest, str(path), f"from {_display_path(path)}",
                            origin=_display_path(path))
    return _make(_load_npz(path), str(path), f"from {_display_path(path)}")


# --------------------------------------------------------------------------- download


def _network_problem(url=CIFAR_URL, timeout=PROBE_TIMEOUT_S):
    """None if ``url`` answers within ``timeout`` seconds, else why not."""
    result = {}

    def probe():
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout):
                pass
        except Exception as exc:  # any failure means: do not start a download
            result["problem"] = f"{type(exc).__name__}: {exc}"

    # A thread, because name resolution ignores socket timeouts and can hang on its own.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if thread.is_alive():
        return f"no answer from {url} within {timeout:g} s"
    return result.get("problem")


def _download_torchvision(root: Path) -> None:
    """Download and verify (md5) CIFAR-10 into ``root`` with torchvision; raises on failure."""
    problem = _network_problem()
    if problem is not None:
        raise OSError(f"network unreachable ({problem})")
    from torchvision.datasets import CIFAR10  # heavy, and only for a download

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)  # torchvision's urlopen sets none
    try:
        CIFAR10(str(root), train=False, download=True)  # checks every batch's md5
    finally:
        socket.setdefaulttimeout(previous)


# --------------------------------------------------------------------------- public loader


def load_cifar10(location=None, download=True, root=None, subset=None, cache_dir=None) -> CifarData:
    """Load CIFAR-10 from the first place of the module docstring's lookup that exists.

    ``root``: torchvision's folder instead of ``data/cifar10`` (places 3 and 4's ``.npz`` files
    are then not looked at). ``subset=None`` keeps every image; ``subset="ci"`` selects and
    verifies the images of the manifest ``vqpaper/manifests/cifar10-ci.json`` (from the subset
    itself or from a superset such as full CIFAR-10), caching a selection from a torchvision
    folder in ``cache_dir`` (default ``data/``) as ``cifar10-<subset>-<manifest id>.npz``.
    """
    manifest = None if subset is None else cifar_manifest.load_manifest(subset)
    if location is not None:
        return _load_location(location, "location argument", manifest, cache_dir)
    env_value = settings().cifar10
    if env_value:
        return _load_location(env_value, f"environment variable {ENV_VAR}", manifest, cache_dir)
    looked = ["(1) the location argument: not given", f"(2) the environment variable {ENV_VAR}: not set"]
    if root is None:
        for number, (path, what) in enumerate(((SHARED_SUBSET, "the subset shared beside the checkout"),
                                               (DATA_SUBSET, "the subset in data/")), start=3):
            if path.is_file():
                return _load_location(path, what, manifest, cache_dir)
            looked.append(f"({number}) {what}, {path}: not found")

    root = Path(root).expanduser().resolve() if root is not None else paths.ROOT / "data" / "cifar10"
    folder = root / BATCHES_FOLDER
    where = f"via torchvision ({_display_path(root)})"
    if manifest is not None:
        cached = _read_subset_cache(manifest, cache_dir, where)
        if cached is not None:
            return cached
    missing = _missing_batches(folder)
    if not missing:
        return _from_batches(folder, "torchvision", where, manifest, cache_dir)

    found = "does not exist" if not folder.exists() else f"is incomplete (missing {', '.join(missing)})"
    if download:
        try:
            _download_torchvision(root)
        except Exception as exc:  # reported below, with every place we looked
            download_note = f"download from {CIFAR_URL} failed ({type(exc).__name__}: {exc})"
        else:
            return _from_batches(folder, "torchvision", where, manifest, cache_dir)
    else:
        download_note = "download not attempted (download=False)"
    looked.append(f"({len(looked) + 1}) the torchvision folder {folder}: {found}; {download_note}")
    raise DataNotFoundError(f"CIFAR-10 not found. Looked at: {'; '.join(looked)}. {_HOW_TO_PROVIDE}")


# --------------------------------------------------------------------------- manifest subsets


def subset_cache_path(subset="ci", cache_dir=None) -> Path:
    """Where the manifest subset ``subset``, selected from full CIFAR-10, is cached."""
    manifest = cifar_manifest.load_manifest(subset)
    directory = Path(cache_dir) if cache_dir is not None else SUBSET_CACHE_DIR
    return directory / f"cifar10-{manifest['name']}-{manifest['id']}.npz"


def write_subset_manifest(npz_path, subset="ci", official_indices=None, about="") -> Path:
    """(Re)write the manifest ``vqpaper/manifests/cifar10-<subset>.json`` from an ``.npz`` holding
    exactly the subset, read with the same checks as :func:`load_cifar10`."""
    arrays = _load_npz(Path(npz_path).expanduser().resolve())
    existing = cifar_manifest.manifest_path(subset)
    if not about and existing.is_file():  # keep the provenance note of the manifest it replaces
        about = json.loads(existing.read_text()).get("about", "")
    about = about or (f"The CIFAR-10 images of the '{subset}' subset, written by "
                      f"vqpaper.data.write_subset_manifest from {Path(npz_path).name}.")
    return cifar_manifest.write_manifest(*arrays, name=subset, official_indices=official_indices, about=about)


def _make_subset(arrays, manifest, source, where, origin):
    x_train, y_train, x_test, y_test = cifar_manifest.select(manifest, *arrays, origin=origin)
    return CifarData(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        source=source,
        description=(f"CIFAR-10 {manifest['name']} subset (manifest {manifest['id']}) {where}: "
                     f"{len(x_train):,} train / {len(x_test):,} test images"),
        is_full=False,
    )


def _read_subset_cache(manifest, cache_dir, where):
    """The cached subset if its file exists and matches the manifest's sha256, else None."""
    path = subset_cache_path(manifest["name"], cache_dir)
    if not path.is_file():
        return None
    try:
        arrays = _load_npz(path)
    except DataFormatError:
        return None  # a damaged cache is rebuilt
    if cifar_manifest.content_sha256(*arrays) != manifest["sha256"]:
        return None
    x_train, y_train, x_test, y_test = arrays
    return CifarData(
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, source=str(path),
        description=(f"CIFAR-10 {manifest['name']} subset (manifest {manifest['id']}) {where}, cached in "
                     f"{_display_path(path)}: {len(x_train):,} train / {len(x_test):,} test images"),
        is_full=False,
    )


def _write_subset_cache(cifar, manifest, cache_dir):
    """Write the selected subset atomically; a read-only data folder only costs the speed-up."""
    path = subset_cache_path(manifest["name"], cache_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, x_train=cifar.x_train, y_train=cifar.y_train, x_test=cifar.x_test, y_test=cifar.y_test)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def _from_batches(folder, source, where, manifest, cache_dir):
    if manifest is None:
        return _make(_load_batches(folder), source, where)
    cached = _read_subset_cache(manifest, cache_dir, where)
    if cached is not None:
        return cached
    cifar = _make_subset(_load_batches(folder), manifest, source, where, origin=_display_path(folder))
    _write_subset_cache(cifar, manifest, cache_dir)
    return cifar


# --------------------------------------------------------------------------- tensors


def cifar_to_tensor(x_uint8) -> torch.Tensor:
    """uint8 NHWC images -> float32 NCHW tensor in [-0.5, 0.5] (x / 255 - 0.5, as sonnet's example)."""
    x = np.asarray(x_uint8)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataFormatError(
            f"cifar_to_tensor expects uint8 images [N, H, W, 3]; got {x.dtype} with shape {list(x.shape)}"
        )
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    return (t.float() / 255.0 - 0.5).contiguous()


def tensor_to_images(t) -> np.ndarray:
    """Inverse of :func:`cifar_to_tensor`: NCHW values around [-0.5, 0.5] -> uint8 NHWC (clipped)."""
    t = torch.as_tensor(t).detach().to("cpu", torch.float32)
    if t.ndim != 4:
        raise DataFormatError(f"tensor_to_images expects [N, C, H, W]; got shape {list(t.shape)}")
    x = ((t + 0.5) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _main(argv) -> int:
    """``python -m vqpaper.data SUBSET.npz [NAME]``: (re)write the manifest of a subset (default ``ci``)."""
    if len(argv) not in (1, 2):
        print("usage: python -m vqpaper.data SUBSET.npz [NAME]", file=sys.stderr)
        return 2
    written = write_subset_manifest(*argv)
    print(f"wrote {written} (id {cifar_manifest.load_manifest(argv[1] if len(argv) == 2 else 'ci')['id']})")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
