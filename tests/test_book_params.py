"""Re-executing any notebook with other valid parameters still builds the book (issue 10).

Prose and the results page name glue keys; if one of them only exists for the default
parameters (say, the 2-D data), a re-run with other dimensions breaks the build. Here every
notebook runs with small non-default parameters (other dims, sizes, widths, seeds), into a
temporary build folder, and the real `_config.yml`, `_toc.yml` and `book/` pages are staged
there and built from them with warnings as errors.
"""
import io
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NOTEBOOKS, REPO, _cifar_available
from vqpaper import runner

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
    """Every notebook with its other parameters (two at a time, cold cache) into a temporary build
    folder, then the book staged and built from there (runner.build_book: BUILD/site -> BUILD/html)."""
    if not _cifar_available():
        pytest.skip("no CIFAR-10 data: set VQPAPER_CIFAR10 to an .npz or torchvision folder")
    build = tmp_path_factory.mktemp("params") / "build"
    jobs = [runner.prepare(name, "ci", OTHER_PARAMETERS.get(name, {}), build=build,
                           env={"VQPAPER_NO_CACHE": "1"})
            for name in NOTEBOOKS]
    outcomes = runner.run_notebooks(jobs, workers=2, out=io.StringIO())
    failures = {o.name: o.error + "\n" + Path(o.log).read_text()[-3000:] for o in outcomes if not o.ok}
    code = None
    if not failures:
        code = subprocess.run([sys.executable, "-c", "import sys; from vqpaper import runner; "
                               "sys.exit(runner.build_book(sys.argv[1]))", str(build)],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
    return {"failures": failures, "build": code, "html": build / "html"}


def test_notebooks_run_with_other_parameters(rebuilt_book):
    assert not rebuilt_book["failures"], "\n\n".join(f"{k}:\n{v}" for k, v in rebuilt_book["failures"].items())


def test_book_builds_without_warnings_after_other_parameters(rebuilt_book):
    proc = rebuilt_book["build"]
    assert proc is not None, "the notebooks failed; see the test above"
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = (rebuilt_book["html"] / "book" / "results.html").read_text()
    assert "3-D" in results and "2-D" not in results.split("Tokens collapse on synthetic data")[1].split(
        "Tokens collapse on CIFAR-10")[0], "the results page does not show the dims that ran"
