"""``dyto judge``: judge saved predictions, then write metrics and the report.

    dyto judge --predictions outputs/<run> [--model NAME] [--base-url URL] [--temperature 0]
               [--concurrency 16] [--max-cost 5] [--max-asks N] ...

Every ``JudgeConfig`` field is a flag (``max_cost`` -> ``--max-cost``) with the dataclass's own
default and help, so this command and ``dyto predict --evaluation.judge.<field>`` offer the same
settings. A progress bar on stderr shows done/total, rate, ETA, cost, retries and errors. An
error no retry can fix (a bad key, an unknown or retired model) ends the command with one line
naming the setting to change, and exit status 2; so does a run folder another ``dyto judge`` or
``dyto predict`` is writing (one judge at a time per folder: ``RunFolder.lock``);
and so does a server that cannot be reached when
nothing got a verdict (the line names its address). After a partial outage the command ends with
the count of what is left, and the same command again judges only that.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing

from dyto.errors import ConfigError, UserError
from dyto.evaluation.choice import choice_modes
from dyto.evaluation.judge import JudgeFatalError, JudgeUnavailable
from dyto.evaluation.protocol import JudgeConfig
from dyto.evaluation.report import evaluate, locate_predictions


def _flag_type(name: str) -> tuple[type, int | None]:
    """(scalar type, nargs) of a ``JudgeConfig`` field from its annotation, e.g. ``float | None``."""
    hint = typing.get_type_hints(JudgeConfig)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    hint = args[0]
    if typing.get_origin(hint) is tuple:
        inner = typing.get_args(hint)
        return inner[0], len(inner)
    return hint, None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dyto judge", description="Judge saved predictions, then write metrics "
                                 "and the report (the API key is read from OPENAI_API_KEY only).")
    ap.add_argument("--predictions", required=True, help="predictions.jsonl or a run directory")
    ap.add_argument("--out", help="output directory (default: the run directory)")
    ap.add_argument("--choice-mode", default="reference", choices=choice_modes(),
                    help="multiple-choice parsing (default: reference)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    judge = ap.add_argument_group("judge settings (JudgeConfig)")
    for name, default, text in JudgeConfig.options():
        kind, nargs = _flag_type(name)
        shown = "unset" if default is None else default
        judge.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, nargs=nargs, default=default,
                           help=f"{text} (default: {shown})")
    return ap


def judge_main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    values = {name: getattr(args, name) for name, _, _ in JudgeConfig.options()}
    try:
        config = JudgeConfig(**values)
    except ConfigError as e:  # the handler of dyto.cli prints it in one line, as the flag
        raise e.at("--" + e.key.replace("_", "-")) from None
    predictions, out = locate_predictions(args.predictions, args.out)
    if not predictions.is_file():
        raise UserError(f"--predictions: {predictions} does not exist: give a run folder (outputs/<run>) "
                        "that finished predict, or its artifacts/predictions.jsonl")
    try:
        results = evaluate(predictions, out, scorer="gpt", judge_config=config, choice_mode=args.choice_mode,
                           progress=not args.no_progress, purpose="dyto judge",
                           hint="judge into another folder with --out DIR")
    except JudgeUnavailable as e:
        ap.error(str(e))
    except JudgeFatalError as e:
        print(f"dyto judge: {e}", file=sys.stderr)
        return 2
    run = results.get("judge_run", {})
    print(json.dumps(run, indent=1))
    print(f"results: {out / results['outputs']['results']}\nreport:  {out / results['outputs']['report']}")
    if run.get("stopped"):  # a budget or an outage: say how much is left, after the paths
        print(f"dyto judge: stopped early: {run['stopped']}", file=sys.stderr)
    return 0


__all__ = ["build_parser", "judge_main"]

if __name__ == "__main__":
    raise SystemExit(judge_main())
