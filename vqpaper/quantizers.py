"""Vector quantizers, written to be read next to the paper (Zhao et al., §2.1 and §5.1).

Every quantizer has one interface, so a notebook swaps EMA-VQ for SimVQ by one argument::

    quantized, indices, loss = quantizer(z)      # z: [..., token_dim]

* ``quantized`` has the shape of ``z``; in the forward pass it equals the chosen tokens,
  in the backward pass the gradient goes straight through to ``z`` (Bengio et al. 2013).
* ``indices`` has the shape ``z.shape[:-1]``: the index of each latent vector's token.
* ``loss`` is the quantizer's share of the training loss (commitment term, plus SimVQ's
  codebook term).

Notation follows the paper: tokens ``t_k`` (rows of the codebook, ``k = 1..S``; here
``codebook_size``), embeddings ``z_j`` (encoder outputs).
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, check_positive_int
from .search_cpu import CPU_TILE, nearest_token_cpu

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
    """Eq. (1): ``k_j = argmin_k ||z_j - t_k||``; returns ``(indices [N], squared distances [N])``.

    ``||z - t||^2 = ||z||^2 - 2 z.t + ||t||^2``; the ``||z||^2`` term is the same for every
    token, so the search only needs ``||t||^2 - 2 z.t``: one matmul (``addmm``) per tile.
    The ``N x S`` distance matrix is never materialised: rows and codebook columns are tiled
    so that no temporary holds more than ``chunk_size`` elements, whatever ``S`` is (on CPU
    the tiles are further capped at a cache-sized ``CPU_TILE``, see ``vqpaper/search_cpu.py``; on CUDA
    the default bound grows to what the device's memory allows, see ``_CUDA_TILE_MAX``). Ties go to the lowest
    index, as in a plain ``argmin`` over all tokens.
    """
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ConfigError(
            f"nearest_token needs z [N, D] and codebook [K, D] with the same D, "
            f"got {tuple(z.shape)} and {tuple(codebook.shape)}"
        )
    check_positive_int("chunk_size", chunk_size)
    z = z.to(codebook.dtype)
    if z.device.type == "cpu" and codebook.dtype in (torch.float32, torch.float64):
        # the same search, tuned for CPU caches (see vqpaper/search_cpu.py); exact same indices
        return nearest_token_cpu(z, codebook, min(chunk_size, CPU_TILE))
    n, k = z.shape[0], codebook.shape[0]
    if z.device.type == "cuda":
        if chunk_size == DEFAULT_CHUNK_SIZE:  # the default: as large as the device allows
            chunk_size = _cuda_tile(z.device, codebook.element_size())
        k_block = min(k, chunk_size)
    else:
        k_block = min(k, _K_BLOCK, chunk_size)
    rows = max(1, min(n, chunk_size // k_block))
    t_sq = codebook.pow(2).sum(1)  # ||t_k||^2, [K]
    indices = torch.empty(n, dtype=torch.long, device=z.device)
    best = torch.empty(n, dtype=codebook.dtype, device=z.device)
    for r0 in range(0, n, rows):
        zr = z[r0:r0 + rows]
        run_min = run_idx = None
        for k0 in range(0, k, k_block):
            # ||t||^2 - 2 z.t for one tile of [rows, k_block]
            d = torch.addmm(t_sq[k0:k0 + k_block], zr, codebook[k0:k0 + k_block].t(), beta=1, alpha=-2)
            m, i = d.min(dim=1)
            if run_min is None:
                run_min, run_idx = m, i
            else:
                # strict '<' keeps the first index on ties, like a plain argmin over all columns
                better = m < run_min
                run_min = torch.where(better, m, run_min)
                run_idx = torch.where(better, i + k0, run_idx)
        indices[r0:r0 + rows] = run_idx
        best[r0:r0 + rows] = run_min + zr.pow(2).sum(1)
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


# --------------------------------------------------------------------------------------
# Eq. (2): K-means initialisation of the codebook (SoundStream)
# --------------------------------------------------------------------------------------
@torch.no_grad()
def kmeans(vectors: torch.Tensor, k: int, iters: int = 10, seed: int = 0,
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
    """
    check_positive_int("k", k)
    if vectors.dim() != 2 or vectors.shape[0] == 0:
        raise ConfigError(f"kmeans needs a non-empty [N, D] tensor, got shape {tuple(vectors.shape)}")
    if not torch.isfinite(vectors).all():
        raise ConfigError("kmeans got NaN or infinite encoder outputs; check the model and data")
    vectors = vectors.float()
    n, d = vectors.shape
    g = torch.Generator(device="cpu").manual_seed(seed)
    distinct = _distinct_rows(vectors)  # == vectors (same order) when no vector repeats
    m = distinct.shape[0]
    if m >= k:
        centres = distinct[torch.randperm(m, generator=g)[:k].to(vectors.device)].clone()
    else:
        what = f"{n:,} vectors" if m == n else f"{m:,} distinct vector{'s' if m != 1 else ''} (of {n:,})"
        warnings.warn(
            f"K-means initialisation: only {what} for {k:,} tokens; the {k - m:,} surplus "
            f"tokens start as randomly drawn vectors plus small noise (they cannot be distinct centroids); "
            f"each distinct vector is a centre, so the Lloyd iterations are skipped",
            stacklevel=2,
        )
        extra = distinct[torch.randint(m, (k - m,), generator=g).to(vectors.device)]
        # noise ~1e-3 of the spread; for (nearly) constant data ~1e-6 of the values, so that the
        # copies still differ from their vector in float32
        spread = torch.maximum(vectors.std(0, unbiased=False), 1e-3 * vectors.abs().amax(0))
        scale = 1e-3 * spread.clamp_min(1e-6)
        noise = torch.randn(k - m, d, generator=g).to(vectors.device) * scale
        centres = torch.cat([distinct, extra + noise])
        iters = 0
    counts = torch.zeros(k, device=vectors.device)
    for _ in range(iters):
        idx, _ = nearest_token(vectors, centres, chunk_size)  # r_jk of eq. (2)
        counts = torch.bincount(idx, minlength=k).float()
        sums = torch.zeros_like(centres).index_add_(0, idx, vectors)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    idx, _ = nearest_token(vectors, centres, chunk_size)
    counts = torch.bincount(idx, minlength=k).float()
    return centres, counts


def _distinct_rows(vectors: torch.Tensor) -> torch.Tensor:
    """The distinct rows of ``vectors`` in order of first occurrence (``vectors`` itself if all differ)."""
    uniq, inverse = torch.unique(vectors, dim=0, return_inverse=True)
    if uniq.shape[0] == vectors.shape[0]:
        return vectors
    n = vectors.shape[0]
    first = torch.full((uniq.shape[0],), n, dtype=torch.long, device=vectors.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=vectors.device), reduce="amin")
    return vectors[first.sort().values]


# --------------------------------------------------------------------------------------
# EMA vector quantizer: eq. (1), (3)-(5)
# --------------------------------------------------------------------------------------
class EMAQuantizer(nn.Module):
    """VQ with the codebook learned by exponential moving averages (eq. 3-5), no codebook loss.

    Buffers (not parameters: the optimiser never touches the tokens):

    * ``codebook``      ``t_k``  [S, D]
    * ``cluster_size``  ``L_k``  [S]      EMA of how many embeddings chose token k (eq. 4)
    * ``embed_sum``     ``M_k``  [S, D]   EMA of the sum of those embeddings     (eq. 3)

    ``kmeans_init``: ``"dataset"`` (the caller runs :meth:`init_codebook` on the encoder
    outputs of the whole training set, as the paper does), ``"batch"`` (K-means on the first
    training batch, as SoundStream and common libraries do), ``"none"`` (random normal tokens).

    ``update`` (one of ``EMA_UPDATES``): ``"eq5"`` (default) computes ``t_k = M_k / L_k``
    exactly as the paper's eq. (5), so a token no embedding chooses keeps its position;
    ``"laplace"`` first smooths ``L`` with ``eps`` as sonnet and vector-quantize-pytorch do,
    which pulls every unused token towards the origin: ``t_k ~ M_k / (L_k + eps)``, so the token
    has moved halfway once ``L_k`` has decayed to ``eps`` (from ``L_k = 1`` at decay 0.9: after
    about 110 unused steps). ``eps`` is used by ``"laplace"`` only.
    """

    def __init__(self, codebook_size: int, token_dim: int, decay: float = 0.99, beta: float = 0.25,
                 kmeans_init: str = "dataset", kmeans_iters: int = 10, eps: float = 1e-5,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, seed: int = 0, update: str = "eq5"):
        super().__init__()
        check_positive_int("codebook_size", codebook_size, maximum=2**24)
        check_positive_int("token_dim", token_dim)
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"decay must be in (0, 1), got {decay!r}")
        if not beta >= 0:
            raise ConfigError(f"beta must be >= 0, got {beta!r}")
        if kmeans_init not in KMEANS_INIT:
            raise ConfigError(f"kmeans_init must be one of {KMEANS_INIT}, got {kmeans_init!r}")
        if update not in EMA_UPDATES:
            raise ConfigError(f"update must be one of {EMA_UPDATES} (\"eq5\": the paper's t_k = M_k / L_k; "
                              f"\"laplace\": sonnet's smoothed L), got {update!r}")
        self.codebook_size, self.token_dim = codebook_size, token_dim
        self.decay, self.beta, self.eps, self.update = decay, beta, eps, update
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.chunk_size, self.seed = chunk_size, seed
        g = torch.Generator().manual_seed(seed)
        init = torch.randn(codebook_size, token_dim, generator=g)
        self.register_buffer("codebook", init)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", init.clone())
        self.register_buffer("initialised", torch.tensor(kmeans_init == "none"))
        # A host-side copy of the flag: reading the buffer every step (bool(tensor)) would make
        # the host wait for the device. Kept in step with the buffer here, in init_codebook and
        # when a state dict is loaded.
        self._initialised = kmeans_init == "none"

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor):
        """K-means initialisation (eq. 2): tokens = centroids of the given encoder outputs."""
        vectors = vectors.detach().reshape(-1, self.token_dim).to(self.codebook.device)
        centres, counts = kmeans(vectors, self.codebook_size, self.kmeans_iters, self.seed, self.chunk_size)
        self.codebook.copy_(centres)
        # Start the EMA statistics consistent with eq. (5): t_k = M_k / L_k.
        self.cluster_size.copy_(counts.clamp_min(1.0))
        self.embed_sum.copy_(centres * self.cluster_size[:, None])
        self.initialised.fill_(True)
        self._initialised = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialised = bool(self.initialised)      # once per load, not per step

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codebook[indices]

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, indices: torch.Tensor):
        """Eq. (3)-(5) for one batch of embeddings ``z`` [N, D] assigned to ``indices`` [N]."""
        gamma = self.decay
        l_batch = torch.bincount(indices, minlength=self.codebook_size).to(z.dtype)  # l_k
        m_batch = torch.zeros_like(self.embed_sum).index_add_(0, indices, z)          # m_k
        self.embed_sum.mul_(gamma).add_(m_batch, alpha=1 - gamma)        # eq. (3)
        self.cluster_size.mul_(gamma).add_(l_batch, alpha=1 - gamma)     # eq. (4)
        if self.update == "laplace":
            # sonnet / vector-quantize-pytorch: Laplace-smooth L before eq. (5). The smoothing adds
            # eps to every L_k and rescales by the total, so for a token no embedding chooses
            # M_k -> 0 faster than the smoothed L_k: it is dragged to the origin.
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
            torch.div(self.embed_sum, smoothed[:, None], out=self.codebook)  # eq. (5), smoothed
            return
        # Eq. (5) as the paper writes it, t_k = M_k / L_k. A token this batch chose has
        # L_k >= 1 - gamma > 0, so its division is safe. For a token it did not choose, m_k = l_k = 0:
        # M_k and L_k both shrank by gamma and M_k / L_k is t_k, unchanged, so we keep t_k instead of
        # dividing. Dividing would let float32 rounding move it, and after ~1000 unused steps at
        # gamma = 0.9 both M_k and L_k underflow (subnormal, then 0), giving a wrong ratio or 0/0.
        # torch.where rather than boolean indexing: no host-device sync on accelerators.
        chosen = (l_batch > 0)[:, None]
        self.codebook.copy_(torch.where(chosen, self.embed_sum / self.cluster_size[:, None], self.codebook))

    def forward(self, z: torch.Tensor):
        if z.shape[-1] != self.token_dim:
            raise ConfigError(f"quantizer expects latents with last dimension token_dim={self.token_dim}, "
                              f"got shape {tuple(z.shape)}")
        flat = z.reshape(-1, self.token_dim)
        if self.training and not self._initialised:
            if self.kmeans_init == "dataset":
                raise ConfigError("kmeans_init='dataset' needs init_codebook(encoder outputs of the training set) "
                                  "before training; train.py does this, or use kmeans_init='batch'")
            self.init_codebook(flat)                    # "batch": K-means on the first batch
        indices, _ = nearest_token(flat.detach(), self.codebook, self.chunk_size)   # eq. (1)
        tokens = self.codebook[indices]
        if self.training:
            self.ema_update(flat.detach().float(), indices)
        # Commitment loss beta * ||z - sg(t)||^2; the codebook is learned by EMA, not by a loss.
        loss = self.beta * F.mse_loss(flat, tokens.detach())
        # Straight-through estimator: forward = tokens, backward = identity onto z.
        quantized = flat + (tokens - flat).detach()
        return quantized.view_as(z), indices.view(z.shape[:-1]), loss


# --------------------------------------------------------------------------------------
# SimVQ (Zhu, Li et al. 2024): codebook = W(B), B frozen
# --------------------------------------------------------------------------------------
class SimVQQuantizer(nn.Module):
    """SimVQ: tokens are a learnable linear map of a frozen random basis, ``C = W(B)``.

    ``B`` [S, D] is drawn once from N(0, D^-1/2) and frozen; ``W`` is ``nn.Linear(D, D)``.
    Because every token is ``W b_k``, one gradient step on ``W`` moves *all* tokens, used or
    not; that is SimVQ's remedy for codebook collapse. Loss, with the stop-gradients on the
    correct sides: ``||sg(z) - q||^2`` (trains W) + ``beta * ||z - sg(q)||^2`` (commitment).
    Decoding from indices must use the projected codebook ``W(B)``, not ``B``.
    """

    def __init__(self, codebook_size: int, token_dim: int, beta: float = 0.25,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, seed: int = 0, **_ignored):
        super().__init__()
        check_positive_int("codebook_size", codebook_size, maximum=2**24)
        check_positive_int("token_dim", token_dim)
        if not beta >= 0:
            raise ConfigError(f"beta must be >= 0, got {beta!r}")
        self.codebook_size, self.token_dim, self.beta, self.chunk_size = codebook_size, token_dim, beta, chunk_size
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("basis", torch.randn(codebook_size, token_dim, generator=g) * token_dim ** -0.5)
        self.proj = nn.Linear(token_dim, token_dim)
        with torch.no_grad():  # seeded, so two quantizers with one seed are identical
            bound = 1 / math.sqrt(token_dim)
            self.proj.weight.copy_(torch.empty(token_dim, token_dim).uniform_(-bound, bound, generator=g))
            self.proj.bias.copy_(torch.empty(token_dim).uniform_(-bound, bound, generator=g))
        self.kmeans_init = "none"

    @property
    def codebook(self) -> torch.Tensor:
        """The tokens actually used: ``C = W(B)`` (not the frozen basis)."""
        return self.proj(self.basis)

    def init_codebook(self, vectors):  # noqa: D401 - uniform interface
        """SimVQ has no K-means initialisation: its basis is random by design."""
        return None

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codebook[indices]

    def forward(self, z: torch.Tensor):
        if z.shape[-1] != self.token_dim:
            raise ConfigError(f"quantizer expects latents with last dimension token_dim={self.token_dim}, "
                              f"got shape {tuple(z.shape)}")
        flat = z.reshape(-1, self.token_dim)
        codebook = self.codebook
        indices, _ = nearest_token(flat.detach(), codebook.detach(), self.chunk_size)
        tokens = codebook[indices]                                  # differentiable w.r.t. W
        loss = F.mse_loss(tokens, flat.detach()) + self.beta * F.mse_loss(flat, tokens.detach())
        quantized = flat + (tokens - flat).detach()                 # straight-through
        return quantized.view_as(z), indices.view(z.shape[:-1]), loss


def make_quantizer(name: str, codebook_size: int, token_dim: int, **kwargs) -> nn.Module:
    """Build a quantizer by name: ``"ema"`` (EMA-VQ, the paper's) or ``"simvq"``."""
    if name == "ema":
        return EMAQuantizer(codebook_size, token_dim, **kwargs)
    if name == "simvq":
        kwargs.pop("decay", None)
        kwargs.pop("kmeans_iters", None)
        kwargs.pop("kmeans_init", None)
        kwargs.pop("update", None)  # SimVQ learns its tokens by gradient: no EMA update
        return SimVQQuantizer(codebook_size, token_dim, **kwargs)
    raise ConfigError(f"quantizer must be one of {QUANTIZERS}, got {name!r}")
