"""PredictionWriter: one prediction record per question, crash-safe, resumable, DDP-aware.

Each rank appends its records to ``artifacts/predictions.rank<R>.jsonl`` and flushes + fsyncs
after every batch, so a killed run loses at most the batch in flight (a torn last line is
ignored on read). Before the data is split across ranks, ``setup`` collects every id already
written with status ``ok`` and hands them to the DataModule as ``skip_ids``: a rerun of the
same command predicts only what is left. At the end rank 0 merges all rank logs into
``artifacts/predictions.jsonl`` (input order, one record per id, the latest attempt wins, an
``ok`` attempt always wins) and checks the merged id set against ``artifacts/inputs.json``.

Before anything is predicted, the run's fingerprint (every setting that can change an answer:
the model's and the DataModule's ``fingerprint()``) is compared with the one the folder was
made with: a rerun with another budget, checkpoint, dtype, prompt or frame count stops with
the list of changed settings instead of finishing one run's questions with another's settings.
Every record carries the fingerprint's digest, and the default run name ends with it, so a
changed setting lands in a new folder by itself.

One run folder has one writer: rank 0 holds the folder's lock (``RunFolder.lock``) from before
anything is written until teardown, and every rank learns whether it got it (a broadcast), so a
second ``dyto predict`` on a folder in use stops in one line on every rank. ``dyto predict`` with
a ``run_name`` takes it earlier, before the model loads (``early_lock_dir``); the default name
needs the model's fingerprint, so that case is locked here, still before anything is predicted.

Usage (LightningCLI YAML)::

    trainer:
      callbacks:
        - class_path: dyto.predict.PredictionWriter
          init_args: {output_dir: outputs, run_name: nextqa_7b_dyto}
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from dyto.errors import ConfigError
from dyto.records import append_jsonl, open_append_log, read_jsonl, write_jsonl, write_text_atomic
from dyto.runs import RunFolder, RunLocked, fingerprint_digest, run_fingerprint


class IncompleteRunError(RuntimeError):
    """The merged predictions do not cover the input set exactly."""


def trainer_fingerprint(trainer: pl.Trainer) -> dict[str, Any]:
    """The run fingerprint of what ``trainer`` is about to predict (after the DataModule's setup)."""
    module, dm = trainer.lightning_module, trainer.datamodule
    model = module.fingerprint() if hasattr(module, "fingerprint") else {"hparams": dict(module.hparams)}
    data = dm.fingerprint() if hasattr(dm, "fingerprint") else {}
    return run_fingerprint(model, data)


def default_run_name(trainer: pl.Trainer, fingerprint: dict[str, Any]) -> str:
    """`<benchmark>_<model>_<reducer>-<digest>`: the same for a rerun of the same command (so resume
    works) and a new folder whenever a setting that can change an answer changes."""
    dm, module = trainer.datamodule, trainer.lightning_module
    records = getattr(dm, "records", None) or []
    bench = getattr(dm, "benchmark", None) or (records[0].benchmark if records else "custom")
    # the backbone's short label ("tiny-qwen2_5_vl", a hub id, a path); DyToVideoQA's hparams name it too
    model = getattr(getattr(module, "backbone", None), "run_label", None) or getattr(module, "hparams", {}).get("model", "model")
    reducer = getattr(getattr(module, "reducer", None), "name", "reducer")
    name = f"{bench}_{Path(str(model)).name}_{reducer}-{fingerprint_digest(fingerprint)}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def early_lock_dir(output: dict[str, Any]) -> Path | None:
    """The run folder to lock before the model loads, from the parsed ``output`` settings: known only
    with a ``run_name``, and only in a process that will be global rank 0 and that no launcher
    started beside others (torchrun, srun with several tasks, a Lightning DDP child: those lock
    in ``PredictionWriter.setup``, where the ranks can tell each other the outcome)."""
    env = os.environ
    launched = any(k in env for k in ("RANK", "LOCAL_RANK")) or int(env.get("SLURM_NTASKS", "1") or 1) > 1
    if not output.get("run_name") or launched or env.get("NODE_RANK", "0") != "0":
        return None
    return Path(output.get("output_dir") or "outputs") / output["run_name"]


def find_writer(trainer: pl.Trainer) -> "PredictionWriter | None":
    """The run's PredictionWriter among the trainer's callbacks, if there is one."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, PredictionWriter)), None)


def load_attempts(folder: RunFolder) -> list[dict[str, Any]]:
    """Every record in every rank log (all runs, all world sizes), in file order."""
    rows: list[dict[str, Any]] = []
    for path in folder.rank_logs():
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


def merge_rank_logs(folder: RunFolder) -> Path:
    """Merge ``folder``'s rank logs into ``predictions.jsonl`` (input order, one record per id, the
    latest attempt wins, an ``ok`` attempt always wins) and write ``summary.json``; returns the
    merged file. Raises IncompleteRunError, after writing both, when an input id has no record.
    (The writer's ``finalize`` on rank 0; ``dyto sweep`` for each of its cells.)"""
    input_ids = json.loads(folder.inputs.read_text(encoding="utf-8"))
    attempts = load_attempts(folder)
    best = latest_per_id(attempts)
    missing = [i for i in input_ids if i not in best]
    merged = [best[i] for i in input_ids if i in best]
    path = folder.predictions
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
    write_text_atomic(folder.summary, json.dumps(summary, indent=2))
    status_line = ", ".join(f"{k}={v}" for k, v in summary["by_status"].items())
    print(f"[dyto] predictions: {path} ({len(merged)}/{len(input_ids)} records; {status_line})")
    if missing:
        raise IncompleteRunError(
            f"{len(missing)} of {len(input_ids)} questions have no prediction record (e.g. {missing[:5]}); "
            f"rerun the same command to finish them. See {folder.summary}"
        )
    return path


class PredictionWriter(BasePredictionWriter):
    """Append predictions per rank per batch; resume from them; merge and verify at the end.

    Args:
        output_dir: parent of all run directories.
        run_name: the run's folder name; default ``<benchmark>_<model>_<reducer>-<settings digest>``.
        resume: skip ids already predicted with status ``ok`` by a run with the same settings
            (another fingerprint stops the run before it predicts). False redoes everything:
            the old rank logs are then moved aside, never deleted.
    """

    def __init__(self, output_dir: str = "outputs", run_name: str | None = None, resume: bool = True):
        super().__init__(write_interval="batch")
        if not str(output_dir).strip():
            raise ConfigError("output_dir", output_dir, "a folder")
        if run_name is not None and (not run_name.strip() or run_name.strip("/.") == ""):
            raise ConfigError("run_name", run_name, "a folder name, or null for the default name")
        self.output_dir = output_dir
        self.run_name = run_name
        self.resume = resume
        self.run_dir: Path | None = None
        self.fingerprint: dict[str, Any] | None = None
        self.digest: str | None = None
        self._file = None
        self._finalized: Path | None = None
        self.ranks_done = False
        self._lock: ExitStack | None = None  # rank 0: the run folder's lock, held until teardown
        self._locked = False  # every rank: the lock question was settled for this predict run

    # -- paths -------------------------------------------------------------------------------
    def settings(self, trainer: pl.Trainer) -> dict[str, Any]:
        """The run fingerprint (computed once, after the DataModule's setup)."""
        if self.fingerprint is None:
            self.fingerprint = trainer_fingerprint(trainer)
            self.digest = fingerprint_digest(self.fingerprint)
        return self.fingerprint

    def resolve_run_dir(self, trainer: pl.Trainer) -> Path:
        if self.run_dir is None:
            self.run_dir = Path(self.output_dir) / (self.run_name or default_run_name(trainer, self.settings(trainer)))
        return self.run_dir

    @property
    def folder(self) -> RunFolder:
        assert self.run_dir is not None, "PredictionWriter used before setup()"
        return RunFolder(self.run_dir)

    @property
    def artifacts(self) -> Path:
        return self.folder.artifacts

    # -- lock ----------------------------------------------------------------------------------
    def hold_lock(self, trainer: pl.Trainer) -> None:
        """Rank 0 takes the run folder's lock (nested when ``dyto predict`` took it before the model
        loaded); every rank learns the outcome and a refused run stops on all of them. Idempotent."""
        if self._locked:
            return
        refused = None
        if trainer.is_global_zero:
            stack = ExitStack()
            try:
                stack.enter_context(RunFolder(self.resolve_run_dir(trainer)).lock("dyto predict"))
                self._lock = stack
            except RunLocked as e:
                refused = e
        message = trainer.strategy.broadcast(None if refused is None else str(refused), src=0)
        if refused is not None:
            raise refused
        if message is not None:
            raise RunLocked(message)
        self._locked = True

    def release_lock(self) -> None:
        self._locked = False
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.release_lock()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.release_lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        run_dir = self.resolve_run_dir(trainer)
        self.hold_lock(trainer)  # before anything is written
        fingerprint = self.settings(trainer)
        folder = self.folder.make()
        dm = trainer.datamodule
        input_ids = list(dm.input_ids())
        if len(set(input_ids)) != len(input_ids):
            dup = [i for i, c in Counter(input_ids).items() if c > 1][:5]
            raise ValueError(f"input has duplicate ids, e.g. {dup}")
        if self.resume:  # every rank compares, so every rank stops; rank 0 writes only when they agree
            folder.claim(fingerprint, resume=True, write=trainer.is_global_zero)
        elif trainer.is_global_zero:
            self._move_old_logs_aside()
            folder.claim(fingerprint, resume=False)
        trainer.strategy.barrier("dyto_writer_setup")
        done = {i for i, r in latest_per_id(load_attempts(folder)).items() if r["status"] == "ok"}
        done &= set(input_ids)
        dm.skip_ids = done
        if trainer.is_global_zero:
            write_text_atomic(folder.inputs, json.dumps(input_ids))
            todo = len(input_ids) - len(done)
            print(f"[dyto] run dir {run_dir} (settings {self.digest}): {len(input_ids)} questions, "
                  f"{len(done)} already done, {todo} to predict")
        self._finalized, self.ranks_done = None, False
        trainer.strategy.barrier("dyto_writer_ready")

    def _move_old_logs_aside(self) -> None:
        old = self.folder.rank_logs()
        if not old:
            return
        n = 0
        while (self.artifacts / f"previous-{n}").exists():
            n += 1
        dest = self.artifacts / f"previous-{n}"
        dest.mkdir()
        for p in old:
            p.rename(dest / p.name)
        if self.folder.fingerprint_file.exists():
            self.folder.fingerprint_file.rename(dest / self.folder.fingerprint_file.name)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        expected = list(batch["ids"])
        got = [r["id"] for r in prediction]
        if got != expected:
            raise RuntimeError(f"predict_step returned ids {got} for batch ids {expected}")
        for rec in prediction:  # which settings made it: evaluation never scores mixed settings
            rec["fingerprint"] = self.digest
        if self._file is None:
            self._file = open_append_log(self.folder.rank_log(trainer.global_rank))
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
        path = merge_rank_logs(self.folder)
        self._finalized = path
        return path
