"""One typed dataclass per notebook: its fields are the parameters cell, its kinds the checks."""
import ast
import os
from dataclasses import fields

import jupytext
import pytest

from conftest import NOTEBOOKS, REPO
from vqpaper import config
from vqpaper.errors import ConfigError


def parameters_cell(name):
    nb = jupytext.read(REPO / "notebooks" / f"{name}.py", fmt="py:percent")
    [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return {t.id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body
            if isinstance(node, ast.Assign) for t in node.targets}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_names_exactly_the_dataclass_fields(name):
    cell = parameters_cell(name)
    assert name in config.PRESETS, f"{name} has no preset in config.PRESETS"
    names = {f.name for f in fields(config.PRESETS[name]["ci"])}
    assert set(cell) - {"profile"} == names
    assert cell["profile"] == "ci"
    assert all(v is None for k, v in cell.items() if k != "profile"), "a parameter's default is the profile's: None"


@pytest.mark.parametrize("name", sorted(config.PRESETS))
def test_presets_are_valid_and_documented(name):
    for profile in config.PROFILES:
        cfg = config.notebook_config(name, profile)
        assert cfg.profile == profile
    for row in config.describe(name):
        assert row["meaning"] and row["accepts"] in {k.name for k in (
            config.POSITIVE, config.NONNEG, config.POSITIVE_LIST, config.SEED_LIST, config.OPTIONAL_POSITIVE,
            config.OPTIONAL_PATH, config.FLAG, config.DEVICE, config.REMEDY_LIST)}


NB04, NB05 = "04_embeddings_collapse", "05_simvq_comparison"


@pytest.mark.parametrize("notebook, override, words", [
    # the kind comes from the field's type, not from its name: cifar_seeds is a seed list
    (NB04, {"cifar_seeds": [0, -1]}, ["cifar_seeds", "-1", "non-negative"]),
    (NB04, {"encoder_channels": [32, 0]}, ["encoder_channels", "0", "positive integer"]),
    (NB04, {"cifar_codebook_size": 2**30}, ["cifar_codebook_size", "at most"]),
    (NB04, {"data_seed": -1}, ["data_seed", "-1", "non-negative"]),
    (NB05, {"train_images": 0}, ["train_images", "0", "positive integer"]),
    (NB05, {"kmeans_vectors": "many"}, ["kmeans_vectors", "'many'", "int"]),
    (NB05, {"cifar10": 3}, ["cifar10", "3", "path"]),
    (NB05, {"device": "tpu"}, ["device", "'tpu'", "'cpu'"]),
    ("02_tokens_collapse_synthetic", {"laplace_ablation": "yes"}, ["laplace_ablation", "'yes'", "True or False"]),
    ("01_preliminaries", {"dim": 3, "token_dim": 2}, ["token_dim=2", "dim=3"]),
])
def test_one_checker_per_kind_names_parameter_value_and_what_is_allowed(notebook, override, words):
    with pytest.raises(ConfigError) as err:
        config.notebook_config(notebook, "ci", **override)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_list_parameters_accept_papermill_text_and_none_means_the_profile():
    cfg = config.notebook_config(NB04, "ci", cifar_seeds="[1, 2]", epochs=None)
    assert cfg.cifar_seeds == [1, 2] and cfg.epochs == config.PRESETS[NB04]["ci"].epochs


def test_importing_vqpaper_makes_openmp_threads_sleep_unless_the_user_chose():
    """With VQPAPER_THREADS > 1 on a busy machine, spinning OpenMP waits made a run 20x slower."""
    import subprocess
    import sys

    code = "import os, vqpaper, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"
