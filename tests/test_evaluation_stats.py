"""dyto.evaluation.stats against hand-computed cases."""

from math import comb

import pytest

from dyto.evaluation.stats import (bootstrap_mean, mcnemar_exact, mcnemar_exact_counts,
                                   paired_bootstrap, percent_of_baseline)


def test_mcnemar_hand_computed():
    # b=1, c=9: 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024
    assert mcnemar_exact_counts(1, 9) == 0.021484375 == mcnemar_exact_counts(9, 1)
    assert mcnemar_exact_counts(0, 6) == 2 / 64
    assert mcnemar_exact_counts(0, 0) == 1.0
    assert mcnemar_exact_counts(5, 5) == 1.0                       # 2 * P(X <= 5) > 1: capped
    assert mcnemar_exact_counts(3, 4) == 1.0
    assert mcnemar_exact_counts(2, 8) == 2 * (1 + 10 + 45) / 1024
    # large counts stay exact (no float underflow of 2^-n)
    p = mcnemar_exact_counts(400, 600)
    assert p == pytest.approx(2 * sum(comb(1000, k) for k in range(401)) / 2 ** 1000, rel=1e-12)
    assert 0 < p < 1e-9


def test_mcnemar_from_paired_outcomes():
    a = [1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1, 1]
    b = [1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    result = mcnemar_exact(a, b)
    assert (result.only_a, result.only_b, result.both, result.neither) == (7, 1, 2, 2)
    assert result.discordant == 8
    assert result.p_value == 2 * (1 + 8) / 2 ** 8
    assert mcnemar_exact([True, False], [True, False]).p_value == 1.0


@pytest.mark.parametrize("a,b,match", [([1, 0], [1], "same number"), ([], [], "no paired"),
                                       ([1, 2], [1, 0], "binary"),
                                       ([1, float("nan")], [1, 0], "finite")])
def test_mcnemar_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        mcnemar_exact(a, b)


def test_paired_bootstrap_known_answers():
    a = [0.2, 0.5, 0.9, 0.4]
    same = paired_bootstrap(a, a, resamples=500)
    assert same.estimate == 0.0 and same.interval == (0.0, 0.0)
    shifted = paired_bootstrap([x + 0.25 for x in a], a, resamples=500)   # constant difference
    assert shifted.estimate == pytest.approx(0.25)
    assert shifted.interval == pytest.approx((0.25, 0.25))
    # differences 1 and 0: a resampled mean of 2 is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4
    two = paired_bootstrap([1, 0], [0, 0], resamples=20_000, seed=3)
    assert two.estimate == 0.5 and two.interval == (0.0, 1.0)
    x = [((i * 37) % 101) / 101 for i in range(60)]
    y = [((i * 53) % 97) / 97 for i in range(60)]
    assert paired_bootstrap(x, y, resamples=300, seed=7) == paired_bootstrap(x, y, resamples=300, seed=7)
    assert paired_bootstrap(x, y, resamples=300, seed=7).interval != \
        paired_bootstrap(x, y, resamples=300, seed=8).interval


def test_paired_bootstrap_interval_covers_a_clear_difference():
    a = [1] * 70 + [0] * 30
    b = [1] * 50 + [0] * 50                  # A is right on 20 questions B gets wrong
    result = paired_bootstrap(a, b, resamples=4000, seed=0)
    assert result.estimate == pytest.approx(0.2)
    low, high = result.interval
    assert 0.1 < low < 0.2 < high < 0.3 and result.confidence == 0.95


def test_bootstrap_mean_and_percent_of_baseline():
    result = bootstrap_mean([1, 0], resamples=20_000, seed=1)
    assert result.estimate == 0.5 and result.interval == (0.0, 1.0)
    assert bootstrap_mean([3.0] * 5).interval == (3.0, 3.0)
    assert percent_of_baseline(45.0, 60.0) == 75.0
    with pytest.raises(ValueError, match="baseline"):
        percent_of_baseline(1.0, 0.0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean([1, 2], confidence=1.0)
