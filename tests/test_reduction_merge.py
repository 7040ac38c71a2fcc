"""Bipartite merging (docs/method.md §5.2) on hand-checkable inputs, plus its invariants.

Hand cases use C = 32 with every token a 2-vector v tiled 16 times: the 16-chunk metric of such a
token is exactly v / |v|, and the reductions act on v, so the results can be worked out on paper.
"""

import pytest
import torch

from dyto.reduction import bipartite_merge, merge_with_assignment
from dyto.reduction.merge import effective_r


pytestmark = pytest.mark.usefixtures("one_thread")


def tok(*v):
    """Token [32] whose 16 channel chunks all equal v (a 2-vector)."""
    return torch.tensor(v, dtype=torch.float64).repeat(16)


def toks(*vs):
    return torch.stack([tok(*v) for v in vs])


# Four tokens: A = (x0, x1), B = (x2, x3). Cosines: x0.x2 = 0.995, x0.x3 = 0.196,
# x1.x2 = 0.982, x1.x3 = 0.470, so x0 is the best match (into x2), then x1 (also into x2).
FOUR = toks((2, 0), (1, 0.3), (1, 0.1), (0.2, 1))


@pytest.mark.parametrize("reduce,merged", [("amax", (2, 0.1)), ("mean", (1.5, 0.05)),
                                           ("sum", (1.5, 0.05))])
def test_one_step_by_hand(reduce, merged):
    out = bipartite_merge(FOUR, 1, reduce)
    # [unmerged A: x1] ++ [B: x2 (with x0 merged in), x3]
    torch.testing.assert_close(out, toks((1, 0.3), merged, (0.2, 1)))


@pytest.mark.parametrize("reduce,final", [
    ("amax", (2, 0.3)),             # max((1, .3), (2, .1))
    ("mean", (1.25, 0.175)),        # sizes were mean-reduced to 1: ((1, .3) + (1.5, .05)) / 2
    ("sum", (4 / 3, 0.4 / 3)),      # ToMe: ((1, .3) * 1 + (1.5, .05) * 2) / 3
])
def test_two_steps_carry_sizes(reduce, final):
    # step 1 -> [x1, m(x0, x2), x3]; step 2: A = [x1], B = [m, x3]; x1 merges into m
    out = bipartite_merge(FOUR, [1, 1], reduce)
    torch.testing.assert_close(out, toks(final, (0.2, 1)))


def test_unmerged_tokens_come_in_descending_score_order():
    # A = (a0, a1, a2), B = (b0, b1, b2). Best scores: a2 (identical to b0) > a1 > a0.
    x = toks((1, 0.9), (1, 0.2), (1, 0), (1, 0), (0, 1), (-1, 0.5))
    out = bipartite_merge(x, 1, "amax")
    torch.testing.assert_close(out, toks((1, 0.2), (1, 0.9), (1, 0), (0, 1), (-1, 0.5)))
    out2 = bipartite_merge(x, 2, "amax")       # a1 also goes into b0: max((1, .2), (1, 0))
    torch.testing.assert_close(out2, toks((1, 0.9), (1, 0.2), (0, 1), (-1, 0.5)))


def test_assignment_maps_inputs_to_outputs():
    out, assignment = merge_with_assignment(FOUR, [1, 1], "amax")
    assert assignment.tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(out, bipartite_merge(FOUR, [1, 1], "amax"))
    x = torch.randn(31, 64, generator=torch.Generator().manual_seed(0))
    out, assignment = merge_with_assignment(x, [10, 5])
    assert out.shape[0] == 31 - 15 and set(assignment.tolist()) == set(range(16))


@pytest.mark.parametrize("r", [0, -5, [], [0, -1]])
def test_nonpositive_r_is_identity(r):
    x = torch.randn(3, 10, 32)
    assert torch.equal(bipartite_merge(x, r), x)


def test_r_is_clamped_to_half():
    x = torch.randn(2, 9, 32)
    assert torch.equal(bipartite_merge(x, 100), bipartite_merge(x, 4))
    assert bipartite_merge(x, [100, 100, 100]).shape == (2, 2, 32)   # 9 -> 5 -> 3 -> 2
    assert effective_r(9, [100, 100, 100]) == [4, 2, 1]
    assert effective_r(575, [288, 5]) == [287, 5]
    assert bipartite_merge(torch.randn(1, 32), 3).shape == (1, 32)    # t//2 = 0: nothing to do


def test_batched_equals_per_frame_and_is_deterministic():
    x = torch.randn(6, 101, 64, generator=torch.Generator().manual_seed(1))
    for reduce in ("amax", "mean", "sum"):
        batched = bipartite_merge(x, [40, 20], reduce)
        assert torch.equal(batched, bipartite_merge(x, [40, 20], reduce))
        single = torch.stack([bipartite_merge(frame, [40, 20], reduce) for frame in x])
        torch.testing.assert_close(batched, single, rtol=0, atol=1e-6)


def test_float32_and_float64_agree():
    x = torch.randn(4, 575, 128, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for reduce in ("amax", "sum"):
        wide = bipartite_merge(x, [287, 60], reduce)
        narrow = bipartite_merge(x.float(), [287, 60], reduce)
        assert narrow.dtype == torch.float32
        torch.testing.assert_close(narrow.double(), wide, rtol=0, atol=1e-5)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="divisible by 16"):
        bipartite_merge(torch.randn(4, 8, 40), 1)
    with pytest.raises(ValueError, match="reduce"):
        bipartite_merge(torch.randn(4, 8, 32), 1, "max")
    with pytest.raises(ValueError, match=r"\[t, C\]"):
        bipartite_merge(torch.randn(32), 1)
    with pytest.raises(ValueError, match=r"\[t, C\]"):
        merge_with_assignment(torch.randn(2, 4, 32), 1)
