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
  the order of ``LIBRARY_VQ_FLAGS``, e.g. ``"vq-lib-restart-rotation"``): the same plus the remedy;
* ``"fsq"``: the library's ``FSQ`` with levels chosen by :func:`fsq_levels`.

``kmeans_init`` keeps its meaning for the library's VQ: ``"dataset"`` runs the library's own
K-means on the vectors given to :meth:`LibraryVQ.init_codebook` (train.py passes the encoder
outputs of the whole training set), ``"batch"`` is the library's native ``kmeans_init=True``
(K-means on the first training batch), ``"none"`` its random uniform initialisation.

The remedy *recipes* of notebook 06 (a quantizer, a training method, a K-means setting, and
combinations such as ``"pretrained+restart"``) are parsed by :func:`parse_remedy`; their
verdicts against EMA-VQ from scratch come from :func:`remedy_checks`.

SPEC §10: ``VectorQuantize`` 1.32 turns the rotation trick on by default (for ``dim > 1``) and
builds a dense ``N x K`` one-hot matrix each training step, so every argument is passed
explicitly here and the library's quantizers are meant for the moderate codebooks of
notebook 06, not for the 65,536-token end of the CIFAR-10 sweep.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from . import quantizers as Q
from .errors import ConfigError, check_positive_int

# ------------------------------------------------------------------ the one place for the options
#: Flags of the library's ``VectorQuantize`` that a quantizer name can switch on, in name order.
LIBRARY_VQ_FLAGS = ("restart", "rotation", "l2")
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


def _vq_name(flags: Iterable[str]) -> str:
    flags = [f for f in LIBRARY_VQ_FLAGS if f in set(flags)]
    return "-".join(["vq-lib", *flags])


#: The library's quantizers by name: VectorQuantize with every subset of the flags, then FSQ.
LIBRARY_QUANTIZERS = tuple(_vq_name(c) for n in range(len(LIBRARY_VQ_FLAGS) + 1)
                           for c in itertools.combinations(LIBRARY_VQ_FLAGS, n)) + ("fsq",)
#: Every quantizer a run may name: ours (``quantizers.QUANTIZERS``) and the library's.
QUANTIZERS = Q.QUANTIZERS + LIBRARY_QUANTIZERS


def vq_flags(name: str) -> tuple[str, ...]:
    """The flags of a library VQ name: ``"vq-lib-restart-l2"`` -> ``("restart", "l2")``."""
    if name not in LIBRARY_QUANTIZERS or name == "fsq":
        raise ConfigError(f"{name!r} is not a vector-quantize-pytorch VQ name; allowed: "
                          f"{[n for n in LIBRARY_QUANTIZERS if n != 'fsq']}")
    return tuple(name.split("-")[2:])


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


class _Seeded:
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
        from vector_quantize_pytorch import VectorQuantize

        check_positive_int("codebook_size", codebook_size, maximum=2**24)
        check_positive_int("token_dim", token_dim)
        unknown = sorted(set(flags) - set(LIBRARY_VQ_FLAGS))
        if unknown:
            raise ConfigError(f"LibraryVQ flags must be among {list(LIBRARY_VQ_FLAGS)}, got {list(flags)}")
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"decay must be in (0, 1), got {decay!r}")
        if not beta >= 0:
            raise ConfigError(f"beta must be >= 0, got {beta!r}")
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
        with _Seeded(seed):
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
        with _Seeded(self.seed):  # the library draws K-means' starting tokens from torch's generator
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
        from vector_quantize_pytorch import FSQ

        check_positive_int("token_dim", token_dim)
        self.levels = fsq_levels(codebook_size)
        self.codebook_size, self.token_dim = math.prod(self.levels), token_dim
        with _Seeded(seed):
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


# ------------------------------------------------------------------ remedy recipes (notebook 06)
#: The parts a remedy recipe is made of; join them with "+" (``"pretrained+restart"``).
#: Each part sets fields of a run config (quantizer, method, K-means); the library flags combine.
PARTS = {
    "ema": "EMA-VQ from scratch, ours (the baseline)",
    "pretrained": "pretrain the autoencoder, then VQ (the paper's remedy)",
    "simvq": "SimVQ (codebook = W(B), B frozen)",
    "batch-kmeans": "K-means on the first training batch instead of the whole training set",
    "lib": "EMA-VQ of vector-quantize-pytorch with our settings",
    "restart": "dead-code restart (vector-quantize-pytorch)",
    "rotation": "rotation trick (vector-quantize-pytorch)",
    "l2": "l2-normalised low-dimensional codes (vector-quantize-pytorch)",
    "fsq": "FSQ (vector-quantize-pytorch)",
}
#: Short names for tables and figures.
LABELS = {"ema": "EMA scratch", "pretrained": "pretrained", "simvq": "SimVQ", "batch-kmeans": "first-batch K-means",
          "lib": "library EMA", "restart": "dead-code restart", "rotation": "rotation trick", "l2": "l2 low-dim codes",
          "fsq": "FSQ"}
#: The recipe every other one is compared with: the paper's EMA-VQ from scratch, K-means on the
#: outputs of the untrained encoder over the whole training set (notebooks 02-04).
BASELINE = "ema"
_QUANTIZER_PARTS = ("ema", "simvq", "fsq", "lib")


@dataclass(frozen=True)
class Remedy:
    """A parsed recipe: its name (as given), its parts, and the run-config fields it sets."""
    name: str
    parts: tuple
    quantizer: str
    method: str
    kmeans_init: str

    @property
    def label(self) -> str:
        return " + ".join(LABELS[p] for p in self.parts)

    @property
    def changes(self) -> dict:
        return {"quantizer": self.quantizer, "method": self.method, "kmeans_init": self.kmeans_init}


def parse_remedy(name: str) -> Remedy:
    """``"pretrained+restart"`` -> the run-config fields of that recipe (see ``PARTS``).

    At most one quantizer (``ema``, ``simvq``, ``fsq``, or the library's VQ, which ``restart``,
    ``rotation`` and ``l2`` switch on and combine); ``batch-kmeans`` needs a codebook that
    K-means initialises (ours or the library's VQ); ``lib`` alone is the library's VQ without a
    flag (with a flag it is implied: ``"restart"``, not ``"lib+restart"``).
    """
    allowed = f"parts {list(PARTS)} joined by '+', e.g. 'pretrained+restart'"
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"remedies: each remedy must be a non-empty string of {allowed}, got {name!r}")
    parts = tuple(p.strip() for p in name.split("+"))
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"remedies: unknown part(s) {unknown} in {name!r}; allowed: {allowed}")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"remedies: {name!r} repeats a part; allowed: {allowed}")
    flags = [p for p in parts if p in LIBRARY_VQ_FLAGS]
    chosen = [p for p in parts if p in _QUANTIZER_PARTS] + (["lib"] if flags and "lib" not in parts else [])
    if "lib" in parts and flags:
        raise ConfigError(f"remedies: {name!r}: 'lib' is implied by {flags}; write {'+'.join(p for p in parts if p != 'lib')!r}")
    if len(chosen) > 1:
        raise ConfigError(f"remedies: {name!r} names more than one quantizer ({chosen}); a recipe has one of "
                          f"'ema', 'simvq', 'fsq' or the library's VQ (lib, restart, rotation, l2)")
    quantizer = {"ema": "ema", "simvq": "simvq", "fsq": "fsq"}.get(chosen[0], _vq_name(flags)) if chosen else "ema"
    if "batch-kmeans" in parts and quantizer in ("simvq", "fsq"):
        raise ConfigError(f"remedies: {name!r}: {quantizer} has no codebook for K-means to initialise; "
                          f"'batch-kmeans' combines with 'ema' or the library's VQ")
    return Remedy(name, parts, quantizer, "pretrained" if "pretrained" in parts else "scratch",
                  "batch" if "batch-kmeans" in parts else "dataset")


def parse_remedies(names: Sequence[str]) -> list[Remedy]:
    """Parse a list of recipes; two that set the same fields (``"a+b"``, ``"b+a"``) are an error."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
        raise ConfigError(f"remedies must be a non-empty list like ['ema', 'pretrained', 'restart'], got {names!r}")
    out = [parse_remedy(n) for n in names]
    seen = {}
    for r in out:
        key = tuple(sorted(r.changes.items()))
        if key in seen:
            raise ConfigError(f"remedies: {seen[key]!r} and {r.name!r} are the same recipe; keep one")
        seen[key] = r.name
    return out


def with_remedy(configs: Iterable, remedy: Remedy) -> list:
    """The run configs with the recipe's quantizer, method and K-means set (others unchanged)."""
    return [replace(c, **remedy.changes).validate() for c in configs]


def key(name: str) -> str:
    """A recipe's name as a glue key / claim id part: ``"pretrained+restart"`` -> ``"pretrained-and-restart"``."""
    return name.replace("+", "-and-")


# ------------------------------------------------------------------ verdicts: each recipe against the baseline
#: The collapses a recipe is checked on, with the metric of its one check per setting. Tokens
#: collapse: the perplexity of token use over the whole set (how many tokens are effectively in
#: use; the paper's Fig. 4 measure), per data dimension on the synthetic data (encoder hidden 32)
#: and per codebook size on CIFAR-10. Embeddings collapse: the participation ratio of the
#: embeddings of the *narrow* encoder (the paper's §3.2 symptom, notebook 04), per data dimension.
COLLAPSES = {
    "tokens": dict(name="tokens collapse", data="synthetic", metric="perplexity", over="dim", label="{}-D",
                   what="uses its tokens more evenly (a higher perplexity) than EMA-VQ from scratch"),
    "tokens-cifar": dict(name="tokens collapse", data="CIFAR-10", metric="perplexity", over="codebook_size",
                         label="K = {:,}", what="uses its tokens more evenly (a higher perplexity, training "
                                            "images) than EMA-VQ from scratch"),
    "embeddings": dict(name="embeddings collapse", data="synthetic", metric="participation_ratio", over="dim",
                       label="{}-D, narrow encoder",
                       what="gives the narrow encoder's embeddings more effective dimensions (a higher "
                            "participation ratio) than EMA-VQ from scratch with the same encoder"),
}


def _by(runs: Sequence, over: str) -> dict:
    """``{(setting value, seed): run}`` (the pairs of a check line up on these keys)."""
    return {(r.config[over], r.config["seed"]): r for r in runs}


def remedy_families(runs: dict, collapse: str, baseline: str = BASELINE) -> list:
    """One ``claims.Family`` per recipe (other than ``baseline``) for one collapse of ``COLLAPSES``.

    ``runs`` is ``{recipe: runs}`` (``experiments.remedy_runs``). Each family has one check per
    setting (data dimension or codebook size): the recipe's metric against the baseline's, seed
    by seed; inconclusive when a run compared had not converged (``claims.converged``), as in
    notebooks 02-05.
    """
    from .claims import HELD, INCONCLUSIVE, NOT_HELD, Family, converged, paired

    if collapse not in COLLAPSES:
        raise ConfigError(f"collapse must be one of {list(COLLAPSES)}, got {collapse!r}")
    spec = COLLAPSES[collapse]
    if baseline not in runs:
        raise ConfigError(f"the recipes {list(runs)} must include the baseline {baseline!r}")
    base = _by(runs[baseline], spec["over"])
    families = []
    for name, rs in runs.items():
        if name == baseline:
            continue
        label = parse_remedy(name).label
        mine = _by(rs, spec["over"])
        checks = []
        for value in sorted({v for v, _ in mine}):
            pairs = sorted(k for k in mine if k[0] == value and k in base)
            if not pairs:
                continue
            setting = spec["label"].format(value)
            ok = all(converged(mine[k].history) and converged(base[k].history) for k in pairs)
            checks.append(paired(
                f"rem-{collapse}-{key(name)}-{setting}".lower().replace(" ", "").replace(",", "").replace("=", ""),
                f"{setting}: {label} {spec['what']}",
                [float(mine[k].metrics[spec["metric"]]) for k in pairs],
                [float(base[k].metrics[spec["metric"]]) for k in pairs], converged=ok, setting=setting))
        if not checks:
            raise ConfigError(f"recipe {name!r} has no run that pairs with the baseline's for {collapse!r} "
                              f"(same {spec['over']} and seed)")
        what = f"{spec['name']} ({spec['data']})"
        families.append(Family(
            f"rem-{collapse}-{key(name)}", f"beyond the paper: {spec['name']}, {spec['data']}",
            f"{label}: {spec['what']}", checks,
            {HELD: f"{label} eases {what}: it {spec['what']} in every setting.",
             NOT_HELD: f"{label} does not ease {what} in every setting: it was no better than EMA-VQ from "
                       f"scratch in at least one.",
             INCONCLUSIVE: f"Whether {label} eases {what} cannot be decided at this budget."}))
    return families


def verdict_grid(families_by_collapse: dict):
    """Recipes x collapses, each cell the family's outcome (a DataFrame for the book)."""
    import pandas as pd

    rows: dict = {}
    for collapse, families in families_by_collapse.items():
        spec = COLLAPSES[collapse]
        for f in families:
            name = f.paper.split(": ", 1)[0]
            rows.setdefault(name, {"remedy": name})[f"{spec['name']}, {spec['data']}"] = f.outcome
    return pd.DataFrame(list(rows.values())).fillna("not run")


# ------------------------------------------------------------------ the summary figure
#: The heat map's columns: (collapse set, metric, higher is better). ``tokens``: encoder hidden
#: 32 on the synthetic data; ``narrow``: the narrow encoder; ``cifar``: the CIFAR-10 runs.
HEATMAP_COLUMNS = (
    ("tokens", "usage", True), ("tokens", "perplexity", True), ("tokens", "alloc_entropy", True),
    ("tokens", "min_tokens_per_cluster", True), ("tokens", "coverage", True), ("tokens", "mse", False),
    ("narrow", "participation_ratio", True), ("narrow", "coverage", True), ("narrow", "mse", False),
    ("cifar", "perplexity", True), ("cifar", "test_mse", False),
)
_SET_TITLES = {"tokens": "synthetic", "narrow": "synthetic, narrow encoder", "cifar": "CIFAR-10"}


def effect_grid(runs_by_set: dict, baseline: str = BASELINE, columns=HEATMAP_COLUMNS) -> list[dict]:
    """Per recipe and heat-map column: the paired effect against the baseline, relative to the baseline.

    ``runs_by_set`` maps ``"tokens"``, ``"narrow"``, ``"cifar"`` to ``{recipe: runs}`` (a set may
    be missing). Pairs are (setting, seed) over all settings of the set: ``effect`` is the mean
    paired difference signed so that positive is better, ``relative`` that divided by the
    baseline's mean magnitude, ``low``/``high`` the 95% interval (``claims.paired_interval``)
    relative too, ``decided`` whether the interval excludes zero with at least 2 pairs.
    """
    from .claims import MIN_PAIRS, paired_interval

    out = []
    for set_name, metric, higher in columns:
        by_recipe = runs_by_set.get(set_name)
        if not by_recipe or baseline not in by_recipe:
            continue
        over = "codebook_size" if set_name == "cifar" else "dim"
        base = _by(by_recipe[baseline], over)
        for name, rs in by_recipe.items():
            if name == baseline:
                continue
            mine = _by(rs, over)
            pairs = sorted(k for k in mine if k in base)
            if not pairs:
                continue
            sign = 1.0 if higher else -1.0
            diffs = [sign * (float(mine[k].metrics[metric]) - float(base[k].metrics[metric])) for k in pairs]
            effect, low, high = paired_interval(diffs)
            scale = abs(sum(float(base[k].metrics[metric]) for k in pairs) / len(pairs)) or 1.0
            out.append({"remedy": parse_remedy(name).label, "set": _SET_TITLES[set_name], "metric": metric,
                        "higher_is_better": higher, "pairs": len(pairs), "effect": effect,
                        "relative": effect / scale, "low": low / scale, "high": high / scale,
                        "decided": len(pairs) >= MIN_PAIRS and (low > 0 or high < 0)})
    return out


def plot_remedy_heatmap(grid: Sequence[dict], clip: float = 1.0, suptitle: Optional[str] = None):
    """Recipes x metrics, coloured by the relative improvement over the baseline (notebook 06).

    Green: better than EMA-VQ from scratch, red: worse, clipped at ``clip`` (100%). Each cell
    shows the relative effect and its 95% interval; cells whose interval includes zero (or with
    a single pair) are faded.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    if not grid:
        raise ConfigError("plot_remedy_heatmap: the grid is empty (no recipe besides the baseline?)")
    rows = list(dict.fromkeys(g["remedy"] for g in grid))
    cols = list(dict.fromkeys((g["set"], g["metric"], g["higher_is_better"]) for g in grid))
    values = np.full((len(rows), len(cols)), np.nan)
    cells = {}
    for g in grid:
        i, j = rows.index(g["remedy"]), cols.index((g["set"], g["metric"], g["higher_is_better"]))
        values[i, j] = np.clip(g["relative"], -clip, clip)
        cells[i, j] = g
    fig, ax = plt.subplots(figsize=(1.25 * len(cols) + 2.8, 0.62 * len(rows) + 2.0))
    cmap = plt.get_cmap("RdYlGn")
    norm = TwoSlopeNorm(vmin=-clip, vcenter=0.0, vmax=clip)
    for (i, j), g in cells.items():
        colour = cmap(norm(values[i, j]))
        ax.add_patch(plt.Rectangle((j, i), 1, 1, facecolor=colour, alpha=1.0 if g["decided"] else 0.3,
                                   edgecolor="white", linewidth=1.5))
        interval = (f"[{g['low']:+.0%}, {g['high']:+.0%}]" if np.isfinite(g["low"]) and np.isfinite(g["high"])
                    else f"({g['pairs']} pair)")
        ax.text(j + 0.5, i + 0.5, f"{g['relative']:+.0%}\n{interval}", ha="center", va="center", fontsize=7.5,
                fontweight="bold" if g["decided"] else "normal")
    ax.set_xlim(0, len(cols))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks(np.arange(len(cols)) + 0.5)
    ax.set_xticklabels([f"{m}{'' if h else ' (lower)'}\n{s}" for s, m, h in cols], rotation=35, ha="right",
                       fontsize=8.5)
    ax.set_yticks(np.arange(len(rows)) + 0.5)
    ax.set_yticklabels(rows, fontsize=9)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(sm, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label("improvement over EMA-VQ from scratch\n(relative to its mean; clipped)", fontsize=8.5)
    bar.ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:+.0%}"))
    if suptitle:
        ax.set_title(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ our EMA-VQ against the library's
@torch.no_grad()
def compare_ema_with_library(codebook_size: int = 128, token_dim: int = 1, decay: float = 0.9, steps: int = 200,
                             batch: int = 512, seed: int = 0) -> list[dict]:
    """Our ``EMAQuantizer`` and the library's ``VectorQuantize`` from one codebook on one stream of batches.

    Both start from the same tokens, ``L_k = 1`` and ``M_k = t_k``; every step both see the same
    batch of latents, drawn from two Gaussian modes that only half of the tokens are near (so
    some tokens go unused). One row per update rule of ours (``quantizers.EMA_UPDATES``):
    the share of latents given the same token at every step, the largest gap between the two
    codebooks at the end, and how many tokens each left within 1e-3 of the origin.
    """
    from vector_quantize_pytorch import VectorQuantize

    g = torch.Generator().manual_seed(seed)
    start = torch.randn(codebook_size, token_dim, generator=g) * 2.0
    centres = torch.randn(2, token_dim, generator=g) * 2.0
    batches = [centres[torch.randint(2, (batch,), generator=g)] + 0.3 * torch.randn(batch, token_dim, generator=g)
               for _ in range(steps)]
    out = []
    for update in Q.EMA_UPDATES:
        ours = Q.EMAQuantizer(codebook_size, token_dim, decay=decay, kmeans_init="none", update=update).train()
        ours.codebook.copy_(start)
        ours.cluster_size.fill_(1.0)
        ours.embed_sum.copy_(start)
        with _Seeded(seed):
            lib = VectorQuantize(dim=token_dim, codebook_size=codebook_size, decay=decay, eps=ours.eps,
                                 kmeans_init=False, rotation_trick=False, threshold_ema_dead_code=0,
                                 use_cosine_sim=False, commitment_weight=ours.beta, sync_codebook=False).train()
        lib._codebook.embed.copy_(start[None])
        lib._codebook.embed_avg.copy_(start[None])
        lib._codebook.cluster_size.fill_(1.0)
        same = total = 0
        for z in batches:
            _, i_ours, _ = ours(z)
            _, i_lib, _ = lib(z[None])
            same += int((i_ours == i_lib[0]).sum())
            total += z.shape[0]
        lib_codebook = lib.codebook
        out.append({"update": update, "same_token_share": same / total,
                    "max_codebook_gap": float((ours.codebook - lib_codebook).abs().max()),
                    "ours_at_origin": int((ours.codebook.norm(dim=1) < 1e-3).sum()),
                    "library_at_origin": int((lib_codebook.norm(dim=1) < 1e-3).sum()),
                    "steps": steps, "codebook_size": codebook_size, "token_dim": token_dim})
    return out


def library_difference_sentence(rows: Sequence[dict]) -> str:
    """What :func:`compare_ema_with_library` measured, as a sentence for the book (computed, not typed)."""
    by = {r["update"]: r for r in rows}
    lap, eq5 = by["laplace"], by["eq5"]
    same = ("every latent" if lap["same_token_share"] == 1.0 else
            f"{lap['same_token_share']:.2%} of the latents (the same update computed in another order leaves the "
            f"tokens a float rounding apart, and a latent almost exactly halfway between two tokens can then take "
            f"either)")
    return (f"From one codebook of {lap['codebook_size']} tokens of dimension {lap['token_dim']}, over "
            f"{lap['steps']} batches, our EMA-VQ with the Laplace-smoothed update gave the library's VectorQuantize's "
            f"token to {same}, and the codebooks ended at most {lap['max_codebook_gap']:.2g} apart; with eq. (5) "
            f"as the paper writes it (this book's "
            f"default) {eq5['same_token_share']:.1%} of the choices agreed and the codebooks ended up to "
            f"{eq5['max_codebook_gap']:.3g} apart, because the library drags every unused token towards the origin "
            f"({eq5['library_at_origin']} tokens ended there, against {eq5['ours_at_origin']} of ours).")


def pick_recipe(names: Sequence[str], wanted: Sequence[str]) -> str:
    """The first recipe of ``names`` that has a part of ``wanted`` (in ``wanted``'s order), else the baseline."""
    for part in wanted:
        for name in names:
            if part in parse_remedy(name).parts:
                return name
    return BASELINE


def describe(name: str) -> str:
    """A recipe in words, saying which implementation it runs: ``"dead-code restart (vector-quantize-pytorch)"``."""
    r = parse_remedy(name)
    where = " (vector-quantize-pytorch)" if r.quantizer in LIBRARY_QUANTIZERS else ""
    words = {BASELINE: "EMA-VQ from scratch", "pretrained": "pretrained, then EMA-VQ (the paper's remedy)"}
    return words.get(r.name, r.label) + where


def which_sentence(families: Sequence, collapse: str) -> str:
    """One sentence per collapse, from the families' outcomes: which recipes held, which did not, which are open."""
    from .claims import OUTCOMES

    spec = COLLAPSES[collapse]
    title = f"{spec['name'].capitalize()} ({spec['data']})"
    if not families:
        return f"{title}: no recipe besides the baseline was run."
    groups = {o: [f.paper.split(": ", 1)[0] for f in families if f.outcome == o] for o in OUTCOMES}
    parts = [f"{o} for {', '.join(names)}" for o, names in groups.items() if names]
    return f"{title}, each recipe against EMA-VQ from scratch: {'; '.join(parts)}."


def library_run_sentence(families_by_collapse: dict) -> str:
    """The ``lib`` recipe's verdicts (the library's EMA-VQ with our settings against ours), as a sentence."""
    found = [(COLLAPSES[c], f) for c, fs in families_by_collapse.items() for f in fs if f.id == f"rem-{c}-lib"]
    if not found:
        return "This execution did not run the `lib` recipe, so whole runs of the two EMA-VQs were not compared."
    return ("On whole training runs, the library's EMA-VQ with our settings against ours: "
            + "; ".join(f"{spec['name']} ({spec['data']}), {f.verdict}" for spec, f in found) + ".")
