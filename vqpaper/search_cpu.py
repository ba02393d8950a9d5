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
    distances, 1,219 us a search; in batches of four, 1,028 us). The codebook's blocks and norms
    are set up once for the whole group (20 models of notebook 04's 8-D runs, 512 x 128 each:
    2.17 -> 1.34 ms a search against setting them up again for every batch of models).

    Each tile is one matmul, ``[-2 z, 1] @ [t; ||t||^2]`` = ``||t||^2 - 2 z.t``: the ones column
    comes last, so ``||t||^2`` is added to the finished dot product and rounded once, as an
    ``add_`` after the matmul would be. With more than one block of codebook columns, a first
    pass keeps only each block's row minima; then, block by block, the rows whose minimum that
    block holds first are computed again to find its index (:func:`_index_in_block`).
    """
    models, n, k = z.shape[0], z.shape[1], codebook.shape[1]
    k_block = min(k, CPU_K_BLOCK, tile)
    rows = max(1, min(n, tile // k_block))
    together = max(1, tile // (rows * k_block))  # models per matmul
    # [t; ||t||^2] [M, D + 1, k_block], block by block of codebook columns (all models: set up once)
    t, t_sq = codebook.transpose(1, 2), codebook.pow(2).sum(-1).unsqueeze(1)
    blocks = [torch.cat([t[:, :, k0:k0 + k_block], t_sq[:, :, k0:k0 + k_block]], 1) for k0 in range(0, k, k_block)]
    descending = torch.arange(max(k_block, len(blocks)), 0, -1, dtype=codebook.dtype)
    minima = torch.empty(len(blocks), models, n, dtype=codebook.dtype)  # each block's row minima
    z_sq = torch.empty(models, n, dtype=codebook.dtype)                 # ||z||^2
    indices = torch.empty(models, n, dtype=torch.long)
    tiles: dict = {}  # one buffer per tile shape, written again by every tile of that shape
    for r0 in range(0, n, rows):
        zr = z[:, r0:r0 + rows]
        own = zr.shape[1]
        r1 = r0 + own
        z_sq[:, r0:r1] = zr.pow(2).sum(-1)
        # a lone last row of larger tiles is doubled: alone, a matmul would send it to a
        # matrix-vector kernel, which sums in another order
        zr = zr.repeat(1, 2, 1) if own == 1 < rows else zr
        for m0 in range(0, models, together):  # the models a few at a time
            m1 = min(models, m0 + together)
            q = _queries(zr[m0:m1])
            for b, block in enumerate(blocks):
                shape = (m1 - m0, q.shape[1], block.shape[2])
                if shape not in tiles:  # a fresh buffer would cost a page fault per 4 KiB
                    tiles[shape] = torch.empty(shape, dtype=codebook.dtype)
                d = torch.bmm(q, block[m0:m1], out=tiles[shape])
                if len(blocks) == 1:  # the tile in the cache: its row minima and their first indices at once
                    m, i = _row_min_first_index_(d, descending)
                    minima[0, m0:m1, r0:r1], indices[m0:m1, r0:r1] = m[:, :own], i[:, :own]
                elif own == d.shape[1]:
                    torch.amin(d, -1, out=minima[b, m0:m1, r0:r1])
                else:
                    minima[b, m0:m1, r0:r1] = d.amin(-1)[:, :own]
    if len(blocks) == 1:
        best = minima[0]
    else:
        best, first_block = _row_min_first_index_(minima.permute(1, 2, 0).contiguous(), descending)
        for m in range(models):
            # each block's rows, in row order (a stable sort by block)
            by_block = torch.sort(first_block[m], stable=True).indices
            start = 0
            for b, count in enumerate(torch.bincount(first_block[m], minlength=len(blocks)).tolist()):
                for p0 in range(start, start + count, rows):  # a tile at most, as in the first pass
                    part = by_block[p0:min(p0 + rows, start + count)]
                    indices[m].index_copy_(0, part, _index_in_block(z[m], part, blocks[b][m], descending,
                                                                    min(MIN_ROWS, rows)) + b * k_block)
                start += count
    return indices, best.add_(z_sq).clamp_min_(0)


def _queries(z: torch.Tensor) -> torch.Tensor:
    """``[-2 z, 1]`` (``z`` [..., D] -> [..., D + 1]): ``(-2 z) . t`` is ``-2 (z . t)`` to the last bit
    (a power of two scales every product and partial sum exactly)."""
    return torch.cat([z * -2, z.new_ones(*z.shape[:-1], 1)], -1)


#: The second pass computes at least this many rows at once (repeating one where it has fewer,
#: and never more than the first pass's tiles): a matmul of one row goes to a matrix-vector
#: kernel that sums in another order, and the floor keeps it away from any other small-matrix path.
MIN_ROWS = 16


def _index_in_block(z: torch.Tensor, picked: torch.Tensor, block: torch.Tensor, descending: torch.Tensor,
                    floor: int):
    """The index within ``block`` [D + 1, k_block] of the minimum of each picked row of ``z``
    [N, D]: the distances again, for those rows only (at least ``floor`` rows), by the same
    batched matmul as the first pass. A matmul's entries do not depend on how many rows it has
    (tests/test_search.py checks it), so they are the first pass's numbers."""
    p = picked.numel()
    rows = picked if p >= floor else torch.cat([picked, picked[:1].expand(floor - p)])
    d = torch.bmm(_queries(z.index_select(0, rows)).unsqueeze(0), block.unsqueeze(0))[0]
    _, i = _row_min_first_index_(d, descending)
    return i[:p]


#: From this many queries on, :func:`sorted_position` searches branch-free (below it, torch's
#: binary search is faster: a few vectorised passes cost more than a few mispredicted branches).
BRANCH_FREE_FROM = 4096


def sorted_position(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``torch.searchsorted(values, q)`` (the first position whose value is not below each query,
    left side) for ``values`` [M, K] sorted along K and queries ``q`` [M, N]: the same positions.

    torch's CPU kernel takes one unpredictable branch per halving, per query: ~40 ns a query
    once the queries change from call to call (every training step), and a group of 12 runs of
    notebook 02 asks 9,216 of them. Here all queries halve together in vectorised passes, each
    moving right where ``not (value >= query)``, the kernel's own test (a NaN query goes past
    the end, as there): 360 -> 225 us for 12 x 768 queries among 128 tokens.
    """
    if q.device.type != "cpu" or q.numel() < BRANCH_FREE_FROM:
        return torch.searchsorted(values, q)
    base = torch.zeros(q.shape, dtype=torch.long)
    probe, probed, right = torch.empty_like(base), torch.empty_like(q), torch.empty(q.shape, dtype=torch.bool)
    n = values.shape[-1]
    while n > 1:  # base: the last position known to hold a value below the query (or 0)
        half = n // 2
        torch.gather(values, -1, torch.add(base, half, out=probe), out=probed)
        base.add_(torch.ge(probed, q, out=right).logical_not_(), alpha=half)
        n -= half
    torch.gather(values, -1, base, out=probed)
    return base.add_(torch.ge(probed, q, out=right).logical_not_())
