"""The CPU kernel behind :func:`vqpaper.quantizers.nearest_token` (eq. 1), kept apart so the
quantizers module reads like the paper. Same result as the plain tiled search: for each
embedding of each model the index of its nearest token of that model's codebook, ties to the
lowest index.
"""
from __future__ import annotations

import torch

# On CPU the tile is also capped at a cache-sized 2**18 elements (1 MiB float32, in a 2 MiB
# L2) of CPU_K_BLOCK codebook columns: the distance tile then never leaves the cache between
# the matmul that writes it and the reductions that read it. Measured on 2 cores (N=8,192,
# D=32/64, K=512...65,536): 1.5-3x faster than 1,024 x 4,096 tiles, same indices.
CPU_TILE = 2**18
CPU_K_BLOCK = 512


def _row_min_first_index_(d: torch.Tensor, descending: torch.Tensor):
    """``d.min(-1)`` (row minima and the first index attaining each), computed in place on ``d``.

    On CPU ``min(dim)`` with indices is a scalar loop, ~5x slower per element than the
    vectorised ``amin``. The first index of each row's minimum is recovered exactly from
    ``amin``: mark the entries equal to it (``eq_``), weight them by ``[w, w-1, ..., 1]`` and take
    the row maximum; the largest weight belongs to the first marked column. Overwrites ``d``.
    """
    width = d.shape[-1]
    m = d.amin(-1)
    first = d.eq_(m.unsqueeze(-1)).mul_(descending[-width:]).amax(-1)
    # a NaN row marks nothing: clamp keeps the index in range (such a row is garbage anyway)
    return m, (width - first).long().clamp_(0, width - 1)


def nearest_token_cpu(z: torch.Tensor, codebook: torch.Tensor, tile: int):
    """CPU path of :func:`nearest_token` for a group: ``z`` [M, N, D], ``codebook`` [M, K, D].

    Tiles of at most ``tile`` elements *per model*: a model's rows and blocks are cut the same
    way whatever group it is in, so its indices do not depend on the group. The models are
    searched a few at a time, as many as fit in one ``tile`` together (at least one): a group's
    tiles side by side would outgrow the cache (12 models of notebook 02's 8-D runs: 3 MiB of
    distances, 1,219 us a search; in batches of four, 1,028 us). Rows are scanned block by
    block of codebook columns. Only rows whose minimum improves in a block (few, after the
    first blocks) have their index recomputed, on a copy of just those rows: at most two
    tile-sized temporaries per model at a time.
    """
    models, n, k = z.shape[0], z.shape[1], codebook.shape[1]
    k_block = min(k, CPU_K_BLOCK, tile)
    rows = max(1, min(n, tile // k_block))
    together = max(1, tile // (rows * k_block))
    if models > together:
        out = [nearest_token_cpu(z[m:m + together], codebook[m:m + together], tile)
               for m in range(0, models, together)]
        return torch.cat([i for i, _ in out]), torch.cat([b for _, b in out])
    t_sq = codebook.pow(2).sum(-1, keepdim=True).transpose(1, 2)  # ||t_k||^2, [M, 1, K]
    codebook_t = codebook.transpose(1, 2)                        # [M, D, K]
    descending = torch.arange(k_block, 0, -1, dtype=codebook.dtype)
    indices = torch.empty(models, n, dtype=torch.long)
    best = torch.empty(models, n, dtype=codebook.dtype)
    tiles: dict = {}  # one buffer per tile shape, written again by every tile of that shape
    for r0 in range(0, n, rows):
        zr = z[:, r0:r0 + rows]
        # (-2 z) @ t is -2 (z . t) to the last bit (a power of two scales every product and partial
        # sum exactly), and adding ||t||^2 rounds once, as baddbmm's ||t||^2 + (-2) z.t does: a plain
        # matmul into a reused tile, without baddbmm's broadcast copy (and no copy of the codebook)
        zr_2 = zr * -2
        width = zr.shape[1]
        run_min = run_idx = None
        for k0 in range(0, k, k_block):
            # ||t||^2 - 2 z.t for one tile of [M, rows, k_block], into a reused buffer: a fresh one
            # would cost a page fault per 4 KiB (for a 1 MiB tile, about as long as the matmul)
            shape = (models, width, min(k_block, k - k0))
            if shape not in tiles:
                tiles[shape] = torch.empty(shape, dtype=codebook.dtype)
            d = torch.bmm(zr_2, codebook_t[:, :, k0:k0 + k_block], out=tiles[shape]).add_(t_sq[:, :, k0:k0 + k_block])
            if run_min is None:
                run_min, run_idx = _row_min_first_index_(d, descending)
                run_min, run_idx = run_min.view(-1), run_idx.view(-1)   # (model, row) -> model * rows + row
                continue
            m = d.amin(-1).view(-1)
            # strict '<' keeps the earlier block on ties, like a plain argmin over all columns
            better = (m < run_min).nonzero().squeeze(1)
            if better.numel():
                _, i = _row_min_first_index_(d.view(-1, d.shape[-1]).index_select(0, better), descending)
                run_idx.index_copy_(0, better, i + k0)
                run_min.index_copy_(0, better, m.index_select(0, better))
        indices[:, r0:r0 + rows] = run_idx.view(models, width)
        best[:, r0:r0 + rows] = run_min.view(models, width) + zr.pow(2).sum(-1)
    return indices, best.clamp_min_(0)
