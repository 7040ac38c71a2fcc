"""``Reduction.positions`` (docs/internals.md, "Seams"): (frame, row, col) of every output token.

Every registered reducer is checked for shape, bounds and agreement with ``frames_kept`` on
several grids; each reducer also has a hand-made case whose positions are known exactly.
"""

import pytest
import torch

from dyto.reduction import (REDUCERS, ConcatReducer, DyToReducer, SlowFastReducer,
                            UniformReducer, build_reducer)

pytestmark = pytest.mark.usefixtures("one_thread")


def feats(t, n, d=64, seed=0):
    return torch.randn(t, n, d, generator=torch.Generator().manual_seed(seed))


def check_positions(out, t, grid):
    pos = out.positions
    assert pos is not None and pos.dtype == torch.long
    assert pos.shape == (out.tokens.shape[0], 3) and pos.device == out.tokens.device
    h, w = grid
    assert bool((pos >= 0).all()) and bool((pos[:, 0] < t).all())
    assert bool((pos[:, 1] < h).all()) and bool((pos[:, 2] < w).all())
    assert sorted(set(pos[:, 0].tolist())) == out.frames_kept
    assert out.input_frames == t                     # the unreduced video's length (Seams)
    if out.keep_input_positions:                     # input positions need distinct cells
        assert len(set(map(tuple, pos.tolist()))) == len(pos)


@pytest.mark.parametrize("grid", [(24, 24), (14, 14), (16, 16)])
@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_positions_contract(name, grid):
    reducer = build_reducer(name)
    t = min(reducer.num_frames, 12)
    x = feats(t, grid[0] * grid[1], seed=3)
    out = reducer(x, grid)
    check_positions(out, t, grid)


def test_dyto_positions_hand_made():
    # one 3x3 frame, token 0 dropped: A = cells 1-4, B = cells 5-8; budget 6 -> r = 3.
    # Cells 1, 3, 4 copy B cells 6, 7, 8, cell 2 is orthogonal to all: it is the one A token
    # that survives, first in the output, then B in order.
    x = torch.zeros(1, 9, 256)                      # 16 chunks of 16: chunk 0 carries the signal
    for cell in range(5, 9):
        x[0, cell, cell] = 1.0
    x[0, 1], x[0, 3], x[0, 4] = x[0, 6], x[0, 7], x[0, 8]
    x[0, 2, 0] = 1.0
    out = DyToReducer(budget=6, num_frames=1)(x, (3, 3))
    assert out.positions.tolist() == [[0, 0, 2], [0, 1, 2], [0, 2, 0], [0, 2, 1], [0, 2, 2]]


def test_dyto_positions_follow_the_tokens():
    # amax merging: a kept A token equals its own cell; a B token is >= its own cell everywhere
    x = feats(30, 576, seed=4)
    out = DyToReducer(num_frames=30)(x, (24, 24))
    f, r, c = out.positions.unbind(1)
    own = x[f, r * 24 + c]                                      # [L, D]
    assert bool((out.tokens >= own).all())
    assert len(set(zip(f.tolist(), (r * 24 + c).tolist()))) == out.tokens.shape[0]


def test_slowfast_positions_hand_made():
    out = SlowFastReducer(num_frames=2, slow_frames=1, fast_grid=2)(feats(2, 8), (2, 4))
    slow = [[0, 0, 0], [0, 0, 2], [0, 1, 0], [0, 1, 2]]        # first cell of each raster pair
    fast = [[f, r, c] for f in (0, 1) for r in (0, 1) for c in (0, 2)]
    assert out.positions.tolist() == slow + fast
    # adaptive windows 4 -> 3 start at floor(i*4/3) = 0, 1, 2
    out = SlowFastReducer(num_frames=1, slow_frames=1, fast_grid=3)(feats(1, 16), (4, 4))
    assert out.positions[8:].tolist() == [[0, r, c] for r in (0, 1, 2) for c in (0, 1, 2)]


def test_uniform_and_concat_positions_hand_made():
    out = UniformReducer(num_frames=1, pool=2)(feats(1, 24), (4, 6))
    assert out.positions.tolist() == [[0, r, c] for r in (0, 2) for c in (0, 2, 4)]
    x = feats(2, 4)
    out = ConcatReducer(num_frames=2)(x, (2, 2))
    assert out.positions.tolist() == [[f, r, c] for f in (0, 1) for r in (0, 1) for c in (0, 1)]
    f, r, c = out.positions.unbind(1)
    assert torch.equal(out.tokens, x[f, r * 2 + c])
