"""parse_choice: golden cases for the reference quirks, the strict and the VideoMME modes."""

import pytest

from dyto.evaluation.choice import parse_choice

REFERENCE = [
    ("B) tap their feet", 5, 1),
    ("B", 5, 1),
    ("b: and A)", 5, 0),  # a later letter's marker in A..E order overrides the first character
    ("a man plays the guitar", 5, 0),  # lower-case first letter quirk: free text read as A
    ("the man plays", 5, None),  # 't' is no option letter and no marker follows
    ("C is cooking.", 5, 2),
    ("I think the answer is D) because E) is wrong", 5, 3),
    ("E) x", 5, 4),
    ("D: the three kinds", 4, 3),
    ("E) x", 4, None),  # a letter beyond num_options is no option
    ("Eating A)", 4, 0),
    ("", 5, None),  # the reference raises IndexError here
    (None, 5, None),
    ("The answer is (C)", 5, 2),  # "(C)" contains the marker "C)"
]


@pytest.mark.parametrize("text,n,expected", REFERENCE)
def test_reference_quirks(text, n, expected):
    assert parse_choice(text, n) == expected


def test_reference_cuts_at_answer_is():
    # "A)" before "answer is " is cut away, so B's marker after it wins.
    assert parse_choice("Not A) -- the answer is B) dog", 5) == 1
    # no space after "answer is": no cut, so A) wins by letter order
    assert parse_choice("Not A) -- the answer isB) dog", 5) == 0


@pytest.mark.parametrize("text,n,expected", [
    ("B) tap", 5, 1), ("(C) x", 5, 2), ("D.", 4, 3), ("A", 5, 0), ("A man walks", 5, None),
    ("a man walks", 5, None), ("The answer is C.", 5, 2), ("answer: (B)", 5, 1),
    ("The answer is a dog", 5, None), ("E) no", 4, None), ("", 5, None),
])
def test_strict(text, n, expected):
    assert parse_choice(text, n, mode="strict") == expected


@pytest.mark.parametrize("text,n,expected", [
    ("The best answer is C.", 4, 2), ("Answer: B", 4, 1), ("none of these options fit well here at all sadly", 4, None),
    ("(D) candles", 4, 3),
])
def test_videomme(text, n, expected):
    assert parse_choice(text, n, mode="videomme") == expected


def test_bad_arguments():
    with pytest.raises(ValueError):
        parse_choice("A", 5, mode="nope")
    with pytest.raises(ValueError):
        parse_choice("A", 0)
