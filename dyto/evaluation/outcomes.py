"""Per-question outcomes of a finished run, scored the way its own evaluation scored it.

The paired tests of ``dyto compare`` and the intervals of ``dyto sweep`` need, for every
question, whether it was answered right (and the judge's score). This reads them back from a
run folder with the run's own scorer identity (``logs/results.json``: scorer, judge model and
temperature, prompt versions, multiple-choice parsing) through ``metrics.per_item``, so a
question is right here exactly when it counted as right in the run's headline accuracy:

* multiple choice: ``correct`` over the ``ok`` items (an unparsed answer is wrong), the
  reference denominator;
* judged (open-ended): the verdict of a reply whose score parsed (yes = right, no = wrong), as
  the reference's yes / (yes + no); unjudged or unparsable items have no outcome.

Items without an outcome carry the reason (their status, ``unjudged``, ...), so a comparison can
say which questions it dropped and why.

    from dyto.evaluation.outcomes import run_outcomes
    outcomes = run_outcomes(RunFolder("outputs/demo").load())
"""

from __future__ import annotations

from dataclasses import dataclass

from dyto.evaluation.metrics import per_item
from dyto.evaluation.report import saved_judgments
from dyto.runs import Run

__all__ = ["Outcome", "run_outcomes", "headline_outcomes"]


@dataclass(frozen=True)
class Outcome:
    kind: str                 # "choice" (multiple choice) | "judged" (GPT / match judged)
    correct: int | None       # 1 right, 0 wrong, None: no verdict (see ``why``)
    score: float | None       # the judge's score (mean over its dimensions); None for MC / no score
    why: str | None = None    # why there is no verdict: a failed status, "unjudged", "unparsable", ...


def run_outcomes(run: Run) -> dict[str, Outcome]:
    """id -> Outcome for every prediction of ``run``, with the scorer its results were made with
    (a run that was never evaluated: multiple choice parsed with the reference parser, judged
    items without an outcome)."""
    metrics = run.results.get("metrics") or {}
    scorer = run.results.get("scorer")
    judgments = saved_judgments(run.run_dir, scorer) if scorer else []
    items = per_item(run.predictions, judgments, judge_model=metrics.get("judge_model"),
                     prompt_versions=metrics.get("prompt_versions"),
                     choice_mode=metrics.get("choice_mode") or run.results.get("choice_mode") or "reference")
    out = {}
    for p in run.predictions:
        item, pid = items[str(p["id"])], str(p["id"])
        kind = "choice" if p.get("task") == "multiple_choice" else "judged"
        verdict, score = item["verdict"], item["score"]
        if p.get("status") != "ok":
            out[pid] = Outcome(kind, None, None, f"status {p.get('status')}")
        elif kind == "choice":
            out[pid] = Outcome(kind, int(verdict == "correct"), None)
        elif not scorer:
            out[pid] = Outcome(kind, None, None, "run not evaluated")
        elif verdict in ("yes", "no") and score is not None:
            out[pid] = Outcome(kind, int(verdict == "yes"), float(score))
        elif verdict in ("yes", "no", "judged"):  # VCGBench dimensions: a score, no yes/no
            out[pid] = Outcome(kind, None, None if score is None else float(score),
                               None if score is not None and verdict == "judged" else "reply without a score")
        else:
            out[pid] = Outcome(kind, None, None, str(verdict))
    return out


def headline_outcomes(outcomes: dict[str, Outcome]) -> tuple[str | None, dict[str, int]]:
    """(kind, id -> 0/1) behind the run's headline accuracy (``viz.headline_metric``): the
    multiple-choice items when there are any, else the judged ones; items without a verdict left out."""
    for kind in ("choice", "judged"):
        if any(o.kind == kind for o in outcomes.values()):
            return kind, {i: o.correct for i, o in outcomes.items() if o.kind == kind and o.correct is not None}
    return None, {}
