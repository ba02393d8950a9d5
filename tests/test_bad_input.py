"""Bad input is refused before any training starts, with a message a user can act on.

One table: each row is a bad input, the exception it must raise, and the words its message
must contain: the parameter's name, the bad value, and what is allowed. Rows that build a
run config go through ``run_synthetic`` / ``run_cifar`` with the training loop, the data and
the model replaced by tripwires, so "raised before training" is checked, not assumed.
"""
import dataclasses
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from vqpaper import data, paths, train
from vqpaper.config import CifarRun, SyntheticRun, notebook_config, resolve_device
from vqpaper.errors import ConfigError, DataFormatError, DataNotFoundError, TrainingDiverged, VQPaperError
from vqpaper.quantizers import make_quantizer


def _tripwire(what):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} was called: the bad input was not refused before training")

    return fail


@pytest.fixture
def no_training(monkeypatch):
    """Any step towards training fails the test loudly."""
    monkeypatch.setattr(train, "_train_stage", _tripwire("training"))
    monkeypatch.setattr(train, "make_clusters", _tripwire("make_clusters"))
    monkeypatch.setattr(train, "MLPVQVAE", _tripwire("MLPVQVAE"))
    monkeypatch.setattr(train, "ConvVQVAE", _tripwire("ConvVQVAE"))
    monkeypatch.setattr(train, "cifar_to_tensor", _tripwire("cifar_to_tensor"))


@pytest.fixture
def no_cuda(monkeypatch):
    """Behave as a machine without a GPU, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def syn(**kw):
    return lambda: train.run_synthetic(SyntheticRun(**kw))


def cif(**kw):
    return lambda: train.run_cifar(CifarRun(**kw), None)


def nb(notebook, profile="ci", **overrides):
    return lambda: notebook_config(notebook, profile, **overrides)


NB02 = "02_tokens_collapse_synthetic"
NB03 = "03_tokens_collapse_cifar10"

# id, call, exception, words the message must contain (parameter, bad value, what is allowed)
CONFIG_ROWS = [
    ("codebook_size=0", syn(codebook_size=0), ConfigError, ["codebook_size", "0", "positive integer"]),
    ("codebook_size<0", syn(codebook_size=-8), ConfigError, ["codebook_size", "-8", "positive integer"]),
    ("codebook_size str", syn(codebook_size="128"), ConfigError, ["codebook_size", "'128'", "integer"]),
    ("codebook_size float", syn(codebook_size=128.0), ConfigError, ["codebook_size", "128.0", "integer"]),
    ("codebook_size bool", syn(codebook_size=True), ConfigError, ["codebook_size", "True", "integer"]),
    ("codebook_size 2**30", syn(codebook_size=2**30), ConfigError,
     ["codebook_size", "1073741824", "at most"]),
    ("cifar codebook_size 2**30", cif(codebook_size=2**30), ConfigError,
     ["codebook_size", "1073741824", "at most"]),
    ("cifar codebook_size=0", cif(codebook_size=0), ConfigError, ["codebook_size", "0", "positive integer"]),
    ("token_dim=0", syn(token_dim=0), ConfigError, ["token_dim", "0", "positive integer"]),
    ("token_dim<0", cif(token_dim=-1), ConfigError, ["token_dim", "-1", "positive integer"]),
    ("token_dim not dividing dim", syn(dim=3, token_dim=2), ConfigError, ["token_dim=2", "dim=3", "allowed", "[1, 3]"]),
    ("token_dim > dim", syn(dim=2, token_dim=4), ConfigError, ["token_dim=4", "dim=2", "allowed"]),
    ("epochs=0", syn(epochs=0), ConfigError, ["epochs", "0", "positive integer"]),
    ("epochs<0", cif(epochs=-5), ConfigError, ["epochs", "-5", "positive integer"]),
    ("pretrain_epochs=0", syn(method="pretrained", pretrain_epochs=0), ConfigError,
     ["pretrain_epochs", "0", "positive integer"]),
    ("finetune_epochs=0", cif(finetune_epochs=0), ConfigError, ["finetune_epochs", "0", "positive integer"]),
    ("batch_size=0", syn(batch_size=0), ConfigError, ["batch_size", "0", "positive integer"]),
    ("batch_size<0", cif(batch_size=-128), ConfigError, ["batch_size", "-128", "positive integer"]),
    ("quantizer unknown", syn(quantizer="vqgan"), ConfigError, ["quantizer", "'vqgan'", "'ema'", "'simvq'"]),
    ("cifar quantizer unknown", cif(quantizer="EMA"), ConfigError, ["quantizer", "'EMA'", "'ema'", "'simvq'"]),
    ("make_quantizer unknown", lambda: make_quantizer("vqgan", 16, 2), ConfigError,
     ["quantizer", "'vqgan'", "ema", "simvq"]),
    ("method unknown", syn(method="finetuned"), ConfigError, ["method", "'finetuned'", "'scratch'", "'pretrained'"]),
    ("kmeans_init unknown", syn(kmeans_init="random"), ConfigError, ["kmeans_init", "'random'", "'dataset'"]),
    ("seed<0", syn(seed=-1), ConfigError, ["seed", "-1", "non-negative integer"]),
    ("seed float", syn(seed=1.5), ConfigError, ["seed", "1.5", "non-negative integer"]),
    ("lr=0", syn(lr=0.0), ConfigError, ["lr", "0.0", "positive number"]),
    ("decay=1", syn(decay=1.0), ConfigError, ["decay", "1.0", "(0, 1)"]),
    ("device bogus", syn(device="tpu"), ConfigError, ["device", "'tpu'", "'cpu'", "'cuda"]),
    # our decision: asking for CUDA without one is an error, not a silent CPU run
    ("device cuda, none", syn(device="cuda"), ConfigError, ["device", "'cuda'", "no CUDA GPU", "'cpu'"]),
    ("cifar device cuda:1, none", cif(device="cuda:1"), ConfigError, ["device", "'cuda:1'", "no CUDA GPU", "'cpu'"]),
    ("resolve_device cuda, none", lambda: resolve_device("cuda"), ConfigError,
     ["device", "'cuda'", "no CUDA GPU", "'auto'", "'cpu'"]),
    # notebook parameters (what papermill's -p injects)
    ("unknown profile", nb(NB02, "fast"), ConfigError, ["profile", "'fast'", "'ci'", "'paper'"]),
    ("unknown notebook parameter", nb(NB02, codebook_size=16), ConfigError, ["codebook_size", "allowed", "seeds"]),
    ("seeds int", nb(NB02, seeds=3), ConfigError, ["seeds", "3", "list", "[0, 1, 2, 3, 4, 5]"]),
    ("seeds str", nb(NB02, seeds="all"), ConfigError, ["seeds", "'all'", "list"]),
    ("seeds text of an int", nb(NB02, seeds="3"), ConfigError, ["seeds", "3", "list"]),
    ("seeds of str", nb(NB02, seeds=["a"]), ConfigError, ["seeds", "'a'", "list of int"]),
    ("seeds of float", nb(NB02, seeds=[0, 0.5]), ConfigError, ["seeds", "0.5", "list of int"]),
    ("seeds negative", nb(NB02, seeds=[0, -1]), ConfigError, ["seeds", "-1", "non-negative integer"]),
    ("seeds empty", nb(NB02, seeds=[]), ConfigError, ["seeds", "empty"]),
    ("token_dims not dividing dims", nb(NB02, dims=[3], token_dims=[2]), ConfigError,
     ["token_dim=2", "dim=3", "divide"]),
    ("dims/token_dims lengths", nb(NB02, dims=[2, 3], token_dims=[1]), ConfigError,
     ["dims=[2, 3]", "token_dims=[1]", "same length"]),
    ("scratch_epochs=0", nb(NB02, scratch_epochs=0), ConfigError, ["scratch_epochs", "0", "positive"]),
    # text is parsed (config.parse_value: the command line passes text), so "10" is 10, but "ten" is no int
    ("scratch_epochs str", nb(NB02, scratch_epochs="ten"), ConfigError, ["scratch_epochs", "'ten'", "int"]),
    ("-p codebook_sizes 16", nb(NB03, codebook_sizes=16), ConfigError,
     ["codebook_sizes", "16", "list", "-p codebook_sizes"]),
    ("codebook_sizes [0]", nb(NB03, codebook_sizes=[0]), ConfigError, ["codebook_sizes", "0", "positive integer"]),
    ("codebook_sizes [2**30]", nb(NB03, codebook_sizes=[16, 2**30]), ConfigError,
     ["codebook_sizes", "1073741824", "at most"]),
    ("notebook device cuda, none", nb(NB03, device="cuda"), ConfigError, ["device", "'cuda'", "no CUDA GPU"]),
]


def _normalised(text):
    # "1,073,741,824" names the same value as 1073741824
    return text.replace(",", "") if any(c.isdigit() for c in text) else text


@pytest.mark.parametrize("call, exc, words", [pytest.param(*row[1:], id=row[0]) for row in CONFIG_ROWS])
def test_bad_config_is_refused_before_training(call, exc, words, no_training, no_cuda):
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, VQPaperError)
    message = str(info.value)
    for word in words:
        assert word in message or _normalised(word) in _normalised(message), \
            f"message {message!r} does not mention {word!r}"


def test_cli_text_codebook_sizes_16_is_the_bad_value():
    """``-p codebook_sizes 16``: the command line passes the text, config parses it into an int and refuses it."""
    with pytest.raises(ConfigError, match=r"codebook_sizes.*must be a list"):
        notebook_config(NB03, "ci", codebook_sizes="16")
    assert notebook_config(NB03, "ci", codebook_sizes="[16, 32]").codebook_sizes == [16, 32]


# ------------------------------------------------------------------------- CIFAR data

def _npz(path, **overrides):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
              "y_train": np.arange(20) % 10,
              "x_test": rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8),
              "y_test": np.arange(10) % 10}
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def _corrupt(path):
    _npz(path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # truncated: the zip directory is lost
    return path


DATA_ROWS = [
    ("missing, no network", lambda tmp: None, DataNotFoundError,
     ["CIFAR-10 not found", "VQPAPER_CIFAR10", "network unreachable", ".npz"]),
    ("missing explicit file", lambda tmp: tmp / "nowhere.npz", DataNotFoundError,
     ["nowhere.npz", "does not exist", "VQPAPER_CIFAR10"]),
    ("corrupt npz", lambda tmp: _corrupt(tmp / "corrupt.npz"), DataFormatError,
     ["corrupt.npz", "not a valid .npz"]),
    ("wrong image shape", lambda tmp: _npz(tmp / "shape.npz", x_train=np.zeros((20, 28, 28), np.uint8)),
     DataFormatError, ["x_train", "[20, 28, 28]", "[N, 32, 32, 3]"]),
    ("labels out of range", lambda tmp: _npz(tmp / "labels.npz", y_test=np.arange(10) + 5), DataFormatError,
     ["y_test", "outside 0..9", "14"]),
]


@pytest.mark.parametrize("make, exc, words", [pytest.param(*row[1:], id=row[0]) for row in DATA_ROWS])
def test_bad_cifar_data(make, exc, words, tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)

    def offline(root):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(data, "_download_torchvision", offline)
    location = make(tmp_path)
    started = time.perf_counter()
    with pytest.raises(exc) as info:
        data.load_cifar10(location, root=tmp_path / "torchvision-root")
    assert time.perf_counter() - started < 30
    message = str(info.value)
    for word in words:
        assert word in message, f"message {message!r} does not mention {word!r}"


# ---------------------------------------------------------------------- NaN during training

TINY = dict(n_per_cluster=20, dim=2, token_dim=1, codebook_size=16, batch_size=64, epochs=6,
            pretrain_epochs=3, finetune_epochs=3, kmeans_iters=2)


class _PoisonAfter:
    """Wrap MLPVQVAE: from the ``n``-th training forward on, the reconstruction is NaN."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, *args, **kwargs):
        model = train_MLPVQVAE(*args, **kwargs)
        forward = model.forward
        wrapper = self

        def poisoned(x):
            out = forward(x)
            if model.training:
                wrapper.calls += 1
                if wrapper.calls >= wrapper.n:
                    out = dataclasses.replace(out, recon=out.recon * float("nan"))
            return out

        model.forward = poisoned
        return model


train_MLPVQVAE = train.MLPVQVAE


@pytest.mark.parametrize("method", ["scratch", "pretrained"])
def test_nan_loss_names_epoch_and_step_and_keeps_history(method, monkeypatch):
    # 200 points, batch 64: 3 full batches an epoch (the last 8 points of each permutation sit the
    # epoch out); the 8th training step is epoch 3, step 2
    monkeypatch.setattr(train, "MLPVQVAE", _PoisonAfter(8))
    cfg = SyntheticRun(method=method, **TINY)
    with pytest.raises(TrainingDiverged) as info:
        train.run_synthetic(cfg)
    message = str(info.value)
    assert "nan" in message.lower()
    assert "epoch 3/" in message and "step 2" in message, message
    assert "lr=" in message  # says what to try
    history = info.value.history
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in history)
    assert history[0]["stage"] == ("scratch" if method == "scratch" else "pretrain")


def test_huge_learning_rate_diverges_with_a_clear_message():
    cfg = SyntheticRun(lr=1e30, method="pretrained", **{k: v for k, v in TINY.items() if k != "epochs"})
    with pytest.raises(TrainingDiverged, match=r"epoch \d+/\d+, step \d+.*lr=1e\+30") as info:
        train.run_synthetic(cfg)
    assert isinstance(info.value.history, list)


def test_infinite_data_diverges_with_a_clear_message(monkeypatch):
    make = train.make_clusters

    def with_inf(*args, **kwargs):
        X, y = make(*args, **kwargs)
        X[7, 0] = np.inf
        return X, y

    monkeypatch.setattr(train, "make_clusters", with_inf)
    cfg = SyntheticRun(method="pretrained", **{k: v for k, v in TINY.items() if k != "epochs"})
    with pytest.raises(TrainingDiverged, match=r"(inf|nan) at epoch 1/3, step \d+ \(stage 'pretrain'\)") as info:
        train.run_synthetic(cfg)
    assert info.value.history == []


# ------------------------------------------------------------- end to end, through papermill

NOTEBOOK = paths.NOTEBOOKS / f"{NB02}.py"


@pytest.mark.slow  # the command in a process: a few seconds
@pytest.mark.timeout(300)
def test_vqpaper_run_with_wrong_type_fails_fast_naming_the_parameter(tmp_path):
    """``vqpaper run notebooks/02_….py -p seeds 3``: non-zero exit before any kernel, a message naming ``seeds``.

    The notebook is copied to a temporary folder and the build goes to one (VQPAPER_BUILD), so a
    failed run here cannot remove the book's executed copy of the notebook.
    """
    if not NOTEBOOK.is_file():
        candidates = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.py"))
        if not candidates:
            pytest.skip("no notebook in notebooks/ yet")
        source = candidates[0]
    else:
        source = NOTEBOOK
    notebook = tmp_path / source.name
    shutil.copyfile(source, notebook)
    env = dict(os.environ, VQPAPER_BUILD=str(tmp_path / "build"), VQPAPER_CACHE=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(paths.ROOT), env.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vqpaper.cli", "run", str(notebook), "-p", "seeds", "3"],
                          cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=240)
    wall = time.perf_counter() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "ConfigError" in output and "'seeds'" in output and "list" in output, output
    assert "Traceback" not in output, output  # the CLI reports, it does not dump a stack
    assert wall < 120, f"took {wall:.0f} s: the bad parameter should stop the notebook at once"
    assert not list((tmp_path / "cache").glob("*")), "runs were stored: training started"
    assert not (tmp_path / "build" / "logs").exists(), "a kernel was started: the check belongs before it"
