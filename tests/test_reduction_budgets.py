"""Matched budgets: every registered reducer takes ``target_tokens`` / ``retention``.

Reducers with ``exact_budget`` must emit exactly the target (inside the range their docstring
promises); the others at most the target. ``output_tokens`` must agree with what is emitted
whenever it claims to know the count in advance.
"""

import pytest
import torch

from dyto.reduction import REDUCERS, DyToReducer, SlowFastReducer, build_reducer
from dyto.reduction.dyto import exact_schedule, target_groups
from dyto.reduction.merge import effective_r

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = (24, 24)
T = 12


def feats(t, n=576, d=64, seed=0):
    return torch.randn(t, n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("retention", [0.4, 0.65])
@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_budget_is_met(name, retention):
    x = feats(T, seed=1)
    target = round(retention * T * 576)
    for reducer in (build_reducer(name, num_frames=T, target_tokens=target),
                    build_reducer(name, num_frames=T, retention=retention)):
        out = reducer(x, GRID)
        length = out.tokens.shape[0]
        assert length == sum(out.tokens_per_frame) == out.positions.shape[0]
        if reducer.exact_budget:
            assert length == target, (name, length, target)
        else:
            assert 0 < length <= target, (name, length, target)
        known = reducer.output_tokens(T, GRID)
        assert known is None or known == length
        assert build_reducer(**reducer.config())(x, GRID).tokens.shape[0] == length


@pytest.mark.parametrize("target", [1, 5, 13, 100])
@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_a_target_below_a_methods_floor_is_an_error_never_an_overshoot(name, target):
    """Tiny targets (below one token per frame, below one frame): a reducer meets them (exactly or
    at most) or raises ValueError naming its floor; it never emits more than it was asked for."""
    x = feats(T, seed=3)
    reducer = build_reducer(name, num_frames=T, target_tokens=target)
    try:
        out = reducer(x, GRID)
    except ValueError as e:
        assert str(target) in str(e), e  # the message names the target it cannot meet
        return
    length = out.tokens.shape[0]
    assert (length == target) if reducer.exact_budget else (0 < length <= target), (name, length, target)


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_budget_knobs_are_validated(name):
    with pytest.raises(ValueError, match="not both"):
        build_reducer(name, target_tokens=100, retention=0.5)
    with pytest.raises(ValueError, match="retention"):
        build_reducer(name, retention=1.5)
    with pytest.raises(ValueError, match="target_tokens"):
        build_reducer(name, target_tokens=0)


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_output_tokens_on_other_grids(name):
    for grid in [(14, 14), (16, 16)]:
        reducer = build_reducer(name, num_frames=8)
        out = reducer(feats(8, grid[0] * grid[1], seed=2), grid)
        known = reducer.output_tokens(8, grid)
        assert known is None or known == out.tokens.shape[0]


def test_defaults_are_untouched():
    assert DyToReducer().output_tokens(100, GRID) is None        # depends on the clustering
    assert SlowFastReducer().output_tokens(50, GRID) == 3680
    assert build_reducer("uniform", pool=2).output_tokens(8, GRID) == 8 * 144
    assert build_reducer("concat").output_tokens(100, GRID) == 57600


def test_dyto_exact_schedule_and_groups():
    assert exact_schedule(575, 147) == [287, 141]                 # the reference's 25-frame steps
    assert effective_r(575, exact_schedule(575, 368)) == [207]
    assert exact_schedule(575, 1) == [287, 144, 72, 36, 18, 9, 4, 2, 1, 1]   # half at most
    assert target_groups(list(range(25)), 575, 3680) == [(list(range(5)), 148),
                                                          (list(range(5, 25)), 147)]
    assert target_groups([3, 9, 20], 575, 2) == [([3, 20], 1)]
    assert target_groups([3, 9], 575, 5000) == [([3, 9], 575)]


def test_dyto_target_3680_on_25_keyframes():
    # pycv2 (finest partition) keeps 25 frames of random features (the cap)
    out = DyToReducer(variant="pycv2", target_tokens=3680)(feats(100, seed=5), GRID)
    reference = DyToReducer(variant="pycv2")(feats(100, seed=5), GRID)
    assert out.frames_kept == reference.frames_kept and len(out.frames_kept) == 25
    assert out.tokens.shape[0] == 3680 and reference.tokens.shape[0] == 3675
    assert out.tokens_per_frame == [148] * 5 + [147] * 20
    assert out.positions[:, 0].tolist() == sorted(out.positions[:, 0].tolist())  # time order
    # the 147-token frames use the reference's own steps: identical tokens
    torch.testing.assert_close(out.tokens[-147 * 20:], reference.tokens[-147 * 20:], rtol=0, atol=0)


def test_slowfast_budget_mode():
    x = feats(50, seed=6)
    same = SlowFastReducer(target_tokens=3680)(x, GRID)
    torch.testing.assert_close(same.tokens, SlowFastReducer()(x, GRID).tokens, rtol=0, atol=0)
    out = SlowFastReducer(target_tokens=1805)(x, GRID)          # 800 fast + 1005 slow = 10*100 + 5
    assert out.tokens_per_frame[:10] == [101] * 5 + [100] * 5
    with pytest.raises(ValueError, match="fast_grid"):
        SlowFastReducer(target_tokens=805)(x, GRID)
    assert SlowFastReducer(target_tokens=10 ** 6)(x, GRID).tokens.shape[0] == 10 * 576 + 800
