"""Temporally weighted FINCH (TW-FINCH) in torch: docs/method.md §4.2, the clustering DyTo runs on frames.

Reproduces ``FINCH(data, tw_finch=True)`` of TW-FINCH's ``twfinch.py`` (the call DyTo makes) without
numpy/scipy/sklearn, on whatever device ``x`` lives on:

1. rows = ``[x_i, tau_i]`` in float32 with ``tau_i = (i+1)/T`` (the normalised time column);
2. distance(i, j) = cosine distance of the features (1 - cos, clipped to [0, 2], time column left
   out) times ``|tau_i - tau_j|``; diagonal 1e12; first neighbour ``kappa(i) = argmin_j``
   (lowest index on ties);
3. i ~ j iff ``kappa(i) = j``, ``kappa(j) = i`` or ``kappa(i) = kappa(j)``; the clusters are the
   weakly connected components, numbered in order of first appearance by node index (scipy's
   ``connected_components`` order);
4. the next level clusters the float64 cluster means of the ``[x, tau]`` rows (float32 sums over
   int64 counts, as the reference), and labels are mapped back to frames;
5. stop when a level has one cluster or does not reduce the count, and discard that level.

Every component has >= 2 members (each node links to a neighbour other than itself), so each
kept level at least halves the count; only a one-cluster partition 0 is ever returned as such.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["tw_finch", "first_neighbours", "first_neighbour_components"]

_SELF_DISTANCE = 1e12  # the reference's diagonal, so a node is never its own first neighbour


def first_neighbours(rows: Tensor) -> Tensor:
    """First neighbour of every row of ``rows`` [K, F+1] (features, then time) -> LongTensor [K].

    The cosine part mirrors sklearn's ``pairwise_distances(metric="cosine")``: rows are scaled to
    unit L2 norm (a zero norm counts as 1, so an all-zero row has cosine 0 with everything), then
    ``1 - u @ u.T`` is clipped to [0, 2]. The time factor is ``sqrt((tau_i - tau_j)^2)`` as in the
    reference, computed in the dtype of ``rows`` (float32 at level 0, float64 above).
    """
    feats, tau = rows[:, :-1], rows[:, -1]                                  # [K, F], [K]
    norms = torch.linalg.vector_norm(feats, dim=1, keepdim=True)            # [K, 1]
    unit = feats / torch.where(norms == 0, torch.ones_like(norms), norms)   # [K, F]
    cos_dist = (1 - unit @ unit.T).clamp_(0, 2)                             # [K, K]
    time_dist = (tau[:, None] - tau[None, :]).square().sqrt()               # [K, K]
    dist = cos_dist * time_dist
    dist.fill_diagonal_(_SELF_DISTANCE)
    return dist.argmin(dim=1)                                               # first index on ties


def first_neighbour_components(kappa: Tensor) -> tuple[Tensor, Tensor]:
    """Weakly connected components of the first-neighbour graph ``i -> kappa[i]``.

    Returns ``(labels LongTensor[K], count 0-d LongTensor)``; labels are numbered by each
    component's smallest node index, i.e. in order of first appearance (scipy's order).

    The edges ``i - kappa(i)`` alone already connect everything FINCH's ``(P+I)(P+I)^T`` links
    (``kappa(i) = kappa(j)`` joins i and j through their common neighbour), and every node has
    exactly one out-edge, so each component is a tree hanging off one cycle. Pointer doubling
    finds that cycle and its smallest node in ceil(log2 K) fixed steps, with no host sync:
    after step k, ``hop[i] = kappa^(2^k)(i)`` and ``low[i]`` is the minimum node on the path
    ``i, kappa(i), ..., kappa^(2^k)(i)``.
    """
    k = kappa.numel()
    nodes = torch.arange(k, device=kappa.device)
    hop, low = kappa, torch.minimum(nodes, kappa)
    for _ in range((k - 1).bit_length()):                 # until 2^steps >= K
        low = torch.minimum(low, low[hop])
        hop = hop[hop]
    cycle_id = low[hop]         # hop[i] lies on i's cycle; low there spans the whole cycle
    smallest = torch.full_like(nodes, k).scatter_reduce_(0, cycle_id, nodes, "amin")
    root = smallest[cycle_id]   # smallest node index of i's component
    is_root = root == nodes
    rank = torch.cumsum(is_root, 0) - 1
    return rank[root], is_root.sum()


def tw_finch(x: Tensor) -> tuple[Tensor, list[int]]:
    """Cluster frame descriptors ``x`` [T, D] -> (labels LongTensor [T, P], num_clusters list[int]).

    Column p of ``labels`` is partition p (finest first); ``num_clusters`` is strictly decreasing.
    T = 1 gives ``[[0]]`` and ``[1]``. Runs on ``x.device``; the only host syncs are one cluster
    count per level (control flow).
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"tw_finch expects a non-empty [T, D] tensor, got shape {tuple(x.shape)}")
    t = x.shape[0]
    tau = (torch.arange(t, dtype=torch.float64, device=x.device) + 1) / t          # [T]
    data = torch.cat([x.to(torch.float32), tau.to(torch.float32)[:, None]], dim=1)  # [T, D+1]

    columns: list[Tensor] = []
    counts: list[int] = []
    rows = data                     # level 0 clusters the frames themselves
    while True:
        level_labels, level_count = first_neighbour_components(first_neighbours(rows))
        count = int(level_count)
        if counts and (count == 1 or count >= counts[-1]):
            break                   # the reference computes this level, then drops it
        frame_labels = level_labels if not columns else level_labels[columns[-1]]  # [T]
        columns.append(frame_labels)
        counts.append(count)
        if count == 1:
            break                   # only partition 0 can be a single cluster
        sums = torch.zeros(count, data.shape[1], dtype=torch.float32, device=x.device)
        sums.index_add_(0, frame_labels, data)                                     # [K, D+1]
        sizes = torch.bincount(frame_labels, minlength=count)                       # [K] int64
        rows = sums.to(torch.float64) / sizes[:, None].to(torch.float64)
    return torch.stack(columns, dim=1), counts
