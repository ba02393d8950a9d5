"""Vector quantizers, written to be read next to the paper (Zhao et al., §2.1 and §5.1).

Every quantizer has one interface, so a notebook swaps EMA-VQ for SimVQ by one argument::

    quantized, indices, loss = quantizer(z)      # z: [..., token_dim]

* ``quantized`` has the shape of ``z``; in the forward pass it equals the chosen tokens,
  in the backward pass the gradient goes straight through to ``z`` (Bengio et al. 2013).
* ``indices`` has the shape ``z.shape[:-1]``: the index of each latent vector's token.
* ``loss`` is the quantizer's share of the training loss (commitment term, plus SimVQ's
  codebook term).

**Groups.** Built with a list of seeds (``seed=[0, 1, 2]``), a quantizer is a *group* of M
independent quantizers of one shape, one per seed: its tokens are ``[M, S, D]``, ``z`` is
``[M, ..., token_dim]``, model m's latents are quantized against model m's tokens only, and
``loss`` is ``[M]``, one per model. :mod:`vqpaper.train` trains every run this way (a run alone
is a group of one), so that the seeds of a sweep train in one batched step; each model's
arithmetic is the same whatever group it is in. Built with one int seed, a quantizer is a single
one with the shapes above (tokens ``[S, D]``, a scalar loss), computed by the same code as a
group of one.

Notation follows the paper: tokens ``t_k`` (rows of the codebook, ``k = 1..S``; here
``codebook_size``), embeddings ``z_j`` (encoder outputs).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Optional, Sequence

import torch
from torch import nn

from .errors import ConfigError, check_positive_int
from .search_cpu import CPU_TILE, nearest_token_cpu, sorted_position

# Peak size of the distance tile in the nearest-token search, in matrix elements
# (2**22 float32 = 16 MiB). Independent of the codebook size: see `nearest_token`.
DEFAULT_CHUNK_SIZE = 2**22
# Codebook columns per tile on accelerators other than CUDA. Small enough that a tile of rows
# stays in cache, large enough that each matmul is efficient.
_K_BLOCK = 4096
# On CUDA the default bound grows to what the device holds: one tile takes at most 1/4 of the
# memory free when the first search runs (the rest is for training, and for other runs packed
# on the same GPU), and at most 2**29 elements (2 GiB float32), which is a whole training batch
# (128 images x 64 latents = 8,192) against K = 65,536 tokens: eq. (1) is one matmul instead of
# the 128 tiles of 16 MiB. A GPU is fastest with few large matmuls, and caches do not matter at
# this size. An explicit ``chunk_size`` is still a hard bound.
_CUDA_TILE_MAX = 2**29
_CUDA_FREE_SHARE = 4

QUANTIZERS = ("ema", "simvq")
KMEANS_INIT = ("dataset", "batch", "none")
#: How ``EMAQuantizer`` turns the EMA statistics into tokens (eq. 5), see ``EMAQuantizer.ema_update``:
#: ``"eq5"`` is the paper's ``t_k = M_k / L_k`` (an unused token stays where it is), ``"laplace"``
#: smooths ``L`` first, as sonnet and vector-quantize-pytorch do (an unused token drifts to the origin).
EMA_UPDATES = ("eq5", "laplace")


# --------------------------------------------------------------------------------------
# Eq. (1): nearest token
# --------------------------------------------------------------------------------------
@torch.no_grad()
def nearest_token(z: torch.Tensor, codebook: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Eq. (1): ``k_j = argmin_k ||z_j - t_k||``; returns ``(indices, squared distances)``.

    One model: ``z`` [N, D] and ``codebook`` [K, D] give indices and distances [N]. A group of
    M models: ``z`` [M, N, D] and ``codebook`` [M, K, D] give [M, N], model m's embeddings
    searched among model m's tokens only.

    1-D tokens are searched by bisection among the sorted tokens (:func:`_nearest_token_1d`).
    Otherwise ``||z - t||^2 = ||z||^2 - 2 z.t + ||t||^2``; the ``||z||^2`` term is the same for every
    token, so the search only needs ``||t||^2 - 2 z.t``: one batched matmul (``baddbmm``) per
    tile, for all models at once. The ``N x K`` distance matrix is never materialised: rows and
    codebook columns are tiled so that no temporary holds more than ``chunk_size`` elements per
    model (a group's tiles together on accelerators), whatever ``K`` is (on CPU the tiles are
    further capped at a cache-sized ``CPU_TILE``, see ``vqpaper/search_cpu.py``; on CUDA the
    default bound grows to what the device's memory allows, see ``_CUDA_TILE_MAX``). Ties go to
    the lowest index, as in a plain ``argmin`` over all tokens.
    """
    single = z.dim() == 2 and codebook.dim() == 2
    if single:
        z, codebook = z.unsqueeze(0), codebook.unsqueeze(0)
    if (z.dim() != 3 or codebook.dim() != 3 or z.shape[0] != codebook.shape[0]
            or z.shape[2] != codebook.shape[2]):
        raise ConfigError(
            f"nearest_token needs z [N, D] and codebook [K, D] with the same D (a group: z [M, N, D] and "
            f"codebook [M, K, D]), got {tuple(z.shape)} and {tuple(codebook.shape)}"
        )
    check_positive_int("chunk_size", chunk_size)
    z = z.to(codebook.dtype)
    if z.shape[2] == 1:
        indices, best = _nearest_token_1d(z, codebook)
    elif z.device.type == "cpu" and codebook.dtype in (torch.float32, torch.float64):
        # the same search, tuned for CPU caches (see vqpaper/search_cpu.py); exact same indices
        indices, best = nearest_token_cpu(z, codebook, min(chunk_size, CPU_TILE))
    else:
        indices, best = _nearest_token_tiled(z, codebook, chunk_size)
    return (indices[0], best[0]) if single else (indices, best)


def _nearest_token_1d(z: torch.Tensor, codebook: torch.Tensor):
    """Eq. (1) for 1-D tokens (the 2-D and 3-D synthetic runs): a binary search among the sorted tokens.

    The nearest token is one of the two tokens around an embedding's place in the sorted
    codebook, so no ``N x K`` distance matrix is needed: ``O(N log K)`` instead of ``O(N K)``.
    Distances are ``(z - t)^2`` as such. Ties go to the lowest index, as in a plain ``argmin``:
    the stable sort keeps equal tokens in index order, each candidate is moved to the first of
    its run of equal tokens, and of two equally near candidates the lower index wins.
    """
    values, order = codebook[..., 0].sort(dim=-1, stable=True)   # [M, K] ascending, ties in index order
    q = z[..., 0].contiguous()                                      # [M, N]
    last = values.shape[-1] - 1
    # where each sorted position's run of equal tokens starts (computed on the K tokens, not per embedding)
    positions = torch.arange(values.shape[-1], device=values.device).expand_as(values)
    starts_run = torch.ones_like(values, dtype=torch.bool)
    starts_run[..., 1:] = values[..., 1:] != values[..., :-1]
    run_start = torch.where(starts_run, positions, 0).cummax(-1).values
    # first token >= z (or the last; clamped: a NaN, from a run that diverged, searches past the end)
    right = sorted_position(values, q).clamp_(max=last)
    candidates = []
    for pos in (right, (right - 1).clamp_(min=0)):
        pos = run_start.gather(-1, pos)   # the first of its run of equal tokens
        candidates.append(((q - values.gather(-1, pos)).pow(2), order.gather(-1, pos)))
    (d_right, i_right), (d_left, i_left) = candidates
    right_wins = (d_right < d_left) | ((d_right == d_left) & (i_right < i_left))
    return torch.where(right_wins, i_right, i_left), torch.where(right_wins, d_right, d_left)


def _nearest_token_tiled(z: torch.Tensor, codebook: torch.Tensor, chunk_size: int):
    """The search of :func:`nearest_token` on an accelerator: ``z`` [M, N, D], ``codebook`` [M, K, D]."""
    models, n, k = z.shape[0], z.shape[1], codebook.shape[1]
    if z.device.type == "cuda":
        if chunk_size == DEFAULT_CHUNK_SIZE:  # the default: as large as the device allows
            chunk_size = _cuda_tile(z.device, codebook.element_size())
        k_block = min(k, chunk_size)
    else:
        k_block = min(k, _K_BLOCK, chunk_size)
    rows = max(1, min(n, chunk_size // (models * k_block)))
    t_sq = codebook.pow(2).sum(-1).unsqueeze(1)  # ||t_k||^2, [M, 1, K]
    indices = torch.empty(models, n, dtype=torch.long, device=z.device)
    best = torch.empty(models, n, dtype=codebook.dtype, device=z.device)
    for r0 in range(0, n, rows):
        zr = z[:, r0:r0 + rows]
        run_min = run_idx = None
        for k0 in range(0, k, k_block):
            # ||t||^2 - 2 z.t for one tile of [M, rows, k_block]
            d = torch.baddbmm(t_sq[:, :, k0:k0 + k_block], zr, codebook[:, k0:k0 + k_block].transpose(1, 2),
                              beta=1, alpha=-2)
            m, i = d.min(dim=-1)
            if run_min is None:
                run_min, run_idx = m, i
            else:
                # strict '<' keeps the first index on ties, like a plain argmin over all columns
                better = m < run_min
                run_min = torch.where(better, m, run_min)
                run_idx = torch.where(better, i + k0, run_idx)
        indices[:, r0:r0 + rows] = run_idx
        best[:, r0:r0 + rows] = run_min + zr.pow(2).sum(-1)
    return indices, best.clamp_min_(0)


_cuda_tiles: dict = {}


def _cuda_tile(device: torch.device, element_size: int) -> int:
    """Elements of the largest distance tile for ``device`` (see ``_CUDA_TILE_MAX``); measured once
    per device and element size, so that training steps never query the driver."""
    key = (device.index if device.index is not None else torch.cuda.current_device(), element_size)
    if key not in _cuda_tiles:
        free, _total = torch.cuda.mem_get_info(key[0])
        _cuda_tiles[key] = max(DEFAULT_CHUNK_SIZE, min(_CUDA_TILE_MAX, free // (element_size * _CUDA_FREE_SHARE)))
    return _cuda_tiles[key]


def tokens_at(codebook: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The tokens ``t_{k_j}`` a group chose: ``codebook`` [M, K, D] at ``indices`` [M, N] -> [M, N, D]."""
    return torch.gather(codebook, 1, indices.unsqueeze(-1).expand(-1, -1, codebook.shape[-1]))


# --------------------------------------------------------------------------------------
# Eq. (2): K-means initialisation of the codebook (SoundStream)
# --------------------------------------------------------------------------------------
@torch.no_grad()
def kmeans(vectors: torch.Tensor, k: int, iters: int = 10, seed=0,
           chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Eq. (2): Lloyd's K-means; returns ``(centres [k, D], counts [k])``.

    Centres start at ``k`` distinct randomly chosen vectors. A cluster that empties keeps
    its previous centre (a real data point), so no token is ever left at the origin.
    With fewer distinct vectors than tokens we cannot place ``k`` distinct centres: every
    distinct vector becomes a centre, the surplus tokens are copies of randomly drawn vectors
    plus small Gaussian noise (scaled to the data's spread), a warning says how many, and the
    Lloyd steps are skipped. They could not lower the distortion (already zero), and a step
    would move any surplus token that wins a vector by float rounding onto that vector,
    silently duplicating a token (seen: 121 duplicates for 1,000 vectors into 65,536 tokens).

    A group: ``vectors`` [M, N, D] and one seed per model (``seed`` a list) give centres
    [M, k, D] and counts [M, k], one K-means per model, their Lloyd steps batched over the
    models (each model's numbers are those of its K-means alone).
    """
    seeds, grouped = _seeds(seed)
    check_positive_int("k", k)
    shape_ok = (vectors.dim() == 3 and vectors.shape[0] == len(seeds)) if grouped else vectors.dim() == 2
    if not shape_ok or vectors.shape[-2] == 0:
        raise ConfigError(f"kmeans needs a non-empty [N, D] tensor (a group: [M, N, D] and M seeds), got shape "
                          f"{tuple(vectors.shape)}" + (f" and {len(seeds)} seeds" if grouped else ""))
    vectors = vectors.float() if grouped else vectors.float()[None]
    if not torch.isfinite(vectors).all():
        raise ConfigError("kmeans got NaN or infinite encoder outputs; check the model and data")
    starts = [_initial_centres(v, k, s) for v, s in zip(vectors, seeds)]
    centres = torch.stack([c for c, _ in starts])
    # the models whose Lloyd steps run: those with k distinct vectors or more (see above)
    lloyd = [m for m, (_, enough) in enumerate(starts) if enough] if iters else []
    if lloyd:
        vs = vectors[lloyd]
        cs = centres[lloyd]
        for _ in range(iters):
            idx, _ = nearest_token(vs, cs, chunk_size)  # r_jk of eq. (2)
            counts, sums = _cluster_sums(vs, idx, k)
            filled = (counts > 0).unsqueeze(-1)
            cs = torch.where(filled, sums / counts.clamp_min(1).unsqueeze(-1), cs)
        centres[lloyd] = cs
    idx, _ = nearest_token(vectors, centres, chunk_size)
    counts, _ = _cluster_sums(vectors, idx, k, with_sums=False)
    return (centres, counts) if grouped else (centres[0], counts[0])


def _initial_centres(vectors: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, bool]:
    """One model's starting centres of :func:`kmeans` and whether it has ``k`` distinct vectors: ``k``
    distinct vectors drawn with ``seed``, or, with fewer, all of them plus noisy copies (and a warning)."""
    n, d = vectors.shape
    g = torch.Generator(device="cpu").manual_seed(seed)
    distinct = _distinct_rows(vectors)  # == vectors (same order) when no vector repeats
    m = distinct.shape[0]
    if m >= k:
        return distinct[torch.randperm(m, generator=g)[:k].to(vectors.device)].clone(), True
    what = f"{n:,} vectors" if m == n else f"{m:,} distinct vector{'s' if m != 1 else ''} (of {n:,})"
    warnings.warn(
        f"K-means initialisation: only {what} for {k:,} tokens; the {k - m:,} surplus "
        f"tokens start as randomly drawn vectors plus small noise (they cannot be distinct centroids); "
        f"each distinct vector is a centre, so the Lloyd iterations are skipped",
        stacklevel=3,
    )
    extra = distinct[torch.randint(m, (k - m,), generator=g).to(vectors.device)]
    # noise ~1e-3 of the spread; for (nearly) constant data ~1e-6 of the values, so that the
    # copies still differ from their vector in float32
    spread = torch.maximum(vectors.std(0, unbiased=False), 1e-3 * vectors.abs().amax(0))
    scale = 1e-3 * spread.clamp_min(1e-6)
    noise = torch.randn(k - m, d, generator=g).to(vectors.device) * scale
    return torch.cat([distinct, extra + noise]), False


def _cluster_sums(vectors: torch.Tensor, idx: torch.Tensor, k: int, with_sums: bool = True):
    """Per model, how many of ``vectors`` [M, N, D] each of the ``k`` centres got (``idx`` [M, N]), and
    their sums: one scatter over the flattened [M * k] centres, each model's vectors added in order."""
    models, _, d = vectors.shape
    rows = (idx + torch.arange(models, device=idx.device)[:, None] * k).reshape(-1)
    counts = vectors.new_zeros(models * k).index_add_(0, rows, vectors.new_ones(rows.shape[0])).view(models, k)
    if not with_sums:
        return counts, None
    sums = vectors.new_zeros(models * k, d).index_add_(0, rows, vectors.reshape(-1, d)).view(models, k, d)
    return counts, sums


def _distinct_rows(vectors: torch.Tensor) -> torch.Tensor:
    """The distinct rows of ``vectors`` in order of first occurrence (``vectors`` itself if all differ).

    Rows are sorted lexicographically by stable sorts, one column at a time from the last, so
    equal rows sit side by side in their original order and the first of each run is a first
    occurrence. Only rows whose first coordinate occurs more than once can repeat, and encoder
    outputs have few such (float32 ties), so those are checked first, alone: 0.2-1 ms for
    10,000-20,000 distinct rows, where ``torch.unique(dim=0)`` took 5-12 ms, once per K-means.
    """
    first, by_first = vectors[:, 0].sort(stable=True)
    tie = first[1:] == first[:-1]
    shared = torch.zeros(vectors.shape[0], dtype=torch.bool, device=vectors.device)
    shared[1:] |= tie
    shared[:-1] |= tie
    if not _repeats(vectors[by_first[shared]]):
        return vectors
    order = _lexsort_rows(vectors)
    ordered = vectors[order]
    starts = torch.ones(vectors.shape[0], dtype=torch.bool, device=vectors.device)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(1)
    return vectors[order[starts].sort().values]


def _lexsort_rows(vectors: torch.Tensor) -> torch.Tensor:
    """The permutation that sorts the rows lexicographically (first column first), stable."""
    order = torch.arange(vectors.shape[0], device=vectors.device)
    for c in range(vectors.shape[1] - 1, -1, -1):
        order = order[vectors[order, c].sort(stable=True).indices]
    return order


def _repeats(vectors: torch.Tensor) -> bool:
    """Whether some row of ``vectors`` occurs twice."""
    ordered = vectors[_lexsort_rows(vectors)]
    return bool((ordered[1:] == ordered[:-1]).all(1).any())


# --------------------------------------------------------------------------------------
# One quantizer or a group of them: the model axis
# --------------------------------------------------------------------------------------
def _seeds(seed) -> tuple[list[int], bool]:
    """``(seeds, grouped)``: one int seed is one quantizer, a list (or tuple) of seeds a group."""
    if isinstance(seed, (list, tuple)):
        if not seed:
            raise ConfigError("seed: a group of quantizers needs at least one seed, got []")
        return [int(s) for s in seed], True
    return [int(seed)], False


class _Group(nn.Module):
    """What the quantizers of this module share: tensors with a leading model axis.

    A group keeps its tensors as ``[M, ...]``; a single quantizer keeps them without the axis
    (``[S, D]``, as a reader expects) and works on a view with it (``unsqueeze(0)``, which
    shares the memory), so both run the same code.
    """

    codebook_size: int
    token_dim: int

    def _set_group(self, seed):
        self.seeds, self.grouped = _seeds(seed)
        self.models = len(self.seeds)

    def _group(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.grouped else t.unsqueeze(0)

    def _ungroup(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.grouped else t[0]

    def _latents(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` as ``[M, n, token_dim]``: every latent vector of each model."""
        if z.shape[-1] != self.token_dim:
            raise ConfigError(f"quantizer expects latents with last dimension token_dim={self.token_dim}, "
                              f"got shape {tuple(z.shape)}")
        if self.grouped and (z.dim() < 2 or z.shape[0] != self.models):
            raise ConfigError(f"a group of {self.models} quantizers expects latents [{self.models}, ..., "
                              f"{self.token_dim}] (one slice per model), got shape {tuple(z.shape)}")
        return self._group(z).reshape(self.models, -1, self.token_dim)

    def _output(self, z, quantized, indices, loss):
        """Back to the caller's shapes: ``quantized`` like ``z``, ``indices`` like ``z.shape[:-1]``,
        ``loss`` [M] for a group, a scalar for a single quantizer."""
        return quantized.view_as(z), indices.view(z.shape[:-1]), (loss if self.grouped else loss[0])

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """The tokens at ``indices`` ([...] for one quantizer, [M, ...] for a group), shape ``[..., D]``."""
        codebook = self._group(self.codebook)
        flat = self._group(indices).reshape(self.models, -1)
        return tokens_at(codebook, flat).view(*indices.shape, self.token_dim)


# --------------------------------------------------------------------------------------
# EMA vector quantizer: eq. (1), (3)-(5)
# --------------------------------------------------------------------------------------
class EMAQuantizer(_Group):
    """VQ with the codebook learned by exponential moving averages (eq. 3-5), no codebook loss.

    Buffers (not parameters: the optimiser never touches the tokens), ``[M, ...]`` for a group:

    * ``codebook``      ``t_k``  [S, D]
    * ``cluster_size``  ``L_k``  [S]      EMA of how many embeddings chose token k (eq. 4)
    * ``embed_sum``     ``M_k``  [S, D]   EMA of the sum of those embeddings     (eq. 3)

    ``kmeans_init``: ``"dataset"`` (the caller runs :meth:`init_codebook` on the encoder
    outputs of the whole training set, as the paper does), ``"batch"`` (K-means on the first
    training batch, as SoundStream and common libraries do), ``"none"`` (random normal tokens).

    ``update`` (one of ``EMA_UPDATES``; for a group also a list, one rule per model): ``"eq5"`` (default) computes ``t_k = M_k / L_k``
    exactly as the paper's eq. (5), so a token no embedding chooses keeps its position;
    ``"laplace"`` first smooths ``L`` with ``eps`` as sonnet and vector-quantize-pytorch do,
    which pulls every unused token towards the origin: ``t_k ~ M_k / (L_k + eps)``, so the token
    has moved halfway once ``L_k`` has decayed to ``eps`` (from ``L_k = 1`` at decay 0.9: after
    about 110 unused steps). ``eps`` is used by ``"laplace"`` only.

    ``seed``: one int (one quantizer), or a list (a group, one model per seed; see the module doc).
    """

    def __init__(self, codebook_size: int, token_dim: int, decay: float = 0.99, beta: float = 0.25,
                 kmeans_init: str = "dataset", kmeans_iters: int = 10, eps: float = 1e-5,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, seed=0, update: str = "eq5"):
        super().__init__()
        check_positive_int("codebook_size", codebook_size, maximum=2**24)
        check_positive_int("token_dim", token_dim)
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"decay must be in (0, 1), got {decay!r}")
        if not beta >= 0:
            raise ConfigError(f"beta must be >= 0, got {beta!r}")
        if kmeans_init not in KMEANS_INIT:
            raise ConfigError(f"kmeans_init must be one of {KMEANS_INIT}, got {kmeans_init!r}")
        self.codebook_size, self.token_dim = codebook_size, token_dim
        self.decay, self.beta, self.eps = decay, beta, eps
        self.kmeans_init, self.kmeans_iters, self.chunk_size = kmeans_init, kmeans_iters, chunk_size
        self._set_group(seed)
        updates = list(update) if isinstance(update, (list, tuple)) else [update] * self.models
        bad = [u for u in updates if u not in EMA_UPDATES]
        if bad or len(updates) != self.models:
            raise ConfigError(f"update must be one of {EMA_UPDATES} (\"eq5\": the paper's t_k = M_k / L_k; "
                              f"\"laplace\": sonnet's smoothed L), or a list of them with one per model of the group, "
                              f"got {update!r}")
        #: The rule of eq. (5) of each model; ``update`` is that rule when all models share it.
        self.updates = updates
        self.update = updates[0] if len(set(updates)) == 1 else list(updates)
        init = torch.stack([torch.randn(codebook_size, token_dim, generator=torch.Generator().manual_seed(s))
                            for s in self.seeds])
        init = init if self.grouped else init[0]
        self.register_buffer("codebook", init)
        self.register_buffer("cluster_size", torch.ones(init.shape[:-1]))
        self.register_buffer("embed_sum", init.clone())
        self.register_buffer("initialised", torch.tensor(kmeans_init == "none"))
        # A host-side copy of the flag: reading the buffer every step (bool(tensor)) would make
        # the host wait for the device. Kept in step with the buffer here, in init_codebook and
        # when a state dict is loaded.
        self._initialised = kmeans_init == "none"
        # Model m's token k is row m * S + k of the flattened statistics (see ema_update).
        self.register_buffer("_row_offset", torch.arange(self.models)[:, None] * codebook_size, persistent=False)
        # Which models smooth L before eq. (5) ("laplace"), [M, 1, 1]; None when none does.
        laplace = torch.tensor([u == "laplace" for u in updates])[:, None, None]
        self.register_buffer("_laplace", laplace if laplace.any() else None, persistent=False)
        #: The models a first-batch K-means initialises (``kmeans_init="batch"``): all (``None``), or
        #: those listed. vqpaper.train leaves out a run of the group that has stopped (diverged).
        self.active: Optional[list[int]] = None

    def _statistics(self):
        """``t_k``, ``L_k``, ``M_k`` with the model axis: [M, S, D], [M, S], [M, S, D] (views)."""
        return self._group(self.codebook), self._group(self.cluster_size), self._group(self.embed_sum)

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor, models: Optional[Sequence[int]] = None):
        """K-means initialisation (eq. 2): tokens = centroids of the given encoder outputs.

        ``vectors``: [..., D] for one quantizer; [M, ..., D] for a group, model m's tokens from
        model m's vectors, one K-means per model with its own seed. ``models``: initialise only
        these models of the group (default: all).
        """
        vectors = self._latents(vectors.detach()).to(self.codebook.device)
        codebook, size, total = self._statistics()
        models = list(range(self.models)) if models is None else list(models)
        if models:  # one K-means per model, batched
            centres, counts = kmeans(vectors[models], self.codebook_size, self.kmeans_iters,
                                     [self.seeds[m] for m in models], self.chunk_size)
            codebook[models] = centres
            # Start the EMA statistics consistent with eq. (5): t_k = M_k / L_k.
            size[models] = counts.clamp_min(1.0)
            total[models] = centres * size[models].unsqueeze(-1)
        self.initialised.fill_(True)
        self._initialised = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialised = bool(self.initialised)      # once per load, not per step

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, indices: torch.Tensor):
        """Eq. (3)-(5) for one batch: embeddings ``z`` [n, D] assigned to tokens ``indices`` [n]
        (a group: [M, n, D] and [M, n], each model's embeddings and its own tokens)."""
        if not self.grouped:
            z, indices = z.unsqueeze(0), indices.unsqueeze(0)
        codebook, size, total = self._statistics()  # t_k, L_k, M_k of every model
        gamma, (models, tokens) = self.decay, size.shape
        # l_k and m_k of every model in one scatter over the flattened [M * S] statistics:
        # index_add_ rather than torch.bincount, which reads its input's maximum back to the host.
        rows = (indices + self._row_offset).reshape(-1)
        l_batch = z.new_zeros(models * tokens).index_add_(0, rows, z.new_ones(rows.shape[0])).view_as(size)  # l_k
        m_batch = z.new_zeros(models * tokens, z.shape[-1]).index_add_(0, rows, z.reshape(-1, z.shape[-1]))
        m_batch = m_batch.view_as(total)                                                                # m_k
        total.mul_(gamma).add_(m_batch, alpha=1 - gamma)        # eq. (3)
        size.mul_(gamma).add_(l_batch, alpha=1 - gamma)         # eq. (4)
        # Eq. (5) as the paper writes it, t_k = M_k / L_k. A token this batch chose has
        # L_k >= 1 - gamma > 0, so its division is safe. For a token it did not choose, m_k = l_k = 0:
        # M_k and L_k both shrank by gamma and M_k / L_k is t_k, unchanged, so we keep t_k instead of
        # dividing. Dividing would let float32 rounding move it, and after ~1000 unused steps at
        # gamma = 0.9 both M_k and L_k underflow (subnormal, then 0), giving a wrong ratio or 0/0.
        # torch.where rather than boolean indexing: no host-device sync on accelerators.
        chosen = (l_batch > 0).unsqueeze(-1)
        new = torch.where(chosen, total / size.unsqueeze(-1), codebook)
        if self._laplace is not None:
            # sonnet / vector-quantize-pytorch: Laplace-smooth L before eq. (5), for the models whose
            # update is "laplace". The smoothing adds eps to every L_k and rescales by the total, so for
            # a token no embedding chooses M_k -> 0 faster than the smoothed L_k: it is dragged to the origin.
            n = size.sum(-1, keepdim=True)
            smoothed = (size + self.eps) / (n + tokens * self.eps) * n
            new = torch.where(self._laplace, total / smoothed.unsqueeze(-1), new)  # eq. (5), smoothed
        codebook.copy_(new)

    def forward(self, z: torch.Tensor):
        flat = self._latents(z)                                  # [M, n, D]
        if self.training and not self._initialised:
            if self.kmeans_init == "dataset":
                raise ConfigError("kmeans_init='dataset' needs init_codebook(encoder outputs of the training set) "
                                  "before training; train.py does this, or use kmeans_init='batch'")
            self.init_codebook(self._ungroup(flat), self.active)  # "batch": K-means on the first batch
        codebook = self._group(self.codebook)
        indices, _ = nearest_token(flat.detach(), codebook, self.chunk_size)   # eq. (1), [M, n]
        tokens = tokens_at(codebook, indices)
        if self.training:
            self.ema_update(self._ungroup(flat.detach().float()), self._ungroup(indices))
        # Commitment loss beta * ||z - sg(t)||^2 per model; the codebook is learned by EMA, not by a loss.
        loss = self.beta * (flat - tokens.detach()).pow(2).mean((1, 2))
        # Straight-through estimator: forward = tokens, backward = identity onto z.
        quantized = flat + (tokens - flat).detach()
        return self._output(z, quantized, indices, loss)


# --------------------------------------------------------------------------------------
# SimVQ (Zhu, Li et al. 2024): codebook = W(B), B frozen
# --------------------------------------------------------------------------------------
class SimVQQuantizer(_Group):
    """SimVQ: tokens are a learnable linear map of a frozen random basis, ``C = W(B)``.

    ``B`` [S, D] is drawn once from N(0, D^-1/2) and frozen; ``W`` is a linear map ``D -> D``
    (``weight`` [D, D] in ``nn.Linear``'s layout and ``bias`` [D], initialised as ``nn.Linear``
    does, from the quantizer's seed). Because every token is ``W b_k``, one gradient step on
    ``W`` moves *all* tokens, used or not; that is SimVQ's remedy for codebook collapse. Loss,
    with the stop-gradients on the correct sides: ``||sg(z) - q||^2`` (trains W) +
    ``beta * ||z - sg(q)||^2`` (commitment). Decoding from indices must use the projected
    codebook ``W(B)``, not ``B``. A group (``seed`` a list) has ``[M, ...]`` of each.
    """

    kmeans_init = "none"

    def __init__(self, codebook_size: int, token_dim: int, beta: float = 0.25,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, seed=0, **_ignored):
        super().__init__()
        check_positive_int("codebook_size", codebook_size, maximum=2**24)
        check_positive_int("token_dim", token_dim)
        if not beta >= 0:
            raise ConfigError(f"beta must be >= 0, got {beta!r}")
        self.codebook_size, self.token_dim, self.beta, self.chunk_size = codebook_size, token_dim, beta, chunk_size
        self._set_group(seed)
        bases, weights, biases = [], [], []
        bound = 1 / math.sqrt(token_dim)
        for s in self.seeds:  # seeded, so two quantizers with one seed are identical
            g = torch.Generator().manual_seed(s)
            bases.append(torch.randn(codebook_size, token_dim, generator=g) * token_dim ** -0.5)
            weights.append(torch.empty(token_dim, token_dim).uniform_(-bound, bound, generator=g))
            biases.append(torch.empty(token_dim).uniform_(-bound, bound, generator=g))
        pick = (lambda ts: torch.stack(ts)) if self.grouped else (lambda ts: ts[0])
        self.register_buffer("basis", pick(bases))
        self.weight = nn.Parameter(pick(weights))
        self.bias = nn.Parameter(pick(biases))

    def _codebook(self) -> torch.Tensor:
        """``C = W(B) = B W^T + b`` of every model, [M, S, D]."""
        weight, bias = self._group(self.weight), self._group(self.bias)
        return torch.baddbmm(bias.unsqueeze(1), self._group(self.basis), weight.transpose(1, 2))

    @property
    def codebook(self) -> torch.Tensor:
        """The tokens actually used: ``C = W(B)`` (not the frozen basis)."""
        return self._ungroup(self._codebook())

    def init_codebook(self, vectors, models=None):  # noqa: D401 - uniform interface
        """SimVQ has no K-means initialisation: its basis is random by design."""
        return None

    def forward(self, z: torch.Tensor):
        flat = self._latents(z)
        codebook = self._codebook()
        indices, _ = nearest_token(flat.detach(), codebook.detach(), self.chunk_size)
        tokens = tokens_at(codebook, indices)                       # differentiable w.r.t. W
        loss = ((tokens - flat.detach()).pow(2).mean((1, 2))
                + self.beta * (flat - tokens.detach()).pow(2).mean((1, 2)))
        quantized = flat + (tokens - flat).detach()                 # straight-through
        return self._output(z, quantized, indices, loss)


# --------------------------------------------------------------------------------------
# A group of quantizers that have no batched form
# --------------------------------------------------------------------------------------
class QuantizerLoop(nn.Module):
    """A group of single quantizers run one after another: ``members[m]`` quantizes model m's latents.

    For quantizers without a batched form, vector-quantize-pytorch's (:mod:`vqpaper.remedies`).
    Same interface as a group: ``z`` [M, ..., D], ``loss`` [M], ``codebook`` [M, S, D]. The
    library draws random numbers from torch's global generator (K-means' starting tokens,
    dead-code restarts); each member runs with a generator state of its own, started from its
    model's seed, so what one model draws never depends on the others in its group.
    """

    grouped = True

    def __init__(self, members: Sequence[nn.Module], seeds: Sequence[int]):
        super().__init__()
        if not members or len(members) != len(seeds):
            raise ConfigError(f"QuantizerLoop needs one seed per member, got {len(members)} members and seeds "
                              f"{list(seeds)}")
        self.members = nn.ModuleList(members)
        first = members[0]
        self.codebook_size, self.token_dim, self.kmeans_init = first.codebook_size, first.token_dim, first.kmeans_init
        self.seeds, self.models = [int(s) for s in seeds], len(members)
        self._rng_states: dict = {}  # (member, device) -> generator state

    @contextlib.contextmanager
    def _own_random_numbers(self, m: int, device: torch.device):
        """Run member ``m`` on its own stream of torch's global generator (CPU, and CUDA if used)."""
        devices = [torch.device("cpu")] + ([device] if device.type == "cuda" else [])
        saved = []
        for d in devices:
            key = (m, str(d))
            if key not in self._rng_states:
                self._rng_states[key] = torch.Generator(device=d).manual_seed(self.seeds[m]).get_state()
            if d.type == "cpu":
                saved.append(torch.get_rng_state())
                torch.set_rng_state(self._rng_states[key])
            else:
                saved.append(torch.cuda.get_rng_state(d))
                torch.cuda.set_rng_state(self._rng_states[key], d)
        try:
            yield
        finally:
            for d, before in zip(devices, saved):
                key = (m, str(d))
                if d.type == "cpu":
                    self._rng_states[key] = torch.get_rng_state()
                    torch.set_rng_state(before)
                else:
                    self._rng_states[key] = torch.cuda.get_rng_state(d)
                    torch.cuda.set_rng_state(before, d)

    def _check(self, z: torch.Tensor):
        if z.dim() < 2 or z.shape[0] != self.models or z.shape[-1] != self.token_dim:
            raise ConfigError(f"a group of {self.models} quantizers expects latents [{self.models}, ..., "
                              f"{self.token_dim}], got shape {tuple(z.shape)}")

    @property
    def codebook(self) -> torch.Tensor:
        return torch.stack([q.codebook for q in self.members])

    def init_codebook(self, vectors: torch.Tensor, models: Optional[Sequence[int]] = None):
        """Each member's own initialisation on its model's vectors (``vectors`` [M, ..., D])."""
        self._check(vectors)
        for m in range(self.models) if models is None else models:
            with self._own_random_numbers(m, vectors.device):
                self.members[m].init_codebook(vectors[m])

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.stack([q.decode_indices(i) for q, i in zip(self.members, indices)])

    def forward(self, z: torch.Tensor):
        self._check(z)
        outs = []
        for m, q in enumerate(self.members):
            with self._own_random_numbers(m, z.device):
                outs.append(q(z[m]))
        quantized, indices, losses = zip(*outs)
        return torch.stack(quantized), torch.stack(indices), torch.stack([loss.reshape(()) for loss in losses])


def make_quantizer(name: str, codebook_size: int, token_dim: int, **kwargs) -> nn.Module:
    """Build a quantizer by name: ``"ema"`` (EMA-VQ, the paper's) or ``"simvq"``; ``seed`` a list: a group."""
    if name == "ema":
        return EMAQuantizer(codebook_size, token_dim, **kwargs)
    if name == "simvq":
        kwargs.pop("decay", None)
        kwargs.pop("kmeans_iters", None)
        kwargs.pop("kmeans_init", None)
        kwargs.pop("update", None)  # SimVQ learns its tokens by gradient: no EMA update
        return SimVQQuantizer(codebook_size, token_dim, **kwargs)
    raise ConfigError(f"quantizer must be one of {QUANTIZERS}, got {name!r}")
