"""Properties of the quantizers (eq. 1-5, SimVQ) and an independent oracle."""
import warnings

import pytest
import torch

from vqpaper.errors import ConfigError
from vqpaper.config import CifarRun, SyntheticRun
from vqpaper.quantizers import EMA_UPDATES, EMAQuantizer, SimVQQuantizer, kmeans, make_quantizer, nearest_token
from vqpaper.train import new_quantizer

torch.set_num_threads(1)


# exactness of nearest_token against cdist, up to K = 65,536: tests/test_search.py


def test_nearest_token_rejects_bad_shapes():
    with pytest.raises(ConfigError, match="same D"):
        nearest_token(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ConfigError, match="chunk_size"):
        nearest_token(torch.randn(4, 3), torch.randn(5, 3), chunk_size=0)


@pytest.mark.parametrize("name", ["ema", "simvq"])
def test_quantized_equals_codebook_rows_at_indices(name):
    q = make_quantizer(name, 32, 4, kmeans_init="batch", seed=0)
    z = torch.randn(2, 5, 4, requires_grad=True)
    q.eval()
    out, idx, loss = q(z)
    assert out.shape == z.shape and idx.shape == (2, 5)
    torch.testing.assert_close(out, q.codebook[idx].detach())
    # straight-through: d(sum quantized)/dz is the identity
    out.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))
    assert loss.ndim == 0 and torch.isfinite(loss)


def _three_token_step(update, eps):
    """One training step of the by-hand example: tokens 0, 10, 20 with L = 2; batch 1, 3, 9."""
    q = EMAQuantizer(3, 1, decay=0.5, kmeans_init="none", eps=eps, update=update)
    q.codebook.copy_(torch.tensor([[0.0], [10.0], [20.0]]))
    q.cluster_size.copy_(torch.tensor([2.0, 2.0, 2.0]))
    q.embed_sum.copy_(q.codebook * 2)
    q.train()
    _, idx, _ = q(torch.tensor([[1.0], [3.0], [9.0]]))
    assert idx.tolist() == [0, 0, 1]
    return q


def test_ema_update_matches_equations_3_to_5_by_hand():
    # eps is not used by eq. (5) as written: a large one must change nothing
    q = _three_token_step("eq5", eps=0.1)
    # M_0 = .5*0 + .5*(1+3) = 2,  L_0 = .5*2 + .5*2 = 2 -> t_0 = 1
    # M_1 = .5*20 + .5*9 = 14.5, L_1 = .5*2 + .5*1 = 1.5 -> t_1 = 9.667
    # M_2 = .5*40 = 20, L_2 = .5*2 = 1 -> t_2 = 20 (unused token keeps its place)
    torch.testing.assert_close(q.embed_sum.squeeze(1), torch.tensor([2.0, 14.5, 20.0]))
    torch.testing.assert_close(q.cluster_size, torch.tensor([2.0, 1.5, 1.0]))
    torch.testing.assert_close(q.codebook.squeeze(1), torch.tensor([1.0, 14.5 / 1.5, 20.0]))


def test_laplace_update_matches_sonnet_smoothing_by_hand():
    q = _three_token_step("laplace", eps=0.1)
    # same M and L as eq. (5); L is smoothed before dividing: n = 2 + 1.5 + 1 = 4.5, S = 3,
    # (L_k + 0.1) / (4.5 + 3 * 0.1) * 4.5 = (L_k + 0.1) * 0.9375 = 1.96875, 1.5, 1.03125
    torch.testing.assert_close(q.embed_sum.squeeze(1), torch.tensor([2.0, 14.5, 20.0]))
    torch.testing.assert_close(q.cluster_size, torch.tensor([2.0, 1.5, 1.0]))
    torch.testing.assert_close(q.codebook.squeeze(1), torch.tensor([2.0 / 1.96875, 14.5 / 1.5, 20.0 / 1.03125]))
    assert q.codebook[2, 0] < 20.0  # the unused token has moved towards the origin


def test_default_ema_update_is_the_papers_eq5():
    assert EMAQuantizer(4, 2).update == "eq5"
    assert SyntheticRun().ema_update == CifarRun().ema_update == "eq5"


def _unused_token_run(update, steps):
    """Tokens at 5, 6 (used) and 2.5, -2: never nearest, the batches lie in [4.7, 6.2], and moving
    towards the origin takes a token further from them."""
    q = EMAQuantizer(4, 1, decay=0.9, kmeans_init="none", update=update)
    q.codebook.copy_(torch.tensor([[5.0], [6.0], [2.5], [-2.0]]))
    q.cluster_size.fill_(1.0)
    q.embed_sum.copy_(q.codebook)
    g = torch.Generator().manual_seed(0)
    q.train()
    trace = []
    for _ in range(steps):
        _, idx, _ = q(torch.rand(32, 1, generator=g) * 1.5 + 4.7)
        assert not (idx >= 2).any()
        trace.append(q.codebook[2:, 0].clone())
    return q, torch.stack(trace)


def test_eq5_unused_tokens_keep_their_position_through_float32_underflow():
    q, trace = _unused_token_run("eq5", 2000)
    # M_k and L_k of the unused tokens shrank by 0.9 per step into float32's subnormal range, where
    # 0.9 * x rounds back to x: their ratio is no longer the token (a plain M / L puts it at ±1)
    assert (q.cluster_size[2:] < torch.finfo(torch.float32).tiny).all()
    assert ((q.embed_sum[2:, 0] / q.cluster_size[2:] - torch.tensor([2.5, -2.0])).abs() > 0.1).all()
    assert torch.isfinite(q.codebook).all()
    assert torch.equal(trace, torch.tensor([[2.5, -2.0]]).expand(2000, 2))  # bit for bit, every step
    # used again after L_k ~ 0: eq. (5) gives the mean of the new embeddings, M_k / L_k = m_k / l_k
    _, idx, _ = q(torch.tensor([[2.2], [2.6]]))
    assert idx.tolist() == [2, 2]
    torch.testing.assert_close(q.codebook[2, 0], torch.tensor(2.4))
    assert q.codebook[3, 0] == -2.0


def test_laplace_unused_tokens_drift_to_the_origin():
    q, trace = _unused_token_run("laplace", 2000)
    assert torch.isfinite(q.codebook).all()
    norms = trace.abs()
    # never away from the origin (up to float32 rounding among the subnormals at the end)
    assert (norms[1:] <= norms[:-1] + 1e-38).all()
    assert (norms[-1] < 1e-3).all()               # and ends there
    assert (norms[20] > 1.0).all()                # but not at once: L_k has to decay to about eps first


@pytest.mark.parametrize("bad", ["sonnet", "EQ5", None, 5])
def test_bad_update_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match=r"update must be one of \('eq5', 'laplace'\)") as err:
        EMAQuantizer(4, 2, update=bad)
    assert repr(bad) in str(err.value)
    with pytest.raises(ConfigError, match="ema_update must be one of") as err:
        SyntheticRun(ema_update=bad).validate()
    assert repr(bad) in str(err.value)


@pytest.mark.parametrize("update", EMA_UPDATES)
def test_run_config_ema_update_reaches_the_quantizer(update):
    assert new_quantizer([SyntheticRun(ema_update=update)]).updates == [update]
    assert new_quantizer([CifarRun(ema_update=update)]).update == update
    # one group may mix the rules: each model applies its own
    mixed = new_quantizer([SyntheticRun(ema_update=update, seed=0), SyntheticRun(ema_update="eq5", seed=1)])
    assert mixed.updates == [update, "eq5"]
    # SimVQ has no EMA update and accepts the field without using it
    assert isinstance(new_quantizer([SyntheticRun(quantizer="simvq", ema_update=update)]), SimVQQuantizer)


def test_a_group_mixing_eq5_and_laplace_updates_each_model_as_alone():
    g = torch.Generator().manual_seed(0)
    group = EMAQuantizer(8, 2, decay=0.9, kmeans_init="batch", seed=[3, 4], update=["laplace", "eq5"]).train()
    alone = [EMAQuantizer(8, 2, decay=0.9, kmeans_init="batch", seed=s, update=u).train()
             for s, u in ((3, "laplace"), (4, "eq5"))]
    for _ in range(20):
        z = torch.randn(2, 64, 2, generator=g) * torch.tensor([1.0, 3.0])
        _, idx, loss = group(z)
        for m, q in enumerate(alone):
            _, i, single_loss = q(z[m])
            assert torch.equal(idx[m], i) and torch.equal(loss[m], single_loss)
    for m, q in enumerate(alone):
        for name in ("codebook", "cluster_size", "embed_sum"):
            assert torch.equal(getattr(group, name)[m], getattr(q, name)), name


def test_kmeans_init_centres_are_encoder_output_centroids():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    z = torch.cat([c + 0.1 * torch.randn(200, 2, generator=g) for c in centres])
    q = EMAQuantizer(3, 2, kmeans_init="dataset")
    q.init_codebook(z)
    got = q.codebook[q.codebook[:, 0].argsort()]
    means = torch.stack([z[i * 200:(i + 1) * 200].mean(0) for i in range(3)])
    torch.testing.assert_close(got, means[means[:, 0].argsort()], atol=1e-5, rtol=0)
    torch.testing.assert_close(q.cluster_size, torch.full((3,), 200.0))
    # eq. (5) holds at initialisation: t = M / L
    torch.testing.assert_close(q.embed_sum / q.cluster_size[:, None], q.codebook)


def test_dataset_init_required_before_training():
    q = EMAQuantizer(8, 2, kmeans_init="dataset")
    q.train()
    with pytest.raises(ConfigError, match="init_codebook"):
        q(torch.randn(4, 2))


def test_batch_init_runs_kmeans_on_first_batch_only():
    q = EMAQuantizer(4, 2, kmeans_init="batch", decay=0.99)
    q.train()
    first = torch.randn(64, 2) + 100.0
    q(first)
    assert (q.codebook[:, 0] > 90).all()  # centred on the first batch
    q(torch.randn(64, 2) - 100.0)
    assert bool(q.initialised)
    # a second K-means on this batch would have put every token near -100; the EMA update
    # (decay 0.99) moves only the chosen token, and only part of the way
    assert (q.codebook[:, 0] > 0).all()


def test_a_loaded_state_dict_carries_the_initialised_flag():
    trained = EMAQuantizer(4, 2, kmeans_init="batch")
    trained.train()(torch.randn(64, 2) + 100.0)
    fresh = EMAQuantizer(4, 2, kmeans_init="batch")
    fresh.load_state_dict(trained.state_dict())
    fresh.train()(torch.randn(64, 2) - 100.0)           # no second K-means on this batch
    assert (fresh.codebook[:, 0] > 0).all()
    # and the other way: an uninitialised state makes a "batch" quantizer initialise again
    again = EMAQuantizer(4, 2, kmeans_init="batch")
    again.load_state_dict(trained.state_dict())
    again.load_state_dict(EMAQuantizer(4, 2, kmeans_init="batch").state_dict())
    again.train()(torch.randn(64, 2) - 100.0)
    assert (again.codebook[:, 0] < -90).all()


def test_simvq_moves_all_tokens_while_ema_unused_tokens_stay():
    torch.manual_seed(0)
    z = torch.randn(64, 4) * 0.1 + 3.0  # all latents near one corner: most tokens unused
    simvq = SimVQQuantizer(16, 4, seed=0)
    before = simvq.codebook.detach().clone()
    opt = torch.optim.SGD(simvq.parameters(), lr=0.1)
    _, idx, loss = simvq(z)
    loss.backward()
    opt.step()
    moved = (simvq.codebook.detach() - before).norm(dim=1)
    assert (moved > 1e-4).all(), "every SimVQ token moves after one step"
    assert idx.unique().numel() < 16

    ema = EMAQuantizer(16, 4, kmeans_init="none", decay=0.9)
    ema.cluster_size.fill_(5.0)
    ema.embed_sum.copy_(ema.codebook * 5.0)
    before = ema.codebook.clone()
    ema.train()
    _, idx, _ = ema(z)
    unused = torch.ones(16, dtype=torch.bool)
    unused[idx.unique()] = False
    assert unused.any()
    assert torch.equal(ema.codebook[unused], before[unused])  # eq. (5), the default
    assert (ema.codebook[~unused] - before[~unused]).norm(dim=1).min() > 1e-3


def test_simvq_decodes_with_projected_codebook_not_basis():
    q = SimVQQuantizer(8, 3, seed=1)
    idx = torch.tensor([0, 5, 7])
    torch.testing.assert_close(q.decode_indices(idx), (q.basis @ q.weight.T + q.bias)[idx])
    assert not torch.allclose(q.decode_indices(idx), q.basis[idx])


def test_simvq_loss_has_codebook_and_commitment_terms_on_correct_sides():
    q = SimVQQuantizer(8, 3, beta=0.25, seed=2)
    z = torch.randn(10, 3, requires_grad=True)
    _, _, loss = q(z)
    loss.backward()
    assert q.weight.grad is not None and q.weight.grad.abs().sum() > 0
    # d/dz of beta*mse(z, sg(q)) = 2*beta*(z - q)/numel
    tokens = q.codebook.detach()[nearest_token(z.detach(), q.codebook.detach())[0]]
    torch.testing.assert_close(z.grad, 2 * 0.25 * (z.detach() - tokens) / z.numel())


def test_same_seed_same_quantizer():
    a, b = SimVQQuantizer(16, 4, seed=3), SimVQQuantizer(16, 4, seed=3)
    torch.testing.assert_close(a.codebook, b.codebook, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, 2**30])
def test_bad_codebook_size_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="codebook_size"):
        make_quantizer("ema", bad, 4)


def test_unknown_quantizer_name():
    with pytest.raises(ConfigError, match="quantizer must be one of"):
        make_quantizer("rvq", 16, 4)


def test_oracle_vector_quantize_pytorch_assignment_and_ema_update():
    """Independent implementation: same codebook and inputs -> same indices and new codebook."""
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    k, d, decay = 64, 8, 0.9
    ref = vqp.VectorQuantize(dim=d, codebook_size=k, decay=decay, commitment_weight=0.25,
                             kmeans_init=False, rotation_trick=False, threshold_ema_dead_code=0)
    ours = EMAQuantizer(k, d, decay=decay, kmeans_init="none", update="laplace")  # the oracle smooths L
    cb = ref._codebook
    ours.codebook.copy_(cb.embed[0])
    ours.cluster_size.copy_(cb.cluster_size[0])
    ours.embed_sum.copy_(cb.embed_avg[0])
    for step in range(3):
        z = torch.randn(4, 50, d)
        ref.train()
        ours.train()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, ref_idx, _ = ref(z)
        _, idx, _ = ours(z)
        assert torch.equal(idx, ref_idx), f"assignment differs at step {step}"
        torch.testing.assert_close(ours.codebook, cb.embed[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.cluster_size, cb.cluster_size[0], atol=1e-5, rtol=1e-5)
