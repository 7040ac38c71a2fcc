"""Multiple-choice answer parsing: the reference rule (with its quirks) and saner alternatives.

Modes of :func:`parse_choice`:

* ``"reference"`` -- SF-LLaVA / DyTo ``map_prediction_to_option`` (docs/method.md §8.4,
  docs/datasets.md §4.1), reproduced exactly because it moves accuracy:
    1. the first character, if in ``abcdeABCDE``, is a provisional answer (so a free-text
       reply "a man is ..." reads as A);
    2. if ``"answer is "`` occurs, the text is cut at its first ``"answer is"``;
    3. the first of ``A:``/``A)``, ``B:``/``B)``, ... ``E:``/``E)`` present *in letter order*
       overrides step 1 (so ``"b: and A)"`` is A, not B).
  Two deliberate differences, neither of which changes an accuracy: an empty or non-string
  prediction returns None (the reference raises IndexError on ``""``), and a letter beyond
  ``num_options`` returns None (the reference would compare e.g. ``'e'`` with a 4-option
  answer and count it wrong, which is what None does too).
* ``"strict"`` -- only an explicit choice: a leading capital letter standing alone or followed
  by ``)``, ``.`` or ``:`` (optionally in parentheses), else an ``answer is X`` / ``answer: X``
  / ``option: X`` phrase anywhere.
* ``"videomme"`` -- the official VideoMME scorer rule: strip answer prefixes, then the first
  capital option letter anywhere (its "longer than 10 words without a letter" guard gives the
  same result as finding no letter).
* a benchmark's name (``"mvbench"``, ``"mlvu"``, ``"longvideobench"``) -- that benchmark's own
  rule, its spec's ``choice_rule`` (``dyto/datamodules/benchmarks/<name>.py``); the benchmark
  configs set it.
"""

from __future__ import annotations

import re

from dyto.datamodules.benchmarks import BENCHMARKS, find_benchmark

LETTERS = "ABCDEFGHIJ"
_REFERENCE_LETTERS = "ABCDE"
_VIDEOMME_PREFIXES = (
    "The best answer is", "The correct answer is", "The answer is", "The answer",
    "The best option is", "The correct option is", "Best answer:", "Best option:",
    "Answer:", "Option:", "The correct answer", "The correct option",
)


def _reference(text: str) -> int | None:
    choice = None
    if text[0] in "abcdeABCDE":
        choice = _REFERENCE_LETTERS.index(text[0].upper())
    if "answer is " in text:
        text = text[text.index("answer is"):]
    for i, letter in enumerate(_REFERENCE_LETTERS):
        if f"{letter}:" in text or f"{letter})" in text:
            return i
    return choice


def _strict(text: str, letters: str) -> int | None:
    text = text.strip()
    lead = re.match(rf"^\(?([{letters}])(?:\)|\.|:|\s*$)", text)
    if lead is None:
        lead = re.search(rf"(?:answer is|answer:|option:|option is)\s*\(?([{letters}])\b", text, re.IGNORECASE)
        if lead is not None and lead.group(1).upper() != lead.group(1):
            lead = None  # a lower-case word after "answer is" ("answer is a dog") is not a letter
    return letters.index(lead.group(1)) if lead else None


def _videomme(text: str, letters: str) -> int | None:
    text = text.strip()
    for prefix in _VIDEOMME_PREFIXES:
        text = text.replace(prefix, "")
    match = re.search(f"[{letters}]", text)  # the official ">10 words" guard only matters without a match
    return letters.index(match.group(0)) if match else None


CHOICE_MODES = ("reference", "strict", "videomme")  # besides the benchmarks' own rules: choice_modes()


def choice_modes() -> tuple[str, ...]:
    """Every mode :func:`parse_choice` takes: the three above, then each registered benchmark with a
    ``choice_rule``, by name."""
    return CHOICE_MODES + tuple(sorted(n for n, spec in BENCHMARKS.items() if spec.choice_rule is not None))


def parse_choice(text: str | None, num_options: int, mode: str = "reference") -> int | None:
    """The 0-based option a model's reply selects, or None when it selects none of the
    ``num_options`` options (an unparsed reply is counted wrong, never dropped)."""
    if not isinstance(text, str) or not text:
        return None
    if not 1 <= num_options <= len(LETTERS):
        raise ValueError(f"num_options must be in 1..{len(LETTERS)}, got {num_options}")
    letters = LETTERS[:num_options]
    if mode == "reference":
        choice = _reference(text)
    elif mode == "strict":
        choice = _strict(text, letters)
    elif mode == "videomme":
        choice = _videomme(text, letters)
    elif (spec := find_benchmark(mode)) is not None and spec.choice_rule is not None:
        choice = spec.choice_rule(text, num_options)
    else:
        raise ValueError(f"unknown parse mode {mode!r}; expected one of {', '.join(choice_modes())}")
    return choice if choice is not None and choice < num_options else None
