"""PredictionWriter: one prediction record per question, crash-safe, resumable, DDP-aware.

Each rank appends its records to ``artifacts/predictions.rank<R>.jsonl`` and flushes + fsyncs
after every batch, so a killed run loses at most the batch in flight (a torn last line is
ignored on read). Before the data is split across ranks, ``setup`` collects every id already
written with status ``ok`` and hands them to the DataModule as ``skip_ids``: a rerun of the
same command predicts only what is left. At the end rank 0 merges all rank logs into
``artifacts/predictions.jsonl`` (input order, one record per id, the latest attempt wins, an
``ok`` attempt always wins) and checks the merged id set against ``artifacts/inputs.json``.

Usage (LightningCLI YAML)::

    trainer:
      callbacks:
        - class_path: dyto.evaluation.writer.PredictionWriter
          init_args: {output_dir: outputs, run_name: nextqa_7b_dyto}
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from dyto.records import append_jsonl, open_append_log, read_jsonl, write_jsonl, write_text_atomic

RANK_FILE = "predictions.rank{rank}.jsonl"
MERGED_FILE = "predictions.jsonl"
INPUTS_FILE = "inputs.json"
SUMMARY_FILE = "summary.json"


class IncompleteRunError(RuntimeError):
    """The merged predictions do not cover the input set exactly."""


def default_run_name(trainer: pl.Trainer) -> str:
    """`<benchmark>_<model>_<reducer>`: stable across reruns of the same command, so resume works."""
    dm, module = trainer.datamodule, trainer.lightning_module
    bench = getattr(dm, "benchmark", None) or "custom"
    model = getattr(module, "hparams", {}).get("model", "model")  # "tiny", a hub id or a path
    reducer = getattr(getattr(module, "reducer", None), "name", "reducer")
    name = f"{bench}_{Path(str(model)).name}_{reducer}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def find_writer(trainer: pl.Trainer) -> "PredictionWriter | None":
    """The run's PredictionWriter among the trainer's callbacks, if there is one."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, PredictionWriter)), None)


def load_attempts(artifacts: Path) -> list[dict[str, Any]]:
    """Every record in every rank log (all runs, all world sizes), in file order."""
    rows: list[dict[str, Any]] = []
    for path in sorted(artifacts.glob(RANK_FILE.format(rank="*"))):
        rows.extend(read_jsonl(path, allow_torn_tail=True))
    return rows


def latest_per_id(attempts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One record per id: the last ``ok`` attempt if there is one, else the last attempt."""
    best: dict[str, dict[str, Any]] = {}
    for rec in attempts:
        prev = best.get(rec["id"])
        if prev is None or rec["status"] == "ok" or prev["status"] != "ok":
            best[rec["id"]] = rec
    return best


class PredictionWriter(BasePredictionWriter):
    """Append predictions per rank per batch; resume from them; merge and verify at the end.

    Args:
        output_dir: parent of all run directories.
        run_name: the run's folder name; default ``<benchmark>_<model>_<reducer>``.
        resume: skip ids already predicted with status ``ok`` (set False to redo everything:
            the old rank logs are then moved aside, never deleted).
    """

    def __init__(self, output_dir: str = "outputs", run_name: str | None = None, resume: bool = True):
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.run_name = run_name
        self.resume = resume
        self.run_dir: Path | None = None
        self._file = None
        self._finalized: Path | None = None
        self.ranks_done = False

    # -- paths -------------------------------------------------------------------------------
    def resolve_run_dir(self, trainer: pl.Trainer) -> Path:
        if self.run_dir is None:
            self.run_dir = Path(self.output_dir) / (self.run_name or default_run_name(trainer))
        return self.run_dir

    @property
    def artifacts(self) -> Path:
        assert self.run_dir is not None, "PredictionWriter used before setup()"
        return self.run_dir / "artifacts"

    # -- lifecycle ---------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        run_dir = self.resolve_run_dir(trainer)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        (run_dir / "logs").mkdir(exist_ok=True)
        (run_dir / "eval_save_dir").mkdir(exist_ok=True)
        dm = trainer.datamodule
        input_ids = list(dm.input_ids())
        if len(set(input_ids)) != len(input_ids):
            dup = [i for i, c in Counter(input_ids).items() if c > 1][:5]
            raise ValueError(f"input has duplicate ids, e.g. {dup}")
        if not self.resume and trainer.is_global_zero:
            self._move_old_logs_aside()
        trainer.strategy.barrier("dyto_writer_setup")
        done = {i for i, r in latest_per_id(load_attempts(self.artifacts)).items() if r["status"] == "ok"}
        done &= set(input_ids)
        dm.skip_ids = done
        if trainer.is_global_zero:
            write_text_atomic(self.artifacts / INPUTS_FILE, json.dumps(input_ids))
            todo = len(input_ids) - len(done)
            print(f"[dyto] run dir {run_dir}: {len(input_ids)} questions, {len(done)} already done, {todo} to predict")
        self._finalized, self.ranks_done = None, False
        trainer.strategy.barrier("dyto_writer_ready")

    def _move_old_logs_aside(self) -> None:
        old = sorted(self.artifacts.glob(RANK_FILE.format(rank="*")))
        if not old:
            return
        n = 0
        while (self.artifacts / f"previous-{n}").exists():
            n += 1
        dest = self.artifacts / f"previous-{n}"
        dest.mkdir()
        for p in old:
            p.rename(dest / p.name)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        expected = list(batch["ids"])
        got = [r["id"] for r in prediction]
        if got != expected:
            raise RuntimeError(f"predict_step returned ids {got} for batch ids {expected}")
        if self._file is None:
            path = self.artifacts / RANK_FILE.format(rank=trainer.global_rank)
            self._file = open_append_log(path)
        append_jsonl(self._file, prediction)

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs on every rank before any callback's on_predict_end, so whatever evaluates or logs
        # the merged file there (in any callback order) sees every rank's records.
        if self._file is not None:
            self._file.close()
            self._file = None
        trainer.strategy.barrier("dyto_writer_end")
        self.ranks_done = True
        if trainer.is_global_zero:
            self.finalize()

    # -- merge -------------------------------------------------------------------------------
    def finalize(self) -> Path:
        """Merge the rank logs into ``predictions.jsonl`` and verify it (rank 0; idempotent).

        Raises IncompleteRunError when an input id has no record at all; the merged file and
        ``summary.json`` are written first so nothing that was predicted is lost.
        """
        if self._finalized is not None:
            return self._finalized
        if not self.ranks_done:
            raise RuntimeError("PredictionWriter.finalize() called before every rank finished predicting")
        input_ids = json.loads((self.artifacts / INPUTS_FILE).read_text(encoding="utf-8"))
        attempts = load_attempts(self.artifacts)
        best = latest_per_id(attempts)
        missing = [i for i in input_ids if i not in best]
        merged = [best[i] for i in input_ids if i in best]
        path = self.artifacts / MERGED_FILE
        write_jsonl(path, merged)
        ok_attempts = Counter(r["id"] for r in attempts if r["status"] == "ok")
        statuses = Counter(r["status"] for r in merged)
        summary = {
            "inputs": len(input_ids),
            "records": len(merged),
            "by_status": dict(sorted(statuses.items())),
            "failed": {s: [r["id"] for r in merged if r["status"] == s] for s in statuses if s != "ok"},
            "missing": missing,
            "predicted_ok_more_than_once": sorted(i for i, c in ok_attempts.items() if c > 1),
            "not_in_inputs": sorted(set(best) - set(input_ids)),
        }
        write_text_atomic(self.artifacts / SUMMARY_FILE, json.dumps(summary, indent=2))
        status_line = ", ".join(f"{k}={v}" for k, v in summary["by_status"].items())
        print(f"[dyto] predictions: {path} ({len(merged)}/{len(input_ids)} records; {status_line})")
        if missing:
            raise IncompleteRunError(
                f"{len(missing)} of {len(input_ids)} questions have no prediction record (e.g. {missing[:5]}); "
                f"rerun the same command to finish them. See {self.artifacts / SUMMARY_FILE}"
            )
        self._finalized = path
        return path
