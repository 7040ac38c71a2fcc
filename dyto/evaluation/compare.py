"""`dyto compare`: finished runs side by side, the visual-token budget against accuracy.

    dyto compare outputs/nextqa_llava-v1.6-vicuna-7b-hf_concat outputs/nextqa_llava-v1.6-vicuna-7b-hf_dyto \
        outputs/nextqa_llava-v1.6-vicuna-7b-hf_slowfast --out outputs/compare_nextqa [--baseline RUN]

Writes `<out>/comparison.md` (one row per run: reducer, items ok / failed, headline accuracy,
its percentage of the baseline run's, visual tokens and frames kept per question, mean ms per
stage; then the paired tests of every other run against the baseline, see
``dyto.evaluation.paired``), `<out>/paired.json` (the paired tests as data) and
`<out>/budget.png` (tokens per question, accuracy against mean tokens), and prints the text.
The baseline is `--baseline RUN` (a path or folder name among the runs), by default the first
run. Runs are read as they are on disk (`artifacts/predictions.jsonl`, `logs/results.json`,
the judge caches); nothing is re-judged.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from dyto import viz
from dyto.evaluation.paired import paired_comparison, render_paired
from dyto.evaluation.published import run_published
from dyto.evaluation.stats import percent_of_baseline
from dyto.records import write_text_atomic
from dyto.runs import Run, RunFolder

STAGES = ("decode", "encode", "reduce", "prefill", "generate")


def _percent(run: Run, base: Run) -> str:
    acc, ref = viz.headline_metric(run.results), viz.headline_metric(base.results)
    if acc is None or ref is None:
        return "–"
    return "– (baseline 0)" if ref == 0 else f"{percent_of_baseline(acc, ref):.1f}"


def _row(run: Run, base: Run) -> str:
    ok = [p for p in run.predictions if p.get("status") == "ok"]
    tokens = [p["visual_tokens_out"] for p in ok if p.get("visual_tokens_out") is not None]
    frames = [len(p["frames_kept"]) for p in ok if p.get("frames_kept") is not None]
    acc = viz.headline_metric(run.results)
    ms = []
    for stage in STAGES:
        vals = [p["timings"][stage] for p in ok if stage in (p.get("timings") or {})]
        ms.append(f"{statistics.fmean(vals):.0f}" if vals else "–")
    cells = [
        run.run_dir.name, run.reducer, f"{len(ok)} / {len(run.predictions) - len(ok)}",
        f"{acc:.1f}" if acc is not None else ("no accuracy metric" if run.results else "not evaluated"),
        _percent(run, base),
        f"{statistics.fmean(tokens):.0f} [{min(tokens)}, {max(tokens)}]" if tokens else "–",
        f"{statistics.fmean(frames):.1f}" if frames else "–", *ms,
        run_published(run.predictions, run.results),
    ]
    return "| " + " | ".join(cells) + " |"


def compare_runs(run_dirs: list[str | Path], out_dir: str | Path, baseline: str | Path | None = None,
                 resamples: int = 10_000) -> str:
    """Markdown comparison of the runs (and the paired tests against ``baseline``, default the first
    run); also writes comparison.md, paired.json and budget.png into out_dir."""
    runs = [RunFolder(d).load() for d in run_dirs]
    names = [r.run_dir.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"runs need distinct folder names to be told apart, got {names}")
    base = runs[0]
    if baseline is not None:
        found = [r for r in runs if r.run_dir.name == Path(baseline).name or r.run_dir == Path(baseline)]
        if not found:
            raise ValueError(f"--baseline {baseline} is not one of the compared runs ({', '.join(names)})")
        base = found[0]
    paired = [paired_comparison(base, r, resamples=resamples) for r in runs if r is not base]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = ["run", "reducer", "ok / failed", "accuracy (%)", "% of baseline", "visual tokens mean [min, max]",
              "frames kept",
              *(f"{s} ms" for s in STAGES), "published, same (method, backbone, benchmark, retention)"]
    lines = ["# Run comparison", "",
             "Accuracy is each run's headline number from `logs/results.json` (multiple-choice accuracy, or "
             "the judge's open-ended accuracy with the reference denominator); compare runs judged by the same "
             "judge model only. % of baseline: accuracy / accuracy of the baseline run "
             f"`{base.run_dir.name}` (the unreduced run, when it is one).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *(_row(r, base) for r in runs),
             *render_paired(paired), "", "![budget](budget.png)", ""]
    write_text_atomic(out_dir / "paired.json", json.dumps(paired, indent=1) + "\n")
    viz.save_figure(viz.budget_plot(dict(zip(names, runs))), out_dir / "budget.png")
    text = "\n".join(lines)
    write_text_atomic(out_dir / "comparison.md", text)
    return text


def compare_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="dyto compare", description="Compare finished runs: token budget vs accuracy, paired tests.")
    p.add_argument("runs", nargs="+", help="run directories (outputs/<run>)")
    p.add_argument("--out", default="outputs/comparison", help="where comparison.md and budget.png go")
    p.add_argument("--baseline", default=None, help="the run the others are tested against and the "
                   "'%% of baseline' column divides by (a path or folder name; default: the first run)")
    p.add_argument("--resamples", type=int, default=10_000, help="paired bootstrap resamples (seed 0)")
    args = p.parse_args(argv)
    try:
        text = compare_runs(args.runs, args.out, args.baseline, args.resamples)
    except (FileNotFoundError, ValueError) as e:
        print(f"dyto compare: {e}")
        return 2
    print(text)
    print(f"[dyto] comparison: {Path(args.out) / 'comparison.md'}")
    return 0
