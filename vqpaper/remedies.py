"""Remedies for codebook collapse beyond the paper's (notebook 06), behind the one quantizer interface.

Zhao et al. test one remedy for tokens collapse, pretraining the autoencoder before VQ (§3.1);
notebook 05 adds SimVQ. Practitioners reach for more, and most of them are implemented in the
field's maintained library, ``vector-quantize-pytorch`` (lucidrains, pinned at 1.32.0). We wrap
the library rather than re-implement it, so the numbers are the library's:

* **dead-code restart** (Jukebox, SoundStream): a token whose EMA count falls below
  ``threshold_ema_dead_code`` is moved onto a random embedding of the current batch;
* **rotation trick** (Fifty et al. 2024): the gradient reaches the encoder through a rotation
  and rescaling that maps the embedding onto its token, instead of the straight-through copy;
* **l2-normalised low-dimensional codes** (ViT-VQGAN, Yu et al. 2022): embeddings are projected
  to a few dimensions and l2-normalised, the nearest token is the most cosine-similar one;
* **FSQ** (Mentzer et al. 2023): no learned codebook at all; each of a few projected
  coordinates is bounded and rounded to a fixed grid, the codes are the grid's points.

Every adapter keeps vqpaper's interface (``quantized, indices, loss = quantizer(z)`` with
``z [..., token_dim]``; ``.codebook`` [K, token_dim] in the space the decoder reads;
``.codebook_size``, ``.token_dim``, ``.kmeans_init``, ``.init_codebook(vectors)``,
``.decode_indices(indices)``), so a run swaps them in by its ``quantizer`` name. The names:

* ``"vq-lib"``: the library's ``VectorQuantize`` with *our* settings (Euclidean distance,
  plain straight-through, no restart, EMA decay and commitment weight of the run, K-means on
  the whole training set when ``kmeans_init="dataset"``): the peer of our ``EMAQuantizer``;
* ``"vq-lib-restart"``, ``"vq-lib-rotation"``, ``"vq-lib-l2"`` and their combinations (flags in
  the order of ``recipes.LIBRARY_VQ_FLAGS``, e.g. ``"vq-lib-restart-rotation"``): the same plus the remedy;
* ``"fsq"``: the library's ``FSQ`` with levels chosen by :func:`fsq_levels`.

``kmeans_init`` keeps its meaning for the library's VQ: ``"dataset"`` runs the library's own
K-means on the vectors given to :meth:`LibraryVQ.init_codebook` (train.py passes the encoder
outputs of the whole training set), ``"batch"`` is the library's native ``kmeans_init=True``
(K-means on the first training batch), ``"none"`` its random uniform initialisation.

The remedy *recipes* of notebook 06 (a quantizer, a training method, a K-means setting, and
combinations such as ``"pretrained+restart"``) are parsed in :mod:`vqpaper.recipes`; their
verdicts against EMA-VQ from scratch are in :mod:`vqpaper.verdicts`.

SPEC §10: ``VectorQuantize`` 1.32 turns the rotation trick on by default (for ``dim > 1``) and
builds a dense ``N x K`` one-hot matrix each training step, so every argument is passed
explicitly here and the library's quantizers are meant for the moderate codebooks of
notebook 06, not for the 65,536-token end of the CIFAR-10 sweep.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from . import quantizers as Q
from .errors import ConfigError, check_number, check_positive_int
from .recipes import LIBRARY_QUANTIZERS, LIBRARY_VQ_FLAGS, vq_flags

# ------------------------------------------------------------------ the one place for the options
#: Dead-code restart: a token whose EMA count of assignments per batch (decay = the run's) falls
#: below this is moved onto a random embedding of the batch. 2 is the value of the library's
#: README. It counts per batch, so it is stricter for small batches: on the synthetic data a batch
#: holds 512-768 latents for 128 tokens (4-6 per token on average), on CIFAR-10 8,192 latents.
DEAD_CODE_THRESHOLD = 2
#: l2-normalised codes live in ``max(L2_MIN_DIM, min(L2_MAX_DIM, token_dim // L2_SHRINK))``
#: dimensions: 8 for the CIFAR-10 token_dim 32 (ViT-VQGAN projects 768 to 32; lucidrains'
#: example 256 to 16), 2 for the synthetic token dims 1 and 4, the fewest for which a unit
#: sphere has more than two points.
L2_SHRINK, L2_MIN_DIM, L2_MAX_DIM = 4, 2, 32


#: Every quantizer a run may name: ours (``quantizers.QUANTIZERS``) and the library's (by name in ``recipes``).
QUANTIZERS = Q.QUANTIZERS + LIBRARY_QUANTIZERS


def l2_codebook_dim(token_dim: int) -> int:
    """Dimension of the l2-normalised codes for ``token_dim`` (see ``L2_SHRINK``)."""
    return max(L2_MIN_DIM, min(L2_MAX_DIM, token_dim // L2_SHRINK))


def fsq_levels(codebook_size: int) -> list[int]:
    """FSQ levels whose product is exactly ``codebook_size`` (a power of two, at least 4).

    ``b = log2(codebook_size)`` bits are shared out as evenly as possible over
    ``ceil(b / 3)`` coordinates of 4 or 8 levels each: 16 -> [4, 4], 128 -> [8, 4, 4],
    256 -> [8, 8, 4], 1024 -> [8, 8, 4, 4]. Mentzer et al. (2023, Table 1) recommend odd or
    mixed levels ([8, 6, 5] for 2^8, i.e. 240 codes); powers of two keep the number of codes
    equal to the other quantizers' ``codebook_size``, which every usage metric is relative to.
    The library forbids 2 levels without its symmetric variant, hence at least 4 codes.
    """
    k = check_positive_int("codebook_size", codebook_size)
    bits = k.bit_length() - 1
    if k != 1 << bits or bits < 2:
        raise ConfigError(f"quantizer 'fsq' needs codebook_size a power of two >= 4 (its levels multiply to it), "
                          f"got {codebook_size!r}; e.g. 16, 128, 256, 1024")
    n = math.ceil(bits / 3)
    base, extra = divmod(bits, n)
    return [2 ** (base + 1)] * extra + [2 ** base] * (n - extra)


class Seeded:
    """Build library modules under a fixed torch seed, leaving the global RNG as it was.

    The library draws its initial weights (projections, uniform codebooks) from torch's global
    generator; seeding them here makes two adapters with one seed identical, as ours are.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)


def _check_latents(z: torch.Tensor, token_dim: int):
    if z.shape[-1] != token_dim:
        raise ConfigError(f"quantizer expects latents with last dimension token_dim={token_dim}, "
                          f"got shape {tuple(z.shape)}")


class LibraryVQ(nn.Module):
    """vector-quantize-pytorch's ``VectorQuantize`` behind vqpaper's quantizer interface.

    ``flags`` (a subset of ``LIBRARY_VQ_FLAGS``) switch the remedies on; everything else is
    our setting, passed explicitly: Euclidean distance, ``decay`` and ``eps`` of the EMA
    (the library Laplace-smooths the counts, like our ``update="laplace"``, never eq. (5) as
    written), ``commitment_weight = beta`` (the same ``beta * ||z - sg(t)||^2`` as ours),
    ``rotation_trick`` only with the flag (the library's default would turn it on).
    ``update`` (our EMA rule) is accepted and ignored: the library has one rule.

    Latents are handed to the library as one sequence ``[1, N, token_dim]``: its K-means, its
    restarts and its distances work on the flattened latents anyway, and its evaluation path
    would otherwise copy the codebook once per batch row.
    """

    def __init__(self, codebook_size: int, token_dim: int, flags: Sequence[str] = (), decay: float = 0.99,
                 beta: float = 0.25, kmeans_init: str = "dataset", kmeans_iters: int = 10, eps: float = 1e-5,
                 seed: int = 0, update: Optional[str] = None, **_ignored):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize  # heavy (einops, ...): notebook 06 only

        check_positive_int("codebook_size", codebook_size, maximum=2**24)
        check_positive_int("token_dim", token_dim)
        unknown = sorted(set(flags) - set(LIBRARY_VQ_FLAGS))
        if unknown:
            raise ConfigError(f"LibraryVQ flags must be among {list(LIBRARY_VQ_FLAGS)}, got {list(flags)}")
        check_number("decay", decay, above=0, below=1)
        check_number("beta", beta, at_least=0)
        if kmeans_init not in Q.KMEANS_INIT:
            raise ConfigError(f"kmeans_init must be one of {Q.KMEANS_INIT}, got {kmeans_init!r}")
        self.codebook_size, self.token_dim, self.kmeans_init, self.seed = codebook_size, token_dim, kmeans_init, seed
        self.flags = tuple(f for f in LIBRARY_VQ_FLAGS if f in set(flags))
        l2 = "l2" in self.flags
        self.library_kwargs = dict(
            dim=token_dim, codebook_size=codebook_size, decay=decay, eps=eps,
            # "dataset": our K-means call decides when (init_codebook); the library only holds
            # the tokens uninitialised until then. "batch": the library's first-batch K-means.
            kmeans_init=kmeans_init != "none", kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=DEAD_CODE_THRESHOLD if "restart" in self.flags else 0,
            rotation_trick="rotation" in self.flags, straight_through=False,
            use_cosine_sim=l2, codebook_dim=l2_codebook_dim(token_dim) if l2 else None,
            commitment_weight=beta, stochastic_sample_codes=False, learnable_codebook=False,
            ema_update=True, sync_codebook=False,
        )
        with Seeded(seed):
            self.vq = VectorQuantize(**self.library_kwargs)
        # A host-side copy of the library's `initted` buffer: reading the buffer every step
        # (bool(tensor)) would make the host wait for the device. Kept in step with it in
        # init_codebook, after the first forward and when a state dict is loaded.
        self._set_initialised(kmeans_init == "none")
        self.register_load_state_dict_post_hook(lambda module, _keys: module._set_initialised(
            bool(module.vq._codebook.initted)))

    def _set_initialised(self, done: bool):
        """Record whether the codebook is initialised; once it is, skip the library's own check.

        The library's codebook asks ``if self.initted`` (a device read) at every forward before
        it would run its K-means; an instance attribute shadows that method with a no-op.
        """
        self._initialised = done
        codebook = self.vq._codebook
        if done:
            codebook.init_embed_ = _library_already_initialised
        else:
            codebook.__dict__.pop("init_embed_", None)

    @property
    def codebook(self) -> torch.Tensor:
        """The tokens as the decoder receives them: ``project_out`` of the library's codebook."""
        return self.vq.project_out(self.vq.codebook)

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor):
        """The library's K-means (its ``init_embed_``) on ``vectors``, in its codebook space.

        The vectors go through the same projection and l2-normalisation as the latents in
        ``forward`` before K-means sees them.
        """
        if self.kmeans_init != "dataset":
            return None
        x = vectors.detach().reshape(1, -1, self.token_dim).to(self.vq.codebook.device).float()
        x = self.vq._codebook.transform_input(self.vq.project_in(x))
        codebook = self.vq._codebook
        codebook.initted.fill_(False)
        with Seeded(self.seed):  # the library draws K-means' starting tokens from torch's generator
            type(codebook).init_embed_(codebook, x)
        self._set_initialised(True)
        return None

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.vq.get_output_from_indices(indices)

    def forward(self, z: torch.Tensor):
        _check_latents(z, self.token_dim)
        if self.training and self.kmeans_init == "dataset" and not self._initialised:
            raise ConfigError("kmeans_init='dataset' needs init_codebook(encoder outputs of the training set) "
                              "before training; train.py does this, or use kmeans_init='batch'")
        quantized, indices, loss = self.vq(z.reshape(1, -1, self.token_dim))
        if not self._initialised:  # the library initialised its codebook in that call ("batch", or eval)
            self._set_initialised(True)
        return quantized.view_as(z), indices.view(z.shape[:-1]).long(), loss


def _library_already_initialised(*_args, **_kwargs):
    """Stands in for the library codebook's ``init_embed_`` once it has run (see LibraryVQ._set_initialised)."""
    return None


class LibraryFSQ(nn.Module):
    """vector-quantize-pytorch's ``FSQ`` (Mentzer et al. 2023) behind vqpaper's quantizer interface.

    Latents are projected (a learned linear map, the library's) to ``len(levels)`` coordinates,
    each bounded by ``tanh`` and rounded to its grid (straight-through), then projected back
    to ``token_dim``. There is no codebook to learn or initialise and no quantizer loss: the
    ``codebook`` is the grid's ``prod(levels)`` points mapped back to ``token_dim``.
    """

    kmeans_init = "none"

    def __init__(self, codebook_size: int, token_dim: int, seed: int = 0, **_ignored):
        super().__init__()
        from vector_quantize_pytorch import FSQ  # heavy, see LibraryVQ

        check_positive_int("token_dim", token_dim)
        self.levels = fsq_levels(codebook_size)
        self.codebook_size, self.token_dim = math.prod(self.levels), token_dim
        with Seeded(seed):
            self.fsq = FSQ(levels=self.levels, dim=token_dim)

    @property
    def codebook(self) -> torch.Tensor:
        return self.fsq.project_out(self.fsq.implicit_codebook)

    def init_codebook(self, vectors):
        """FSQ has a fixed grid, nothing to initialise."""
        return None

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.fsq.indices_to_codes(indices.reshape(1, -1)).view(*indices.shape, self.token_dim)

    def forward(self, z: torch.Tensor):
        _check_latents(z, self.token_dim)
        quantized, indices = self.fsq(z.reshape(1, -1, self.token_dim))
        return quantized.view_as(z), indices.view(z.shape[:-1]).long(), quantized.new_zeros(())


def make_quantizer(name: str, codebook_size: int, token_dim: int, **kwargs) -> nn.Module:
    """Any quantizer by name (``QUANTIZERS``): ours through ``quantizers.make_quantizer``, or the library's.

    train.py builds its quantizers here, so that ``quantizers`` stays below this module
    (one-way layers: this module imports ``quantizers``, never the reverse).
    """
    if name in Q.QUANTIZERS:
        return Q.make_quantizer(name, codebook_size, token_dim, **kwargs)
    if name == "fsq":
        return LibraryFSQ(codebook_size, token_dim, **kwargs)
    if name in LIBRARY_QUANTIZERS:
        return LibraryVQ(codebook_size, token_dim, flags=vq_flags(name), **kwargs)
    raise ConfigError(f"quantizer must be one of {list(QUANTIZERS)}, got {name!r}")
