"""The 2025 reducers (DyCoke TTM, FastVID, PruneVid, HoliTom, VidCom²): tests that know the answer.

Identical frames collapse where the method promises it, a hard scene cut keeps tokens on each
side, defaults give the count the papers' arithmetic gives, and the YAML configs build them.
"""

from pathlib import Path

import pytest
import torch

from dyto.reduction import (REDUCERS, DyCokeReducer, FastVIDReducer, HoliTomReducer,
                            PruneVidReducer, VidCom2Reducer, build_reducer)
from dyto.reduction.density import allocate
from dyto.reduction.dycoke import dycoke_references
from dyto.reduction.fastvid import anchor_frames, dyseg
from dyto.reduction.holitom import static_windows
from dyto.reduction.prunevid import contiguous_segments
from dyto.reduction.vidcom2 import vidcom2_scores

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = (14, 14)            # LLaVA-OneVision's 196 tokens per frame
N = 196
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "reducers"


def gen(seed):
    return torch.Generator().manual_seed(seed)


def scene_cut(t, cut, d=64, noise=0.01, seed=0):
    """Frames [0, cut) show scene A, [cut, t) scene B; a little noise on every frame."""
    a, b = torch.randn(2, N, d, generator=gen(seed))
    x = torch.where(torch.arange(t)[:, None, None] < cut, a, b).clone()
    return x + noise * torch.randn(t, N, d, generator=gen(seed + 1))


def test_holitom_identical_frames_collapse_to_one_frame():
    x = torch.randn(1, N, 64, generator=gen(0)).expand(32, -1, -1).contiguous()
    out = HoliTomReducer()(x, GRID)
    assert out.info["windows"] == [(0, 31)]
    assert out.tokens.shape[0] == N and set(out.positions[:, 0].tolist()) == {0}
    # every static cell is its own centre: the tokens are the frame itself, in cell order
    torch.testing.assert_close(out.tokens, x[0])


def test_prunevid_identical_frames_become_static_tokens():
    x = torch.randn(1, N, 64, generator=gen(1)).expand(16, -1, -1).contiguous()
    out = PruneVidReducer()(x, GRID)
    segments = out.info["segments"]
    assert sum(segments) == 16 and len(segments) <= 4               # int(16 * 0.25) clusters
    # one static block (all 196 cells) per segment, no dynamic tokens, N/2 clusters each
    assert out.info["group_sizes"] == [N] * len(segments)
    assert out.tokens_per_frame == [N // 2] * len(segments)
    one = PruneVidReducer(target_tokens=N)(x, GRID)
    assert one.tokens.shape[0] == N


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_hard_scene_cut_keeps_tokens_on_each_side(name):
    reducer = build_reducer(name)
    t = reducer.num_frames
    cut = t // 2
    out = reducer(scene_cut(t, cut, seed=2), GRID)
    frames = out.positions[:, 0]
    assert bool((frames < cut).any()) and bool((frames >= cut).any()), out.frames_kept


@pytest.mark.parametrize("name", ["dyto", "fastvid", "prunevid", "holitom"])
def test_hard_scene_cut_at_a_tight_budget(name):
    reducer = build_reducer(name, target_tokens=2 * 20)
    t = reducer.num_frames
    out = reducer(scene_cut(t, t // 2 + 1, seed=3), GRID)
    assert out.tokens.shape[0] == 40
    frames = out.positions[:, 0]
    assert bool((frames <= t // 2).any()) and bool((frames > t // 2).any())


def test_segmenters_cut_at_the_scene_cut():
    x = scene_cut(32, 13, seed=4)
    lengths = dyseg(x.mean(1), c=8, tau=0.9)
    assert 13 in torch.tensor(lengths).cumsum(0).tolist() and len(lengths) >= 8
    unit = torch.nn.functional.normalize(x, dim=-1)
    windows, _ = static_windows((unit[:-1] * unit[1:]).sum(-1), 0.8, 1024)
    assert windows == [(0, 12), (13, 31)]
    out = HoliTomReducer()(x, GRID)                         # one frame's worth per scene
    assert out.tokens.shape[0] == 2 * N and set(out.positions[:, 0].tolist()) == {0, 13}
    # PruneVid's refine step may let a segment straddle the cut (a dissolved run joins a
    # neighbour), but no cell is static across it: the straddling frames keep dynamic tokens
    out = PruneVidReducer(num_frames=32)(x, GRID)
    lengths = out.info["segments"]
    starts = torch.tensor([0] + lengths[:-1]).cumsum(0).tolist()
    across = [(s, s + n) for s, n in zip(starts, lengths) if s < 13 < s + n]
    for s, e in across:
        assert sum(out.positions[:, 0] == f for f in range(s, e)).sum() > 0
        assert set(range(s, e)) <= set(out.frames_kept)


def test_dycoke_keeps_the_changed_tokens():
    x = torch.randn(1, N, 64, generator=gen(5)).expand(2, -1, -1).clone()
    x[1, [3, 150]] = torch.randn(2, 64, generator=gen(6))             # two cells change
    out = DyCokeReducer(num_frames=2, prune_ratio=1 - 2 / N)(x, GRID)
    assert out.tokens_per_frame == [N, 2]
    assert sorted(out.positions[N:, 1:].tolist()) == [[0, 3], [10, 10]]
    assert dycoke_references(8) == [None, 0, 0, 2, None, 4, None, 6]


def test_default_counts_follow_the_papers_arithmetic():
    x = torch.randn(32, N, 64, generator=gen(7))
    # DyCoke: 9 whole frames (0, 4, ..., 28 and 30), 23 frames keep int(0.3 * 196) = 58
    assert DyCokeReducer()(x, GRID).tokens.shape[0] == 9 * N + 23 * 58
    assert DyCokeReducer().output_tokens(32, GRID) == 9 * N + 23 * 58
    # FastVID on unrelated frames: every frame its own segment, int(196 * 0.1) = 19 per frame
    # (the public default retention), int(19 * 0.4) = 7 of them contextual
    out = FastVIDReducer()(x, GRID)
    assert out.info["segments"] == [1] * 32 and out.tokens_per_frame == [19] * 32
    assert out.info["salient_per_frame"] == 12


def test_fastvid_anchor_frames_carry_the_context():
    x = scene_cut(32, 16, seed=8)
    out = FastVIDReducer(target_tokens=32 * 49)(x, GRID)
    assert out.tokens.shape[0] == 32 * 49
    segments = out.info["segments"]
    starts = torch.tensor([0] + segments[:-1]).cumsum(0).tolist()
    # anchor frames are counted back from each segment's last frame, as the public code does
    anchors = {s + length - 1 - i for s, length in zip(starts, segments) for i in range(0, length, 4)}
    assert anchors == {f for s, length in zip(starts, segments) for f in anchor_frames(s, length, 4)}
    salient = out.info["salient_per_frame"]
    assert salient == 49 - int(49 * 0.4)                  # d is the contextual share
    for frame, count in zip(out.frames_kept, out.tokens_per_frame):
        assert count == salient or frame in anchors


def test_allocate_and_segments_helpers():
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert allocate(100, [1, 1, 1], caps=[5, 200, 200]) == [5, 48, 47]
    assert allocate(10 ** 6, [1, 2], caps=[3, 4]) == [3, 4]
    assert contiguous_segments([0, 0, 1, 0, 0, 0, 2, 2]) == [6, 2]       # stray 1 joins its run
    assert contiguous_segments([0, 1, 0, 1]) == [4]
    # the stray 1 joins the longer 2-run (3 > 2), which then measures 4 when the stray 3 looks
    # left: a tie with the 4-run on its right, so it goes left (upstream refine_clusters)
    assert contiguous_segments([0, 0, 1, 2, 2, 2, 3, 4, 4, 4, 4]) == [2, 5, 4]


def test_vidcom2_frame_budgets_follow_uniqueness():
    base = torch.randn(1, N, 64, generator=gen(9))
    same = base.expand(8, -1, -1).contiguous()
    out = VidCom2Reducer(num_frames=8)(same, GRID)             # equal frames: round(0.25 * 196)
    assert out.tokens_per_frame == [49] * 8
    odd = same.clone()
    odd[5] = torch.randn(N, 64, generator=gen(10))              # one unique frame
    out = VidCom2Reducer(num_frames=8)(odd, GRID)
    assert out.tokens_per_frame[5] > 49 and max(out.tokens_per_frame[:5]) <= 49
    exact = VidCom2Reducer(num_frames=8, target_tokens=500)(odd, GRID)
    assert exact.tokens.shape[0] == 500 and exact.tokens_per_frame[5] == max(exact.tokens_per_frame)


def test_vidcom2_scores_match_the_direct_formula():
    x = torch.randn(6, 20, 32, generator=gen(12), dtype=torch.float64)
    flat = x.reshape(-1, 32)
    channels = flat.var(dim=0, unbiased=False).topk(16, largest=False).indices
    unit = torch.nn.functional.normalize(flat[:, channels], dim=-1).view(6, 20, 16)

    def kernel(centre):
        dist_sq = ((unit - centre) ** 2).sum(-1)
        return sum(torch.exp(-dist_sq / (2 * a)) for a in (0.125, 0.25, 0.5, 1.0, 2.0))

    video, frame = vidcom2_scores(x)
    torch.testing.assert_close(video.double(), kernel(unit.mean(dim=(0, 1))), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(frame.double(), kernel(unit.mean(dim=1, keepdim=True)),
                               rtol=1e-5, atol=1e-5)


def test_vidcom2_keeps_the_outlier_tokens():
    x = torch.randn(1, 1, 64, generator=gen(11)).expand(1, N, -1).clone()
    x[0, [5, 77]] = -x[0, 0]                                    # two cells point the other way
    out = VidCom2Reducer(num_frames=1, target_tokens=2)(x, GRID)
    assert out.positions.tolist() == [[0, 0, 5], [0, 5, 7]]


@pytest.mark.parametrize("name", ["dycoke", "fastvid", "prunevid", "holitom", "vidcom2"])
def test_yaml_config_builds_the_paper_defaults(name):
    jsonargparse = pytest.importorskip("jsonargparse")
    yaml = pytest.importorskip("yaml")
    from dyto.reduction import TokenReducer
    spec = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["model"]["reducer"]
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--reducer", type=TokenReducer)
    reducer = parser.instantiate_classes(parser.parse_object({"reducer": spec})).reducer
    assert reducer.config() == build_reducer(name).config()


@pytest.mark.parametrize("name", ["dycoke", "fastvid", "prunevid", "holitom", "vidcom2"])
def test_bad_parameters_are_rejected(name):
    bad = {"dycoke": {"prune_ratio": 1.0}, "fastvid": {"d": 1.5}, "prunevid": {"cluster_ratio": 0},
           "holitom": {"beta": -0.1}, "vidcom2": {"temperature": 0.0}}[name]
    with pytest.raises(ValueError):
        build_reducer(name, **bad)
