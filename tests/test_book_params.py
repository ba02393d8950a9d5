"""Re-executing any notebook with other valid parameters still builds the book (issue 10).

Prose and the results page name glue keys; if one of them only exists for the default
parameters (say, the 2-D data), a re-run with other dimensions breaks the build. Here every
notebook runs with small non-default parameters (other dims, sizes, widths, seeds), into a
temporary build, and the real `_config.yml`, `_toc.yml` and `book/` pages are built from them
with warnings as errors.
"""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import NOTEBOOKS, REPO, _cifar_available

pytestmark = pytest.mark.notebooks

SMALL_CIFAR = {"token_dim": 8, "channels": 16, "residual_channels": 8, "train_images": 512, "kmeans_vectors": 2048}
#: Non-default parameters per notebook: other dims/sizes/widths/seeds, tiny budgets.
OTHER_PARAMETERS = {
    "01_preliminaries": {"seeds": [1, 2], "dim": 3, "pretrain_epochs": 3, "n_per_cluster": 200},
    "02_tokens_collapse_synthetic": {"dims": [3, 4], "token_dims": [1, 2], "seeds": [0, 1], "scratch_epochs": 4,
                                     "pretrain_epochs": 2, "finetune_epochs": 2, "n_per_cluster": 200,
                                     "laplace_ablation": False},
    "03_tokens_collapse_cifar10": {"codebook_sizes": [16, 64], "seeds": [1], "scratch_epochs": 1,
                                   "pretrain_epochs": 1, "finetune_epochs": 1, **SMALL_CIFAR},
    "04_embeddings_collapse": {"dims": [3], "token_dims": [1], "encoder_hiddens": [4, 16],
                               "pretrained_hiddens": [4, 16], "seeds": [0, 1], "epochs": 3, "n_per_cluster": 200,
                               "encoder_channels": [16, 4], "cifar_channels": 16, "cifar_residual_channels": 8,
                               "cifar_epochs": 1, "cifar_codebook_size": 64, "cifar_token_dim": 8,
                               "cifar_kmeans_vectors": 2048},
    "05_simvq_comparison": {"dims": [3], "token_dims": [1], "seeds": [0, 1], "scratch_epochs": 4,
                            "pretrain_epochs": 2, "finetune_epochs": 2, "encoder_hiddens": [4, 16],
                            "n_per_cluster": 200, "codebook_sizes": [16, 64], "cifar_scratch_epochs": 1,
                            "cifar_pretrain_epochs": 1, "cifar_finetune_epochs": 1, **SMALL_CIFAR},
}


OTHER_PARAMETERS["06_remedies"] = {
    "remedies": ["ema", "restart"], "dims": [2], "token_dims": [1], "seeds": [0, 1], "scratch_epochs": 4,
    "pretrain_epochs": 2, "finetune_epochs": 2, "n_per_cluster": 200, "narrow_dims": [2], "narrow_epochs": 4,
    "narrow_n_per_cluster": 200, "codebook_sizes": [16], "cifar_scratch_epochs": 1, "cifar_pretrain_epochs": 1,
    "cifar_finetune_epochs": 1, "cifar_seeds": [1], **SMALL_CIFAR}


def test_every_notebook_has_other_parameters_here():
    assert set(NOTEBOOKS) <= set(OTHER_PARAMETERS), (
        "add non-default parameters for the new notebook to OTHER_PARAMETERS")


@pytest.fixture(scope="module")
def rebuilt_book(tmp_path_factory):
    if not _cifar_available():
        pytest.skip("no CIFAR-10 data: set VQPAPER_CIFAR10 to an .npz or torchvision folder")
    root = tmp_path_factory.mktemp("params")
    build, src = root / "build", root / "src"
    (src / "book" / "notebooks").mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / name, src / name)
    for path in (REPO / "book").iterdir():
        if path.is_file():
            shutil.copy(path, src / "book" / path.name)
    shutil.copytree(REPO / "book" / "_static", src / "book" / "_static")
    env = dict(os.environ, VQPAPER_BUILD=str(build), VQPAPER_NO_CACHE="1")
    subset = REPO.parent / "shared" / "data" / "cifar10-subset.npz"
    if not env.get("VQPAPER_CIFAR10") and subset.is_file():
        env["VQPAPER_CIFAR10"] = str(subset)
    code = ("import sys, json; from pathlib import Path; from vqpaper.cli import execute; "
            "execute(Path(f'notebooks/{sys.argv[1]}.py'), 'ci', json.loads(sys.argv[2]), book_copy=False)")
    import json
    failures = {}
    for name in NOTEBOOKS:
        params = OTHER_PARAMETERS.get(name, {})
        proc = subprocess.run([sys.executable, "-c", code, name, json.dumps(params)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            failures[name] = (proc.stdout + proc.stderr)[-3000:]
            continue
        shutil.copy(build / "executed" / f"{name}.ipynb", src / "book" / "notebooks" / f"{name}.ipynb")
    proc = None
    if not failures:
        script = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]
        proc = subprocess.run(script + ["build", str(src), "--builder", "html", "-W", "-n", "--keep-going"],
                              env=env, capture_output=True, text=True, timeout=600)
    return {"failures": failures, "build": proc, "html": src / "_build" / "html"}


def test_notebooks_run_with_other_parameters(rebuilt_book):
    assert not rebuilt_book["failures"], "\n\n".join(f"{k}:\n{v}" for k, v in rebuilt_book["failures"].items())


def test_book_builds_without_warnings_after_other_parameters(rebuilt_book):
    proc = rebuilt_book["build"]
    assert proc is not None, "the notebooks failed; see the test above"
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = (rebuilt_book["html"] / "book" / "results.html").read_text()
    assert "3-D" in results and "2-D" not in results.split("Tokens collapse on synthetic data")[1].split(
        "Tokens collapse on CIFAR-10")[0], "the results page does not show the dims that ran"
