"""The three record types that flow between the parts (docs/internals.md), and JSONL I/O.

* QA record: one per question, written by ``dyto prepare``, read by the DataModules.
* Prediction record: one per question, written by the model's ``predict_step`` via the
  PredictionWriter; it repeats the question fields so it can be judged on its own.
* Judgment record: one per (prediction, judged dimension), written by the judge.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from dyto.errors import RecordsError

TASKS = ("open_ended", "multiple_choice", "vcg_generic", "vcg_temporal", "vcg_consistency")
SPLITS = ("val", "test", "subset")
# Every question ends as exactly one prediction record carrying one of these.
STATUSES = ("ok", "video_missing", "video_unreadable", "too_long", "error")


@dataclass
class QARecord:
    id: str
    benchmark: str
    task: str
    video: str
    question: str
    answer: str
    options: list[str] | None = None
    answer_index: int | None = None
    start: float | None = None
    end: float | None = None
    question2: str | None = None
    split: str = "val"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"record {self.id!r}: unknown task {self.task!r}; expected one of {TASKS}")
        if self.split not in SPLITS:
            raise ValueError(f"record {self.id!r}: unknown split {self.split!r}; expected one of {SPLITS}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QARecord":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"record {d.get('id')!r}: unknown fields {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Field order of a prediction record (docs/internals.md; `prediction2` holds the answer to
# `question2` for VCGBench consistency items and is null otherwise; `protocol` is "reference" or
# "lmms_eval", the prompt/frames/parser protocol the run followed, null in older records).
PREDICTION_FIELDS = (
    "id", "benchmark", "task", "question", "answer", "options", "answer_index", "question2",
    "meta", "status", "error", "prediction", "prediction2", "frames_sampled", "frames_kept",
    "visual_tokens_in", "visual_tokens_out", "prompt_tokens", "reducer", "model", "conv_mode",
    "seed", "timings", "protocol",
)


def prediction_record(qa: QARecord | dict[str, Any], **values: Any) -> dict[str, Any]:
    """A prediction record for `qa` with every field present (unset ones are None)."""
    q = qa.to_dict() if isinstance(qa, QARecord) else qa
    rec = {k: None for k in PREDICTION_FIELDS}
    for k in ("id", "benchmark", "task", "question", "answer", "options", "answer_index", "question2", "meta"):
        rec[k] = q.get(k)
    unknown = set(values) - set(PREDICTION_FIELDS)
    if unknown:
        raise ValueError(f"unknown prediction fields {sorted(unknown)}")
    rec.update(values)
    if rec["status"] not in STATUSES:
        raise ValueError(f"prediction {rec['id']!r}: status {rec['status']!r} not in {STATUSES}")
    return rec


def read_jsonl(path: str | os.PathLike, allow_torn_tail: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file; a bad line raises ``RecordsError`` (a ValueError)
    naming file and line.

    With ``allow_torn_tail`` (append-only logs: predictions per rank, the judge cache) a final
    line without a newline that does not parse is a write a killed process left half done: it is
    skipped, and its item is redone. Everywhere else (QA records, merged files) it is an error.
    """
    for _, obj in numbered_jsonl(path, allow_torn_tail):
        yield obj


def numbered_jsonl(path: str | os.PathLike, allow_torn_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """``read_jsonl`` with each object's line number (1-based; blank lines are skipped)."""
    path = Path(path)
    with path.open("r", encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    torn_tail = allow_torn_tail and lines[-1] != ""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if torn_tail and lineno == len(lines):
                return
            raise RecordsError(path, lineno, f"not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise RecordsError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def stable_hash(value: Any) -> str:
    """Hex sha256 of ``value`` as JSON (keys in the given order, non-ASCII kept): a cache key."""
    return hashlib.sha256(json.dumps(value, ensure_ascii=False).encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text via a temporary file and a rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically (temp file + rename); returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def open_append_log(path: str | os.PathLike) -> TextIO:
    """Open an append-only JSONL log for appending, first cutting off a torn last line.

    A killed process can leave its last record half written; appending after it would glue the
    next record onto it and make the log unreadable. Everything up to the last newline is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with path.open("rb+") as f:
            end = pos = f.seek(0, os.SEEK_END)
            while pos > 0:
                start = max(0, pos - 65536)
                f.seek(start)
                newline = f.read(pos - start).rfind(b"\n")
                if newline >= 0:
                    pos = start + newline + 1
                    break
                pos = start
            if pos != end:
                f.truncate(pos)
    return path.open("a", encoding="utf-8")


def append_jsonl(f: TextIO, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows to an open text file and flush + fsync, so a crash loses at most a torn line."""
    for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


REQUIRED_QA_FIELDS = ("id", "benchmark", "task", "video", "question", "answer")


def qa_record_problem(d: dict[str, Any]) -> str | None:
    """What makes ``d`` (one parsed line of a records file) unusable as a QA record, or None.

    Every field of :class:`QARecord` that has no default must be there, as a string (``id``,
    ``video`` and ``question`` not empty); a multiple-choice record needs at least two options
    (strings), an ``answer_index`` among them and ``answer`` equal to that option, as ``dyto
    prepare`` writes them (a mismatch would score every answer against the wrong letter); a null
    ``answer_index`` says the answer is none of the options (the question always counts wrong).
    """
    missing = [k for k in REQUIRED_QA_FIELDS if k not in d]
    if missing:
        return f"missing required field{'s' * (len(missing) > 1)} {', '.join(missing)}"
    unknown = sorted(set(d) - {f.name for f in fields(QARecord)})
    if unknown:
        return f"unknown field{'s' * (len(unknown) > 1)} {', '.join(unknown)}"
    for k in REQUIRED_QA_FIELDS:
        if not isinstance(d[k], str) or (k in ("id", "video", "question") and not d[k].strip()):
            return f"{k} must be a{' non-empty' if k in ('id', 'video', 'question') else ''} string, got {d[k]!r}"
    if d["task"] not in TASKS:
        return f"unknown task {d['task']!r}; expected one of {', '.join(TASKS)}"
    if d.get("split", "val") not in SPLITS:
        return f"unknown split {d.get('split')!r}; expected one of {', '.join(SPLITS)}"
    if not isinstance(d.get("meta", {}), dict):
        return f"meta must be a JSON object, got {d['meta']!r}"
    for k in ("start", "end"):
        if d.get(k) is not None and (isinstance(d[k], bool) or not isinstance(d[k], (int, float))):
            return f"{k} must be a number of seconds or null, got {d[k]!r}"
    if d["task"] == "multiple_choice":
        options, index = d.get("options"), d.get("answer_index")
        if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) for o in options):
            return f"a multiple-choice record needs options, a list of at least 2 strings; got {options!r}"
        if index is None:  # the answer is none of the options (MLVU keeps two such rows): always wrong
            if d["answer"] in options:
                return (f"answer_index is null but the answer {d['answer']!r} is option {options.index(d['answer'])}; "
                        "null means the answer is none of the options")
            return None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(options):
            return f"answer_index must be an integer in 0..{len(options) - 1}, got {index!r}"
        if options[index] != d["answer"]:
            return f"answer {d['answer']!r} is not option {index} ({options[index]!r}), which answer_index names"
    return None


def read_qa_records(path: str | os.PathLike) -> list[QARecord]:
    """Read canonical QA records; a malformed row or a duplicate id raises ``RecordsError`` (a
    ValueError) naming the file and line (:func:`qa_record_problem` says what a row needs)."""
    out: list[QARecord] = []
    seen: dict[str, int] = {}
    for lineno, d in numbered_jsonl(path):
        problem = qa_record_problem(d)
        if problem is not None:
            raise RecordsError(path, lineno, f"record {d.get('id')!r}: {problem}" if isinstance(d.get("id"), str)
                               else problem)
        if d["id"] in seen:
            raise RecordsError(path, lineno, f"duplicate id {d['id']!r} (first at line {seen[d['id']]})")
        seen[d["id"]] = lineno
        out.append(QARecord.from_dict(d))
    return out
