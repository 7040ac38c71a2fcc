"""Lightning callbacks that turn a finished predict run into numbers (and, optionally, a W&B run).

Both callbacks find the run directory through the PredictionWriter in ``trainer.callbacks``
(anything with ``run_dir`` and an idempotent ``finalize()``). The writer merges the rank logs in
``on_predict_epoch_end``, after a barrier on every rank, which Lightning runs before any
callback's ``on_predict_end``; the callbacks work there and only call ``finalize()`` again to get
the merged file, so their order in the YAML does not matter. Evaluation happens once per predict
run, on rank 0 only: the judge is I/O bound and must not be run by every rank.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from dyto.datamodules.video import CLIP_MEAN, CLIP_STD
from dyto.evaluation.protocol import JudgeConfig
from dyto.evaluation.pictures import to_uint8_frames
from dyto.evaluation.report import evaluate_run, predictions_file, saved_judgments
from dyto.evaluation.writer import find_writer

_SECRET_KEY = re.compile(r"api[_-]?key|secret|password|passwd|credential|(^|[_-])token$", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"^(sk-|hf_|wandb_)[A-Za-z0-9_-]{12,}$")


def scrub(obj: Any) -> Any:
    """Copy of a config with secrets replaced by ``"***"``: keys naming a key/secret/password/token
    (a count such as ``max_new_tokens`` is kept), values shaped like API keys, and the values of
    OPENAI_API_KEY / WANDB_API_KEY wherever they occur."""
    env = [v for v in (os.environ.get("OPENAI_API_KEY"), os.environ.get("WANDB_API_KEY")) if v]
    if isinstance(obj, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    if isinstance(obj, str) and (_SECRET_VALUE.match(obj) or any(s in obj for s in env)):
        return "***"
    return obj


class EvaluateCallback(pl.Callback):
    """After predict: merge the predictions, judge/parse them, write ``logs/results.json`` + ``report.md``.

    Args:
        scorer: ``auto`` (GPT judge when OPENAI_API_KEY or a base URL is set or the run already
            has a GPT judge cache, else offline ``match``), ``gpt`` or ``match``.
        choice_mode: multiple-choice parsing, ``reference`` (default), ``strict`` or ``videomme``.
        judge: every judge setting (:class:`JudgeConfig`: model, base URL, temperature, asks,
            budgets, ...), e.g. ``--evaluation.judge.temperature 0``; the key is only ever read
            from ``OPENAI_API_KEY``.
        progress: show the judge's progress bar.
    """

    def __init__(self, scorer: str = "auto", choice_mode: str = "reference", judge: JudgeConfig = JudgeConfig(),
                 progress: bool = True):
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


def thumbnail_strip(frames: torch.Tensor, keep: list[int], mean=CLIP_MEAN, std=CLIP_STD,
                    size: int = 48, max_frames: int = 8) -> Any:
    """uint8 [size, n*size, 3] strip of (up to ``max_frames`` evenly chosen) kept frames from
    CLIP-normalised pixels [T, 3, S, S]."""
    keep = [i for i in keep if 0 <= i < frames.shape[0]] or list(range(frames.shape[0]))
    if len(keep) > max_frames:
        keep = [keep[round(j * (len(keep) - 1) / (max_frames - 1))] for j in range(max_frames)]
    x = torch.from_numpy(to_uint8_frames(frames[keep], mean, std)).permute(0, 3, 1, 2).float()  # [n, 3, S, S]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = x.clamp(0, 255).round().to(torch.uint8)  # [n, 3, size, size]
    return x.permute(2, 0, 3, 1).reshape(size, -1, 3).numpy()


class WandbCallback(pl.Callback):
    """Log a predict run to Weights & Biases: config (secrets scrubbed), summary metrics after
    evaluation, a per-sample table with a strip of kept-frame thumbnails, token histograms.

    Runs offline (files under ``<run_dir>/wandb``, sync later with ``wandb sync``) unless
    WANDB_API_KEY is set; ``WANDB_MODE`` or ``mode`` override that.
    """

    def __init__(self, project: str = "dyto", mode: str | None = None, log_thumbnails: bool = True,
                 max_thumbnails: int = 256):
        self.project, self.mode, self.log_thumbnails, self.max_thumbnails = project, mode, log_thumbnails, max_thumbnails
        self.run = None
        self._thumbs: dict[str, Any] = {}

    def resolved_mode(self) -> str:
        return self.mode or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        import wandb

        writer = find_writer(trainer)
        run_dir = Path(writer.run_dir) if writer is not None and writer.run_dir else Path.cwd()
        run_dir.mkdir(parents=True, exist_ok=True)
        config = {"model": dict(getattr(pl_module, "hparams", {}) or {}),
                  "data": dict(getattr(trainer.datamodule, "hparams", {}) or {}) if trainer.datamodule else {}}
        self._thumbs = {}
        self.run = wandb.init(project=self.project, mode=self.resolved_mode(), dir=str(run_dir),
                              name=run_dir.name, config=scrub(json.loads(json.dumps(config, default=str))))

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.run is None or not self.log_thumbnails or not isinstance(batch, dict):
            return
        mean = getattr(pl_module, "image_mean", None) or CLIP_MEAN
        std = getattr(pl_module, "image_std", None) or CLIP_STD
        for i, pixels in enumerate(batch.get("pixel_values") or []):
            if pixels is None or len(self._thumbs) >= self.max_thumbnails:
                continue
            rec = outputs[i] if outputs and i < len(outputs) else {}
            keep = rec.get("frames_kept") if isinstance(rec.get("frames_kept"), list) else []
            self._thumbs[str(batch["ids"][i])] = thumbnail_strip(pixels, keep, mean, std)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.run is None:
            return
        evaluator = next((cb for cb in trainer.callbacks if isinstance(cb, EvaluateCallback)), None)
        writer = find_writer(trainer)
        results = evaluator.evaluate(trainer) if evaluator else None
        if results is None and writer is not None:
            path = Path(writer.run_dir) / "logs" / "results.json"
            results = json.loads(path.read_text()) if path.exists() else None
        try:
            self._log(results, writer)
        finally:
            self.run.finish()
            self.run = None

    def _log(self, results: dict[str, Any] | None, writer: Any) -> None:
        import wandb

        from dyto.evaluation.metrics import per_item
        from dyto.records import read_jsonl

        if results:
            self.run.summary.update(flatten(results["metrics"], "metrics"))
            self.run.summary.update(flatten(results.get("efficiency", {}), "efficiency"))
        if writer is None or not predictions_file(writer.run_dir).exists():
            return
        preds = list(read_jsonl(predictions_file(writer.run_dir)))
        judgments = saved_judgments(writer.run_dir, (results or {}).get("scorer"))
        verdicts = per_item(preds, judgments, **_scorer_identity(results))
        columns = ["id", "benchmark", "question", "answer", "prediction", "verdict", "score", "frames_kept",
                   "visual_tokens_out", "thumbnails"]
        table = wandb.Table(columns=columns)
        for p in preds:
            v = verdicts.get(str(p["id"]), {})
            thumb = self._thumbs.get(str(p["id"]))
            table.add_data(str(p["id"]), p.get("benchmark"), p.get("question"), p.get("answer"), p.get("prediction"),
                           v.get("verdict"), v.get("score"), json.dumps(p.get("frames_kept")),
                           p.get("visual_tokens_out"), wandb.Image(thumb) if thumb is not None else None)
        log: dict[str, Any] = {"samples": table}
        for png in sorted((Path(writer.run_dir) / "logs").rglob("*.png")):  # e.g. PicturesCallback's plots
            log[f"figures/{png.stem}"] = wandb.Image(str(png))
        for name in ("visual_tokens_out", "visual_tokens_in", "prompt_tokens"):
            values = [[p[name]] for p in preds if isinstance(p.get(name), (int, float))]
            if values:
                log[f"{name}_hist"] = wandb.plot.histogram(wandb.Table(data=values, columns=[name]), name,
                                                           title=f"{name} per sample")
        self.run.log(log)


def _scorer_identity(results: dict[str, Any] | None) -> dict[str, Any]:
    m = (results or {}).get("metrics", {})
    return {"judge_model": m.get("judge_model"), "prompt_versions": m.get("prompt_versions"),
            "choice_mode": m.get("choice_mode", "reference")}


def flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'prefix/a/b': 1}, numbers only (W&B summary keys)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out
