"""Remedies (notebook 06): the adapters give what the library gives, recipes parse and compose,
verdicts can come out either way."""
import math
from types import SimpleNamespace

import pytest
import torch
from vector_quantize_pytorch import FSQ, VectorQuantize

from vqpaper import remedies as R
from vqpaper.claims import HELD, INCONCLUSIVE, NOT_HELD
from vqpaper.config import SyntheticRun
from vqpaper.errors import ConfigError

torch.set_num_threads(1)


def _library_vq(token_dim, k, flags, decay=0.9, beta=0.25, kmeans="batch"):
    """The library's VectorQuantize built by hand, with the arguments each remedy means."""
    l2 = "l2" in flags
    return VectorQuantize(dim=token_dim, codebook_size=k, decay=decay, kmeans_init=kmeans != "none",
                          threshold_ema_dead_code=2 if "restart" in flags else 0,
                          rotation_trick="rotation" in flags, use_cosine_sim=l2,
                          codebook_dim=max(2, token_dim // 4) if l2 else None, commitment_weight=beta)


@pytest.mark.parametrize("flags", [(), ("restart",), ("rotation",), ("l2",), ("restart", "rotation")])
@pytest.mark.parametrize("token_dim", [1, 8])
def test_library_vq_adapter_gives_the_library_s_indices_outputs_gradients_and_updates(flags, token_dim):
    name = "-".join(["vq-lib", *flags])
    ours = R.make_quantizer(name, 16, token_dim, decay=0.9, beta=0.25, kmeans_init="batch", seed=3)
    lib = _library_vq(token_dim, 16, flags)
    lib.load_state_dict(ours.vq.state_dict())
    assert ours.vq.rotation_trick == ("rotation" in flags) and lib.rotation_trick == ours.vq.rotation_trick
    z = torch.randn(6, 5, token_dim) * 3
    for step in range(4):  # first batch: K-means init (random draws); later: EMA updates and restarts
        z_ours, z_lib = z.clone().requires_grad_(), z.clone().requires_grad_()
        torch.manual_seed(step)
        q_ours, i_ours, l_ours = ours.train()(z_ours)
        torch.manual_seed(step)
        q_lib, i_lib, l_lib = lib.train()(z_lib)
        assert i_ours.shape == z.shape[:-1] and q_ours.shape == z.shape
        torch.testing.assert_close(i_ours, i_lib.long())
        torch.testing.assert_close(q_ours, q_lib)
        torch.testing.assert_close(l_ours, l_lib)
        (q_ours.square().sum() + l_ours).backward()
        (q_lib.square().sum() + l_lib).backward()
        torch.testing.assert_close(z_ours.grad, z_lib.grad)
        torch.testing.assert_close(ours.vq.codebook, lib.codebook)
        z = z + torch.randn_like(z)
    # eval: the tokens the decoder receives are rows of .codebook, and decode_indices agrees
    q, i, _ = ours.eval()(z)
    torch.testing.assert_close(q, ours.codebook[i].detach())
    torch.testing.assert_close(ours.decode_indices(i), q)


def test_dead_code_restart_moves_unused_tokens_onto_embeddings_and_plain_library_vq_does_not():
    z = torch.randn(512, 2) * 0.1 + 5.0  # far from most of a random codebook
    moved = {}
    for name in ("vq-lib", "vq-lib-restart"):
        q = R.make_quantizer(name, 32, 2, decay=0.5, kmeans_init="none", seed=0).train()
        before = q.codebook.detach().clone()
        for _ in range(5):
            q(z)
        moved[name] = int(((q.codebook.detach() - 5.0).norm(dim=1) < 1.0).sum() - ((before - 5.0).norm(dim=1) < 1.0).sum())
    assert moved["vq-lib-restart"] >= 16 and moved["vq-lib"] <= 1


def test_fsq_adapter_matches_the_library_and_uses_exactly_codebook_size_codes():
    ours = R.make_quantizer("fsq", 128, 4, seed=1)
    assert ours.levels == [8, 4, 4] and ours.codebook_size == 128 and ours.codebook.shape == (128, 4)
    lib = FSQ(levels=[8, 4, 4], dim=4)
    lib.load_state_dict(ours.fsq.state_dict())
    z = torch.randn(3, 7, 4, requires_grad=True)
    z_lib = z.detach().clone().requires_grad_()
    q, i, loss = ours.train()(z)
    q_lib, i_lib = lib(z_lib)
    torch.testing.assert_close(q, q_lib)
    torch.testing.assert_close(i, i_lib.long())
    q.sum().backward()
    q_lib.sum().backward()
    torch.testing.assert_close(z.grad, z_lib.grad)
    assert float(loss) == 0.0
    torch.testing.assert_close(q, ours.codebook[i].detach())
    torch.testing.assert_close(ours.decode_indices(i), q.detach())


@pytest.mark.parametrize("k, levels", [(16, [4, 4]), (128, [8, 4, 4]), (256, [8, 8, 4]), (1024, [8, 8, 4, 4]),
                                       (65536, [8, 8, 8, 8, 4, 4])])
def test_fsq_levels_multiply_to_the_codebook_size(k, levels):
    assert R.fsq_levels(k) == levels and math.prod(levels) == k


@pytest.mark.parametrize("bad, words", [(2, "'fsq' needs codebook_size a power of two >= 4"),
                                        (100, "got 100; e.g. 16, 128"),
                                        (0, "codebook_size must be a positive integer, got 0"),
                                        (3.0, "codebook_size must be a positive integer, got 3.0")])
def test_fsq_levels_name_the_bad_codebook_size(bad, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        R.make_quantizer("fsq", bad, 2)


@pytest.mark.parametrize("name", ["vq-lib", "vq-lib-l2"])
def test_dataset_kmeans_is_the_library_s_kmeans_on_the_vectors_given_in_its_codebook_space(name):
    from vector_quantize_pytorch.vector_quantize_pytorch import kmeans, l2norm

    q = R.make_quantizer(name, 4, 8, kmeans_init="dataset", seed=5)
    with pytest.raises(ConfigError, match="init_codebook"):
        q.train()(torch.randn(8, 8))
    vectors = torch.randn(200, 8) + torch.arange(4).repeat(50)[:, None] * 3.0
    q.init_codebook(vectors)
    with torch.no_grad():
        x = q.vq.project_in(vectors)[None]
        x = l2norm(x) if name == "vq-lib-l2" else x
    torch.manual_seed(5)  # the adapter draws K-means' starting tokens under its seed
    centres, _ = kmeans(x, 4, 10, use_cosine_sim=name == "vq-lib-l2")
    torch.testing.assert_close(q.vq.codebook, l2norm(centres[0]) if name == "vq-lib-l2" else centres[0])
    q.train()(torch.randn(8, 8))  # initialised: now it trains


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


def _run(dim, seed, metric_value, falling=False):
    loss = [1.0 - 0.1 * e for e in range(10)] if falling else [1.0] + [0.1] * 9  # falling: still dropping fast
    return SimpleNamespace(config={"dim": dim, "seed": seed},
                           metrics={"perplexity": metric_value, "participation_ratio": metric_value},
                           history=[{"stage": "scratch", "loss": v} for v in loss])


@pytest.mark.parametrize("offsets, falling, outcome", [
    ([10, 12, 11], False, HELD),         # every seed better in both dims
    ([-10, -12, -11], False, NOT_HELD),  # every seed worse
    ([10, -12, 3], False, INCONCLUSIVE),  # mixed
    ([10, 12, 11], True, INCONCLUSIVE),  # better, but the loss was still falling
])
def test_remedy_verdicts_can_come_out_every_way(offsets, falling, outcome):
    base = [_run(d, s, 20.0 + s) for d in (2, 8) for s in range(3)]
    mine = [_run(d, s, 20.0 + s + off, falling) for d in (2, 8) for s, off in enumerate(offsets)]
    [family] = R.remedy_families({"ema": base, "restart": mine}, "tokens")
    assert family.outcome == outcome and len(family.checks) == 2
    assert [c.setting for c in family.checks] == ["2-D", "8-D"]
    grid = R.verdict_grid({"tokens": [family]})
    assert grid.iloc[0]["tokens collapse, synthetic"] == outcome


def test_effect_grid_is_relative_to_the_baseline_and_signed_for_lower_is_better():
    base = [_run(2, s, 10.0) for s in range(3)]
    better = [_run(2, s, 15.0 + 0.1 * s) for s in range(3)]
    for r in base + better:
        r.metrics["mse"] = r.metrics["perplexity"] / 100
    grid = R.effect_grid({"tokens": {"ema": base, "restart": better}},
                         columns=(("tokens", "perplexity", True), ("tokens", "mse", False)))
    ppl, mse = grid
    assert ppl["relative"] == pytest.approx(0.51) and ppl["decided"]
    assert mse["relative"] == pytest.approx(-0.51) and mse["decided"]  # higher MSE: worse


def test_our_ema_with_the_laplace_update_is_the_library_s_and_eq5_is_not():
    rows = {r["update"]: r for r in R.compare_ema_with_library(codebook_size=32, token_dim=4, steps=200)}
    assert rows["laplace"]["same_token_share"] == 1.0 and rows["laplace"]["max_codebook_gap"] < 1e-4
    # eq. (5) as written leaves unused tokens in place; the library drags them to the origin
    assert rows["eq5"]["max_codebook_gap"] > 0.1 and rows["eq5"]["ours_at_origin"] == 0


def test_which_sentence_groups_recipes_by_the_computed_outcome():
    base = [_run(d, s, 20.0 + s) for d in (2, 8) for s in range(3)]
    better = [_run(d, s, 30.0 + s) for d in (2, 8) for s in range(3)]
    worse = [_run(d, s, 10.0 + 0.5 * s) for d in (2, 8) for s in range(3)]
    families = R.remedy_families({"ema": base, "restart": better, "fsq": worse}, "tokens")
    text = R.which_sentence(families, "tokens")
    assert text == ("Tokens collapse (synthetic), each recipe against EMA-VQ from scratch: held for dead-code restart; "
                    "not held for FSQ.")


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


def test_library_run_sentence_quotes_the_lib_recipe_s_verdicts_or_says_it_did_not_run():
    base = [_run(d, s, 20.0 + s) for d in (2, 8) for s in range(3)]
    same = [_run(d, s, 20.0 + s + (0.1 if s == 1 else -0.1)) for d in (2, 8) for s in range(3)]
    families = {"tokens": R.remedy_families({"ema": base, "lib": same, "restart": same}, "tokens")}
    text = R.library_run_sentence(families)
    # perplexities within 1% of each other, seed by seed: decided as no effect larger than 10%
    assert text.startswith("On whole training runs") and "tokens collapse (synthetic), not held" in text
    assert "2-D (no effect); 8-D (no effect)" in text
    assert "did not run" in R.library_run_sentence({"tokens": R.remedy_families({"ema": base, "fsq": same}, "tokens")})
