"""Golden tests: the torch library against an independent, plain NumPy/torch port of the reference
token path (TW-FINCH ``FINCH(tw_finch=True)``, ``finch_cluster`` and ``merge.py``), written here
from docs/method.md §4-§5 with the reference's own data flow: dense ``(P+I)(P+I)^T`` graph, BFS components,
per-frame merging with ``x * size`` bookkeeping and the hard-coded 576/3680 schedule.

Inputs are random floats without exact or near ties (docs/method.md §11): ``argsort`` of near-equal scores
is decided by the last bit, and the library computes the metric with a fused gather-and-sum
whose rounding equals torch's ``mean`` at these widths (D = 512: 32-dim metric) but is not
guaranteed to everywhere. Near-ties aside, order and values must match.
"""

import numpy as np
import pytest
import torch

from dyto.reduction import DyToReducer, tw_finch


pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------- reference TW-FINCH (NumPy)


def ref_first_neighbours(mat):
    feats, loc = mat[:, :-1], mat[:, -1]
    norms = np.sqrt((feats * feats).sum(axis=1))
    norms[norms == 0] = 1                       # sklearn's normalize() leaves zero rows at zero
    unit = feats / norms[:, None]
    dist = np.clip(1.0 - unit @ unit.T, 0, 2) * np.sqrt((loc[:, None] - loc[None, :]) ** 2)
    np.fill_diagonal(dist, 1e12)
    return np.argmin(dist, axis=1)


def ref_components(kappa):
    n = len(kappa)
    p = np.zeros((n, n))
    p[np.arange(n), kappa] = 1
    adj = (p + np.eye(n)) @ (p + np.eye(n)).T
    np.fill_diagonal(adj, 0)
    labels = np.full(n, -1)
    count = 0
    for start in range(n):                      # scipy numbers components by first node
        if labels[start] >= 0:
            continue
        labels[start] = count
        queue = [start]
        while queue:
            i = queue.pop()
            for j in np.nonzero(adj[i] + adj[:, i])[0]:
                if labels[j] < 0:
                    labels[j] = count
                    queue.append(j)
        count += 1
    return labels, count


def ref_means(data, labels):
    sums = np.zeros((labels.max() + 1, data.shape[1]), dtype=np.float32)
    np.add.at(sums, labels, data)               # float32 sums ...
    return sums / np.bincount(labels)[:, None]  # ... over int64 counts -> float64


def ref_finch(x):
    n = x.shape[0]
    data = np.concatenate([x, ((np.arange(n) + 1.0) / n)[:, None]], axis=1).astype(np.float32)
    c, count = ref_components(ref_first_neighbours(data))
    columns, counts = [c], [count]
    mat = ref_means(data, c)
    while True:
        u, count = ref_components(ref_first_neighbours(mat))
        c = u[c]
        if count == 1 or counts[-1] - count < 1:
            break                                # computed, then discarded
        columns.append(c)
        counts.append(count)
        mat = ref_means(data, c)
        if counts[-2] - count == 1:              # the reference's `while exit_clust > 1`
            break
    return np.stack(columns, axis=1), counts


def ref_select(c, counts, variant="release"):
    order = np.argsort(counts)
    col = order[-2] if (variant == "release" and len(counts) > 1) else order[-1]
    classes = c[:, col]
    unique = np.unique(classes)
    sel = []
    for label in unique:
        members = np.nonzero(classes == label)[0]
        if len(unique) <= 6:
            sel.extend(members[: min(len(members), 12 // len(unique))].tolist())
        else:
            sel.append(int(members[len(members) // 2 if len(members) > 2 else -1]))
    sel.sort()
    if len(sel) > 25:
        sel = [sel[i] for i in np.linspace(0, len(sel) - 1, 25, dtype=int)]
    return sel

# ---------------------------------------------------------------- reference merging (per frame)


def ref_merge_frame(x, r_list, mode):
    """x [1, t, C], one frame at a time, the reference's way (x*size, scatter_reduce, /size)."""
    size = torch.ones_like(x[..., :1])
    for r in r_list:
        t, c = x.shape[1], x.shape[2]
        half = t // 2
        r = min(r, half)
        if r <= 0:
            continue
        metric = x.reshape(1, t, 16, c // 16).mean(2)
        metric = metric / metric.norm(dim=-1, keepdim=True)
        best_val, best_idx = (metric[:, :half] @ metric[:, half:].transpose(1, 2)).max(dim=-1)
        order = best_val.argsort(dim=-1, descending=True)[..., None]
        unm_i, src_i = order[:, r:], order[:, :r]
        dst_i = best_idx[..., None].gather(1, src_i)

        def merge(v):
            a, b = v[:, :half], v[:, half:]
            w = v.shape[-1]
            src = a.gather(1, src_i.expand(1, r, w))
            b = b.scatter_reduce(1, dst_i.expand(1, r, w), src, reduce=mode)
            return torch.cat([a.gather(1, unm_i.expand(1, half - r, w)), b], dim=1)

        x = merge(x * size)
        size = merge(size)
        x = x / size
    return x[0]


def ref_dyto(features, variant="release", mode="amax"):
    c, counts = ref_finch(features[:, 0, :].numpy().astype(np.float32))
    sel = ref_select(c, counts, variant)
    kept = features[sel, 1:, :]
    t = len(sel)
    if t <= 12:
        r_list = [min(576 - 3680 // t, 288)]
    else:
        r_list = [288, min(288 - 3680 // t, 144)]
    tokens = torch.cat([ref_merge_frame(frame[None], r_list, mode) for frame in kept])
    return sel, tokens

# ---------------------------------------------------------------- the comparisons


def random_features(t, seed, n=576, d=512, walk=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, n, d, generator=g)
    if walk:  # a drifting "video": neighbouring frames alike, so the clusters mean something
        x = x + 0.3 * torch.randn(t, 1, d, generator=g).cumsum(0)
    return x


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("walk", [False, True])
def test_tw_finch_equals_reference(seed, walk):
    x = random_features(100, seed, n=1, walk=walk)[:, 0]
    labels, counts = tw_finch(x)
    ref_labels, ref_counts = ref_finch(x.numpy())
    assert counts == ref_counts
    assert labels.tolist() == ref_labels.tolist()


@pytest.mark.parametrize("t,seed,walk", [(100, 0, False), (100, 1, True), (100, 2, False),
                                         (1, 3, False), (2, 4, False), (3, 5, False),
                                         (7, 6, True), (13, 7, False), (40, 8, True)])
def test_dyto_equals_reference(t, seed, walk):
    features = random_features(t, seed, walk=walk)
    out = DyToReducer()(features, (24, 24))
    sel, tokens = ref_dyto(features)
    assert out.frames_kept == sel
    assert out.tokens.shape == tokens.shape
    torch.testing.assert_close(out.tokens, tokens, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_dyto_other_reduce_modes_equal_reference(mode):
    features = random_features(100, 11, walk=True)
    out = DyToReducer(reduce=mode)(features, (24, 24))
    sel, tokens = ref_dyto(features, mode=mode)
    assert out.frames_kept == sel
    torch.testing.assert_close(out.tokens, tokens, rtol=0, atol=1e-5)


def test_pycv2_equals_reference_finest_partition():
    features = random_features(100, 12)
    out = DyToReducer(variant="pycv2")(features, (24, 24))
    sel, tokens = ref_dyto(features, variant="pycv2")
    assert len(sel) == 25                                  # the cap fires for the finest partition
    assert out.frames_kept == sel
    torch.testing.assert_close(out.tokens, tokens, rtol=0, atol=1e-5)
