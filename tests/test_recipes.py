"""Recipes of notebook 06: names parse and compose into run-config fields, bad ones are named."""
import pytest

from vqpaper import recipes as R
from vqpaper.config import SyntheticRun
from vqpaper.errors import ConfigError


@pytest.mark.parametrize("name, quantizer, method, kmeans", [
    ("ema", "ema", "scratch", "dataset"),
    ("pretrained", "ema", "pretrained", "dataset"),
    ("batch-kmeans", "ema", "scratch", "batch"),
    ("simvq", "simvq", "scratch", "dataset"),
    ("fsq", "fsq", "scratch", "dataset"),
    ("lib", "vq-lib", "scratch", "dataset"),
    ("pretrained+restart", "vq-lib-restart", "pretrained", "dataset"),
    ("l2+restart+batch-kmeans", "vq-lib-restart-l2", "scratch", "batch"),
])
def test_recipes_compose_into_run_config_fields(name, quantizer, method, kmeans):
    r = R.parse_remedy(name)
    assert (r.quantizer, r.method, r.kmeans_init) == (quantizer, method, kmeans)
    [cfg] = R.with_remedy([SyntheticRun(dim=2, token_dim=1)], r)
    assert (cfg.quantizer, cfg.method, cfg.kmeans_init) == (quantizer, method, kmeans)


@pytest.mark.parametrize("names, words", [
    (["restart+warmup"], ["warmup", "allowed"]),
    (["simvq+fsq"], ["more than one quantizer"]),
    (["fsq+batch-kmeans"], ["no codebook", "batch-kmeans"]),
    (["lib+restart"], ["implied", "'restart'"]),
    (["pretrained+restart", "restart+pretrained"], ["same recipe"]),
    ("restart", ["list"]),
    ([""], ["non-empty"]),
])
def test_bad_recipes_are_named_with_what_is_allowed(names, words):
    with pytest.raises(ConfigError) as err:
        R.parse_remedies(names)
    for w in words:
        assert w in str(err.value)


def test_every_library_quantizer_is_a_valid_run_config():
    for name in R.LIBRARY_QUANTIZERS:
        SyntheticRun(quantizer=name).validate()
    with pytest.raises(ConfigError, match="quantizer must be one of"):
        SyntheticRun(quantizer="vq-lib-warmup").validate()


def test_notebook_06_parameters_reject_a_recipe_list_without_the_baseline_or_with_a_bad_recipe():
    from vqpaper.config import notebook_config

    with pytest.raises(ConfigError, match="must include 'ema'"):
        notebook_config("06_remedies", "ci", remedies=["restart", "fsq"])
    with pytest.raises(ConfigError, match="parameter 'remedies': remedies: unknown part"):
        notebook_config("06_remedies", "ci", remedies="['ema', 'warmup']")  # papermill passes text
    with pytest.raises(ConfigError, match="'codebook_sizes': 100 is not a power of two"):
        notebook_config("06_remedies", "ci", codebook_sizes=[100])
    assert notebook_config("06_remedies", "ci", remedies="['ema', 'restart+batch-kmeans']").remedies == [
        "ema", "restart+batch-kmeans"]
