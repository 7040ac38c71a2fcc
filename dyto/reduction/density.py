"""Shared pieces of the 2025 reducers: DPC-kNN density peaks, cluster merging, a saliency proxy.

DPC-kNN (Du et al., 2016) as used by PruneVid, FastVID and HoliTom: distances
``cdist / sqrt(D)``, local density ``exp(-mean(d^2 of the k nearest, self included))``, delta =
distance to the nearest denser token (the largest distance for the densest one), score =
delta * density; centres are the top scores. Changed from the public code: ties in density are
broken by token index (a stable sort) instead of adding ``rand * 1e-6``, so the result is
deterministic; the distances are computed in float32 whatever the input dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["pairwise_distances", "density_scores", "dpc_centres", "assign_to_centres",
           "merge_clusters", "saliency_proxy", "allocate", "cell_cosine"]


def pairwise_distances(x: Tensor) -> Tensor:
    """[B, n, D] -> [B, n, n] float32 Euclidean distances / sqrt(D)."""
    x = x.float()
    return torch.cdist(x, x) / math.sqrt(x.shape[-1])


def density_scores(dist: Tensor, k: int) -> Tensor:
    """DPC-kNN score [B, n] (delta * density) from distances [B, n, n]."""
    n = dist.shape[-1]
    nearest = dist.topk(min(k, n), dim=-1, largest=False).values            # [B, n, k]
    density = (-(nearest ** 2).mean(dim=-1)).exp()                            # [B, n]
    # rank of each token's density, ties by index: "denser than" is a strict total order
    order = density.argsort(dim=-1, stable=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(n, device=dist.device)
                                            .expand_as(order))
    denser = rank[:, None, :] > rank[:, :, None]                             # [B, i, j]: j denser
    far = dist.flatten(1).max(dim=-1).values[:, None, None]
    delta = torch.where(denser, dist, far).min(dim=-1).values                # [B, n]
    return delta * density


def dpc_centres(dist: Tensor, num: int, k: int) -> Tensor:
    """Indices [B, num] of the ``num`` DPC-kNN centres, ascending (spatial order kept)."""
    return density_scores(dist, k).topk(num, dim=-1).indices.sort(dim=-1).values


def assign_to_centres(dist: Tensor, centres: Tensor) -> Tensor:
    """Cluster id [B, n] of every token: its nearest centre; a centre is its own cluster."""
    to_centres = dist.gather(2, centres[:, None, :].expand(-1, dist.shape[1], -1))  # [B, n, c]
    labels = to_centres.argmin(dim=-1)
    ids = torch.arange(centres.shape[1], device=dist.device).expand_as(centres)
    return labels.scatter(1, centres, ids)


def merge_clusters(x: Tensor, labels: Tensor, num: int) -> Tensor:
    """Mean of every cluster: x [B, n, D], labels [B, n] in [0, num) -> [B, num, D] (x's dtype)."""
    b, _, d = x.shape
    sums = x.new_zeros(b, num, d, dtype=torch.float32)
    sums.scatter_add_(1, labels[..., None].expand(-1, -1, d), x.float())
    counts = torch.zeros(b, num, device=x.device).scatter_add_(
        1, labels, torch.ones(labels.shape, device=x.device))
    return (sums / counts.clamp(min=1)[..., None]).to(x.dtype)


def cell_cosine(features: Tensor, frames_a: list[int], frames_b: list[int]) -> Tensor:
    """Cosine similarity of the tokens at the same cell of frames a and b -> [P, N] float32.

    One frame pair at a time, so no [P, N, D] temporary is made (at [100, 576, 4096] a
    batched ``cosine_similarity`` copies ~1 GB and is several times slower on the CPU).
    """
    if not len(frames_a):
        return features.new_zeros(0, features.shape[1], dtype=torch.float32)
    wide = torch.float64 if features.dtype == torch.float64 else torch.float32
    norms = torch.linalg.vector_norm(features, dim=-1, dtype=wide)                   # [T, N]
    dots = torch.stack([torch.einsum("nd,nd->n", features[a].to(wide), features[b].to(wide))
                        for a, b in zip(frames_a, frames_b)])                          # [P, N]
    return (dots / (norms[list(frames_a)] * norms[list(frames_b)]).clamp(min=1e-8)).float()


def saliency_proxy(x: Tensor) -> Tensor:
    """Stand-in for the vision encoder's attention a token receives: [B, n, D] -> [B, n].

    FastVID and HoliTom rank tokens by the SigLIP attention that the dyto contract does not
    carry. Averaged over the queries of a frame, the (pre-softmax) attention logit a token
    receives is linear in the mean token, so the proxy is ``x_j . mean_i(x_i) / sqrt(D)``.
    """
    xf = x.float()
    return (xf @ xf.mean(dim=1, keepdim=True).transpose(1, 2))[..., 0] / math.sqrt(x.shape[-1])


def allocate(total: int, weights: list[int], caps: list[int] | None = None,
             minimum: int = 1, budget_of: str | None = None) -> list[int]:
    """Split ``total`` tokens over groups in proportion to ``weights`` (largest remainder).

    Group g gets a share in [min(minimum, cap_g), cap_g] (``caps`` None: no upper bound); the
    shares sum to ``total`` exactly when that is reachable inside those bounds (otherwise to the
    nearest bound). Groups whose proportional share exceeds their cap are filled first and the
    rest is re-split (water filling). Ties go to the earlier group: deterministic.

    ``budget_of`` (a reducer's name): ``total`` is a budget that must not be exceeded, so a total
    below the groups' floor raises ValueError naming it, instead of returning the floor.
    """
    groups = range(len(weights))
    caps = list(caps) if caps is not None else [max(total, 0)] * len(weights)
    floor = [min(minimum, cap) for cap in caps]
    if budget_of is not None and total < sum(floor):
        raise ValueError(f"{budget_of}: a target of {total} tokens is below its floor of {sum(floor)} "
                         f"({len(floor)} groups of at least {minimum} token{'s' if minimum != 1 else ''} each)")
    if total >= sum(caps):
        return caps
    if total <= sum(floor):
        return floor
    fixed: dict[int, int] = {}
    while True:                                   # cap the groups whose quota overflows
        free = [g for g in groups if g not in fixed]
        left = total - sum(fixed.values())
        wsum = sum(weights[g] for g in free)
        quota = {g: left * (weights[g] / wsum if wsum else 1 / len(free)) for g in free}
        over = [g for g in free if quota[g] >= caps[g]]
        if not over:
            break
        fixed.update({g: caps[g] for g in over})
    shares = [fixed.get(g, max(floor[g], int(quota.get(g, 0)))) for g in groups]
    rank = sorted(free, key=lambda g: (-(quota[g] - shares[g]), g))
    for g in rank * 2:                            # hand out / take back single tokens
        if sum(shares) < total and shares[g] < caps[g]:
            shares[g] += 1
    for g in reversed(rank * 2):
        if sum(shares) > total and shares[g] > floor[g]:
            shares[g] -= 1
    return shares
