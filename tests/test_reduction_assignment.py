"""Every registered reducer reports its keep/merge assignment (docs/internals.md, "Reductions with
extra per-token tensors"), and the assignment is what the reducer did.

Not circular: the reducers compute their tokens with their own code; the assignment only says
which input tokens each output token came from, with which weights or as a max. Applying it to
the input features must give back ``Reduction.tokens``, which only holds if the sources, the
weights and the op are right for every token. Extra tensors of another width then come out
``[L, E]``, row for row with the tokens.
"""

import pytest
import torch

from dyto.reduction import REDUCERS, Assignment, build_reducer

pytestmark = pytest.mark.usefixtures("one_thread")

GRIDS = [(6, 6), (14, 14)]


def scenes(t, grid, d=32, seed=0):
    """Two scenes with still and moving cells, so segmenting, static and merging paths all run."""
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    out = []
    for length in (t // 2, t - t // 2):
        base = torch.randn(n, d, generator=g) + 2 * torch.randn(1, d, generator=g)
        still = torch.rand(n, 1, generator=g) < 0.5
        for _ in range(length):
            out.append(base + torch.randn(n, d, generator=g) * torch.where(still, 0.05, 0.8))
    return torch.stack(out)


# a matched budget every reducer can meet on both grids at 16 frames: DyCoke's TTM keeps 5 of 16
# frames whole (a floor of ~31%), SlowFast's fast pathway alone is 16 x 4 x 4 tokens
RETENTION = {"dycoke": 0.5, "slowfast": 0.5}
CASES = [(name, params) for name in sorted(REDUCERS) for params in ({}, {"retention": RETENTION.get(name, 0.25)})]


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("name, params", CASES,
                         ids=[f"{n}-{'default' if not p else 'r' + str(p['retention'])}" for n, p in CASES])
def test_the_assignment_reproduces_the_tokens(name, params, grid):
    reducer = build_reducer(name, **params)
    assert reducer.assigns
    t = min(reducer.num_frames, 16)
    reducer.num_frames = t
    x = scenes(t, grid)
    out = reducer(x, grid)
    a = out.assignment
    assert isinstance(a, Assignment) and a.size == out.tokens.shape[0]
    n = grid[0] * grid[1]
    assert bool((a.sources >= 0).all()) and bool((a.sources < t * n).all())
    assert torch.equal(torch.bincount(a.rows, minlength=a.size) > 0, torch.ones(a.size, dtype=torch.bool))
    # every token is a copy, an average (weights summing to 1) or an element-wise max
    sums = torch.zeros(a.size).index_add_(0, a.rows, a.weights)
    assert torch.allclose(sums[~a.amax], torch.ones(int((~a.amax).sum())), atol=1e-5)
    torch.testing.assert_close(a.apply(x), out.tokens, rtol=1e-5, atol=1e-5)
    # a copied token sits at its source's cell (Reduction.positions)
    counts = torch.bincount(a.rows, minlength=a.size)
    single = (counts[a.rows] == 1) & (a.weights == 1)
    f, r, c = out.positions[a.rows[single]].unbind(1)
    cells = f * n + r * grid[1] + c
    moved = cells != a.sources[single]
    assert not bool(moved.any()), f"{int(moved.sum())} copied tokens are not at their source's cell"
    # extra tensors of another width follow row for row
    extras = (torch.randn(t, n, 8, generator=torch.Generator().manual_seed(1)), x[..., :5].clone())
    out.reduce_extras(extras)
    assert [e.shape for e in out.extras] == [(a.size, 8), (a.size, 5)]
    torch.testing.assert_close(out.extras[1], out.tokens[:, :5], rtol=1e-5, atol=1e-5)


def test_bf16_copies_are_exact_and_composition_works():
    x = torch.randn(4, 9, 16).to(torch.bfloat16)
    out = build_reducer("concat", num_frames=4, target_tokens=18)(x, (3, 3))
    assert torch.equal(out.assignment.apply(x), out.tokens)
    pool = Assignment.groups(torch.tensor([[0, 1], [2, 3]]))                 # means of pairs
    pick = Assignment.select(torch.tensor([1]))
    assert torch.equal(pick.compose(pool).apply(torch.arange(4.0)[:, None]), torch.tensor([[2.5]]))
    maxed = Assignment.groups(torch.tensor([[0, 1], [2, 3]]), amax=True)
    with pytest.raises(ValueError, match="compose"):
        Assignment.groups(torch.tensor([[0, 1]])).compose(maxed)
    assert torch.equal(pick.compose(maxed).apply(torch.arange(4.0)[:, None]), torch.tensor([[3.0]]))
