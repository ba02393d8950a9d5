"""One typed dataclass per notebook: its fields are the parameters cell, its kinds the checks."""
import ast
import os
import dataclasses

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
    names = set(config.PRESETS[name]["ci"].parameter_names())
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
            config.POSITIVE, config.NONNEG, config.POSITIVE_LIST, config.PER_DIM_LIST, config.SEED_LIST,
            config.OPTIONAL_POSITIVE, config.OPTIONAL_PATH, config.FLAG, config.DEVICE, config.REMEDY_LIST,
            config.POSITIVE_NUMBER)}


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


@pytest.mark.parametrize("notebook, override, value, repeated", [
    ("02_tokens_collapse_synthetic", "seeds", "[0, 0]", 0),  # papermill's text, as `vqpaper run -p seeds "[0,0]"`
    ("02_tokens_collapse_synthetic", "dims", [2, 3, 2], 2),
    ("03_tokens_collapse_cifar10", "codebook_sizes", [16, 256, 16], 16),
    (NB04, "encoder_hiddens", [4, 4, 32], 4),
    (NB04, "cifar_seeds", [1, 1], 1),
    (NB05, "encoder_hiddens", [32, 32], 32),
])
def test_a_repeated_value_is_refused_before_any_training(notebook, override, value, repeated):
    """Two equal seeds (or sizes, widths, dims) would pair a run with itself: zero spread, an invented verdict."""
    with pytest.raises(ConfigError) as err:
        config.notebook_config(notebook, "ci", **{override: value})
    message = str(err.value)
    assert f"parameter '{override}' lists {repeated} more than once" in message, message


def test_token_dims_may_repeat_one_per_data_dimension():
    cfg = config.notebook_config("02_tokens_collapse_synthetic", "ci", dims=[2, 3], token_dims=[1, 1])
    assert cfg.token_dims == [1, 1]


def test_the_notebook_config_is_its_dataclass_read_by_attribute():
    cfg = config.notebook_config("02_tokens_collapse_synthetic", "paper", seeds=[3, 4])
    assert isinstance(cfg, config.TokensCollapseSynthetic) and cfg.notebook == "02_tokens_collapse_synthetic"
    assert cfg.seeds == [3, 4] and cfg.profile == "paper" and cfg.device in ("cpu", "cuda")
    assert not hasattr(cfg, "get"), "no dict fallbacks: a misspelt name is an AttributeError"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seeds = [0]
    assert cfg.parameters() == {**{n: getattr(cfg, n) for n in cfg.parameter_names()}, "profile": "paper"}


def test_05_and_06_share_one_declaration_of_their_cifar_and_synthetic_fields():
    for cls in (config.SimVQComparison, config.Remedies):
        assert issubclass(cls, config.CifarSweep) and issubclass(cls, config.SyntheticSweep)
    own = {f.name for f in dataclasses.fields(config.SimVQComparison)} - {
        f.name for f in dataclasses.fields(config.CifarSweep)} - {f.name for f in dataclasses.fields(config.SyntheticSweep)}
    assert own == {"encoder_hiddens"}


@pytest.mark.parametrize("field, value, words", [
    ("beta", -0.5, ["beta", "-0.5", ">= 0"]),
    ("decay", 0, ["decay", "0", "(0, 1)"]),
    ("cluster_std", "wide", ["cluster_std", "'wide'", "positive number"]),
    ("ema_update", "smooth", ["ema_update", "'smooth'", "'eq5'", "'laplace'"]),
    ("data_seed", -2, ["data_seed", "-2", "non-negative integer"]),
])
def test_run_configs_are_checked_by_the_kinds_of_their_fields(field, value, words):
    with pytest.raises(ConfigError) as err:
        config.SyntheticRun(**{field: value}).validate()
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_threads_come_from_the_settings(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("VQPAPER_THREADS", "2")
        assert config.set_threads() == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("VQPAPER_THREADS", "two")
        with pytest.raises(ConfigError, match="VQPAPER_THREADS must be a positive integer, got 'two'"):
            config.set_threads()
        monkeypatch.delenv("VQPAPER_THREADS")
        assert config.set_threads() == config.DEFAULT_THREADS
    finally:
        torch.set_num_threads(before)
