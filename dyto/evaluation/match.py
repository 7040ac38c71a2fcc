"""Offline string-match scorer: a clearly labelled stand-in for the GPT judge, NOT the protocol.

When no judge is configured (no key, no base URL, no network) a run still deserves a number:
this scorer produces judgment-like records from normalised string matching, tagged with
``judge_model = "match (offline, not GPT)"`` so that no report can pass them off as GPT-judged
numbers. It is strict (a paraphrase scores 0), so it is a rough lower bound for open-ended QA.

Rules, on text lower-cased, stripped of punctuation and of the articles a/an/the:
* open-ended: verdict ``yes`` and score 5 when prediction == answer, ``yes`` and score 3 when
  the answer occurs as a whole-word phrase inside the prediction, else ``no`` and 0;
* VCGBench dimensions: score = round(5 x token F1 between prediction and answer) (consistency:
  the mean over both predictions).
"""

from __future__ import annotations

import re
import string
from typing import Any, Iterable

from dyto.evaluation.protocol import input_hash, judge_inputs

MATCH_MODEL = "match (offline, not GPT)"
MATCH_CACHE_FILE = "judgments.match.jsonl"  # under eval_save_dir/, beside the GPT judge's cache
MATCH_VERSION = "match/v1"
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalise(text: str | None) -> str:
    words = _PUNCT.sub(" ", (text or "").lower()).split()
    return " ".join(w for w in words if w not in ("a", "an", "the"))


def _f1(pred: str, ref: str) -> float:
    p, r = normalise(pred).split(), normalise(ref).split()
    common = sum(min(p.count(w), r.count(w)) for w in set(p))
    if not p or not r or not common:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def match_one(dimension: str, fields: dict[str, Any]) -> tuple[str | None, int, str]:
    """(verdict, score, rule that fired) for one prediction and dimension."""
    if dimension == "default":
        pred, ans = normalise(fields["prediction"]), normalise(fields["answer"])
        if ans and pred == ans:
            return "yes", 5, "exact"
        if ans and re.search(rf"(?:^| ){re.escape(ans)}(?: |$)", pred):
            return "yes", 3, "contains"
        return "no", 0, "no match"
    f1 = _f1(fields["prediction"], fields["answer"])
    if dimension == "consistency":
        f1 = (f1 + _f1(fields["prediction2"], fields["answer"])) / 2
    return None, round(5 * f1), f"token F1 {f1:.3f}"


def match_judgments(predictions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Judgment records (the judgment record shape of docs/internals.md, plus the dimension) for every judged prediction."""
    out = []
    for pred in predictions:
        for dim, fields in judge_inputs(pred):
            verdict, score, rule = match_one(dim, fields)
            out.append({"id": str(pred["id"]), "dimension": dim, "judge_model": MATCH_MODEL,
                        "prompt_version": MATCH_VERSION,
                        "input_hash": input_hash(MATCH_MODEL, MATCH_VERSION, dim, fields),
                        "verdict": verdict, "score": score, "raw": rule, "status": "ok", "error": None})
    return out
