"""Run directory -> judged metrics -> ``logs/results.json`` + ``logs/report.md``.

The report is for a reader who wants to know whether a run reproduces the paper: every number
stands beside the published one (with its source tag and model size), the judge model and
prompt version are stated, lost items are counted rather than hidden, and the cost side
(visual tokens kept, frames kept, latency per stage) is shown per reducer.

Scorers: ``gpt`` (the judge, cached in ``eval_save_dir/judgments.jsonl``), ``match`` (offline
string matching, a labelled stand-in) and ``auto``: ``gpt`` when a judge is configured or the
GPT cache already exists, else ``match``. So a rerun without OPENAI_API_KEY recomputes the
metrics from the cache (creating no client; anything not in the cache is counted *unjudged*)
instead of replacing GPT-judged numbers. GPT results always go to ``logs/results.json`` and
``logs/report.md``; ``match`` results go there only when no GPT cache exists (demo and smoke
runs), otherwise to ``logs/results.match.json`` and ``logs/report.match.md``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dyto.evaluation.choice import parse_choice
from dyto.evaluation.judge import Judge, JudgeFatalError, JudgeStats, JudgeUnreachable
from dyto.evaluation.protocol import (CACHE_FILE, JudgeConfig, judge_configured, judge_inputs, load_cache,
                                      plan_jobs)
from dyto.evaluation.match import MATCH_CACHE_FILE, MATCH_MODEL, MATCH_VERSION, match_judgments
from dyto.evaluation.metrics import VCG_DIMENSIONS, compute_metrics
from dyto.evaluation.paper import model_size, published
from dyto.evaluation.published import published_entry, render_published
from dyto.records import read_jsonl, write_jsonl, write_text_atomic
from dyto import viz
from dyto.runs import Run, RunFolder, check_one_fingerprint
from dyto.runlock import DEFAULT_HINT

SCORERS = ("auto", "gpt", "match")
EVAL_DIR = "eval_save_dir"


def predictions_file(run_dir: str | os.PathLike) -> Path:
    """The PredictionWriter's merged predictions file of a run directory."""
    return RunFolder(run_dir).predictions


def locate_predictions(path: str | os.PathLike, out: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(predictions file, output dir) from a run directory or a predictions file."""
    folder, predictions = RunFolder.locate(path)
    return predictions, Path(out) if out else folder.root


def evaluate_run(run_dir: str | os.PathLike, scorer: str = "auto", judge_config: JudgeConfig | None = None,
                 choice_mode: str = "reference", progress: bool = False) -> dict[str, Any]:
    """Judge/parse ``run_dir/artifacts/predictions.jsonl``; write ``logs/results.json`` and ``logs/report.md``."""
    predictions, out = locate_predictions(run_dir)
    return evaluate(predictions, out, scorer, judge_config, choice_mode, progress)


def _choose_scorer(scorer: str, config: JudgeConfig, gpt_cache_exists: bool = False) -> str:
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; expected one of {SCORERS}")
    if scorer != "auto":
        return scorer
    return "gpt" if gpt_cache_exists or judge_configured(config) else "match"


def saved_judgments(out_dir: str | os.PathLike, scorer: str | None) -> list[dict[str, Any]]:
    """The judgments a scorer left under ``out_dir/eval_save_dir`` (the GPT cache's final records)."""
    folder = Path(out_dir) / EVAL_DIR
    if scorer == "match":
        path = folder / MATCH_CACHE_FILE
        return list(read_jsonl(path)) if path.exists() else []
    return list(load_cache(folder / CACHE_FILE).values())  # any asks bound: what metrics can use


def _gpt_judgments(preds: list[dict[str, Any]], cache: Path, config: JudgeConfig, explicit: bool,
                   results: dict[str, Any], progress: bool = False) -> list[dict[str, Any]]:
    """Judge what the cache lacks, when a judge is configured (or explicitly asked for: then a
    missing key raises JudgeUnavailable); return the cache's final judgments. No client is
    created when nothing is left to judge."""
    if not any(judge_inputs(p) for p in preds):
        return []
    jobs, cached = plan_jobs(preds, load_cache(cache, config), config.identity)
    if jobs and (explicit or judge_configured(config)):
        results["judge_run"] = asdict(Judge(config, progress=progress).run(preds, cache))
    else:
        stopped = (f"no judge configured (OPENAI_API_KEY or a base URL): {len(jobs)} judgements left unjudged"
                   if jobs else None)
        results["judge_run"] = asdict(JudgeStats(cached=cached, unjudged=len(jobs), stopped=stopped))
    return list(load_cache(cache, config).values())


def evaluate(predictions_path: str | os.PathLike, out_dir: str | os.PathLike, scorer: str = "auto",
             judge_config: JudgeConfig | None = None, choice_mode: str = "reference",
             progress: bool = False, *, purpose: str = "evaluation", hint: str = DEFAULT_HINT) -> dict[str, Any]:
    """Score one run's predictions and write its results and report.

    Holds ``out_dir``'s lock as ``purpose`` (``RunFolder.lock``; nested inside ``dyto predict`` and ``dyto sweep``,
    which hold it already): one judge at a time appends to a folder's cache and writes its logs.
    Raises ``RunLocked`` when another process holds it, ``MixedSettingsError`` before any work
    when the predictions were made with different settings, and ``JudgeFatalError`` after writing
    the results (what was judged, the rest counted unjudged) when the judge server refused in a
    way no retry can fix."""
    predictions_path, out_dir = Path(predictions_path), Path(out_dir)
    if not predictions_path.exists():
        raise FileNotFoundError(f"no predictions at {predictions_path}")
    with RunFolder(out_dir).lock(purpose, hint):
        return _evaluate(predictions_path, out_dir, scorer, judge_config, choice_mode, progress)


def _evaluate(predictions_path: Path, out_dir: Path, scorer: str, judge_config: JudgeConfig | None,
              choice_mode: str, progress: bool) -> dict[str, Any]:
    parse_choice("A", 1, choice_mode)  # an unknown mode raises ValueError before any work
    preds = list(read_jsonl(predictions_path))
    fingerprint = check_one_fingerprint(preds, predictions_path)  # never one result from mixed settings
    config = judge_config or JudgeConfig()
    cache = out_dir / EVAL_DIR / CACHE_FILE
    requested, scorer = scorer, _choose_scorer(scorer, config, cache.exists())
    results: dict[str, Any] = {"predictions": str(predictions_path), "fingerprint": fingerprint, "scorer": scorer,
                               "choice_mode": choice_mode, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    suffix = ""
    if scorer == "gpt":
        judgments = _gpt_judgments(preds, cache, config, requested == "gpt", results, progress)
        metrics = compute_metrics(preds, judgments, judge_model=config.identity, choice_mode=choice_mode)
        results["judge"] = {k: v for k, v in asdict(config).items() if k != "base_url"}
    else:
        judgments = match_judgments(preds)
        if judgments:
            write_jsonl(out_dir / EVAL_DIR / MATCH_CACHE_FILE, judgments)
        metrics = compute_metrics(preds, judgments, judge_model=MATCH_MODEL, choice_mode=choice_mode,
                                  prompt_versions=dict.fromkeys(VCG_DIMENSIONS + ("default",), MATCH_VERSION))
        suffix = ".match" if cache.exists() else ""  # never replace GPT-judged results
    sizes = Counter(model_size(p.get("model")) for p in preds)
    size = sizes.most_common(1)[0][0] if sizes else None
    results.update(metrics=metrics, efficiency=efficiency(preds), model_size=size)
    results["paper"] = {b: [asdict(p) for m in ("accuracy", "score", "vcgbench_average") for p in published(b, m, size)]
                        for b in metrics["benchmarks"]}
    results["published_cells"] = published_entry(results, preds)  # the peers' rows of this run's cell
    results["outputs"] = {"results": f"logs/results{suffix}.json", "report": f"logs/report{suffix}.md"}
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / results["outputs"]["results"], json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    if not suffix:  # the budget picture shows the primary scorer's accuracy
        draw_budget(preds, results, logs / "budget.png")
    write_text_atomic(out_dir / results["outputs"]["report"], render_report(results, logs))
    if fatal := results.get("judge_run", {}).get("fatal"):
        raise (JudgeUnreachable if results["judge_run"].get("unreachable") else JudgeFatalError)(fatal)
    return results


def draw_budget(preds: list[dict[str, Any]], results: dict[str, Any], path: Path) -> None:
    """The budget picture (tokens per question; accuracy vs mean tokens) of this run's reducer(s)."""
    run = Run(path.parent.parent, preds, results)
    if any(p.get("status") == "ok" and p.get("visual_tokens_out") is not None for p in preds):
        viz.save_figure(viz.budget_plot({run.reducer: run}), path)


def _count(value: Any) -> int | None:
    """frames_kept/frames_sampled may be stored as a count or as the list of frame indices."""
    if isinstance(value, (list, tuple)):
        return len(value)
    return value if isinstance(value, (int, float)) else None


def _reducer_label(reducer: Any) -> str:
    if isinstance(reducer, dict):
        params = ", ".join(f"{k}={v}" for k, v in sorted(reducer.items()) if k != "name")
        return f"{reducer.get('name', '?')}({params})"
    return str(reducer)


def efficiency(preds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per reducer over ok predictions: visual tokens out (mean/min/max), frames kept, mean ms per stage."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in preds:
        if p.get("status") == "ok":
            groups[_reducer_label(p.get("reducer"))].append(p)
    return {label: efficiency_summary(rows) for label, rows in groups.items()}


def efficiency_summary(preds: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the ok predictions of ``preds``: token and frame counts (mean/min/max), mean ms per stage."""
    rows = [p for p in preds if p.get("status") == "ok"]
    entry: dict[str, Any] = {"items": len(rows)}
    for name in ("visual_tokens_out", "visual_tokens_in", "frames_kept", "frames_sampled"):
        vals = [v for v in (_count(r.get(name)) for r in rows) if v is not None]
        if vals:
            entry[name] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals)}
    stages: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        for stage, ms in (r.get("timings") or {}).items():
            if isinstance(ms, (int, float)):
                stages[stage].append(ms)
    entry["timings_ms"] = {s: statistics.fmean(v) for s, v in stages.items()}
    return entry


def _f(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _paper_cell(rows: list[dict[str, Any]]) -> str:
    return "; ".join(f"{r['value']} ({r['size']}, {r['source']}{', ' + r['note'] if r['note'] else ''})"
                     for r in rows) or "not published"


def _result_rows(bench: str, entry: dict[str, Any], paper: list[dict[str, Any]]) -> list[str]:
    by_metric = defaultdict(list)
    for r in paper:
        by_metric[r["metric"]].append(r)
    rows = []
    if mc := entry.get("multiple_choice"):
        rows.append((bench, "accuracy (%), multiple choice", mc["accuracy"], mc["accuracy_all"], by_metric["accuracy"]))
        if "macro_accuracy" in mc:  # the benchmark's official number is a mean over groups (MLVU's M-avg)
            rows.append((bench, f"mean of the {mc['macro_over'].replace('by_', '')} accuracies (%)", mc["macro_accuracy"],
                         mc["macro_accuracy_all"], []))
    judged = entry.get("judged", {})
    if d := judged.get("default"):
        rows.append((bench, "accuracy (%), judged", d["accuracy"], d["accuracy_all"], by_metric["accuracy"]))
        rows.append((bench, "score (0-5)", d["score"], None, by_metric["score"]))
    for dim in VCG_DIMENSIONS:
        if dim in judged:
            rows.append((bench, f"{dim} (0-5)", judged[dim]["score"], None, []))
    if "vcgbench_average" in entry:
        rows.append((bench, "VCGBench average", entry["vcgbench_average"], None, by_metric["vcgbench_average"]))
    return [f"| {b} | {m} | {_f(ref)} | {_f(all_) if all_ != ref else 'same'} | {_paper_cell(p)} |"
            for b, m, ref, all_, p in rows]


def render_report(results: dict[str, Any], logs_dir: Path | None = None) -> str:
    m = results["metrics"]
    dims = {d for e in m["benchmarks"].values() for d in e.get("judged", {})}  # what was (to be) judged
    lines = ["# Evaluation report", "", f"- predictions: `{results['predictions']}`"]
    if dims:
        lines += [f"- scorer: **{results['scorer']}**, judge model `{m['judge_model'] or 'none'}`",
                  "- prompt versions: " + ", ".join(f"{k}=`{v}`" for k, v in sorted(m["prompt_versions"].items())
                                                     if k in dims)]
    else:
        lines.append("- scorer: none needed (multiple choice only: every answer is parsed, nothing is judged)")
    lines.append(f"- multiple-choice parsing: `{m['choice_mode']}`; model size: {results.get('model_size') or 'unknown'}")
    if other := {b: e["multiple_choice"].get("parse_mode") for b, e in m["benchmarks"].items()
                 if e.get("multiple_choice", {}).get("parse_mode", m["choice_mode"]) != m["choice_mode"]}:
        lines.append("- parsed by another rule (protocol lmms_eval): "
                     + ", ".join(f"{b}: `{mode}`" for b, mode in sorted(other.items())))
    if results["scorer"] == "match" and dims:
        lines.append("- **WARNING: open-ended answers were scored by offline string matching, not by the GPT "
                     "judge; these numbers are not comparable with the paper.**")
        if results.get("outputs", {}).get("report", "logs/report.md") != "logs/report.md":
            lines.append("- the GPT-judged results stay in `logs/results.json` and `logs/report.md`")
    if run := results.get("judge_run"):
        lines.append(f"- judge run: {run['requests']} requests, {run['cached']} cached, ${run['cost_usd']:.4f}"
                     + (f", **{run['unjudged']} unjudged**" if run.get("unjudged") else "")
                     + (f", {run['reasked']} re-asked" if run.get("reasked") else "")
                     + (f", **stopped early: {run['stopped']}**" if run.get("stopped") else "")
                     + (f"\n- **judge error: {run['fatal']}**" if run.get("fatal") else ""))
    lines += ["", "## Results beside the paper", "",
              "`reference` follows the reference code's denominator; `all items` counts every lost item as "
              "not correct. Paper numbers carry their source tag (see docs/paper-results.md in the dyto repository).", "",
              "| benchmark | metric | ours (reference) | ours (all items) | paper |", "|---|---|---|---|---|"]
    for bench, entry in m["benchmarks"].items():
        lines += _result_rows(bench, entry, results["paper"].get(bench, []))
    if "published_cells" in results:
        lines += render_published(results["published_cells"])
    lines += ["", "## Counts", "",
              "`MC unparsed`: multiple-choice answers in which no option could be found (counted wrong); "
              "`judge unparsable`: judge replies without a verdict after every ask; `lenient parses`: judge "
              "replies read only by the lenient fallbacks.", "",
              "| benchmark | items | status | MC unparsed | judged | unjudged | judge unparsable | lenient parses |",
              "|---|---|---|---|---|---|---|---|"]
    for bench, entry in m["benchmarks"].items():
        jd = entry.get("judged", {}).values()
        mc = entry.get("multiple_choice")
        status = ", ".join(f"{k}: {v}" for k, v in sorted(entry["status"].items()))
        judge_cells = (f"{sum(d['judged'] for d in jd)} | {sum(d['unjudged'] for d in jd)} | "
                       f"{sum(d['unparsable'] for d in jd)} | {sum(d['lenient'] for d in jd)}") if jd else "– | – | – | –"
        lines.append(f"| {bench} | {entry['items']} | {status} | {mc['unparsed'] if mc else '–'} | {judge_cells} |")
    for bench, entry in m["benchmarks"].items():
        for kind, groups in sorted((k, v) for k, v in entry.get("multiple_choice", {}).items() if k.startswith("by_")):
            lines += ["", f"### {bench}: accuracy {kind.replace('_', ' ')}", "",
                      "| group | items | accuracy (reference) | accuracy (all items) |", "|---|---|---|---|"]
            lines += [f"| {g} | {e['items']} | {_f(e['accuracy'])} | {_f(e['accuracy_all'])} |" for g, e in groups.items()]
    lines += ["", "## Visual token budget and latency per reducer", "",
              "| reducer | items | visual tokens out mean [min, max] | frames kept mean [min, max] | mean ms per stage |",
              "|---|---|---|---|---|"]
    for label, e in results["efficiency"].items():
        cells = [f"{_f(s['mean'], 1)} [{s['min']}, {s['max']}]" if (s := e.get(k)) else "–"
                 for k in ("visual_tokens_out", "frames_kept")]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in e["timings_ms"].items()) or "–"
        lines.append(f"| `{label}` | {e['items']} | {cells[0]} | {cells[1]} | {stages} |")
    lines += figure_links(logs_dir)
    return "\n".join(lines) + "\n"


def figure_links(logs_dir: Path | None) -> list[str]:
    """Markdown image links for every PNG under ``logs/`` (plots written by other callbacks)."""
    pngs = sorted(Path(logs_dir).rglob("*.png")) if logs_dir and Path(logs_dir).is_dir() else []
    if not pngs:
        return []
    return ["", "## Figures", ""] + [f"![{p.stem}]({p.relative_to(logs_dir).as_posix()})" for p in pngs]
