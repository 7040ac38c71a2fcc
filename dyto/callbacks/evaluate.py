"""EvaluateCallback: after predict, merge the predictions, score them, write results and report.

It finds the run directory through the PredictionWriter in ``trainer.callbacks``. The writer
merges the rank logs in ``on_predict_epoch_end``, after a barrier on every rank, which Lightning
runs before any callback's ``on_predict_end``; this callback works there and only calls
``finalize()`` again to get the merged file, so the order of callbacks in the YAML does not
matter. Evaluation happens once per predict run, on rank 0 only: the judge is I/O bound and must
not be run by every rank.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from dyto.errors import check
from dyto.evaluation.choice import choice_modes
from dyto.evaluation.protocol import JudgeConfig
from dyto.evaluation.report import SCORERS, evaluate_run
from dyto.predict.writer import find_writer

__all__ = ["EvaluateCallback", "find_evaluator"]


class EvaluateCallback(pl.Callback):
    """After predict: merge the predictions, judge/parse them, write ``logs/results.json`` + ``report.md``.

    Args:
        scorer: ``auto`` (GPT judge when OPENAI_API_KEY or a base URL is set or the run already
            has a GPT judge cache, else offline ``match``), ``gpt`` or ``match``.
        choice_mode: multiple-choice parsing, ``reference`` (default), ``strict``, ``videomme``, or a
            benchmark's own rule by its name (``mvbench``, ``mlvu``, ``longvideobench``: their configs set it).
        judge: every judge setting (:class:`JudgeConfig`: model, base URL, temperature, asks,
            budgets, ...), e.g. ``--evaluation.judge.temperature 0``; the key is only ever read
            from ``OPENAI_API_KEY``.
        progress: show the judge's progress bar.
    """

    def __init__(self, scorer: str = "auto", choice_mode: str = "reference", judge: JudgeConfig = JudgeConfig(),
                 progress: bool = True):
        check("scorer", scorer, SCORERS)  # known now, not after hours of predicting
        check("choice_mode", choice_mode, choice_modes())
        self.scorer, self.choice_mode, self.progress = scorer, choice_mode, progress
        self.judge_config = dataclasses.replace(judge)  # a copy: the default instance is shared
        self.results: dict[str, Any] | None = None

    def evaluate(self, trainer: pl.Trainer) -> dict[str, Any] | None:
        """Run the evaluation once (idempotent); None on ranks other than 0 or without a writer."""
        if self.results is not None or not trainer.is_global_zero:
            return self.results
        writer = find_writer(trainer)
        if writer is None:
            print("[dyto] EvaluateCallback: no PredictionWriter among the callbacks; nothing to evaluate")
            return None
        writer.finalize()  # idempotent: the writer merged in on_predict_epoch_end
        self.results = evaluate_run(writer.run_dir, self.scorer, self.judge_config, self.choice_mode, self.progress)
        out = self.results["outputs"]
        print(f"[dyto] results: {Path(writer.run_dir) / out['results']}\n"
              f"[dyto] report:  {Path(writer.run_dir) / out['report']}")
        return self.results

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.results = None  # a new predict run gets a new evaluation

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer)


def find_evaluator(trainer: pl.Trainer) -> EvaluateCallback | None:
    """The run's EvaluateCallback among the trainer's callbacks, if there is one."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, EvaluateCallback)), None)
