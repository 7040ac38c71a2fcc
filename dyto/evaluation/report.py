"""Run directory -> judged metrics -> ``logs/results.json`` + ``logs/report.md``.

The report is for a reader who wants to know whether a run reproduces the paper: every number
stands beside the published one (with its source tag and model size), the judge model and
prompt version are stated, lost items are counted rather than hidden, and the cost side
(visual tokens kept, frames kept, latency per stage) is shown per reducer.
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

from dyto.evaluation.judge import CACHE_FILE, Judge, JudgeConfig, judge_inputs
from dyto.evaluation.match import MATCH_MODEL, MATCH_VERSION, match_judgments
from dyto.evaluation.metrics import VCG_DIMENSIONS, compute_metrics
from dyto.evaluation.paper import model_size, published
from dyto.records import read_jsonl, write_jsonl

SCORERS = ("auto", "gpt", "match")


def locate_predictions(path: str | os.PathLike, out: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(predictions file, output dir) from a run directory or a predictions file."""
    path = Path(path)
    if path.is_dir():
        return path / "artifacts" / "predictions.jsonl", Path(out) if out else path
    default_out = path.parent.parent if path.parent.name == "artifacts" else path.parent
    return path, Path(out) if out else default_out


def evaluate_run(run_dir: str | os.PathLike, scorer: str = "auto",
                 judge_config: JudgeConfig | None = None) -> dict[str, Any]:
    """Judge/parse ``run_dir/artifacts/predictions.jsonl``; write ``logs/results.json`` and ``logs/report.md``."""
    predictions, out = locate_predictions(run_dir)
    return evaluate(predictions, out, scorer, judge_config)


def _choose_scorer(scorer: str, config: JudgeConfig) -> str:
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; expected one of {SCORERS}")
    if scorer != "auto":
        return scorer
    configured = os.environ.get("OPENAI_API_KEY") or config.base_url or os.environ.get("OPENAI_BASE_URL")
    return "gpt" if configured else "match"


def evaluate(predictions_path: str | os.PathLike, out_dir: str | os.PathLike, scorer: str = "auto",
             judge_config: JudgeConfig | None = None) -> dict[str, Any]:
    predictions_path, out_dir = Path(predictions_path), Path(out_dir)
    if not predictions_path.exists():
        raise FileNotFoundError(f"no predictions at {predictions_path}")
    preds = list(read_jsonl(predictions_path))
    config = judge_config or JudgeConfig()
    scorer = _choose_scorer(scorer, config)
    needs_judge = any(judge_inputs(p) for p in preds)
    results: dict[str, Any] = {"predictions": str(predictions_path), "scorer": scorer,
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if scorer == "gpt":
        if needs_judge:
            cache = out_dir / "eval_save_dir" / CACHE_FILE
            results["judge_run"] = asdict(Judge(config).run(preds, cache))
            judgments = list(read_jsonl(cache))
        else:
            judgments = []
        metrics = compute_metrics(preds, judgments, judge_model=config.model)
    else:
        judgments = match_judgments(preds)
        if judgments:
            write_jsonl(out_dir / "eval_save_dir" / "judgments.match.jsonl", judgments)
        metrics = compute_metrics(preds, judgments, judge_model=MATCH_MODEL,
                                  prompt_versions=dict.fromkeys(VCG_DIMENSIONS + ("default",), MATCH_VERSION))
    sizes = Counter(model_size(p.get("model")) for p in preds)
    size = sizes.most_common(1)[0][0] if sizes else None
    results.update(metrics=metrics, efficiency=efficiency(preds), model_size=size)
    results["paper"] = {b: [asdict(p) for m in ("accuracy", "score", "vcgbench_average") for p in published(b, m, size)]
                        for b in metrics["benchmarks"]}
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _write_text(logs / "results.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    draw_budget(preds, results, logs / "budget.png")
    _write_text(logs / "report.md", render_report(results, logs))
    return results


def draw_budget(preds: list[dict[str, Any]], results: dict[str, Any], path: Path) -> None:
    """The budget picture (tokens per question; accuracy vs mean tokens) of this run's reducer(s)."""
    from dyto import viz
    from dyto.api import Run

    run = Run(path.parent.parent, preds, results)
    if any(p.get("status") == "ok" and p.get("visual_tokens_out") is not None for p in preds):
        viz.save_figure(viz.budget_plot({run.reducer: run}), path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
    out = {}
    for label, rows in groups.items():
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
        out[label] = entry
    return out


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
    lines = ["# Evaluation report", "", f"- predictions: `{results['predictions']}`",
             f"- scorer: **{results['scorer']}**, judge model `{m['judge_model'] or 'none (nothing to judge)'}`",
             f"- prompt versions: {', '.join(f'{k}=`{v}`' for k, v in sorted(m['prompt_versions'].items()))}",
             f"- multiple-choice parsing: `{m['choice_mode']}`; model size: {results.get('model_size') or 'unknown'}"]
    if results["scorer"] == "match":
        lines.append("- **WARNING: open-ended answers were scored by offline string matching, not by the GPT "
                     "judge; these numbers are not comparable with the paper.**")
    if run := results.get("judge_run"):
        lines.append(f"- judge run: {run['requests']} requests, {run['cached']} cached, ${run['cost_usd']:.4f}"
                     + (f", **stopped early: {run['stopped']}**" if run.get("stopped") else ""))
    lines += ["", "## Results beside the paper", "",
              "`reference` follows the reference code's denominator; `all items` counts every lost item as "
              "not correct. Paper numbers carry their source tag (see shared/spec/dyto-results.md).", "",
              "| benchmark | metric | ours (reference) | ours (all items) | paper |", "|---|---|---|---|---|"]
    for bench, entry in m["benchmarks"].items():
        lines += _result_rows(bench, entry, results["paper"].get(bench, []))
    if "vcgbench_average" in m:  # the five VCGBench dimensions came from several benchmark names
        paper = [asdict(p) for p in published("vcgbench", "vcgbench_average", results.get("model_size"))]
        lines.append(f"| VCGBench (all sets) | VCGBench average | {_f(m['vcgbench_average'])} | same | {_paper_cell(paper)} |")
    lines += ["", "## Counts", "", "| benchmark | items | status | judged | unjudged | unparsable | lenient parses |",
              "|---|---|---|---|---|---|---|"]
    for bench, entry in m["benchmarks"].items():
        jd = entry.get("judged", {}).values()
        status = ", ".join(f"{k}: {v}" for k, v in sorted(entry["status"].items()))
        lines.append(f"| {bench} | {entry['items']} | {status} | {sum(d['judged'] for d in jd)} | "
                     f"{sum(d['unjudged'] for d in jd)} | {sum(d['unparsable'] for d in jd)} | "
                     f"{sum(d['lenient'] for d in jd)} |")
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
