"""The sweep's table, JSON and picture, from the cell run folders on disk.

    write_sweep_report("outputs/sweep_demo", cells, num_frames=16, baseline="concat-unreduced")

One row per cell (see docs/reducers.md, "Comparing reducers"): reducer, budget knob and value,
visual tokens per question (mean [min, max] over the ok items), items ok / failed, the headline
accuracy with its 95% percentile-bootstrap interval (questions resampled; ``stats.bootstrap_mean``
over the per-question outcomes of ``outcomes.run_outcomes``, which reproduce the run's own
headline accuracy), the accuracy as a percentage of the baseline cell's, and the exact McNemar
test of each cell against the baseline on the multiple-choice questions both answered
(``paired.paired_comparison``, the test of ``dyto compare``): b = right in the baseline only,
c = right in the cell only, two-sided p.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dyto import viz
from dyto.evaluation.outcomes import headline_outcomes, run_outcomes
from dyto.evaluation.paired import paired_comparison
from dyto.evaluation.published import run_published
from dyto.evaluation.report import efficiency_summary
from dyto.evaluation.stats import bootstrap_mean, percent_of_baseline
from dyto.records import write_text_atomic
from dyto.reduction.dycoke import ttm_floor
from dyto.runs import RunFolder

__all__ = ["cell_summary", "sweep_rows", "render_sweep", "write_sweep_report"]


def _reducer_label(cell) -> str:
    def one(spec: str) -> str:
        name, _, params = spec.partition(":")
        return f"{name} ({params.replace(',', ', ')})" if params else name
    return " + ".join(one(part) for part in cell.label.split("+"))


def cell_summary(cell, run_dir: Path, resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """One cell's row as data: tokens, counts, accuracy with its interval (in %)."""
    run = RunFolder(run_dir).load()
    eff = efficiency_summary(run.predictions)
    ok = eff["items"]
    kind, correct = headline_outcomes(run_outcomes(run))
    accuracy = None
    if correct:
        b = bootstrap_mean(list(correct.values()), resamples=resamples, seed=seed)
        accuracy = {"estimate": 100 * b.estimate, "low": 100 * b.interval[0], "high": 100 * b.interval[1],
                    "items": len(correct), "kind": kind, "resamples": resamples, "seed": seed}
    stage = getattr(cell, "stage", None)
    return {"cell": cell.name, "reducer": cell.reducer.name, "label": _reducer_label(cell),
            "params": cell.reducer.config(), "knob": cell.knob, "value": cell.value,
            "inner_stage": None if stage is None else stage.config(), "match": getattr(cell, "match", "tokens"),
            "visual_target": getattr(cell, "visual_target", None), "prefill_tflops": eff.get("prefill_tflops"),
            "run_dir": str(run_dir), "fingerprint": run.results.get("fingerprint"),
            "scorer": run.results.get("scorer"), "items": len(run.predictions), "ok": ok,
            "failed": len(run.predictions) - ok, "by_status": run.summary.get("by_status", {}),
            "visual_tokens": eff.get("visual_tokens_out"), "frames_kept": eff.get("frames_kept"),
            "headline_accuracy": viz.headline_metric(run.results), "accuracy": accuracy,
            "published": run_published(run.predictions, run.results)}


def sweep_rows(cells, out: Path, baseline: str | None, resamples: int = 10_000) -> list[dict[str, Any]]:
    rows = [cell_summary(c, out / c.name, resamples) for c in cells]
    base = next((r for r in rows if r["cell"] == baseline), None)
    base_run = RunFolder(out / base["cell"]).load() if base else None
    for r in rows:
        r["percent_of_baseline"], r["mcnemar"] = None, None
        if base and base["accuracy"] and r["accuracy"] and base["accuracy"]["estimate"] > 0:
            r["percent_of_baseline"] = percent_of_baseline(r["accuracy"]["estimate"], base["accuracy"]["estimate"])
        if base_run is not None and r is not base:
            r["mcnemar"] = paired_comparison(base_run, RunFolder(out / r["cell"]).load(), resamples)["mcnemar"]
    return rows


def _mcnemar(r: dict[str, Any]) -> str:
    m = r.get("mcnemar")
    return f"{m['only_baseline']} / {m['only_run']}, p = {m['p_value']:.2g}" if m else "–"


def _budget(r: dict[str, Any]) -> str:
    if r["knob"] is None:
        return "unreduced" if r["reducer"] == "concat" and not r.get("inner_stage") else "method default"
    budget = f"{r['knob']} = {r['value']:g}"
    return budget + (f", equal FLOPs (outer {r['visual_target']})" if r.get("match") == "flops" else "")


def _floor_notes(rows: list[dict[str, Any]], num_frames: int) -> list[str]:
    """A line per reducer whose budget has a floor a sweep cell can fall below (DyCoke)."""
    if not any(r["reducer"] == "dycoke" for r in rows):
        return []
    whole, compared = ttm_floor(num_frames)
    return [f"DyCoke here is TTM alone (its KV pruning runs inside the LLM): it keeps {whole} of the {num_frames} "
            f"frames whole and at least one token of each of the other {compared}, so its floor is "
            f"{100 * whole / num_frames:.0f}% of T x N plus {compared} tokens; a DyCoke cell below it ends with "
            "`error` records that name the limit.", ""]


def _tflops(r: dict[str, Any]) -> str:
    t = r.get("prefill_tflops")
    return f"{t['mean']:.4g} [{t['min']:.4g}, {t['max']:.4g}]" if t else "–"


def render_sweep(rows: list[dict[str, Any]], num_frames: int, baseline: str | None, counts: dict[str, int],
                 match: str = "tokens") -> str:
    lines = ["# Reducer sweep", "",
             f"Every cell sampled the same {num_frames} frames per video (the reducers' `num_frames` was set to "
             f"{num_frames}); each video was decoded and encoded once for the whole grid "
             f"(this invocation: {counts.get('decoded', 0)} decoded, {counts.get('encoded', 0)} encoded).",
             "Accuracy: the run's headline accuracy (multiple choice: correct / ok items; judged: yes / "
             "(yes + no)), with a 95% percentile-bootstrap interval over questions. "
             + (f"% of unreduced: accuracy / accuracy of `{baseline}`. McNemar: exact paired test against "
                f"`{baseline}` on the multiple-choice questions (b / c = right only in `{baseline}` / only in "
                "the cell; two-sided p)." if baseline else
                "% of unreduced and McNemar: no baseline cell (add `concat` or `--baseline CELL`)."), "",
             *_floor_notes(rows, num_frames),
             "Prefill TFLOPs per question from the per-layer token counts (docs/reducers.md, \"Cost\"); "
             + ("budgets matched at equal prefill FLOPs: each whole method's outer target was raised until its "
                "prefill cost what the budget's tokens cost without an inner stage." if match == "flops" else
                "budgets are the visual tokens fed to the LLM (`--match tokens`)."), "",
             "Published: the numbers papers report for the same (method, backbone, benchmark, retention), "
             "with who measured them, their frames and protocol (docs/paper-results.md).", "",
             "| cell | reducer | budget | visual tokens mean [min, max] | ok / failed | accuracy (%) [95% CI] "
             "| % of unreduced | McNemar b / c, p | prefill TFLOPs mean [min, max] | published |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, a = r["visual_tokens"], r["accuracy"]
        tokens = f"{t['mean']:.1f} [{t['min']}, {t['max']}]" if t else "–"
        acc = f"{a['estimate']:.1f} [{a['low']:.1f}, {a['high']:.1f}]" if a else "–"
        pct = f"{r['percent_of_baseline']:.1f}" if r["percent_of_baseline"] is not None else "–"
        lines.append(f"| {r['cell']} | {r['label']} | {_budget(r)} | {tokens} | {r['ok']} / {r['failed']} | "
                     f"{acc} | {pct} | {_mcnemar(r)} | {_tflops(r)} | {r.get('published', '–')} |")
    return "\n".join(lines + ["", "![accuracy vs visual tokens and vs prefill TFLOPs](sweep.png)", ""])


def write_sweep_report(out: str | Path, cells, num_frames: int, baseline: str | None = None,
                       resamples: int = 10_000, counts: dict[str, int] | None = None, match: str = "tokens") -> str:
    """Write sweep.md, sweep.json and sweep.png into ``out``; returns the markdown."""
    out, counts = Path(out), counts or {}
    rows = sweep_rows(cells, out, baseline, resamples)
    text = render_sweep(rows, num_frames, baseline, counts, match)
    write_text_atomic(out / "sweep.md", text)
    write_text_atomic(out / "sweep.json", json.dumps({"num_frames": num_frames, "baseline": baseline, "match": match,
                                                      "resamples": resamples, **counts, "cells": rows},
                                                     indent=1, default=str) + "\n")
    viz.save_figure(viz.sweep_plot(rows), out / "sweep.png")
    return text
