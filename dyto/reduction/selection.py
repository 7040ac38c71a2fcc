"""Hierarchical keyframe selection (docs/method.md §4.3-4.4): TW-FINCH on one descriptor per frame, pick a
partition, keep a few frames per cluster, cap the total.

``release`` (default) uses the partition with the second-largest cluster count, as the shipped
``finch_cluster`` and the paper's text; ``pycv2`` uses the finest one, as the authors' compiled
pre-release ``finch_clusterv2``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .twfinch import tw_finch

__all__ = ["KeyframeSelection", "VARIANTS", "partition_index", "pick_frames", "linspace_int",
           "select_keyframes", "select_keyframes_detailed"]

VARIANTS = ("release", "pycv2")
FEW_CLUSTERS = 6      # K <= 6: several early frames per cluster ...
FEW_CLUSTER_FRAMES = 12  # ... 12 // K of them


@dataclass
class KeyframeSelection:
    """What the selection saw and chose (used by reducers' ``info`` and by visualisation)."""

    frames: list[int]          # kept frame indices, ascending, after the cap
    labels: Tensor             # [T] cluster label of every frame in the chosen partition
    partition: int             # column of ``all_labels`` that was used
    num_clusters: list[int]    # TW-FINCH cluster count per partition, finest first
    all_labels: Tensor         # [T, P] every partition, finest first


def partition_index(num_clusters: list[int], variant: str = "release") -> int:
    """Column to use: ``argsort(num_clusters)[-2]`` (release) or ``[-1]`` (pycv2); P = 1 -> 0."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown selection variant {variant!r}; expected one of {VARIANTS}")
    order = sorted(range(len(num_clusters)), key=num_clusters.__getitem__)  # counts are distinct
    if variant == "release" and len(order) > 1:
        return order[-2]
    return order[-1]


def linspace_int(stop: int, num: int) -> list[int]:
    """``np.linspace(0, stop, num, dtype=int)``: float64 ``k * step``, last = stop, truncated."""
    if num == 1:
        return [0]
    step = stop / (num - 1)
    values = [k * step for k in range(num - 1)] + [float(stop)]
    return [int(v) for v in values]


def pick_frames(labels: list[int], max_frames: int = 25) -> list[int]:
    """Frames to keep given one cluster label per frame (docs/method.md §4.4) -> ascending indices.

    K <= 6 clusters: the first ``min(|C|, 12 // K)`` members of each cluster (the earliest frames,
    not a spread); otherwise one frame per cluster, ``member[|C| // 2]`` if |C| > 2 else the last
    member. More than ``max_frames`` kept -> ``linspace_int`` subsample, as the reference.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    members: dict[int, list[int]] = {}
    for frame, label in enumerate(labels):
        members.setdefault(label, []).append(frame)       # ascending frame order per cluster
    kept: list[int] = []
    if len(members) <= FEW_CLUSTERS:
        per_cluster = FEW_CLUSTER_FRAMES // len(members)
        for group in members.values():
            kept.extend(group[:per_cluster])
    else:
        for group in members.values():
            kept.append(group[len(group) // 2] if len(group) > 2 else group[-1])
    kept.sort()
    if len(kept) > max_frames:
        kept = [kept[i] for i in linspace_int(len(kept) - 1, max_frames)]
    return kept


def select_keyframes_detailed(features: Tensor, variant: str = "release", max_frames: int = 25,
                              descriptor: Tensor | None = None) -> KeyframeSelection:
    """Run the whole selection on ``features`` [T, N, D] and return every intermediate.

    ``descriptor`` [T, D'] defaults to ``features[:, 0, :]``: token 0, the top-left patch, which is
    what the reference code clusters (docs/method.md §4.1); pass a CLS state to follow the paper's text.
    """
    if descriptor is None:
        if features.ndim != 3 or features.shape[0] == 0 or features.shape[1] == 0:
            raise ValueError(f"features must be a non-empty [T, N, D] tensor, "
                             f"got shape {tuple(features.shape)}")
        descriptor = features[:, 0, :]                                      # [T, D]
    all_labels, num_clusters = tw_finch(descriptor)                         # [T, P]
    column = partition_index(num_clusters, variant)
    labels = all_labels[:, column]                                          # [T]
    frames = pick_frames(labels.tolist(), max_frames)
    return KeyframeSelection(frames, labels, column, num_clusters, all_labels)


def select_keyframes(features: Tensor, variant: str = "release", max_frames: int = 25,
                     descriptor: Tensor | None = None) -> list[int]:
    """Kept frame indices (ascending) for ``features`` [T, N, D]; see ``select_keyframes_detailed``."""
    return select_keyframes_detailed(features, variant, max_frames, descriptor).frames
