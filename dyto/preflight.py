"""Checks a ``dyto predict`` config before any weights load: one line per problem, with the fix.

Loading a 7B or 34B checkpoint takes minutes; a run that would then stop on a missing or
malformed records file (a torn line, a missing field, a duplicate id, options that do not hold
the answer), a video folder, a GPU or a judge endpoint should stop before that, in one line that
says what to do. The checks read only the parsed config (plain dicts) and the file system.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Iterator

from dyto.errors import RecordsError, UserError

__all__ = ["PreflightError", "preflight"]


class PreflightError(UserError):
    """A config that cannot run: one line per problem (each printed after ``dyto: ``)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))

    def lines(self) -> list[str]:
        return [" ".join(p.split()) for p in self.problems]


def _walk(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))


def _import(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _benchmark(data: dict[str, Any]) -> str | None:
    init = data.get("init_args") or {}
    if init.get("benchmark"):
        return init["benchmark"]
    cls = _import(data["class_path"]) if data.get("class_path") else None
    return getattr(cls, "benchmark", None)


def _check_data(data: dict[str, Any]) -> list[str]:
    problems = []
    init = data.get("init_args") or data
    bench = _benchmark(data)
    from dyto.datamodules.benchmarks import BENCHMARKS

    if bench is not None and (data.get("init_args") or {}).get("benchmark") and bench not in BENCHMARKS:
        problems.append(f"unknown benchmark {bench!r} (data.init_args.benchmark); known: {', '.join(sorted(BENCHMARKS))}")
    records = init.get("records")
    if records and not Path(records).is_file():
        how = (f"dyto prepare {bench} --qa-file <its QA sheet> --out {records}"
               + (f" --video-root {init['video_root']}" if init.get("video_root") else "")) if bench else \
            "dyto prepare <benchmark> --qa-file <QA sheet> --out " + str(records)
        problems.append(f"records file {records} does not exist (data.records): make it with `{how}`")
    elif records:
        problems += _check_records(records, bench if bench in BENCHMARKS else None)
    root = init.get("video_root")
    if root and not Path(root).is_dir():
        problems.append(f"video folder {root} does not exist (data.video_root): point it at the benchmark's videos")
    return problems


def _check_protocol(model: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """``model.protocol: lmms_eval`` needs a benchmark lmms-eval has a task for (the given one, else
    the records' own, read from the first line)."""
    if model.get("protocol") != "lmms_eval" or not isinstance(data, dict):
        return []
    import json

    from dyto.datamodules.benchmarks import BENCHMARKS, find_benchmark

    bench, records = _benchmark(data), (data.get("init_args") or data).get("records")
    if bench is None and records and Path(records).is_file():
        with open(records, encoding="utf-8") as f:
            first = f.readline().strip()
        bench = json.loads(first).get("benchmark") if first.startswith("{") else None
    spec = find_benchmark(bench)
    if bench is None or (spec is not None and spec.lmms_eval is not None):
        return []
    known = ", ".join(sorted(n for n, s in BENCHMARKS.items() if s.lmms_eval is not None))
    return [f"model.protocol lmms_eval: benchmark {bench!r} has no lmms-eval task (lmms-eval tasks exist for: {known}; "
            "dyto/assets/demo/questions_lmms_eval.jsonl holds demo questions as VideoMME rows), or use --model.protocol reference"]


def _check_records(records: str, bench: str | None) -> list[str]:
    """Every row of the records file usable (JSON, fields, ids, options), all of ``bench``."""
    from dyto.datamodules.base import read_benchmark_records
    from dyto.datamodules.benchmarks import get_benchmark

    try:
        read_benchmark_records(records, get_benchmark(bench) if bench else None)
    except RecordsError as e:
        fix = f"; remake it with `dyto prepare {bench} --qa-file <its QA sheet> --out {records}`" if bench else ""
        return [f"{e.one_line()} (data.records){fix}"]
    return []


def _check_names(model: dict[str, Any]) -> list[str]:
    """Reducers and backbones given by registry name must be registered."""
    from dyto.models.backbone import list_backbones
    from dyto.reduction import list_reducers

    known = {"reducer": list_reducers(), "backbone": list_backbones()}
    problems = []
    for path, value in _walk(model, "model"):
        kind = path.rsplit(".", 1)[-1]
        if kind in known and isinstance(value, str) and value not in known[kind]:
            problems.append(f"unknown {kind} {value!r} ({path}); known: {', '.join(known[kind])}")
    return problems


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _check_checkpoints(model: dict[str, Any]) -> list[str]:
    """A hub id must be downloadable (online) or already in the Hugging Face cache (offline)."""
    problems = []
    for path, value in _walk(model, "model"):
        key = path.rsplit(".", 1)[-1]
        if key not in ("model", "checkpoint") or not isinstance(value, str) or value.startswith("tiny"):
            continue  # the tiny random-weight models are built in memory
        if Path(value).exists():
            continue
        if value.startswith((".", "/", "~")) or value.count("/") != 1:
            problems.append(f"checkpoint folder {value} does not exist ({path})")
            continue
        if _offline():
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(value, "config.json")
            if not isinstance(found, str):
                problems.append(f"checkpoint {value} ({path}) is not in the Hugging Face cache and HF_HUB_OFFLINE is "
                                f"set: download it first (`hf download {value}`) or point {path} at a local folder")
    return problems


def _check_trainer(trainer: dict[str, Any]) -> list[str]:
    accel = str(trainer.get("accelerator") or "auto").lower()
    if accel in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            return [f"the config asks for a GPU (trainer.accelerator: {accel}) but torch sees none: use "
                    "--config configs/trainer/cpu.yaml (or --trainer.accelerator cpu), or install a CUDA build of torch"]
    return []


def _check_judge(evaluation: dict[str, Any]) -> list[str]:
    """``scorer: gpt`` needs a judge endpoint: an API key, or a base URL alone (a local server)."""
    from dyto.evaluation.protocol import JudgeConfig, judge_configured, no_judge_message

    if str(evaluation.get("scorer") or "auto") != "gpt":
        return []
    judge = evaluation.get("judge") or {}
    if judge_configured(JudgeConfig(base_url=judge.get("base_url"))):
        return []
    return [f"evaluation.scorer is gpt but {no_judge_message('--evaluation.judge.base_url', '--evaluation.judge.model')}"]


def preflight(config: dict[str, Any]) -> None:
    """Raise ``PreflightError`` (a ``UserError``, one line per problem) if the parsed
    ``dyto predict`` config cannot run here; return quietly otherwise."""
    problems = _check_trainer(config.get("trainer") or {})
    if isinstance(config.get("data"), dict):
        problems += _check_data(config["data"])
    model = config.get("model") or {}
    problems += (_check_names(model) + _check_checkpoints(model) + _check_protocol(model, config.get("data"))
                 + _check_judge(config.get("evaluation") or {}))
    if problems:
        raise PreflightError(problems)
