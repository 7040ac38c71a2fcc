"""What a benchmark is, as data: ``BenchmarkSpec`` (one per benchmark) and the rows it holds.

A spec gathers everything that used to be spread over seven tables (the preparer, the video
naming rule, the metric breakdowns, the published numbers, ...), so that registering a
benchmark is one spec plus its YAML in ``configs/benchmarks/``. Nothing here imports Lightning:
``dyto prepare`` reads the registry too.

Published numbers carry a source tag. S2 = a third-party transcription of the tables of
arXiv 2411.14401 v2 (secondary, not checked against the PDF); S4 = the wizwand leaderboard page
(secondary; arXiv version and model size unknown). Only DyTo's own rows are kept: baseline rows
belong to other methods and other judge runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from dyto.datamodules.sheets import Prepared
from dyto.records import TASKS

__all__ = ["BenchmarkSpec", "LmmsEvalTask", "METRICS", "Published", "VideoRule", "paper_rows"]

# What a published number measures: accuracy in %, the judge's 0-5 score, VCGBench's 5-dimension mean.
METRICS = ("accuracy", "score", "vcgbench_average")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Published:
    """One published DyTo number (a row of ``results.json["paper"]``)."""

    benchmark: str  # the spec's name
    metric: str  # one of METRICS
    size: str  # LLM size, e.g. "7B"; "?" when the source does not say
    value: float
    source: str  # source tag (module docstring)
    note: str = ""


def paper_rows(benchmark: str, metric: str, by_size: Mapping[str, float], source: str,
               note: str = "") -> tuple[Published, ...]:
    """``{"7B": 65.7, "34B": 72.9}`` -> one ``Published`` per size, in the given order."""
    return tuple(Published(benchmark, metric, size, value, source, note) for size, value in by_size.items())


@dataclass(frozen=True)
class VideoRule:
    """How a benchmark names its videos on disk (``paths.VideoResolver`` applies it).

    v_prefix: ActivityNet ids appear with and without ``v_`` depending on the sheet (SF-LLaVA
        strips it, the files keep it), so both spellings are tried.
    nested: the NExT-QA release stores ``<folder>/<video>.mp4``; found through the map json
        (given, or ``map_vid_vidorID.json`` in the video root) or, without a map, by a one-time scan.
    """

    v_prefix: bool = False
    nested: bool = False


@dataclass(frozen=True)
class LmmsEvalTask:
    """A benchmark's task under ``protocol: lmms_eval`` (lmms-eval's ``lmms_eval/tasks/<task>/``).

    The seam between the benchmark side and the backbones (docs/internals.md): the task gives the
    user text, the decoding length and the answer parser; each backbone wraps the text in its own
    chat template and picks its frames and resolution (``dyto.models.lmms_eval.LmmsEvalModel``).

    task: lmms-eval's task name (``videomme``, ``mlvu_dev``, ...).
    source: where it was read: ``<repo>@<commit> <file> <lines>``.
    doc_to_text: (canonical record dict, lmms-eval model name) -> the user text, pre/post prompt
        included. The model name picks the task's ``lmms_eval_specific_kwargs`` entry as
        lmms-eval's ``Task`` does (that model's entry, else ``default``).
    max_new_tokens: the task's ``generation_kwargs.max_new_tokens``; None when the task sets none
        (the model file's default applies).
    parse: (prediction text, record) -> chosen option index or None (the task's own
        ``process_results`` parser); None for open-ended tasks.
    num_frames: a frame count the task itself fixes; None (every task here): the model file's.
    """

    task: str
    source: str
    doc_to_text: Callable[[dict, str], str]
    max_new_tokens: int | None
    parse: Callable[[str, dict], int | None] | None = None
    num_frames: int | None = None

    def text(self, record: Mapping, model: str = "default") -> str:
        """``doc_to_text`` for a record (a dict or a ``QARecord``)."""
        return self.doc_to_text(record if isinstance(record, dict) else record.to_dict(), model)


@dataclass(frozen=True)
class BenchmarkSpec:
    """Everything dyto knows about one benchmark.

    Args:
        name: the one name, everywhere: ``dyto prepare NAME``, ``data.benchmark``, the records'
            ``benchmark`` field, the keys of ``results.json``, ``configs/benchmarks/NAME.yaml``.
        tasks: the record tasks its preparer emits (``records.TASKS``); the DataModule refuses others.
        prepare: raw QA sheet (a path; a folder for VCGBench) -> ``Prepared(records, errors)``.
        sheet: what ``--qa-file`` expects, for ``dyto prepare --help``.
        videos: the video naming rule.
        num_frames: frames its protocol fixes, used only when neither the DataModule nor the
            model gives a count (the reducer decides for every built-in benchmark: None).
        windows: its records carry a (start, end) window in seconds, sampled inside: all of them
            (STAR) or those of some tasks (MVBench's windowed tasks).
        type_field: the record ``meta`` key holding the reporting question type -> ``by_type``.
        derive_type: raw ``meta["question_type"]`` -> reporting type, for records prepared
            without ``type_field`` (hand-written ones).
        type_groups: reporting type -> group -> ``by_group`` (NExT-QA's causal/temporal/descriptive).
        breakdown_fields: further ``meta`` keys reported as ``by_<key>`` (VideoMME's duration, ...).
        published: DyTo's published numbers for this benchmark.
        lmms_eval: the task under ``protocol: lmms_eval``; None where lmms-eval has no such task.
        choice_rule: the benchmark's own multiple-choice rule, (reply, number of options) -> option
            index or None; it becomes ``choice_mode: <name>`` (``dyto.evaluation.choice``).
        macro_over: a breakdown (``"by_type"``, ``"by_<field>"``) whose groups' mean accuracy is the
            benchmark's official number (MLVU's M-avg over its 7 tasks): ``macro_accuracy`` in the
            results. None: correct / answered over all questions is the number.
    """

    name: str
    tasks: tuple[str, ...]
    prepare: Callable[[Path], Prepared]
    sheet: str = ""
    videos: VideoRule = VideoRule()
    num_frames: int | None = None
    windows: bool = False
    type_field: str | None = None
    derive_type: Callable[[str], str] | None = None
    type_groups: Mapping[str, str] = field(default_factory=dict)
    breakdown_fields: tuple[str, ...] = ()
    published: tuple[Published, ...] = ()
    lmms_eval: LmmsEvalTask | None = None
    choice_rule: Callable[[str, int], int | None] | None = None
    macro_over: str | None = None

    def __post_init__(self) -> None:
        where = f"benchmark spec {self.name!r}"
        if not NAME.match(self.name):
            raise ValueError(f"{where}: the name must be lower-case letters, digits and '_' (a file name)")
        if not self.tasks or set(self.tasks) - set(TASKS):
            raise ValueError(f"{where}: tasks {self.tasks} must be a non-empty subset of {TASKS}")
        if not callable(self.prepare):
            raise ValueError(f"{where}: prepare must be a function sheet path -> Prepared")
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"{where}: num_frames must be >= 1 or None, got {self.num_frames}")
        if (self.type_groups or self.derive_type) and self.type_field is None:
            raise ValueError(f"{where}: type_groups / derive_type need a type_field")
        if self.macro_over is not None and self.macro_over not in (
                ("by_type",) * bool(self.type_field) + tuple(f"by_{f}" for f in self.breakdown_fields)):
            raise ValueError(f"{where}: macro_over {self.macro_over!r} must be one of its breakdowns")
        for p in self.published:
            if p.benchmark != self.name or p.metric not in METRICS:
                raise ValueError(f"{where}: published row {p} must name this benchmark and one of {METRICS}")

    def reporting_type(self, meta: Mapping | None) -> str | None:
        """The question type a record is reported under (``by_type``): the stored ``type_field``,
        else ``derive_type`` of the raw ``question_type``, else None."""
        meta = meta or {}
        if self.type_field is None:
            return None
        if meta.get(self.type_field) is not None:
            return str(meta[self.type_field])
        raw = meta.get("question_type", meta.get("type"))
        if raw is None:
            return None
        return self.derive_type(str(raw)) if self.derive_type else str(raw)

    def breakdown_keys(self, meta: Mapping | None) -> list[tuple[str, str]]:
        """(kind, value) pairs a multiple-choice record is counted under besides ("all", "all"):
        ``by_type``, ``by_group`` and one ``by_<field>`` per breakdown field present in ``meta``."""
        meta = meta or {}
        keys = []
        if (qt := self.reporting_type(meta)) is not None:
            keys.append(("by_type", qt))
            if qt in self.type_groups:
                keys.append(("by_group", self.type_groups[qt]))
        keys += [(f"by_{k}", str(meta[k])) for k in self.breakdown_fields if meta.get(k) is not None]
        return keys
