"""Paired tests of one run against a baseline run on the same questions (for `dyto compare`).

Questions are paired by id. Each run's per-question outcome is read with its own scorer identity
(``outcomes.run_outcomes``: what counted as right in its headline accuracy), and a question
enters a test only when both runs have an outcome for it; every question left out is listed
with the reason (only in one run, a failed status, unjudged, different task, ...).

* multiple choice: exact McNemar test (``stats.mcnemar_exact``) on right/wrong, with
  b = right only in the baseline, c = right only in the run;
* judged accuracy (yes = 1, no = 0) and the judge's score: paired bootstrap of
  mean(run) - mean(baseline), a 95% percentile interval with the questions resampled together
  (``stats.paired_bootstrap``); accuracy differences are in percentage points.

Judged tests need both runs judged by the same judge (model, temperature, prompt versions);
otherwise they are skipped with that reason.
"""

from __future__ import annotations

from typing import Any

from dyto.evaluation.outcomes import run_outcomes
from dyto.evaluation.stats import mcnemar_exact, paired_bootstrap
from dyto.runs import Run

__all__ = ["paired_comparison", "render_paired"]


def _judge(run: Run) -> tuple[Any, Any]:
    m = run.results.get("metrics") or {}
    return m.get("judge_model"), m.get("prompt_versions")


def paired_comparison(base: Run, run: Run, resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """The paired tests of ``run`` against ``base`` as plain data (see the module docstring)."""
    nb, nr = base.run_dir.name, run.run_dir.name
    ob, orun = run_outcomes(base), run_outcomes(run)
    dropped: dict[str, str] = {}
    for i in ob:
        if i not in orun:
            dropped[i] = f"only in {nb}"
    for i in orun:
        if i not in ob:
            dropped[i] = f"only in {nr}"
    common = [i for i in ob if i in orun]
    same_judge = _judge(base) == _judge(run)
    choice_a, choice_b, acc_a, acc_b, score_a, score_b = [], [], [], [], [], []
    for i in common:
        a, b = ob[i], orun[i]
        if a.kind != b.kind:
            dropped[i] = "multiple choice in one run, judged in the other"
            continue
        if a.kind == "judged" and not same_judge:
            dropped[i] = "judged by different judges"
            continue
        used = False
        if a.correct is not None and b.correct is not None:
            xs, ys = (choice_a, choice_b) if a.kind == "choice" else (acc_a, acc_b)
            xs.append(a.correct), ys.append(b.correct)
            used = True
        if a.score is not None and b.score is not None:
            score_a.append(a.score), score_b.append(b.score)
            used = True
        if not used:
            why = [f"{a.why} in {nb}" if a.why else None, f"{b.why} in {nr}" if b.why else None]
            dropped[i] = "; ".join(w for w in why if w) or "no outcome"
    out: dict[str, Any] = {"baseline": nb, "run": nr, "questions": len(set(ob) | set(orun)),
                           "paired": len(common) - sum(1 for i in common if i in dropped),
                           "dropped": dropped, "same_judge": same_judge, "mcnemar": None,
                           "judged_accuracy": None, "score": None}
    if choice_a:
        m = mcnemar_exact(choice_a, choice_b)
        out["mcnemar"] = {"items": len(choice_a), "both": m.both, "only_baseline": m.only_a,
                          "only_run": m.only_b, "neither": m.neither, "p_value": m.p_value}
    for key, xs, ys, scale in (("judged_accuracy", acc_b, acc_a, 100.0), ("score", score_b, score_a, 1.0)):
        if xs:
            r = paired_bootstrap(xs, ys, resamples=resamples, seed=seed)
            out[key] = {"items": len(xs), "difference": scale * r.estimate, "low": scale * r.interval[0],
                        "high": scale * r.interval[1], "resamples": resamples, "seed": seed}
    return out


def _diff(d: dict[str, Any] | None, digits: int) -> str:
    if not d:
        return "–"
    return f"{d['difference']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}] (n={d['items']})"


def render_paired(results: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: one row per run against the baseline, then the questions left out."""
    if not results:
        return []
    base = results[0]["baseline"]
    lines = ["", f"## Paired tests against `{base}`", "",
             "Questions paired by id, each scored as in its run's own results. McNemar (multiple choice, exact, "
             "two-sided): both right / only the baseline right (b) / only this run right (c) / both wrong. "
             "Judged accuracy (percentage points) and score: mean(run) - mean(baseline) with a 95% paired "
             "bootstrap interval.", "",
             "| run | paired questions | McNemar both / b / c / neither | exact p | judged accuracy, run - baseline "
             "[95% CI] | score, run - baseline [95% CI] |", "|---|---|---|---|---|---|"]
    for r in results:
        m = r["mcnemar"]
        counts = f"{m['both']} / {m['only_baseline']} / {m['only_run']} / {m['neither']}" if m else "–"
        p = f"{m['p_value']:.4g}" if m else "–"
        lines.append(f"| {r['run']} | {r['paired']} of {r['questions']} | {counts} | {p} | "
                     f"{_diff(r['judged_accuracy'], 1)} | {_diff(r['score'], 2)} |")
    left = [r for r in results if r["dropped"]]
    if left:
        lines += ["", "Questions left out of the paired tests:", ""]
        for r in left:
            shown = ", ".join(f"`{i}` ({why})" for i, why in list(r["dropped"].items())[:20])
            more = f" and {len(r['dropped']) - 20} more" if len(r["dropped"]) > 20 else ""
            lines.append(f"- {r['run']}: {len(r['dropped'])}: {shown}{more}")
    return lines
