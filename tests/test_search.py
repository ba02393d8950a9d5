"""The nearest-token search (eq. 1) at scale: exact and tile-bounded up to K = 65,536, ties to the
first token; K-means with fewer vectors than tokens; the quantizer benchmark runs (``--quick``)."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vqpaper.errors import ConfigError
from vqpaper.quantizers import DEFAULT_CHUNK_SIZE, EMAQuantizer, kmeans, nearest_token

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent


def _assert_matches_cdist(z, codebook, idx, dist):
    """Same indices as ``cdist(...).argmin`` except where two tokens are tied (to float32 rounding)."""
    d_all = torch.cdist(z.double(), codebook.double()).pow(2)
    ref = d_all.argmin(1)
    differ = idx != ref
    d_ours = d_all.gather(1, idx[:, None]).squeeze(1)
    d_ref = d_all.gather(1, ref[:, None]).squeeze(1)
    assert (d_ours[differ] - d_ref[differ]).abs().max().item() < 1e-4 if differ.any() else True
    assert differ.float().mean() < 0.02
    torch.testing.assert_close(dist.double(), d_ours, atol=1e-3, rtol=1e-4)


# (a) exactness at every chunk size, K up to 65,536
CASES = [(k, c) for k in (1, 3, 511, 513, 4096, 65536)
         for c in (1, 7, 97, 512, 4096 * 3 + 5, 2**18, 2**18 + 1, DEFAULT_CHUNK_SIZE)
         if 64 * k // c <= 100_000]


@pytest.mark.parametrize("k,chunk_size", CASES)
def test_nearest_token_equals_cdist_argmin(k, chunk_size):
    g = torch.Generator().manual_seed(k + chunk_size)
    z, codebook = torch.randn(64, 8, generator=g), torch.randn(k, 8, generator=g)
    idx, dist = nearest_token(z, codebook, chunk_size=chunk_size)
    assert idx.shape == (64,) and idx.dtype == torch.long
    _assert_matches_cdist(z, codebook, idx, dist)


@pytest.mark.parametrize("chunk_size", [97, 4096, DEFAULT_CHUNK_SIZE])
def test_nearest_token_ties_go_to_the_first_token(chunk_size):
    """Exact duplicates across and within codebook blocks: the lowest index wins, like argmin."""
    g = torch.Generator().manual_seed(1)
    k = 65536
    codebook = torch.randn(k, 4, generator=g)
    z = torch.randn(32, 4, generator=g)
    codebook[[700, 5000, k - 1]] = z[0]   # three exact copies of z[0], in different blocks
    codebook[[10, 11]] = z[1]             # two adjacent copies of z[1], in one block
    idx, dist = nearest_token(z, codebook, chunk_size=chunk_size)
    assert idx[0] == 700 and idx[1] == 10
    assert dist[0] < 1e-5 and dist[1] < 1e-5
    _assert_matches_cdist(z, codebook, idx, dist)


# (b) peak extra memory of the search: every tile <= chunk_size, independent of K
class _Sizes(TorchDispatchMode):
    """Records the element count of every tensor an aten op allocates (views excluded)."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor):
                    self.sizes.append((str(func), t.numel()))
        return out


@pytest.mark.parametrize("chunk_size", [3000, 4096, 2**16, DEFAULT_CHUNK_SIZE])
def test_nearest_token_tiles_never_exceed_chunk_size(monkeypatch, chunk_size):
    n, k, d = 512, 65536, 8
    g = torch.Generator().manual_seed(0)
    z, codebook = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    tiles = []

    def recording(real):
        def matmul(*args, **kwargs):
            out = real(*args, **kwargs)
            tiles.append(out.numel())
            return out
        return matmul

    # the distance tiles: baddbmm (accelerators) or bmm into a reused tile (CPU)
    monkeypatch.setattr(torch, "baddbmm", recording(torch.baddbmm))
    monkeypatch.setattr(torch, "bmm", recording(torch.bmm))
    with _Sizes() as sizes:
        idx, _ = nearest_token(z, codebook, chunk_size=chunk_size)
    monkeypatch.undo()
    assert tiles and max(tiles) <= chunk_size, (max(tiles), chunk_size)
    # every temporary, not only the matmul tiles: at most a tile, or the size of the inputs with
    # one more coordinate ([-2 z, 1] and [t; ||t||^2]; ||t||^2 squares the codebook once), never
    # anything like N x K
    biggest = max(sizes.sizes, key=lambda s: s[1])
    assert biggest[1] <= max(chunk_size, n * (d + 1), k * (d + 1)), biggest
    assert n * k > 4 * max(chunk_size, n * (d + 1), k * (d + 1))  # the bound means something at these sizes
    ref = torch.cat([torch.addmm(codebook.pow(2).sum(1), z[r:r + 256], codebook.T, alpha=-2).argmin(1)
                     for r in range(0, n, 256)])
    assert (idx != ref).float().mean() < 0.01


@pytest.mark.parametrize("chunk_size", [97, 4096, DEFAULT_CHUNK_SIZE])
def test_a_group_searches_each_model_s_own_tokens_exactly_as_alone(chunk_size):
    """z [M, N, D] against codebooks [M, K, D]: model m's indices and distances are those of its
    search alone, bit for bit, and its tiles are cut as alone (at most chunk_size per model)."""
    g = torch.Generator().manual_seed(2)
    z, codebooks = torch.randn(5, 300, 4, generator=g), torch.randn(5, 1500, 4, generator=g)
    codebooks[3, 700] = z[3, 0]  # an exact hit in one model only
    idx, dist = nearest_token(z, codebooks, chunk_size=chunk_size)
    assert idx.shape == dist.shape == (5, 300)
    for m in range(5):
        alone_idx, alone_dist = nearest_token(z[m], codebooks[m], chunk_size=chunk_size)
        assert torch.equal(idx[m], alone_idx) and torch.equal(dist[m], alone_dist)
        _assert_matches_cdist(z[m], codebooks[m], idx[m], dist[m])
    assert idx[3, 0] == 700
    with pytest.raises(ConfigError, match="same D"):
        nearest_token(z, codebooks[:4])


# (c) K-means with fewer vectors than tokens at K = 65,536
def test_kmeans_fewer_vectors_than_tokens_warns_and_keeps_tokens_distinct():
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(1000, 8, generator=g)
    with pytest.warns(UserWarning, match=r"only 1,000 vectors for 65,536 tokens.*64,536 surplus"):
        centres, counts = kmeans(vectors, 65536, iters=10, seed=0)
    assert centres.shape == (65536, 8) and counts.shape == (65536,)
    assert torch.isfinite(centres).all()
    assert torch.unique(centres, dim=0).shape[0] == 65536           # pairwise distinct
    assert centres.norm(dim=1).min() > 1e-3                          # no token left at the origin
    assert counts.sum() == 1000
    # every vector is a centre (distance 0); the surplus tokens are near, not on, data points
    surplus_gap = torch.cdist(centres[1000:].double(), vectors.double()).min(1).values
    assert (surplus_gap > 0).all() and surplus_gap.max() < 0.1


def _distinct_rows_by_unique(vectors):
    """The first-occurrence distinct rows by torch.unique (what quantizers._distinct_rows replaced)."""
    uniq, inverse = torch.unique(vectors, dim=0, return_inverse=True)
    if uniq.shape[0] == vectors.shape[0]:
        return vectors
    first = torch.full((uniq.shape[0],), vectors.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(vectors.shape[0]), reduce="amin")
    return vectors[first.sort().values]


def test_distinct_rows_are_the_first_occurrences_in_order():
    from vqpaper.quantizers import _distinct_rows

    g = torch.Generator().manual_seed(2)
    cases = [torch.randn(5000, 1, generator=g), torch.randn(5000, 4, generator=g), torch.tensor([[0.0], [-0.0], [1.0]]),
             torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 2.0]]), torch.randn(1, 3, generator=g)]
    cases += [torch.randint(0, int(torch.randint(1, 6, (1,), generator=g)), (int(torch.randint(1, 300, (1,), generator=g)),
                                                                            int(torch.randint(1, 5, (1,), generator=g))),
                            generator=g).float() for _ in range(100)]
    for v in cases:
        got, want = _distinct_rows(v), _distinct_rows_by_unique(v)
        assert torch.equal(got, want)
        assert (got is v) == (want is v)        # all distinct: the vectors themselves, no copy


def test_kmeans_of_a_group_is_each_model_s_kmeans_alone():
    """One K-means per model, batched: each model's centres and counts are those of its K-means
    alone, bit for bit, a model with fewer distinct vectors than tokens (no Lloyd steps) included."""
    g = torch.Generator().manual_seed(4)
    vectors = torch.randn(4, 3000, 4, generator=g) * torch.tensor([1.0, 3.0, 0.2, 1.0])[:, None, None]
    vectors[3] = torch.randint(0, 3, (3000, 4), generator=g).float()       # 81 distinct at most, k = 128
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        centres, counts = kmeans(vectors, 128, iters=10, seed=[5, 6, 7, 8])
        for m in range(4):
            alone_c, alone_n = kmeans(vectors[m], 128, iters=10, seed=5 + m)
            assert torch.equal(centres[m], alone_c) and torch.equal(counts[m], alone_n), m
            part_c, _ = kmeans(vectors[[m, 0]], 128, iters=10, seed=[5 + m, 5])
            assert torch.equal(part_c[0], alone_c), m
    assert centres.shape == (4, 128, 4) and counts.shape == (4, 128) and (counts.sum(1) == 3000).all()
    with pytest.raises(ConfigError, match="M seeds"):
        kmeans(vectors, 128, seed=[1, 2])


def test_ema_batch_init_at_65536_tokens_with_a_small_batch():
    q = EMAQuantizer(65536, 8, kmeans_init="batch", seed=0).train()
    z = torch.randn(1000, 8, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, idx, loss = q(z)
    assert any("surplus" in str(w.message) for w in caught)
    assert torch.unique(q.codebook, dim=0).shape[0] == 65536 and torch.isfinite(q.codebook).all()
    assert torch.isfinite(loss) and idx.unique().numel() > 900


# (d) the benchmark itself, on tiny sizes
@pytest.mark.slow  # runs the benchmark script
def test_quantizer_benchmark_quick_writes_json(tmp_path):
    pytest.importorskip("vector_quantize_pytorch")  # the reference (test extra)
    out = tmp_path / "quantizer.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quantizer.py"), "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert isinstance(rows, list) and len(rows) == 2 * 2 * 1  # (ema, simvq) x K in (64, 512) x D=8
    required = {"quantizer", "K", "D", "N", "ours_s", "reference_s", "bound_s", "ours_peak_mb", "reference_peak_mb"}
    for row in rows:
        assert required <= row.keys()
        assert row["quantizer"] in ("ema", "simvq")
        assert all(row[key] is not None and row[key] > 0 for key in ("ours_s", "reference_s", "bound_s"))
        assert row["ours_peak_mb"] >= 0 and row["reference_peak_mb"] >= 0
        assert row["index_mismatches_beyond_ties"] == 0
    assert {(r["quantizer"], r["K"]) for r in rows} == {(q, k) for q in ("ema", "simvq") for k in (64, 512)}
    assert "verdict:" in proc.stdout and "speed-up" in proc.stdout


def test_one_dimensional_tokens_are_searched_exactly_with_ties_to_the_first():
    """token_dim 1 (the 2-D and 3-D runs) goes by bisection among the sorted tokens: the exact argmin
    of (z - t)^2, the lowest index among equally near tokens, for one model and for a group."""
    g = torch.Generator().manual_seed(4)
    z, codebook = torch.randn(3, 400, 1, generator=g) * 2, torch.randn(3, 128, 1, generator=g)
    codebook[0, 90] = codebook[0, 7]                              # duplicate tokens: 7 wins
    z[0, :5] = codebook[0, 7]
    z[1, 0] = (codebook[1, 3] + codebook[1, 4]) / 2               # (nearly) halfway between two tokens
    idx, dist = nearest_token(z, codebook)
    exact = (z - codebook.transpose(1, 2)).pow(2)                 # [M, N, K]
    assert torch.equal(idx, exact.argmin(-1)) and torch.equal(dist, exact.gather(-1, idx[..., None])[..., 0])
    assert (idx[0, :5] == 7).all()
    alone_idx, alone_dist = nearest_token(z[2], codebook[2])
    assert torch.equal(alone_idx, idx[2]) and torch.equal(alone_dist, dist[2])
    far = torch.tensor([[-100.0], [100.0]])                       # beyond both ends of the codebook
    assert nearest_token(far, codebook[1])[0].tolist() == [int(codebook[1, :, 0].argmin()),
                                                           int(codebook[1, :, 0].argmax())]


def test_one_dimensional_search_with_runs_of_equal_tokens():
    """Many tokens on a coarse lattice (runs of up to a dozen equal tokens) and embeddings on a finer
    one (exactly on tokens and halfway between): the bisection equals argmin, index and distance."""
    g = torch.Generator().manual_seed(5)
    for _ in range(200):
        k = int(torch.randint(1, 40, (1,), generator=g))
        codebook = torch.randint(-5, 5, (3, k, 1), generator=g).float() / 2
        z = torch.randint(-12, 12, (3, 200, 1), generator=g).float() / 4
        idx, dist = nearest_token(z, codebook)
        exact = (z - codebook.transpose(1, 2)).pow(2)
        assert torch.equal(idx, exact.argmin(-1))
        assert torch.equal(dist, exact.gather(-1, idx[..., None])[..., 0])


@pytest.mark.parametrize("tile", [4096, 2**18])
def test_a_groups_models_are_searched_as_each_alone(tile):
    """The CPU search takes a group's models a few at a time (as many as fit in one tile): each
    model's indices and distances are bit-identical to its search alone, whatever the batching."""
    from vqpaper.search_cpu import nearest_token_cpu

    g = torch.Generator().manual_seed(6)
    z, codebook = torch.randn(10, 512, 4, generator=g), torch.randn(10, 128, 4, generator=g)
    idx, dist = nearest_token_cpu(z, codebook, tile)
    for m in range(10):
        alone_idx, alone_dist = nearest_token_cpu(z[m:m + 1], codebook[m:m + 1], tile)
        assert torch.equal(idx[m], alone_idx[0]) and torch.equal(dist[m], alone_dist[0])


@pytest.mark.parametrize("m,n,d,k", [(1, 8192, 16, 4096), (1, 2048, 16, 256), (1, 1024, 64, 4096), (3, 700, 8, 1000),
                                     (12, 512, 4, 128), (1, 600, 3, 65536)])
def test_cpu_search_gives_the_plain_tiled_search_s_indices(m, n, d, k):
    """The CPU search folds ``||t||^2`` into its matmul (``[-2 z, 1] @ [t; ||t||^2]``) and, past
    one block of codebook columns, finds the index in a second pass over the block that holds
    each row's minimum. Neither may change a number: its indices are, bit for bit, the first
    minima of the plain distances ``(-2 z) @ t + ||t||^2`` over the same 512-column blocks
    (what the book's references were computed with), ties and duplicated tokens included."""
    from vqpaper.search_cpu import CPU_K_BLOCK, CPU_TILE, nearest_token_cpu

    g = torch.Generator().manual_seed(n + k)
    z, codebook = torch.randn(m, n, d, generator=g), torch.randn(m, k, d, generator=g)
    codebook[:, k // 2], codebook[:, k - 2] = codebook[:, 3], codebook[:, k - 1]  # tied tokens
    z[:, :2] = codebook[:, [k - 1, 3]]                                                # rows sitting on them
    idx, dist = nearest_token_cpu(z, codebook, CPU_TILE)
    t, t_sq = codebook.transpose(1, 2), codebook.pow(2).sum(-1).unsqueeze(1)
    rows = 256  # any row count above one gives a matmul the same entries
    tiles = [torch.cat([torch.bmm(z[:, r:r + rows] * -2, t[:, :, c:c + CPU_K_BLOCK]).add_(t_sq[:, :, c:c + CPU_K_BLOCK])
                        for c in range(0, k, CPU_K_BLOCK)], -1).min(-1) for r in range(0, n, rows)]
    plain_min, plain_idx = (torch.cat(parts, 1) for parts in zip(*tiles))
    assert torch.equal(idx, plain_idx)
    # and the same numbers: the distances differ in the last bit as soon as the sum is rounded otherwise
    assert torch.equal(dist, (plain_min + z.pow(2).sum(-1)).clamp_min_(0))
    assert (idx[:, 0] == k - 2).all() and (idx[:, 1] == 3).all()  # ties to the first token


def test_cpu_search_second_pass_stays_within_a_tile_when_every_row_picks_one_block():
    """Every row's nearest token in the first block of columns: the second pass (the index within
    that block) handles those rows a tile at a time, not as one N x 512 matrix."""
    from vqpaper.search_cpu import CPU_TILE, nearest_token_cpu

    g = torch.Generator().manual_seed(8)
    n, k, d = 4096, 4096, 4
    codebook = torch.randn(1, k, d, generator=g) + 10
    codebook[:, 7] = 0
    z = torch.randn(1, n, d, generator=g) * 0.1  # all nearest to token 7, in the first block
    with _Sizes() as sizes:
        idx, _ = nearest_token_cpu(z, codebook, CPU_TILE)
    assert (idx == 7).all()
    biggest = max(sizes.sizes, key=lambda s: s[1])
    assert biggest[1] <= max(CPU_TILE, n * (d + 1), k * (d + 1)) < n * 512, biggest


@pytest.mark.parametrize("m,n,k", [(12, 768, 128), (1, 20000, 128), (3, 5000, 1), (2, 4096, 2), (4, 3000, 1000)])
def test_sorted_position_is_searchsorted(m, n, k):
    """The branch-free search of the 1-D path gives torch.searchsorted's positions: runs of equal
    tokens, queries on tokens, past both ends, infinite and NaN (a NaN goes past the end)."""
    from vqpaper.search_cpu import BRANCH_FREE_FROM, sorted_position

    assert m * n >= BRANCH_FREE_FROM  # the branch-free path, not torch's
    g = torch.Generator().manual_seed(m * n + k)
    for decimals in (1, 4):  # one decimal: many equal tokens
        values = (torch.randn(m, k, generator=g) * 2).round(decimals=decimals).sort(-1).values
        q = torch.randn(m, n, generator=g) * 3
        q[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0])
        q[:, 4:4 + min(k, 20)] = values[:, :min(k, 20)]
        assert torch.equal(sorted_position(values, q), torch.searchsorted(values, q))
