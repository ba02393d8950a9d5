"""The adapters of vector-quantize-pytorch (notebook 06) give what the library gives."""
import math

import pytest
import torch
from vector_quantize_pytorch import FSQ, VectorQuantize

from vqpaper import remedies as R
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


# ------------------------------------------------------------------ each remedy on CIFAR-sized latents
def _cifar_latents(step, batch=128, token_dim=16):
    """A CIFAR-10 batch's latents as the conv VQ-VAE gives them ([1 model, B, 8, 8, D]): most of them near
    one point (a collapsed encoder), so most tokens of a K-means on a wider spread go unused."""
    g = torch.Generator().manual_seed(100 + step)
    return (0.05 * torch.randn(1, batch, 8, 8, token_dim, generator=g)).requires_grad_(True)


@pytest.mark.parametrize("recipe", ["restart", "pretrained+restart", "l2", "rotation", "fsq", "simvq", "lib",
                                    "batch-kmeans"])
def test_each_remedy_acts_on_cifar_sized_latents(recipe):
    """06 leaves CIFAR-10 out at ci, so here each remedy's quantizer meets latents of CIFAR-10's size
    (a batch of 128 images x 8 x 8 latents of token dimension 16, K = 256) and must do its job:
    dead-code restart replaces unused codes (counted), SimVQ moves every token, FSQ's outputs lie on
    its grid, l2 codes are unit vectors, the rotation trick passes a gradient, first-batch K-means
    starts from the first batch."""
    from vqpaper import recipes, train
    from vqpaper.config import CifarRun

    r = recipes.parse_remedy(recipe)
    [cfg] = recipes.with_remedy([CifarRun(codebook_size=256, token_dim=16, channels=16, residual_channels=8,
                                    kmeans_init="none" if recipe in ("restart", "pretrained+restart", "l2",
                                                                     "rotation", "lib") else "dataset")], r)
    q = train.new_quantizer([cfg]).train()
    if cfg.kmeans_init == "dataset" and hasattr(q, "init_codebook"):
        q.init_codebook(torch.randn(1, 4096, 16))   # spread wider than the latents: most tokens go unused
    before = q.codebook.detach().clone() if hasattr(q, "codebook") else None
    params = [p for p in q.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1) if params else None  # SimVQ's W learns by gradient
    used = set()
    for step in range(6):
        z = _cifar_latents(step)
        quantized, indices, loss = q(z)
        assert quantized.shape == z.shape and indices.shape == z.shape[:-1]
        (quantized.square().mean() + loss.sum()).backward()
        if opt is not None:
            opt.step()
            opt.zero_grad()
        used |= set(indices.reshape(-1).tolist())
    if "restart" in recipe:
        after = q.codebook.detach()
        replaced = int((after != before).any(-1).sum())
        assert replaced > 256 - len(used), f"dead-code restart replaced {replaced} codes; {len(used)} were used"
    elif recipe == "simvq":
        assert bool((q.codebook.detach() != before).any(-1).all()), "SimVQ's one linear layer moves every token"
    elif recipe == "fsq":
        codes = quantized.detach().reshape(-1, quantized.shape[-1])
        assert codes.unique(dim=0).shape[0] <= 256
    elif recipe == "l2":
        norms = quantized.detach().reshape(-1, quantized.shape[-1]).norm(dim=-1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4) or quantized.shape[-1] == 16
    elif recipe == "rotation":
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    elif recipe == "batch-kmeans":
        assert len(used) > 1 and before is not None
