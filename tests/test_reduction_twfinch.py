"""TW-FINCH (docs/method.md §4.2) and keyframe selection (docs/method.md §4.3-4.4) on hand-built inputs."""

import math

import numpy as np
import pytest
import torch

from dyto.reduction import select_keyframes, select_keyframes_detailed, tw_finch
from dyto.reduction.selection import linspace_int, partition_index, pick_frames
from dyto.reduction.twfinch import first_neighbour_components


pytestmark = pytest.mark.usefixtures("one_thread")


def groups(directions, sizes, noise=1e-3, seed=0):
    """Frames [sum(sizes), D]: group g repeats directions[g] plus small noise, in time order."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.as_tensor(d, dtype=torch.float32).expand(n, -1) for d, n in zip(directions, sizes)]
    x = torch.cat(rows)
    return x + noise * torch.randn(x.shape, generator=g)


def unit(*angles_and_axes, dim=8):
    v = torch.zeros(dim)
    for axis, value in angles_and_axes:
        v[axis] = value
    return v


def test_two_obvious_groups():
    x = groups([unit((0, 1)), unit((1, 1))], [3, 3])
    labels, counts = tw_finch(x)
    # level 0: two clusters; level 1 would be a single cluster, so it is dropped
    assert counts == [2]
    assert labels.tolist() == [[0], [0], [0], [1], [1], [1]]
    assert select_keyframes(x[:, None, :]) == [0, 1, 2, 3, 4, 5]   # K=2 -> up to 6 per cluster


def test_two_levels():
    c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
    # groups 0/1 are 20 degrees apart, 2/3 too, and the pairs are orthogonal to each other
    directions = [unit((0, 1)), unit((0, c), (1, s)), unit((2, 1)), unit((2, c), (3, s))]
    x = groups(directions, [3, 3, 3, 3])
    labels, counts = tw_finch(x)
    assert counts == [4, 2]
    assert labels[:, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert labels[:, 1].tolist() == [0] * 6 + [1] * 6
    sel = select_keyframes_detailed(x[:, None, :])
    assert sel.partition == 1 and sel.labels.tolist() == labels[:, 1].tolist()
    assert select_keyframes_detailed(x[:, None, :], variant="pycv2").partition == 0


def test_labels_follow_first_appearance():
    x = groups([unit((0, 1)), unit((1, 1)), unit((0, 1))], [2, 2, 2])
    labels, _ = tw_finch(x)
    assert labels[:4, 0].tolist() == [0, 0, 1, 1]
    for column in labels.T.tolist():      # every new label is the next number (scipy's order)
        seen = []
        for label in column:
            if label not in seen:
                assert label == len(seen)
                seen.append(label)


def test_components_of_a_first_neighbour_graph():
    # 0->1, 1->0, 2->1 | 3->4, 4->5, 5->4 | 6->7, 7->6
    kappa = torch.tensor([1, 0, 1, 4, 5, 4, 7, 6])
    labels, count = first_neighbour_components(kappa)
    assert int(count) == 3 and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    # a node whose neighbour comes first keeps the neighbour's (earlier) number
    labels, count = first_neighbour_components(torch.tensor([3, 2, 1, 0]))
    assert labels.tolist() == [0, 1, 1, 0] and int(count) == 2


@pytest.mark.parametrize("t", [1, 2, 3])
def test_tiny_inputs_are_one_cluster(t):
    labels, counts = tw_finch(torch.randn(t, 16))
    assert counts == [1] and labels.tolist() == [[0]] * t


@pytest.mark.parametrize("seed", range(3))
def test_typical_counts_on_100_random_frames(seed):
    x = torch.randn(100, 1024, generator=torch.Generator().manual_seed(seed))
    labels, counts = tw_finch(x)
    # docs/method.md §4.2 measured [29-35, 8-11, 2-4]; allow a little room on either side
    assert len(counts) == 3
    assert 27 <= counts[0] <= 37 and 7 <= counts[1] <= 12 and 2 <= counts[2] <= 4
    assert labels.shape == (100, 3)
    for p, k in enumerate(counts):
        assert sorted(set(labels[:, p].tolist())) == list(range(k))
        assert all(b >= a * 2 for a, b in zip(counts[1:], counts))   # each level at least halves


def test_duplicate_frames_share_a_cluster():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(60, 64, generator=g)
    x[31] = x[30]                                   # the repeated index of docs/method.md §2
    labels, _ = tw_finch(x)
    assert labels[30, 0] == labels[31, 0]


def test_float64_input_is_cast_to_float32():
    x = torch.randn(50, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert torch.equal(tw_finch(x)[0], tw_finch(x.float())[0])


def test_bad_input():
    with pytest.raises(ValueError):
        tw_finch(torch.randn(0, 8))
    with pytest.raises(ValueError):
        tw_finch(torch.randn(4, 2, 8))


# ----------------------------------------------------------------- choosing frames


def test_partition_index():
    assert partition_index([30, 9, 3]) == 1
    assert partition_index([30, 9, 3], "pycv2") == 0
    assert partition_index([5]) == 0 and partition_index([5], "pycv2") == 0
    with pytest.raises(ValueError):
        partition_index([5], "finest")


def test_pick_few_clusters_takes_earliest_members():
    # K=2 -> 12//2 = 6 earliest of each cluster; clusters need not be contiguous
    labels = [0] * 8 + [1] * 3 + [0] * 2 + [1] * 2
    assert pick_frames(labels) == [0, 1, 2, 3, 4, 5, 8, 9, 10, 13, 14]
    # K=5 -> 2 per cluster
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert pick_frames(labels) == [0, 1, 3, 4, 6, 7, 9, 10, 12, 13]
    assert pick_frames([0] * 20) == list(range(12))          # K=1 -> the first 12


def test_pick_many_clusters_takes_upper_middle():
    # K=7: sizes 1, 2, 3, 4, 5, 1, 2 -> member[-1] for sizes <= 2, member[n//2] otherwise
    sizes = [1, 2, 3, 4, 5, 1, 2]
    labels = [k for k, n in enumerate(sizes) for _ in range(n)]
    starts = np.cumsum([0] + sizes[:-1])
    expected = [s + (n // 2 if n > 2 else n - 1) for s, n in zip(starts, sizes)]
    assert pick_frames(labels) == expected


def test_pick_caps_with_numpy_linspace():
    labels = list(range(40))                                    # 40 singleton clusters
    kept = pick_frames(labels, max_frames=25)
    assert kept == np.linspace(0, 39, 25, dtype=int).tolist()
    assert pick_frames(labels, max_frames=1) == [0]
    with pytest.raises(ValueError):
        pick_frames(labels, max_frames=0)


@pytest.mark.parametrize("stop,num", [(39, 25), (30, 25), (26, 25), (99, 25), (5, 3), (0, 4)])
def test_linspace_int_matches_numpy(stop, num):
    assert linspace_int(stop, num) == np.linspace(0, stop, num, dtype=int).tolist()
