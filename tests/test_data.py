"""Properties of vqpaper.data: synthetic clusters, CIFAR-10 loading and its failures, tensor scaling."""
import io
import os
import pickle
import shutil
import time
import zipfile

import numpy as np
import pytest
import torch

from vqpaper import data
from vqpaper.data import ENV_VAR, cifar_to_tensor, load_cifar10, make_clusters, tensor_to_images
from vqpaper.errors import ConfigError, DataFormatError, DataNotFoundError


@pytest.fixture(autouse=True)
def _no_env_location(monkeypatch):
    # The user's own VQPAPER_CIFAR10 must not change what these tests see.
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def no_download(monkeypatch):
    """Make any download attempt fail at once, as on a machine without network."""
    calls = []

    def fail(root):
        calls.append(root)
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(data, "_download_torchvision", fail)
    return calls


def random_images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def balanced_labels(n, seed):
    return np.random.default_rng(seed).permutation(np.arange(n) % 10).astype(np.int64)


def write_npz(path, **overrides):
    arrays = {
        "x_train": random_images(20, 1),
        "y_train": balanced_labels(20, 2),
        "x_test": random_images(10, 3),
        "y_test": balanced_labels(10, 4),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


class Py2StylePickler(pickle.Pickler):
    """Stores arrays as Python 2 numpy did: raw pixels in a string (read back via latin-1)."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            state = (1, obj.shape, obj.dtype, False, obj.tobytes().decode("latin1"))
            return np.ndarray.__reduce__(obj)[0], (np.ndarray, (0,), "b"), state
        return NotImplemented


def write_batches_folder(folder, n_per_batch=4, n_test=6, protocol=pickle.HIGHEST_PROTOCOL, py2_names=False):
    """A tiny folder in the official cifar-10-batches-py format; returns the images and labels written."""
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name, images, labels, label_key=b"labels"):
        # Official rows: 1024 red values, then green, then blue, each row-major.
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
        entry = {b"batch_label": name.encode(), label_key: [int(v) for v in labels], b"data": rows}
        buffer = io.BytesIO()
        (Py2StylePickler if py2_names else pickle.Pickler)(buffer, protocol=protocol).dump(entry)
        raw = buffer.getvalue()
        if py2_names:
            # Python 2 era numpy named its module numpy.core.multiarray.
            raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(raw)

    xs, ys = [], []
    for i in range(5):
        x, y = random_images(n_per_batch, 10 + i), balanced_labels(n_per_batch, 20 + i)
        dump(f"data_batch_{i + 1}", x, y)
        xs.append(x)
        ys.append(y)
    x_test, y_test = random_images(n_test, 30), balanced_labels(n_test, 31)
    dump("test_batch", x_test, y_test)
    meta = {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                             b"horse", b"ship", b"truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return np.concatenate(xs), np.concatenate(ys), x_test, y_test


# --------------------------------------------------------------------------- make_clusters


@pytest.mark.parametrize("dim", [2, 3, 4, 8])
def test_make_clusters_shapes_labels_and_standardisation(dim):
    X, y = make_clusters(n_per_cluster=300, dim=dim, seed=1)
    assert X.shape == (3000, dim) and X.dtype == np.float32
    assert y.shape == (3000,) and y.dtype == np.int64
    assert np.array_equal(np.bincount(y), np.full(10, 300))
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(X.std(axis=0), 1, atol=1e-4)


def test_make_clusters_clusters_are_separated_by_label():
    X, y = make_clusters(n_per_cluster=200, dim=2, cluster_std=0.5, seed=0)
    centres = np.stack([X[y == c].mean(axis=0) for c in range(10)])
    within = np.mean([X[y == c].std(axis=0).mean() for c in range(10)])
    # Labels must describe the clusters: each cluster is tighter than the spread of centres.
    assert within < centres.std(axis=0).mean()


def test_make_clusters_seeded():
    X1, y1 = make_clusters(n_per_cluster=50, dim=3, seed=7)
    X2, y2 = make_clusters(n_per_cluster=50, dim=3, seed=7)
    X3, _ = make_clusters(n_per_cluster=50, dim=3, seed=8)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    assert not np.allclose(X1, X3)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_per_cluster": 0}, "n_per_cluster"),
        ({"n_per_cluster": 2.5}, "n_per_cluster"),
        ({"dim": -1}, "dim"),
        ({"dim": True}, "dim"),
        ({"n_clusters": 0}, "n_clusters"),
        ({"n_clusters": "10"}, "n_clusters"),
        ({"cluster_std": 0}, "cluster_std"),
        ({"cluster_std": float("nan")}, "cluster_std"),
        ({"seed": -3}, "seed"),
        ({"seed": None}, "seed"),
    ],
)
def test_make_clusters_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ConfigError, match=name) as info:
        make_clusters(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


# --------------------------------------------------------------------------- the real subset (.npz)


def check_real_subset(cifar, path):
    assert (cifar.n_train, cifar.n_test) == (5085, 1017)
    assert cifar.x_train.shape == (5085, 32, 32, 3) and cifar.x_test.shape == (1017, 32, 32, 3)
    assert cifar.x_train.dtype == np.uint8 and cifar.y_train.dtype == np.int64
    assert cifar.y_test.dtype == np.int64
    assert set(np.unique(cifar.y_train)) == set(range(10))
    assert cifar.is_full is False
    assert cifar.source == str(path.resolve())
    assert "5,085 train" in cifar.description and "1,017 test" in cifar.description
    assert "cifar10-subset.npz" in cifar.description and "subset" in cifar.description
    with np.load(path) as raw:  # exactly the file's content, nothing else
        assert np.array_equal(cifar.x_train, raw["x_train"])
        assert np.array_equal(cifar.y_test, raw["y_test"])


def test_load_real_subset_from_argument(cifar_subset_path, no_download):
    check_real_subset(load_cifar10(cifar_subset_path), cifar_subset_path)
    assert no_download == []


def test_load_real_subset_from_env_var(cifar_subset_path, monkeypatch, no_download):
    monkeypatch.setenv(ENV_VAR, str(cifar_subset_path))
    check_real_subset(load_cifar10(), cifar_subset_path)
    assert no_download == []


def test_subset_is_seeded_stratified_and_described(tmp_path):
    y_train = np.repeat(np.arange(10), [5, 10, 15, 20, 25, 30, 35, 40, 45, 75])  # 300, unbalanced
    y_test = balanced_labels(100, 0)
    x_train = random_images(300, 0)
    path = write_npz(tmp_path / "c.npz", x_train=x_train, y_train=y_train,
                     x_test=random_images(100, 1), y_test=y_test)
    cifar = load_cifar10(path)
    sub = cifar.subset(n_train=60, n_test=20, seed=3)
    assert (sub.n_train, sub.n_test) == (60, 20)
    share = np.bincount(y_train, minlength=10) / 300 * 60
    assert np.all(np.abs(np.bincount(sub.y_train, minlength=10) - share) <= 1)
    assert np.array_equal(np.bincount(sub.y_test, minlength=10), np.full(10, 2))
    # Rows are the original images with their own labels.
    rows = {x.tobytes(): y for x, y in zip(x_train, y_train)}
    assert all(rows[x.tobytes()] == y for x, y in zip(sub.x_train, sub.y_train))
    again = cifar.subset(n_train=60, n_test=20, seed=3)
    other = cifar.subset(n_train=60, n_test=20, seed=4)
    assert np.array_equal(sub.x_train, again.x_train) and np.array_equal(sub.y_test, again.y_test)
    assert not np.array_equal(sub.x_train, other.x_train)
    # The training subset does not depend on how many test images are kept.
    assert np.array_equal(cifar.subset(n_train=60, n_test=50, seed=3).x_train, sub.x_train)
    assert "subsampled" in sub.description and "60 train / 20 test" in sub.description
    assert sub.is_full is False and sub.source == cifar.source
    whole = cifar.subset()
    assert np.array_equal(whole.x_train, cifar.x_train)


@pytest.mark.parametrize("kwargs, name", [({"n_train": 301}, "n_train"), ({"n_test": 0}, "n_test"),
                                          ({"seed": -1}, "seed")])
def test_subset_rejects_bad_sizes(tmp_path, kwargs, name):
    cifar = load_cifar10(write_npz(tmp_path / "c.npz", x_train=random_images(300, 0),
                                   y_train=balanced_labels(300, 0)))
    with pytest.raises(ConfigError, match=name):
        cifar.subset(**kwargs)


# --------------------------------------------------------------------------- torchvision layout


@pytest.mark.parametrize("point_at", ["parent", "batches"])
@pytest.mark.parametrize("style", ["python3", "python2"])
def test_load_torchvision_layout_folder(tmp_path, point_at, style):
    batches = tmp_path / "cifar" / "cifar-10-batches-py"
    kwargs = {"protocol": 2, "py2_names": True} if style == "python2" else {}
    x_train, y_train, x_test, y_test = write_batches_folder(batches, **kwargs)
    cifar = load_cifar10(batches.parent if point_at == "parent" else batches)
    assert np.array_equal(cifar.x_train, x_train) and np.array_equal(cifar.y_train, y_train)
    assert np.array_equal(cifar.x_test, x_test) and np.array_equal(cifar.y_test, y_test)
    assert cifar.x_train.dtype == np.uint8 and cifar.y_train.dtype == np.int64
    assert (cifar.n_train, cifar.n_test) == (20, 6) and cifar.is_full is False
    assert cifar.source == str(batches.resolve())
    assert "torchvision-layout folder" in cifar.description and "20 train / 6 test" in cifar.description


def test_default_torchvision_root_is_used_without_download(tmp_path, no_download):
    x_train, *_ = write_batches_folder(tmp_path / "root" / "cifar-10-batches-py")
    cifar = load_cifar10(root=tmp_path / "root")
    assert cifar.source == "torchvision" and "via torchvision" in cifar.description
    assert np.array_equal(cifar.x_train, x_train)
    assert no_download == []


def test_incomplete_folder_names_missing_batch(tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    write_batches_folder(batches)
    (batches / "data_batch_3").unlink()
    with pytest.raises(DataFormatError, match="data_batch_3"):
        load_cifar10(tmp_path)


def test_batch_with_foreign_objects_is_refused(tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    write_batches_folder(batches)
    entry = pickle.loads((batches / "test_batch").read_bytes())
    entry[b"extra"] = os.getpid  # valid batch otherwise: only the foreign reference is wrong
    (batches / "test_batch").write_bytes(pickle.dumps(entry))
    with pytest.raises(DataFormatError, match="test_batch.*unexpected object.*getpid"):
        load_cifar10(batches)


def test_folder_without_cifar_is_not_found(tmp_path):
    (tmp_path / "something.txt").write_text("hello")
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        load_cifar10(tmp_path)


# --------------------------------------------------------------------------- missing data


def test_lookup_order_without_a_location(tmp_path, monkeypatch, no_download):
    """The documented order: location, $VQPAPER_CIFAR10, ../shared/data/cifar10-subset.npz beside the
    checkout, data/cifar10-subset.npz, data/cifar10/ (torchvision), the download; the first that exists wins."""
    repo = tmp_path / "repo"
    monkeypatch.setattr(data.paths, "ROOT", repo)
    shared, local = tmp_path / "shared" / "data" / "cifar10-subset.npz", repo / "data" / "cifar10-subset.npz"
    monkeypatch.setattr(data, "SHARED_SUBSET", shared)
    monkeypatch.setattr(data, "DATA_SUBSET", local)
    batches = repo / "data" / "cifar10" / "cifar-10-batches-py"
    write_batches_folder(batches)
    for path in (shared, local):
        path.parent.mkdir(parents=True, exist_ok=True)
    places = [write_npz(p) for p in (tmp_path / "argument.npz", tmp_path / "env.npz", shared, local)]
    monkeypatch.setenv(ENV_VAR, str(places[1]))
    assert load_cifar10(places[0]).source == str(places[0].resolve())
    assert load_cifar10().source == str(places[1].resolve())
    monkeypatch.delenv(ENV_VAR)
    assert load_cifar10().source == str(shared.resolve())
    shared.unlink()
    assert load_cifar10().source == str(local.resolve())
    local.unlink()
    assert load_cifar10().source == "torchvision" and no_download == []
    shutil.rmtree(batches)
    with pytest.raises(DataNotFoundError) as info:
        load_cifar10()
    assert no_download, "the download comes last"
    message = str(info.value)
    order = [ENV_VAR, str(shared), str(local), str(batches), "failed"]
    assert [message.index(word) for word in order] == sorted(message.index(word) for word in order), message


def test_nothing_found_and_download_fails(tmp_path, no_download):
    start = time.monotonic()
    with pytest.raises(DataNotFoundError) as info:
        load_cifar10(root=tmp_path / "empty")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert no_download, "the download should have been attempted"
    for expected in [ENV_VAR, "location", str(tmp_path / "empty"), "failed", ".npz", "torchvision-layout folder"]:
        assert expected in message


def test_download_false_says_so(tmp_path, no_download):
    with pytest.raises(DataNotFoundError, match="download=False"):
        load_cifar10(root=tmp_path, download=False)
    assert no_download == []


def test_unreachable_network_stops_before_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(data, "_network_problem", lambda *a, **k: "no route (test)")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", lambda *a, **k: pytest.fail("torchvision was called"))
    with pytest.raises(DataNotFoundError, match="no route"):
        load_cifar10(root=tmp_path)


def test_network_probe_cannot_hang(monkeypatch):
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: time.sleep(30))
    start = time.monotonic()
    problem = data._network_problem("http://example.invalid/", timeout=0.2)
    assert time.monotonic() - start < 3
    assert problem and "no answer" in problem


def test_network_probe_reports_refused_connection():
    start = time.monotonic()
    problem = data._network_problem("http://127.0.0.1:9/", timeout=2)
    assert problem is not None and time.monotonic() - start < 4


@pytest.mark.parametrize("via", ["argument", "env"])
def test_explicit_missing_location_does_not_fall_through(tmp_path, monkeypatch, no_download, via):
    # Valid data sits at the default root; a wrong explicit location must still be an error.
    write_batches_folder(tmp_path / "root" / "cifar-10-batches-py")
    missing = tmp_path / "nope.npz"
    if via == "env":
        monkeypatch.setenv(ENV_VAR, str(missing))
        call = lambda: load_cifar10(root=tmp_path / "root")  # noqa: E731
    else:
        monkeypatch.setenv(ENV_VAR, str(tmp_path / "root"))
        call = lambda: load_cifar10(missing, root=tmp_path / "root")  # noqa: E731
    with pytest.raises(DataNotFoundError, match="does not exist") as info:
        call()
    assert "nope.npz" in str(info.value)
    assert ("environment variable" if via == "env" else "location argument") in str(info.value)
    assert no_download == []


# --------------------------------------------------------------------------- bad .npz files


def test_random_bytes_are_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataFormatError, match="junk.npz.*not a valid .npz"):
        load_cifar10(path)


def test_truncated_npz(tmp_path):
    good = write_npz(tmp_path / "good.npz").read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match="cut.npz"):
        load_cifar10(path)


def test_damaged_member_inside_npz(tmp_path):
    path = tmp_path / "damaged.npz"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for key in data.NPZ_KEYS:
            zf.writestr(f"{key}.npy", b"not an npy header")
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DataFormatError, match="damaged.npz"):
        load_cifar10(path)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"y_test": None}, "lacks the key.*y_test"),
        ({"x_train": np.zeros((20, 32, 32), np.uint8)}, r"x_train.*shape \[20, 32, 32\]"),
        ({"x_test": np.zeros((10, 28, 28, 3), np.uint8)}, r"x_test.*shape \[10, 28, 28, 3\]"),
        ({"x_train": np.zeros((20, 32, 32, 3), np.float32)}, "x_train.*float32.*uint8"),
        ({"x_train": np.full((20, 32, 32, 3), 300, np.int32)}, r"x_train.*\[300, 300\]"),
        ({"y_train": np.r_[balanced_labels(19, 0), 10]}, r"y_train.*outside 0\.\.9.*10"),
        ({"y_test": np.r_[-1, balanced_labels(9, 0)]}, r"y_test.*outside 0\.\.9.*-1"),
        ({"y_train": balanced_labels(20, 0).astype(np.float64)}, "y_train.*float64"),
        ({"y_train": balanced_labels(19, 0)}, "19 labels but there are 20 images"),
        ({"y_train": np.zeros((20, 2), np.int64)}, r"y_train.*\[20, 2\]"),
        ({"x_test": np.zeros((0, 32, 32, 3), np.uint8), "y_test": np.zeros(0, np.int64)}, "x_test.*empty"),
    ],
)
def test_bad_npz_content(tmp_path, overrides, pattern):
    path = write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(DataFormatError, match=pattern) as info:
        load_cifar10(path)
    assert "bad.npz" in str(info.value)


def test_npz_in_other_accepted_layouts(tmp_path):
    x_train = random_images(20, 1)
    y_test = balanced_labels(10, 4)
    path = write_npz(tmp_path / "alt.npz", x_train=x_train.transpose(0, 3, 1, 2),
                     y_test=y_test.reshape(-1, 1).astype(np.uint8))
    cifar = load_cifar10(path)
    assert np.array_equal(cifar.x_train, x_train)
    assert np.array_equal(cifar.y_test, y_test) and cifar.y_test.dtype == np.int64


def test_non_npz_file_is_refused(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(b"\x1f\x8b")
    with pytest.raises(DataFormatError, match="not an .npz"):
        load_cifar10(path)


# --------------------------------------------------------------------------- tensors


def test_cifar_to_tensor_range_shape_and_round_trip():
    x = random_images(8, 0)
    x[0] = 0
    x[1] = 255
    t = cifar_to_tensor(x)
    assert t.dtype == torch.float32 and t.shape == (8, 3, 32, 32)
    assert t.min().item() == -0.5 and t.max().item() == 0.5
    assert torch.all(t[0] == -0.5) and torch.all(t[1] == 0.5)
    assert t[2, 1, 4, 5].item() == pytest.approx(x[2, 4, 5, 1] / 255 - 0.5)  # channel moved, not mixed
    back = tensor_to_images(t)
    assert back.dtype == np.uint8 and np.array_equal(back, x)


def test_tensor_to_images_clips_and_rounds():
    t = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    images = tensor_to_images(t.clone().requires_grad_(True))
    assert images.shape == (1, 1, 5, 3)
    assert images[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


@pytest.mark.parametrize("bad", [np.zeros((2, 32, 32, 3), np.float32), np.zeros((2, 3, 32, 32), np.uint8),
                                 np.zeros((32, 32, 3), np.uint8)])
def test_cifar_to_tensor_rejects_wrong_input(bad):
    with pytest.raises(DataFormatError):
        cifar_to_tensor(bad)
