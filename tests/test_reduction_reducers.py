"""Reducers: the DyTo schedule table (docs/method.md §5.1), edge cases (docs/method.md §11), the baselines (docs/method.md §10)
and contract tests that every registered reducer gets for free."""

import pytest
import torch
import torch.nn.functional as F

from dyto.reduction import (REDUCERS, ConcatReducer, DyToReducer, Reduction, SlowFastReducer,
                            TokenReducer, UniformReducer, bipartite_merge, build_reducer,
                            list_reducers, merge_schedule, pixel_patch_features)
from dyto.reduction.baselines import slow_frame_indices
from dyto.reduction.merge import effective_r

GRID = (24, 24)


pytestmark = pytest.mark.usefixtures("one_thread")


def feats(t, n=576, d=64, seed=0, dtype=torch.float32):
    return torch.randn(t, n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------ docs/method.md §5.1, row by row

SCHEDULE_TABLE = {  # T': (effective r list, tokens per frame, L)
    **{t: ([0], 575, 575 * t) for t in range(1, 7)},
    7: ([51], 524, 3668), 8: ([116], 459, 3672), 9: ([168], 407, 3663), 10: ([208], 367, 3670),
    11: ([242], 333, 3663), 12: ([270], 305, 3660), 13: ([287, 5], 283, 3679),
    16: ([287, 58], 230, 3680), 20: ([287, 104], 184, 3680), 25: ([287, 141], 147, 3675),
}


@pytest.mark.parametrize("kept", sorted(SCHEDULE_TABLE))
def test_schedule_table(kept):
    r_eff, per_frame, total = SCHEDULE_TABLE[kept]
    r_list = merge_schedule(kept)                       # N = 576, Z = 3680
    assert effective_r(575, r_list) == r_eff
    merged = bipartite_merge(feats(kept, n=575), r_list)
    assert merged.shape == (kept, per_frame, 64)
    assert kept * merged.shape[1] == total <= 3680


def test_schedule_closed_form():
    for kept in range(7, 26):
        left = 575 - sum(effective_r(575, merge_schedule(kept)))
        assert left == (3680 // kept - 1 if kept <= 12 else 3680 // kept)
    assert merge_schedule(13) == [288, 5] and merge_schedule(7) == [51]
    assert merge_schedule(25, num_tokens=64, budget=400) == [32, 16]


# ------------------------------------------------------------------ docs/method.md §11 edge cases


@pytest.mark.parametrize("t,per_frame", [(1, 575), (2, 575), (3, 575), (7, 524)])
def test_short_clips_keep_every_frame(t, per_frame):
    out = DyToReducer()(feats(t, seed=t), GRID)
    assert out.frames_kept == list(range(t))
    assert out.tokens_per_frame == [per_frame] * t
    assert out.tokens.shape == (per_frame * t, 64)
    if t <= 6:   # nothing merged: token 0 dropped, the rest in raster order
        torch.testing.assert_close(out.tokens, feats(t, seed=t)[:, 1:].reshape(-1, 64))


def test_static_video_keeps_early_frames_of_each_cluster():
    frame = feats(1, seed=5)
    out = DyToReducer()(frame.expand(40, -1, -1).contiguous(), GRID)
    sel = out.info["selection"]
    assert sum(out.tokens_per_frame) == out.tokens.shape[0] <= 3680
    clusters = {}
    for i, label in enumerate(sel.labels.tolist()):
        clusters.setdefault(label, []).append(i)
    if len(clusters) <= 6:  # the usual outcome (docs/method.md §4.4: [15, 2] -> the earliest 6 of each)
        expected = sorted(i for m in clusters.values() for i in m[: 12 // len(clusters)])
        assert out.frames_kept == expected


def test_fewer_than_100_frames_with_a_duplicate():
    x = feats(37, seed=6)
    x[19] = x[18]
    out = DyToReducer()(x, GRID)
    sel = out.info["selection"]
    assert sel.all_labels[18, 0] == sel.all_labels[19, 0]
    assert out.frames_kept == sorted(set(out.frames_kept)) and max(out.frames_kept) < 37
    assert out.tokens.shape[0] == sum(out.tokens_per_frame) <= 3680


def test_tiny_n_clamps_down_to_one_token_per_frame():
    # N = 4 (2x2): 3 tokens left; T' = 25 (pycv2, capped) -> r = [2, 1] -> clamped [1, 1]
    out = DyToReducer(variant="pycv2", budget=1)(feats(100, n=4, d=32, seed=7), (2, 2))
    assert len(out.frames_kept) == 25 and out.info["r_effective"] == [1, 1]
    assert out.tokens.shape == (25, 32) and out.tokens_per_frame == [1] * 25


def test_float32_and_float64_agree():
    x = feats(100, seed=8, dtype=torch.float64)
    wide, narrow = DyToReducer()(x, GRID), DyToReducer()(x.float(), GRID)
    assert wide.frames_kept == narrow.frames_kept
    torch.testing.assert_close(narrow.tokens.double(), wide.tokens, rtol=0, atol=1e-5)


def test_cls_descriptor():
    x = feats(30, seed=9)
    reducer = DyToReducer(descriptor="cls")
    assert reducer.needs_cls
    cls = x[:, 5, :].clone()
    out = reducer(x, GRID, cls=cls)
    assert out.frames_kept == DyToReducer()(torch.cat([cls[:, None], x[:, 1:]], 1), GRID).frames_kept
    with pytest.raises(ValueError, match="cls"):
        reducer(x, GRID)
    with pytest.raises(ValueError, match="cls"):
        reducer(x, GRID, cls=cls[:5])


@pytest.mark.parametrize("bad,match", [
    (torch.randn(576, 64), r"\[T, N, D\]"),
    (torch.randn(0, 576, 64), "non-empty"),
    (torch.randn(4, 576, 40), "divisible by 16"),
    (torch.randn(4, 100, 64), "grid"),
    (torch.ones(4, 1, 64), "N >= 2"),
])
def test_dyto_rejects_bad_input(bad, match):
    grid = (1, 1) if bad.ndim == 3 and bad.shape[1] == 1 else GRID
    with pytest.raises(ValueError, match=match):
        DyToReducer()(bad, grid)


@pytest.mark.parametrize("where", ["descriptor", "kept frame"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_dyto_rejects_non_finite(where, value):
    x = feats(5, seed=10)                      # 5 frames: all are kept
    if where == "descriptor":
        x[2, 0, 3] = value
    else:
        x[4, 100, 7] = value
    with pytest.raises(ValueError, match="NaN or inf"):
        DyToReducer()(x, GRID)


@pytest.mark.parametrize("params", [{"variant": "v3"}, {"descriptor": "mean"}, {"reduce": "max"},
                                    {"budget": 0}, {"max_frames": 0}])
def test_dyto_rejects_bad_params(params):
    with pytest.raises(ValueError):
        DyToReducer(**params)


# ------------------------------------------------------------------ baselines (docs/method.md §10)


def test_slowfast_reference_layout():
    x = feats(50, seed=11)
    out = SlowFastReducer()(x, GRID)
    assert out.tokens.shape == (3680, 64) and sum(out.tokens_per_frame) == 3680
    assert out.info["slow_frames"] == list(range(0, 50, 5))
    slow = F.max_pool1d(x[::5].transpose(1, 2), 2, 2).transpose(1, 2).reshape(-1, 64)
    grid = x.permute(2, 0, 1).reshape(64, 50, 24, 24)              # 'd t n0 n1', as SF-LLaVA
    fast = F.adaptive_avg_pool2d(grid, (4, 4)).permute(1, 2, 3, 0).reshape(-1, 64)
    torch.testing.assert_close(out.tokens, torch.cat([slow, fast]))


def test_slowfast_short_clip_uses_each_frame_once():
    assert slow_frame_indices(3, 10) == [0, 1, 2]
    assert slow_frame_indices(50, 10) == list(range(0, 50, 5))
    assert slow_frame_indices(37, 10) == [0, 3, 7, 11, 14, 18, 22, 25, 29, 33]
    out = SlowFastReducer()(feats(3, seed=12), GRID)
    assert out.tokens.shape[0] == 3 * 288 + 3 * 16


def test_uniform_pooling_and_concat():
    x = feats(8, seed=13)
    assert torch.equal(UniformReducer()(x, GRID).tokens, x.reshape(-1, 64))
    pooled = UniformReducer(pool=2)(x, GRID)
    assert pooled.tokens_per_frame == [144] * 8
    # the first two pooled tokens of frame 0: 2x2 blocks over rows 0-1, columns 0-1 and 2-3
    corner = x[0].view(24, 24, 64)[:2, :4].reshape(2, 2, 2, 64)    # (row, block, column, D)
    torch.testing.assert_close(pooled.tokens[:2], corner.mean(dim=(0, 2)))
    assert torch.equal(ConcatReducer()(x, GRID).tokens, x.reshape(-1, 64))


# ------------------------------------------------------------------ registry and contract


def test_registry():
    assert {"dyto", "slowfast", "uniform", "concat"} <= set(list_reducers())
    assert isinstance(build_reducer("dyto", budget=100), DyToReducer)
    with pytest.raises(ValueError, match="known reducers: .*dyto"):
        build_reducer("tome")


def test_jsonargparse_builds_from_class_path():
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--reducer", type=TokenReducer)
    cfg = parser.parse_object({"reducer": {"class_path": "dyto.reduction.DyToReducer",
                                           "init_args": {"budget": 2000}}})
    reducer = parser.instantiate_classes(cfg).reducer
    assert isinstance(reducer, DyToReducer) and reducer.budget == 2000


def small_input(name, seed=0, dtype=torch.float32):
    reducer = build_reducer(name)
    return reducer, feats(reducer.num_frames, seed=seed, dtype=dtype)


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_contract(name):
    reducer, x = small_input(name)
    out = reducer(x, GRID)
    assert isinstance(out, Reduction)
    assert out.tokens.ndim == 2 and out.tokens.shape[1] == 64
    assert sum(out.tokens_per_frame) == out.tokens.shape[0]
    assert out.frames_kept == sorted(set(out.frames_kept))
    assert all(0 <= f < x.shape[0] for f in out.frames_kept)
    config = reducer.config()
    assert config["name"] == name and config["num_frames"] == reducer.num_frames
    rebuilt = build_reducer(**config)
    assert torch.equal(rebuilt(x, GRID).tokens, out.tokens)           # determinism + round trip
    if name in ("dyto", "slowfast"):
        assert out.tokens.shape[0] <= 3680


@pytest.mark.parametrize("name", sorted(REDUCERS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_and_device_are_kept(name, dtype):
    reducer, x = small_input(name, seed=1, dtype=dtype)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        out = reducer(x.to(device), GRID)
        assert out.tokens.dtype == dtype and out.tokens.device.type == device


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_rejects_wrong_rank_and_grid(name):
    reducer = build_reducer(name)
    with pytest.raises(ValueError):
        reducer(torch.randn(576, 64), GRID)
    with pytest.raises(ValueError):
        reducer(torch.randn(0, 576, 64), GRID)
    with pytest.raises(ValueError):
        reducer(torch.randn(4, 576, 64), (24, 23))


def test_pixel_patch_features():
    pixels = torch.rand(3, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    out = pixel_patch_features(pixels, grid=6, dim=32)
    assert out.shape == (3, 36, 32)
    assert torch.equal(out, pixel_patch_features(pixels, grid=6, dim=32))
    same = pixel_patch_features(pixels[[0, 0]], grid=6, dim=32)
    assert torch.equal(same[0], same[1])
    with pytest.raises(ValueError):
        pixel_patch_features(pixels, dim=40)
    reduced = DyToReducer()(pixel_patch_features(pixels.repeat(4, 1, 1, 1)), GRID)
    assert reduced.tokens.shape[1] == 256


def test_dyto_accepts_large_fp16_features_and_rejects_nan_in_a_kept_frame():
    # fp16 is the default on CUDA; channels of magnitude 150 over 576 tokens would overflow a
    # per-channel fp16 sum, but they are finite and must not be reported as NaN/inf.
    x = feats(30, d=64, seed=3)
    x[:, :, 3] = 150.0
    red = DyToReducer(num_frames=30)
    out = red(x.half(), (24, 24))
    assert torch.isfinite(out.tokens).all()
    bad = x.clone()
    bad[out.frames_kept[-1], 200, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        red(bad, (24, 24))
