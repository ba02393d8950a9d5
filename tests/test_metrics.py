"""Collapse metrics: properties with known answers (vqpaper/metrics.py)."""
import json
import math

import numpy as np
import pytest
import torch

from vqpaper import metrics as M
from vqpaper.errors import ConfigError

torch.set_num_threads(1)


def rng(seed=0):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- usage


@pytest.mark.parametrize("K", [1, 7, 128])
def test_uniform_usage_gives_perplexity_K_and_full_usage(K):
    idx = np.tile(np.arange(K), 5)
    assert M.perplexity(idx, K) == pytest.approx(K)
    assert M.usage(idx, K) == 1.0


def test_single_token_gives_perplexity_one():
    idx = np.full((100, 4), 3)
    assert M.perplexity(idx, 16) == pytest.approx(1.0)
    assert M.usage(idx, 16) == pytest.approx(1 / 16)


def test_perplexity_is_over_the_whole_set_and_matches_entropy():
    idx = np.array([0, 0, 0, 1])  # p = (3/4, 1/4)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert M.perplexity(idx) == pytest.approx(expected)
    assert M.perplexity(idx.reshape(2, 2), codebook_size=8) == pytest.approx(expected)


def test_usage_counts_unused_tokens():
    idx = np.array([0, 1, 1, 5])
    assert M.usage(idx, 10) == pytest.approx(0.3)
    assert M.token_counts(idx, 10).tolist() == [1, 2, 0, 0, 0, 1, 0, 0, 0, 0]


# --------------------------------------------------------------------------- allocation


def test_even_allocation_has_entropy_one():
    # 4 clusters, 3 tokens each: token t is used only by cluster t // 3
    labels = np.repeat(np.arange(4), 30)
    indices = labels * 3 + np.tile(np.arange(3), 40)
    assert M.token_allocation(indices, labels).tolist() == [3, 3, 3, 3]
    assert M.alloc_entropy(indices, labels) == pytest.approx(1.0)
    assert M.min_tokens_per_cluster(indices, labels) == 3


def test_all_tokens_on_one_cluster_has_entropy_zero():
    # cluster 0 (30 points) uses tokens 0..9, three points each; one point of each other
    # cluster also lands on token 0, where cluster 0 keeps the majority (3 vs 1)
    indices = np.concatenate([np.arange(30) % 10, [0, 0, 0]])
    labels = np.concatenate([np.zeros(30, dtype=int), [1, 2, 3]])
    assert M.token_allocation(indices, labels).tolist() == [10, 0, 0, 0]
    assert M.alloc_entropy(indices, labels) == pytest.approx(0.0)
    assert M.min_tokens_per_cluster(indices, labels) == 0


def test_token_allocation_hand_case_with_latents_and_ties():
    # 3 points with 2 latents each; labels per point
    indices = np.array([[0, 1], [0, 2], [2, 3]])
    labels = np.array([0, 1, 1])
    # token 0: clusters {0, 1} tie -> 0; token 1: 0; token 2: 1 (twice); token 3: 1
    tokens, clusters = M.token_majority_cluster(indices, labels)
    assert tokens.tolist() == [0, 1, 2, 3]
    assert clusters.tolist() == [0, 0, 1, 1]
    assert M.token_allocation(indices, labels, n_clusters=3).tolist() == [2, 2, 0]
    assert M.min_tokens_per_cluster(indices, labels, n_clusters=3) == 0
    assert M.min_tokens_per_cluster(indices, labels) == 2
    assert M.alloc_entropy(indices, labels) == pytest.approx(1.0)


# --------------------------------------------------------------------------- peaks


def three_gaussians(n=1000, seed=0):
    r = rng(seed)
    return np.concatenate([r.normal(m, 0.5, n) for m in (-5.0, 0.0, 5.0)])


def test_count_peaks_three_well_separated_gaussians():
    x = three_gaussians()
    assert M.count_peaks(x) == 3
    assert np.allclose(M.peak_positions(x), [-5, 0, 5], atol=0.3)


@pytest.mark.parametrize("values", [
    three_gaussians(),                                                   # well-separated modes
    np.r_[rng(1).normal(size=5000), 1e3 + rng(2).normal(size=5)],        # a far cluster: empty blocks between
    rng(3).standard_cauchy(20_000),                                      # heavy tails
    np.r_[np.zeros(100), np.ones(3)],                                    # repeated values
])
def test_gaussian_density_equals_scipy_kde(values):
    """The truncated, blocked sum is scipy's KDE up to float64 rounding, also where no value is near."""
    from scipy import stats

    kde = stats.gaussian_kde(values)
    h = float(np.sqrt(kde.covariance[0, 0]))
    xs = np.linspace(values.min() - 3 * h, values.max() + 3 * h, 512)
    expected = kde(xs)
    for block in (1, 7, 32, 512):
        got = M.gaussian_density(values, xs, h, block=block)
        assert np.max(np.abs(got - expected)) <= 1e-12 * expected.max()


@pytest.mark.parametrize("values", [
    three_gaussians(),
    np.r_[rng(1).normal(size=5000), 1e3 + rng(2).normal(size=5)],
    rng(3).standard_cauchy(20_000) * 1e-5,
    np.round(rng(4).normal(size=3000), 1),
])
def test_gaussian_density_is_the_plain_blocked_sum_to_the_last_bit(values):
    """Its reused buffers change no bit: the same numbers as each block's fresh ``exp(-0.5 * u * u)``."""
    import math

    h = float(np.std(values)) * values.size ** -0.2
    xs = np.linspace(values.min() - 3 * h, values.max() + 3 * h, 300)
    v = np.sort(values)
    first = np.searchsorted(v, xs - M.KDE_CUTOFF * h, side="left")
    last = np.searchsorted(v, xs + M.KDE_CUTOFF * h, side="right")
    for block in (1, 7, 32, 512):
        plain = np.empty(xs.size)
        for a in range(0, xs.size, block):
            b = min(a + block, xs.size)
            u = (xs[a:b, None] - v[None, first[a]:last[b - 1]]) / h
            plain[a:b] = np.exp(-0.5 * u * u).sum(axis=1)
        plain /= v.size * h * math.sqrt(2 * math.pi)
        assert np.array_equal(M.gaussian_density(values, xs, h, block=block), plain)


def test_count_peaks_one_gaussian_and_constant():
    assert M.count_peaks(rng().normal(size=3000)) == 1
    assert M.count_peaks(np.full(50, 2.0)) == 1


def test_tokens_per_peak_and_peaks_with_tokens_hand_case():
    x = three_gaussians()
    tokens = np.array([-5.2, -5.0, -4.8, -4.5, 0.1, 0.2, 4.9, 5.1, 5.3, 20.0])
    # basins split at the valleys (≈ -2.5 and 2.5); 20.0 lies beyond the last valley
    assert M.tokens_per_peak(x, tokens).tolist() == [4, 2, 4]
    assert M.peaks_with_tokens(x, tokens, min_tokens=3) == 2
    assert M.peaks_with_tokens(x, tokens, min_tokens=2) == 3
    assert M.peaks_with_tokens(x, tokens, min_tokens=5) == 0


# --------------------------------------------------------------------------- reconstruction


def test_mse_hand_case():
    assert M.mse(np.zeros((2, 2)), np.array([[1.0, 0.0], [0.0, 3.0]])) == pytest.approx(2.5)


def test_sliced_wasserstein_zero_for_identical_and_grows_with_shift():
    x = rng().normal(size=(2000, 2))
    assert M.sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)
    values = [M.sliced_wasserstein(x, x + [s, 0.0]) for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(values, values[1:]))
    # a translation by t: W1 of every projection is |t·u|; E|cos| = 2/pi in 2-D
    assert values[-1] == pytest.approx(4.0 * 2 / math.pi, rel=0.05)


def test_sliced_wasserstein_of_reconstructions_sorts_their_distinct_rows_to_the_same_array():
    """A VQ-VAE's N reconstructions hold at most K distinct rows: the projections are sorted from
    those (each repeated by its count), which must give np.sort of all N projections (to the last
    bit or two: BLAS rounds a product of one row and of many rows differently)."""
    r = rng(4)
    dirs = r.standard_normal((64, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    decoded = np.tanh(r.normal(size=(40, 3)))          # K = 40 tokens' reconstructions
    few = decoded[r.integers(0, 40, 5000)]             # N = 5,000 rows, 40 distinct
    many = r.normal(size=(5000, 3))                    # every row distinct: the plain sort
    for a in (few, many, few[:1], np.repeat(few[:1], 7, axis=0)):
        np.testing.assert_allclose(M._sorted_projections(a, dirs), np.sort(dirs @ a.T, axis=1), rtol=1e-13, atol=1e-15)
    data = r.normal(size=(5000, 3))
    plain = float(np.mean(np.abs(np.sort(M._directions(128, 3, 0) @ few.T, axis=1)
                                 - np.sort(M._directions(128, 3, 0) @ data.T, axis=1))))
    assert M.sliced_wasserstein(few, data) == pytest.approx(plain, rel=1e-12)


def test_sliced_wasserstein_seeded_and_unequal_sizes():
    x, y = rng(0).normal(size=(500, 3)), rng(1).normal(size=(300, 3)) + 1.0
    assert M.sliced_wasserstein(x, y, seed=3) == M.sliced_wasserstein(x, y, seed=3)
    assert M.sliced_wasserstein(x, y) > 0.5
    # a sample against a copy of itself twice over (unequal sizes) has distance 0
    assert M.sliced_wasserstein(x, np.concatenate([x, x])) == pytest.approx(0.0, abs=1e-12)


def brute_prdc(real, fake, k):
    """Naeem et al.'s definitions written out directly (small sizes)."""
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    radius = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=-1)
    precision = (d_rf < radius[:, None]).any(axis=0).mean()
    coverage = (d_rf.min(axis=1) < radius).mean()
    return precision, coverage


def test_precision_coverage_identical_far_and_brute_force():
    real = rng().normal(size=(300, 2))
    assert M.precision_coverage(real, real, k=5) == {"precision": 1.0, "coverage": 1.0}
    far = M.precision_coverage(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "coverage": 0.0}
    fake = np.round(rng(1).normal(size=(400, 2)) * 1.5, 1)  # repeated rows, wider spread
    got = M.precision_coverage(real, fake, k=3, chunk_size=64)
    p, c = brute_prdc(real, fake, 3)
    assert got["precision"] == pytest.approx(p)
    assert got["coverage"] == pytest.approx(c)
    assert 0.0 < got["precision"] < 1.0 and 0.0 < got["coverage"] < 1.0


@pytest.mark.parametrize("dim", [2, 3, 8])
def test_precision_coverage_by_trees_decides_every_ball_as_all_distances_do(dim, monkeypatch):
    """The k-d tree queries (nearest real rows first, then every real row within the widest
    radius) against Naeem et al.'s definitions written out: the same fake rows inside, the same
    real rows covered, for reconstructions on the data, near it, spread wide and far out."""
    r = rng(dim)
    real = r.normal(size=(600, dim))
    centres = real[r.integers(0, 600, 40)] + r.normal(0, 0.05, (40, dim))
    fakes = {
        "few distinct, near the data": centres[r.integers(0, 40, 700)],
        "many distinct, wide": r.normal(0, 2.0, (700, dim)),
        "some far out": np.concatenate([centres[r.integers(0, 40, 500)], r.normal(0, 8.0, (200, dim))]),
    }
    for name, fake in fakes.items():
        d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
        radius = np.sort(d_rr, axis=1)[:, 5]
        uniq = M.unique_rows(fake)[0]
        d_ru = np.linalg.norm(real[:, None] - uniq[None], axis=-1)
        for one_by_one in (256, 0):   # the few left after the nearest real rows: one by one, or all balls at once
            monkeypatch.setattr(M, "REST_ONE_BY_ONE", one_by_one)
            inside, covered = M._balls_by_tree(real, M._knn_radius(real, 5), uniq)
            np.testing.assert_array_equal(inside, (d_ru < radius[:, None]).any(axis=0), err_msg=name)
            np.testing.assert_array_equal(covered, d_ru.min(axis=1) < radius, err_msg=name)
        assert 0 < inside.sum() < len(uniq) or name == "few distinct, near the data"


def test_tokens_outside_in_several_dimensions_is_what_sklearn_s_neighbours_give():
    from sklearn.neighbors import NearestNeighbors

    r = rng(9)
    for dim in (2, 4, 8):
        z = r.normal(size=(3000, dim))
        z[:100] = z[100:200]                                  # duplicates: spacing 0
        tokens = np.concatenate([z[:10], r.normal(0, 2.5, (118, dim))])
        nn = NearestNeighbors(n_neighbors=2).fit(z)
        spacing = nn.kneighbors(z)[0][:, 1]
        want = np.count_nonzero(nn.kneighbors(tokens, n_neighbors=1)[0][:, 0] > np.quantile(spacing, 0.99)) / 128
        assert M.tokens_outside(z, tokens) == want
        assert 0 < want < 1


def test_collapsed_reconstructions_have_low_coverage_high_precision():
    real = rng().normal(size=(1000, 2))
    fake = np.repeat(real[:5], 200, axis=0)  # every reconstruction is one of 5 data points
    res = M.precision_coverage(real, fake)
    assert res["precision"] == 1.0
    assert res["coverage"] < 0.05


# --------------------------------------------------------------------------- embeddings


def test_participation_ratio_isotropic_and_line():
    iso = rng().normal(size=(20000, 6))
    assert M.effective_dimension(iso) == pytest.approx(6.0, rel=0.03)
    assert M.participation_ratio(iso) == pytest.approx(1.0, rel=0.03)
    line = np.outer(rng().normal(size=500), [1.0, -2.0, 0.5])
    assert M.effective_dimension(line) == pytest.approx(1.0)
    assert M.participation_ratio(line) == pytest.approx(1 / 3)
    # [N, L, D] is flattened to [N, L*D]
    assert M.effective_dimension(iso.reshape(-1, 3, 2)) == pytest.approx(M.effective_dimension(iso))
    assert M.effective_dimension(np.ones((10, 3))) == 0.0


def test_class_spread_and_min_spread_ratio():
    r = rng()
    labels = np.repeat([0, 1], 500)
    Z = np.concatenate([r.normal(size=(500, 2)), r.normal(size=(500, 2)) * 0.01])
    res = M.class_spread(Z, labels)
    assert res["per_class"][1] < 0.05 * res["per_class"][0]
    assert res["min"] == pytest.approx(res["per_class"][1])
    X = r.normal(size=(1000, 3))
    X_hat = X.copy()
    X_hat[labels == 1] *= 0.5  # cluster 1 reproduced at half its width: variance ratio 1/4
    assert M.min_spread_ratio(X, X_hat, labels) == pytest.approx(0.25)
    assert M.spread_ratios(X, X_hat, labels)[1][0] == pytest.approx(1.0)


def test_distinct_code_tuples_and_quantization_error():
    assert M.distinct_code_tuples(np.array([[0, 1], [0, 1], [1, 0], [2, 2]])) == 3
    assert M.distinct_code_tuples(np.array([3, 3, 1])) == 2
    codebook = np.array([[0.0, 0.0], [1.0, 1.0]])
    Z = np.array([[[0.0, 1.0], [1.0, 1.0]], [[3.0, 1.0], [0.0, 0.0]]])  # [N=2, L=2, D=2]
    indices = np.array([[0, 1], [1, 0]])
    assert M.quantization_error(Z, codebook, indices) == pytest.approx((1 + 0 + 4 + 0) / 4)


def test_distinct_code_tuples_is_numpys_unique_along_rows():
    r = rng(4)
    for shape, high in (((5000, 2), 128), ((5000,), 50), ((3000, 16), 4096), ((2000, 8), 3), ((1, 4), 9)):
        idx = r.integers(0, high, shape)
        idx[: len(idx) // 2] = idx[len(idx) // 2: 2 * (len(idx) // 2)]      # repeated tuples
        want = np.unique(idx.reshape(len(idx), -1), axis=0).shape[0]
        assert M.distinct_code_tuples(idx) == want
        assert M.distinct_code_tuples(torch.from_numpy(idx)) == want


def test_dead_tokens_near_origin():
    codebook = np.array([[0.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    indices = np.array([2, 3, 3])  # tokens 0, 1, 4 unused; 0 and 1 at the origin
    assert M.dead_tokens_near_origin(codebook, indices) == pytest.approx(2 / 5)


# --------------------------------------------------------------------------- torch, errors


def test_torch_and_numpy_inputs_give_identical_results():
    r = rng()
    X = r.normal(size=(200, 2)).astype(np.float32)
    X_hat = (X + r.normal(size=X.shape) * 0.1).astype(np.float32)
    y = np.repeat(np.arange(4), 50)
    Z = r.normal(size=(200, 2, 1)).astype(np.float32)
    codebook = np.linspace(-2, 2, 16, dtype=np.float32)[:, None]
    indices = np.abs(Z - codebook[:, 0]).argmin(-1)
    as_torch = [torch.from_numpy(a) for a in (X, y, Z, indices, codebook, X_hat)]
    assert M.collapse_metrics(X, y, Z, indices, codebook, X_hat) == M.collapse_metrics(*as_torch)
    assert M.perplexity(torch.from_numpy(indices), 16) == M.perplexity(indices, 16)
    assert M.count_peaks(torch.from_numpy(Z)) == M.count_peaks(Z)
    t = torch.from_numpy(X).requires_grad_(True)  # tensors needing grad are detached
    assert M.sliced_wasserstein(t, X_hat) == M.sliced_wasserstein(X, X_hat)


@pytest.mark.parametrize(
    "call",
    [
        lambda: M.perplexity(np.array([], dtype=int)),
        lambda: M.perplexity(np.array([0.5, 1.0])),
        lambda: M.perplexity(np.array([0, -1])),
        lambda: M.usage(np.array([0, 16]), 16),
        lambda: M.usage(np.array([0, 1]), 0),
        lambda: M.token_allocation(np.array([0, 1, 2]), np.array([0, 1])),
        lambda: M.token_allocation(np.array([0, 1]), np.array([0, 5]), n_clusters=3),
        lambda: M.count_peaks(np.array([0.0, np.nan, 1.0])),
        lambda: M.count_peaks(np.array([])),
        lambda: M.mse(np.zeros((3, 2)), np.zeros((3, 3))),
        lambda: M.sliced_wasserstein(np.zeros((3, 2)), np.zeros((3, 3))),
        lambda: M.precision_coverage(np.zeros((3, 2)), np.zeros((3, 2)), k=5),
        lambda: M.effective_dimension(np.zeros((1, 3))),
        lambda: M.quantization_error(np.zeros((4, 2)), np.zeros((8, 3)), np.zeros(4, dtype=int)),
        lambda: M.quantization_error(np.zeros((4, 2)), np.zeros((8, 2)), np.zeros(5, dtype=int)),
        lambda: M.min_spread_ratio(np.zeros((4, 2)), np.zeros((4, 2)), np.array([0, 0, 1, 1])),
        lambda: M.perplexity(None),
    ],
)
def test_bad_input_raises_config_error(call):
    with pytest.raises(ConfigError):
        call()


def test_config_error_message_names_the_argument():
    with pytest.raises(ConfigError, match="codebook_size"):
        M.usage(np.array([0, 16]), 16)
    with pytest.raises(ConfigError, match="labels"):
        M.token_allocation(np.array([0, 1, 2]), np.array([0, 1]))


# --------------------------------------------------------------------------- collapse_metrics


def synthetic_case(token_dim=1, seed=0):
    r = rng(seed)
    centres = r.normal(size=(4, 2)) * 5
    y = np.repeat(np.arange(4), 100)
    X = centres[y] + r.normal(size=(400, 2)) * 0.3
    X_hat = X + r.normal(size=X.shape) * 0.05
    if token_dim == 1:
        Z = X.reshape(400, 2, 1)
        codebook = np.linspace(-12, 12, 32)[:, None]
        indices = np.abs(Z - codebook[:, 0]).argmin(-1)
    else:
        Z = X.reshape(400, 1, 2)
        codebook = r.normal(size=(32, 2)) * 5
        indices = ((Z[:, :, None, :] - codebook) ** 2).sum(-1).argmin(-1)
    return X, y, Z, indices, codebook, X_hat


def test_collapse_metrics_keys_types_and_json():
    X, y, Z, indices, codebook, X_hat = synthetic_case(token_dim=1)
    res = M.collapse_metrics(X, y, Z, indices, codebook, X_hat, codebook_size=32)
    expected = set(M.COLLAPSE_METRIC_KEYS) | set(M.LABEL_METRIC_KEYS) | set(M.PEAK_METRIC_KEYS)
    assert set(res) == expected
    assert all(type(v) in (int, float) for v in res.values())
    assert json.loads(json.dumps(res)) == res
    for key in ("min_tokens_per_cluster", "distinct_code_tuples", "embedding_peaks", "token_peaks",
                "peaks_with_tokens"):
        assert type(res[key]) is int
    assert res["perplexity"] == pytest.approx(M.perplexity(indices, 32))
    assert 0 < res["usage"] <= 1 and 0 <= res["alloc_entropy"] <= 1
    assert 0 < res["participation_ratio"] <= 1
    assert res["precision"] > 0.9 and res["coverage"] > 0.9


def test_collapse_metrics_without_labels_and_token_dim_2():
    X, y, Z, indices, codebook, X_hat = synthetic_case(token_dim=2)
    res = M.collapse_metrics(X, None, Z, indices, codebook, X_hat)
    assert set(res) == set(M.COLLAPSE_METRIC_KEYS)


def test_collapse_metrics_subsamples_large_sets_deterministically():
    X, y, Z, indices, codebook, X_hat = synthetic_case()
    a = M.collapse_metrics(X, y, Z, indices, codebook, X_hat, max_points=200, seed=1)
    b = M.collapse_metrics(X, y, Z, indices, codebook, X_hat, max_points=200, seed=1)
    assert a == b


def test_collapse_metrics_rejects_inconsistent_shapes():
    X, y, Z, indices, codebook, X_hat = synthetic_case()
    with pytest.raises(ConfigError):
        M.collapse_metrics(X, y, Z[:-1], indices, codebook, X_hat)
    with pytest.raises(ConfigError):
        M.collapse_metrics(X, y[:-1], Z, indices, codebook, X_hat)
    with pytest.raises(ConfigError):
        M.collapse_metrics(X, y, Z, indices, codebook, X_hat, codebook_size=16)


# --------------------------------------------------------------------------- tokens outside the embeddings
def test_tokens_outside_counts_tokens_in_empty_space():
    r = rng(3)
    Z = np.concatenate([r.normal(0, 0.1, 2000), r.normal(10, 0.1, 2000)])[:, None]   # two dense 1-D clusters
    inside = np.array([[0.0], [0.05], [10.0], [9.9]])
    assert M.tokens_outside(Z, inside) == 0.0
    gap = np.array([[0.0], [10.0], [5.0], [30.0]])           # one token between the clusters, one far out
    assert M.tokens_outside(Z, gap) == 0.5
    # [N, L, D] latents are the same vectors
    assert M.tokens_outside(Z.reshape(2000, 2, 1), gap) == 0.5
    assert M.tokens_outside(Z, np.array([[0.2], [9.8]])) == 0.0      # two sd out: still among the embeddings
    # subsampled, deterministic for a seed, and the same answer here
    assert M.tokens_outside(Z, gap, max_points=500, seed=1) == M.tokens_outside(Z, gap, max_points=500, seed=1) == 0.5


@pytest.mark.parametrize("seed", range(4))
def test_tokens_outside_in_1_d_measures_what_a_k_d_tree_measures_to_the_last_bit(seed):
    """1-D latents take a sort, not sklearn's tree: the same spacings (as a multiset: the quantile
    does not see their order) and the same distances from each token, bit for bit, duplicates and
    tokens sitting on a latent included."""
    from sklearn.neighbors import NearestNeighbors

    r = rng(seed)
    z = (r.standard_normal((5000, 1)) * r.uniform(0.01, 10)).astype(np.float32).astype(np.float64)
    z[:200] = z[200:400]
    tokens = np.concatenate([z[:5], r.normal(0, 3, (123, 1))])
    nn = NearestNeighbors(n_neighbors=2).fit(z)
    spacing, to_tokens = M._spacing_1d(z[:, 0], tokens[:, 0])
    np.testing.assert_array_equal(np.sort(spacing), np.sort(nn.kneighbors(z)[0][:, 1]))
    np.testing.assert_array_equal(to_tokens, nn.kneighbors(tokens, n_neighbors=1)[0][:, 0])
    assert to_tokens[:5].max() == 0.0


def test_unique_rows_is_numpys_unique_along_rows():
    r = rng(5)
    for rows, width in ((1, 3), (10, 1), (2000, 2), (5000, 8)):
        a = r.standard_normal((max(1, rows // 10), width))[r.integers(0, max(1, rows // 10), rows)]
        a[: rows // 3, 0] = 0.0
        a[rows // 3: rows // 2, 0] = -0.0
        uniq, inverse, counts = M.unique_rows(a)
        want = np.unique(a, axis=0, return_inverse=True, return_counts=True)
        np.testing.assert_array_equal(uniq, want[0])
        np.testing.assert_array_equal(inverse, want[1].ravel())
        np.testing.assert_array_equal(counts, want[2])
        np.testing.assert_array_equal(uniq[inverse], a)
    with pytest.raises(ConfigError, match="2-D"):
        M.unique_rows(np.zeros(3))


def test_tokens_outside_refuses_bad_input():
    Z = rng(0).normal(size=(100, 2))
    with pytest.raises(ConfigError, match="token_dim"):
        M.tokens_outside(Z, np.zeros((4, 3)))
    with pytest.raises(ConfigError, match="quantile"):
        M.tokens_outside(Z, np.zeros((4, 2)), quantile=0)
    with pytest.raises(ConfigError, match="at least 2 latent"):
        M.tokens_outside(Z[:1], np.zeros((4, 2)))


def test_collapse_metrics_records_tokens_outside():
    X, y, Z, indices, codebook, X_hat = synthetic_case(token_dim=1)
    res = M.collapse_metrics(X, y, Z, indices, codebook, X_hat, codebook_size=32)
    # the codebook spans [-12, 12] while the data's clusters sit at a few points: many tokens lie between them
    assert res["tokens_outside"] == M.tokens_outside(Z, codebook) and 0 < res["tokens_outside"] < 1
