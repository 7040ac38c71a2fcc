"""WandbCallback: a predict run as a W&B run whose charts compare across runs.

Metric keys never embed a run's settings, so runs of different reducers, budgets or backbones
land on the same charts: ``eval/<benchmark>/accuracy`` (the headline: multiple choice where the
benchmark has it, else judged), ``eval/<benchmark>/multiple_choice_accuracy`` and
``eval/<benchmark>/judged_accuracy`` (both, on a benchmark that mixes them), ``eval/<benchmark>/score``,
``efficiency/visual_tokens_out_mean``, ``timing/<stage>_ms``, ``judge/cost_usd`` (see
:func:`run_metrics`). What tells runs apart is run config, which W&B filters and groups by:
``backbone``, ``checkpoint``, ``reducer`` / ``reducer_params``, ``benchmark``, ``fingerprint``
(the settings' digest) and the full fingerprint, then the effective config as the run saved it
(``config.yaml``: model, data, trainer, output, evaluation with the judge settings). Runs of one
benchmark share a ``group``. The per-question table keeps a strip of kept-frame thumbnails; W&B
shows (and ``wandb sync`` uploads) the table's artifact copy, where they are images; the copy under
``files/media/table/`` that wandb also writes names them only as the string ``"Image"``.

Offline (files under ``<run_dir>/wandb``, ``wandb sync`` later) unless WANDB_API_KEY is set;
``WANDB_MODE`` or ``mode`` override that.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import yaml

from dyto.callbacks.evaluate import find_evaluator
from dyto.datamodules.video import CLIP_MEAN, CLIP_STD
from dyto.evaluation.metrics import per_item
from dyto.evaluation.report import efficiency_summary, saved_judgments
from dyto.predict.writer import find_writer
from dyto.records import read_jsonl
from dyto.runs import RunFolder, fingerprint_digest
from dyto.viz import to_uint8_frames

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
    """Log a predict run to Weights & Biases: run config (secrets scrubbed), stable metric keys
    after evaluation, a per-question table with kept-frame thumbnails, token histograms, pictures.
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
        fingerprint = writer.settings(trainer) if writer is not None else None
        saved = RunFolder(run_dir).config  # the effective config, saved in setup() (dyto predict)
        effective = yaml.safe_load(saved.read_text()) if writer is not None and saved.exists() else None
        config = run_config(pl_module, trainer.datamodule, fingerprint, effective, find_evaluator(trainer))
        self._thumbs = {}
        self.run = wandb.init(project=self.project, mode=self.resolved_mode(), dir=str(run_dir), name=run_dir.name,
                              group=config["benchmark"], job_type="predict", config=config)

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
        evaluator = find_evaluator(trainer)
        writer = find_writer(trainer)
        results = evaluator.evaluate(trainer) if evaluator else None
        if results is None and writer is not None:
            path = RunFolder(writer.run_dir).results()
            results = json.loads(path.read_text()) if path.exists() else None
        try:
            self._log(results, writer)
        finally:
            self.run.finish()
            self.run = None

    def _log(self, results: dict[str, Any] | None, writer: Any) -> None:
        import wandb

        folder = RunFolder(writer.run_dir) if writer is not None else None
        preds = list(read_jsonl(folder.predictions)) if folder and folder.predictions.exists() else []
        self.run.log(run_metrics(results, preds))
        if not preds:
            return
        judgments = saved_judgments(folder.root, (results or {}).get("scorer"))
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
        for png in sorted(folder.logs.rglob("*.png")):  # e.g. PicturesCallback's plots
            log[f"figures/{png.stem}"] = wandb.Image(str(png))
        for name in ("visual_tokens_out", "visual_tokens_in", "prompt_tokens"):
            values = [[p[name]] for p in preds if isinstance(p.get(name), (int, float))]
            if values:
                log[f"hist/{name}"] = wandb.plot.histogram(wandb.Table(data=values, columns=[name]), name,
                                                           title=f"{name} per question")
        self.run.log(log)


def run_config(module: Any, datamodule: Any, fingerprint: dict[str, Any] | None,
               effective: dict[str, Any] | None = None, evaluation: Any = None) -> dict[str, Any]:
    """W&B run config: the fields runs are filtered and grouped by, then the full fingerprint, then
    the configuration: ``effective`` (the run's ``config.yaml``) when there is one, else what the
    module, the DataModule and the EvaluateCallback were built with."""
    fingerprint = fingerprint or {}
    model_fp, data_fp = fingerprint.get("model", {}), fingerprint.get("data", {})
    reducer = getattr(module, "reducer", None)
    reducer_cfg = reducer.config() if reducer is not None else model_fp.get("reducer", {})
    records = getattr(datamodule, "records", None) or []
    benchmark = (getattr(datamodule, "benchmark", None) or data_fp.get("benchmark")
                 or (records[0].benchmark if records else "custom"))
    config = {
        "benchmark": benchmark,
        "backbone": model_fp.get("backbone") or type(module).__name__,
        "checkpoint": model_fp.get("checkpoint"),
        "reducer": reducer_cfg.get("name"),
        "reducer_params": {k: v for k, v in reducer_cfg.items() if k != "name"},
        "num_frames": data_fp.get("num_frames"),
        "fingerprint": fingerprint_digest(fingerprint) if fingerprint else None,
        "settings": fingerprint,
    }
    if effective:  # as configured (the fingerprint: as resolved)
        config.update({k: v for k, v in effective.items() if k not in config})
    else:
        config["model"] = {k: v for k, v in dict(getattr(module, "hparams", {}) or {}).items()
                           if not str(k).startswith("_")}  # jsonargparse's own entries (_instantiator)
        config["data"] = _init_args(datamodule) if datamodule is not None else {}
        if evaluation is not None:
            config["evaluation"] = {"scorer": evaluation.scorer, "choice_mode": evaluation.choice_mode,
                                    "judge": dataclasses.asdict(evaluation.judge_config)}
    return scrub(json.loads(json.dumps(config, default=str)))


def _init_args(obj: Any) -> dict[str, Any]:
    """The constructor arguments an object keeps as attributes of the same name (``records``: the path)."""
    names = [n for n in inspect.signature(type(obj).__init__).parameters if n != "self"]
    return {n: getattr(obj, "records_path" if n == "records" else n) for n in names
            if hasattr(obj, "records_path" if n == "records" else n)}


def run_metrics(results: dict[str, Any] | None, predictions: list[dict[str, Any]]) -> dict[str, float]:
    """Summary numbers under keys that are the same for every run (no setting in a key)."""
    out: dict[str, float] = {}
    metrics = (results or {}).get("metrics", {})
    for bench, entry in metrics.get("benchmarks", {}).items():
        key = f"eval/{bench}"
        out[f"{key}/items"] = entry.get("items")
        for status, n in entry.get("status", {}).items():
            out[f"{key}/status/{status}"] = n
        mc = entry.get("multiple_choice") or {}
        judged = entry.get("judged") or {}
        default = judged.get("default") or {}
        out[f"{key}/accuracy"] = mc.get("accuracy", default.get("accuracy"))  # the headline (viz.headline_metric)
        out[f"{key}/accuracy_all"] = mc.get("accuracy_all", default.get("accuracy_all"))
        for kind, entry_ in (("multiple_choice", mc), ("judged", default)):  # a mixed benchmark has both
            out[f"{key}/{kind}_accuracy"] = entry_.get("accuracy")
            out[f"{key}/{kind}_accuracy_all"] = entry_.get("accuracy_all")
        out[f"{key}/score"] = default.get("score")
        for dim, d in judged.items():
            if dim != "default":
                out[f"{key}/{dim}_score"] = d.get("score")
            out[f"{key}/unjudged"] = out.get(f"{key}/unjudged", 0) + d.get("unjudged", 0)
        out[f"{key}/vcgbench_average"] = entry.get("vcgbench_average")
        for kind, groups in mc.items():
            if kind.startswith("by_") and isinstance(groups, dict):
                for group, g in groups.items():
                    out[f"{key}/{kind}/{group}/accuracy"] = g.get("accuracy")
    summary = efficiency_summary(predictions)
    for name in ("visual_tokens_out", "visual_tokens_in", "frames_kept", "frames_sampled"):
        for stat, value in (summary.get(name) or {}).items():
            out[f"efficiency/{name}_{stat}"] = value
    for stage, ms in summary.get("timings_ms", {}).items():
        out[f"timing/{stage}_ms"] = ms
    run = (results or {}).get("judge_run") or {}
    for name in ("requests", "cached", "judged", "unparsable", "reasked", "retries", "failed", "unjudged", "cost_usd"):
        if name in run:
            out[f"judge/{name}"] = run[name]
    return {k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _scorer_identity(results: dict[str, Any] | None) -> dict[str, Any]:
    m = (results or {}).get("metrics", {})
    return {"judge_model": m.get("judge_model"), "prompt_versions": m.get("prompt_versions"),
            "choice_mode": m.get("choice_mode", "reference")}
