"""The content-addressed CIFAR-10 subsets (issue 14): the `ci` profile sees the same images wherever
they come from (the shared .npz, a torchvision folder, a superset .npz), or the load fails saying
which image differs; a selection from full CIFAR-10 is cached and reused."""
import json
import pickle

import numpy as np
import pytest

from vqpaper import cifar_manifest, data
from vqpaper.data import ENV_VAR, load_cifar10
from vqpaper.errors import ConfigError, DataFormatError

KEYS = ("x_train", "y_train", "x_test", "y_test")


@pytest.fixture(autouse=True)
def _no_env_location(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def no_download(monkeypatch):
    calls = []

    def fail(root):
        calls.append(root)
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(data, "_download_torchvision", fail)
    return calls


def images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def labels(n, seed):
    return np.random.default_rng(seed).integers(0, 10, size=n).astype(np.int64)


def arrays_of(cifar):
    return tuple(getattr(cifar, k) for k in KEYS)


def assert_same(a, b):
    for key, u, v in zip(KEYS, a, b):
        assert u.dtype == v.dtype and np.array_equal(u, v), key


def write_torchvision_folder(root, x_train, y_train, x_test, y_test, n_batches=5, seed=0, extra=(50, 20)):
    """``root/cifar-10-batches-py`` as the official files are (pickled dicts, CHW-planar uint8 rows),
    holding the given images at shuffled positions among ``extra`` random ones (per split)."""
    rng = np.random.default_rng(seed)
    folder = root / data.BATCHES_FOLDER
    folder.mkdir(parents=True)

    def mixed(x, y, n_extra, s):
        xs, ys = np.concatenate([x, images(n_extra, s)]), np.concatenate([y, labels(n_extra, s + 1)])
        order = rng.permutation(len(xs))
        return xs[order], ys[order]

    def dump(name, x, y):
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)  # 1024 red, then green, then blue
        entry = {b"batch_label": name.encode(), b"labels": [int(v) for v in y], b"data": rows}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))

    xtr, ytr = mixed(x_train, y_train, extra[0], 100 + seed)
    for i, (xb, yb) in enumerate(zip(np.array_split(xtr, n_batches), np.array_split(ytr, n_batches))):
        dump(f"data_batch_{i + 1}", xb, yb)
    dump("test_batch", *mixed(x_test, y_test, extra[1], 200 + seed))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}))
    return root


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A manifest 'tiny' (30 train / 12 test random images) in a temporary manifest folder."""
    monkeypatch.setattr(cifar_manifest, "MANIFEST_DIR", tmp_path / "manifests")
    cifar_manifest.load_manifest.cache_clear()
    subset = (images(30, 1), labels(30, 2), images(12, 3), labels(12, 4))
    npz = tmp_path / "tiny.npz"
    np.savez(npz, **dict(zip(KEYS, subset)))
    data.write_subset_manifest(npz, "tiny")
    yield {"arrays": subset, "npz": npz, "manifest": cifar_manifest.load_manifest("tiny")}
    cifar_manifest.load_manifest.cache_clear()


# ----------------------------------------------------------------------------- the committed manifest


def test_committed_ci_manifest_is_compact_and_consistent():
    path = cifar_manifest.manifest_path("ci")
    assert path.stat().st_size < 300_000
    manifest = cifar_manifest.load_manifest("ci")
    assert manifest["id"] == manifest["sha256"][:16] and data.subset_cache_path("ci").name == \
        f"cifar10-ci-{manifest['id']}.npz"
    for split, count in (("train", 5085), ("test", 1017)):
        entry = manifest["splits"][split]
        assert entry["count"] == count == len(entry["hashes"]) == len(entry["labels"])
        assert set(entry["labels"].tolist()) == set(range(10))
        assert entry["official_indices"] is None  # not known for the salvaged subset
        assert len(set(entry["hashes"])) == count


def test_unknown_subset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="subset='nope'.*'ci'"):
        load_cifar10(tmp_path, subset="nope")


# ----------------------------------------------------------------------------- selection (synthetic manifest)


def test_subset_npz_is_verified_and_kept_as_is(tiny):
    cifar = load_cifar10(tiny["npz"], subset="tiny")
    assert_same(arrays_of(cifar), tiny["arrays"])
    assert cifar.is_full is False and cifar.source == str(tiny["npz"].resolve())
    assert f"tiny subset (manifest {tiny['manifest']['id']})" in cifar.description
    assert "30 train / 12 test" in cifar.description


def test_superset_npz_gives_the_subset_in_manifest_order(tiny, tmp_path):
    x_train, y_train, x_test, y_test = tiny["arrays"]
    rng = np.random.default_rng(5)
    big = {}
    for key_x, key_y, x, y, n in (("x_train", "y_train", x_train, y_train, 200), ("x_test", "y_test", x_test, y_test, 80)):
        xs, ys = np.concatenate([images(n, n), x]), np.concatenate([labels(n, n + 1), y])
        order = rng.permutation(len(xs))
        big[key_x], big[key_y] = xs[order], ys[order]
    np.savez(tmp_path / "big.npz", **big)
    assert_same(arrays_of(load_cifar10(tmp_path / "big.npz", subset="tiny")), tiny["arrays"])
    assert load_cifar10(tmp_path / "big.npz").n_train == 230  # subset=None: every image, as before


def test_torchvision_folder_gives_the_subset_in_order_and_caches_it(tiny, tmp_path, monkeypatch, no_download):
    folder = write_torchvision_folder(tmp_path / "tv", *tiny["arrays"])
    cache = tmp_path / "cache"
    first = load_cifar10(folder, subset="tiny", cache_dir=cache)
    assert_same(arrays_of(first), tiny["arrays"])
    assert "torchvision-layout folder" in first.description and "cached" not in first.description
    cached = data.subset_cache_path("tiny", cache)
    assert cached.is_file() and cached.name == f"cifar10-tiny-{tiny['manifest']['id']}.npz"
    assert sorted(p.name for p in cache.iterdir()) == [cached.name]  # no partial file left

    # The second load reads the cache: the batches are not read again.
    monkeypatch.setattr(data, "_load_batches", lambda folder: pytest.fail("the batches were read again"))
    second = load_cifar10(folder, subset="tiny", cache_dir=cache)
    assert_same(arrays_of(second), tiny["arrays"])
    assert f"cached in {cached}" in second.description and second.source == str(cached)
    assert no_download == []


def test_default_root_selects_caches_and_then_needs_only_the_cache(tiny, tmp_path, monkeypatch, no_download):
    root = write_torchvision_folder(tmp_path / "root", *tiny["arrays"], seed=3)
    cache = tmp_path / "cache"
    cifar = load_cifar10(root=root, subset="tiny", cache_dir=cache)
    assert cifar.source == "torchvision" and "via torchvision" in cifar.description
    assert_same(arrays_of(cifar), tiny["arrays"])
    for path in (root / data.BATCHES_FOLDER).iterdir():
        path.unlink()
    again = load_cifar10(root=root, subset="tiny", cache_dir=cache)
    assert_same(arrays_of(again), tiny["arrays"]) and no_download == []


def test_damaged_or_foreign_cache_is_rebuilt(tiny, tmp_path, no_download):
    folder = write_torchvision_folder(tmp_path / "tv", *tiny["arrays"])
    cache = tmp_path / "cache"
    cached = data.subset_cache_path("tiny", cache)
    cache.mkdir()
    x_train, y_train, x_test, y_test = tiny["arrays"]
    other = x_train.copy()
    other[0, 0, 0, 0] ^= 1
    np.savez(cached, x_train=other, y_train=y_train, x_test=x_test, y_test=y_test)  # valid npz, wrong pixels
    assert_same(arrays_of(load_cifar10(folder, subset="tiny", cache_dir=cache)), tiny["arrays"])
    with np.load(cached) as rebuilt:
        assert np.array_equal(rebuilt["x_train"], x_train)
    cached.write_bytes(b"garbage")
    assert_same(arrays_of(load_cifar10(folder, subset="tiny", cache_dir=cache)), tiny["arrays"])


def test_tampered_image_names_split_and_position(tiny, tmp_path):
    x_train, y_train, x_test, y_test = (a.copy() for a in tiny["arrays"])
    x_test[7, 5, 6, 2] ^= 0x10
    np.savez(tmp_path / "tampered.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    with pytest.raises(DataFormatError) as info:
        load_cifar10(tmp_path / "tampered.npz", subset="tiny")
    message = str(info.value)
    assert "tampered.npz" in message and "test image at position 7: pixels differ" in message
    assert "1 of 12 test images" in message and tiny["manifest"]["splits"]["test"]["hashes"][7] in message


def test_relabelled_image_names_both_labels(tiny, tmp_path):
    x_train, y_train, x_test, y_test = (a.copy() for a in tiny["arrays"])
    y_train[3] = (y_train[3] + 1) % 10
    np.savez(tmp_path / "relabelled.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    with pytest.raises(DataFormatError, match=rf"train image at position 3: .* labelled {y_train[3]}; "
                                              rf"the manifest says label {tiny['arrays'][1][3]}"):
        load_cifar10(tmp_path / "relabelled.npz", subset="tiny")


def test_folder_without_the_subset_is_refused(tiny, tmp_path):
    x_train, y_train, x_test, y_test = tiny["arrays"]
    folder = write_torchvision_folder(tmp_path / "tv", x_train[1:], y_train[1:], x_test, y_test)
    cache = tmp_path / "cache"
    with pytest.raises(DataFormatError, match="train image at position 0 .* is not there") as info:
        load_cifar10(folder, subset="tiny", cache_dir=cache)
    assert "without all of the subset's" in str(info.value)
    assert not cache.exists()  # nothing cached from a failed selection


def test_manifest_round_trip_is_stable(tiny, tmp_path):
    before = cifar_manifest.manifest_path("tiny").read_text()
    data.write_subset_manifest(tiny["npz"], "tiny")
    assert cifar_manifest.manifest_path("tiny").read_text() == before
    raw = json.loads(before)
    assert raw["splits"]["train"]["labels"] == "".join(map(str, tiny["arrays"][1]))


# ----------------------------------------------------------------------------- the real ci subset


def test_ci_from_the_shared_npz_is_exactly_the_file(cifar_subset_path):
    plain = load_cifar10(cifar_subset_path)
    ci = load_cifar10(cifar_subset_path, subset="ci")
    assert_same(arrays_of(ci), arrays_of(plain))  # so the ci numbers cannot change
    assert "ci subset (manifest" in ci.description and "5,085 train / 1,017 test" in ci.description


def test_ci_from_a_torchvision_folder_equals_the_shared_npz(cifar_subset_path, tmp_path, no_download):
    expected = arrays_of(load_cifar10(cifar_subset_path))
    folder = write_torchvision_folder(tmp_path / "tv", *expected, extra=(2000, 400), seed=1)
    cache = tmp_path / "cache"
    assert_same(arrays_of(load_cifar10(folder, subset="ci", cache_dir=cache)), expected)
    assert_same(arrays_of(load_cifar10(folder, subset="ci", cache_dir=cache)), expected)
    assert data.subset_cache_path("ci", cache).is_file()


def test_the_ci_manifest_is_the_one_written_from_the_shared_npz(cifar_subset_path, tmp_path, monkeypatch):
    committed = json.loads(cifar_manifest.manifest_path("ci").read_text())
    monkeypatch.setattr(cifar_manifest, "MANIFEST_DIR", tmp_path)
    try:
        written = json.loads(data.write_subset_manifest(cifar_subset_path, "ci").read_text())
    finally:
        cifar_manifest.load_manifest.cache_clear()
    for key in ("sha256", "id", "splits"):
        assert written[key] == committed[key], key


def test_tampered_shared_npz_fails_naming_split_and_position(cifar_subset_path, tmp_path):
    with np.load(cifar_subset_path) as raw:
        arrays = {k: raw[k].copy() for k in KEYS}
    arrays["x_train"][4000, 0, 0, 0] ^= 1
    np.savez(tmp_path / "cifar10-subset.npz", **arrays)
    with pytest.raises(DataFormatError, match="train image at position 4000: pixels differ"):
        load_cifar10(tmp_path / "cifar10-subset.npz", subset="ci")


def test_manifest_command_rewrites_a_manifest_from_its_npz(tiny, capsys):
    """``python -m vqpaper.data SUBSET.npz NAME`` (the command lives with the loader it reads with)."""
    path = cifar_manifest.manifest_path("tiny")
    before = path.read_text()
    path.unlink()
    assert data._main([str(tiny["npz"]), "tiny"]) == 0
    assert path.read_text() == before and f"id {tiny['manifest']['id']}" in capsys.readouterr().out
    assert data._main([]) == 2 and "usage: python -m vqpaper.data" in capsys.readouterr().err


def test_every_notebook_loads_the_ci_subset_at_ci(monkeypatch):
    """A notebook that loads CIFAR-10 does it through ``experiments.load_cifar``, which takes the
    manifest's images at `ci`, whatever the source, and every image at `paper`."""
    from conftest import REPO

    from vqpaper import config
    from vqpaper import experiments as ex

    sources = {nb.name: nb.read_text() for nb in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))}
    loading = [name for name, text in sources.items() if "ex.load_cifar(cfg)" in text]
    assert len(loading) >= 4, loading  # 03, 04, 05, 06
    assert not [name for name, text in sources.items() if "load_cifar10(" in text], "a notebook loads on its own"
    calls = []
    monkeypatch.setattr(ex, "load_cifar10", lambda location, subset=None: calls.append((location, subset)))
    for profile in config.PROFILES:
        ex.load_cifar(config.notebook_config("03_tokens_collapse_cifar10", profile, cifar10="here.npz"))
    assert calls == [("here.npz", "ci"), ("here.npz", None)]
