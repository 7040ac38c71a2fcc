"""One function per benchmark: raw QA sheet -> canonical QARecords (spec datasets.md §2).

Every preparer takes the sheet path (VCGBench: the folder of its four CSVs) and returns
`Prepared(records, errors)`. Ids are the ids the official scorers use; where the sheet's own id
differs, it is kept in `meta["question_id"]`. Meta keys:

* `question_type`: the sheet's raw type; `type_name` spells out TGIF/ActivityNet codes.
* `category`: MSRVTT's video category (its `question_type` column), STAR's question category.
* `report_type`: NExT-QA/IntentQA type for reporting, TP merged into TN as their papers do.
* `fixed`: what was repaired in the row (ActivityNet's leaked index prefix).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from dyto.datamodules.sheets import (Prepared, RowError, RowProblem, answer_index, cell, collect, integer,
                                     read_csv, read_json_rows)
from dyto.records import QARecord

OPEN_ENDED_COLUMNS = ("video_id", "answer", "question", "video_name", "question_id", "question_type")
TGIF_TYPES = {0: "object", 1: "number", 2: "color", 3: "location"}
ACTIVITYNET_TYPES = {0: "motion", 1: "spatial", 2: "temporal", 3: "yes_no", 4: "color", 5: "object",
                     6: "location", 7: "number", 8: "other"}
# ActivityNet's three corrupted questions start with "\n5220," (an index leaked by a bad CSV round trip).
LEAKED_INDEX = re.compile(r"^\s*\d+,")


def _open_ended(benchmark: str, split: str, make: Callable[[dict[str, Any]], dict[str, Any]]):
    """A preparer for the IG-VLM open-ended layout; `make` gives the id, video and meta of a row."""

    def prepare(qa_file: Path) -> Prepared:
        rows, errors = read_csv(qa_file, OPEN_ENDED_COLUMNS)

        def convert(row: dict[str, Any]) -> QARecord:
            fields = {"question": cell(row, "question"), "answer": cell(row, "answer"), **make(row)}
            return QARecord(benchmark=benchmark, task="open_ended", split=split, **fields)

        return collect(qa_file, rows, convert, errors)

    return prepare


def _msvd(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": cell(row, "question_id"), "video": cell(row, "video_name"),
            "meta": {"video_id": cell(row, "video_id"), "question_type": integer(row, "question_type")}}


def _msrvtt(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": cell(row, "question_id"), "video": cell(row, "video_name"),
            "meta": {"video_id": cell(row, "video_id"), "category": integer(row, "question_type")}}


def _tgif(row: dict[str, Any]) -> dict[str, Any]:
    # question_id is per GIF (shared by up to 10 questions); video_id (FRAMEQA...) is per question.
    qtype = integer(row, "question_type")
    return {"id": cell(row, "video_id"), "video": cell(row, "video_name"),
            "meta": {"question_id": cell(row, "question_id"), "question_type": qtype,
                     "type_name": TGIF_TYPES.get(qtype, "unknown")}}


def _activitynet(row: dict[str, Any]) -> dict[str, Any]:
    qtype = integer(row, "question_type")
    meta: dict[str, Any] = {"question_type": qtype, "type_name": ACTIVITYNET_TYPES.get(qtype, "unknown")}
    question = cell(row, "question")
    leaked = LEAKED_INDEX.match(question)
    if leaked:
        meta["fixed"] = f"stripped leaked prefix {leaked.group(0)!r} from the question"
        question = question[leaked.end():]
        if not question.strip():
            raise RowProblem("question is empty once the leaked index prefix is removed")
    return {"id": cell(row, "question_id"), "video": cell(row, "video_name"), "question": question, "meta": meta}


def _mc(row: dict[str, Any], option_columns: int) -> list[str]:
    return [cell(row, f"a{i}") for i in range(option_columns)]


def report_type(qtype: str) -> str:
    """NExT-QA/IntentQA reporting type: TP merged into TN, as their papers do (metrics reads it)."""
    return "TN" if qtype == "TP" else qtype


def star_category(qtype: str) -> str:
    """STAR question category: ``Interaction_T1`` -> ``Interaction`` (metrics reads it)."""
    return qtype.split("_")[0]


def prepare_nextqa(qa_file: Path) -> Prepared:
    cols = ("video_name", "frame_count", "width", "height", "question", "answer_number", "question_id",
            "question_type", "a0", "a1", "a2", "a3", "a4", "answer")
    rows, errors = read_csv(qa_file, cols)

    def convert(row: dict[str, Any]) -> QARecord:
        video, joined = cell(row, "video_name"), cell(row, "question_id")
        qid = joined[len(video):]
        # question_id is video and qid glued together; the official scorer keys on "<video>_<qid>".
        if not joined.startswith(video) or not qid.isdigit():
            raise RowProblem(f"question_id {joined!r} is not video {video!r} followed by a numeric qid")
        options, qtype = _mc(row, 5), cell(row, "question_type")
        return QARecord(
            id=f"{video}_{qid}", benchmark="nextqa", task="multiple_choice", video=f"{video}.mp4",
            question=cell(row, "question"), answer=cell(row, "answer"), options=options,
            answer_index=answer_index(options, cell(row, "answer"), integer(row, "answer_number")), split="val",
            meta={"question_id": joined, "qid": qid, "question_type": qtype, "report_type": report_type(qtype),
                  "frame_count": integer(row, "frame_count"), "width": integer(row, "width"),
                  "height": integer(row, "height")})

    return collect(qa_file, rows, convert, errors)


def prepare_egoschema(qa_file: Path) -> Prepared:
    rows, errors = read_csv(qa_file, ("video_name", "question_id", "question", "answer", "a0", "a1", "a2", "a3", "a4"))

    def convert(row: dict[str, Any]) -> QARecord:
        q_uid, options = cell(row, "video_name"), _mc(row, 5)
        return QARecord(
            id=q_uid, benchmark="egoschema", task="multiple_choice", video=f"{q_uid}.mp4",
            question=cell(row, "question"), answer=cell(row, "answer"), options=options,
            answer_index=answer_index(options, cell(row, "answer")), split="subset",
            meta={"google_drive_id": cell(row, "question_id"),
                  "subset": "the 500-question public subset (answers are public only for these; "
                            "the full 5,031 set is scored by the EgoSchema server)"})

    return collect(qa_file, rows, convert, errors)


def prepare_intentqa(qa_file: Path) -> Prepared:
    cols = ("video_name", "question", "question_id", "answer", "video_id", "question_type", "a0", "a1", "a2", "a3", "a4")
    rows, errors = read_csv(qa_file, cols)

    def convert(row: dict[str, Any]) -> QARecord:
        options, qtype = _mc(row, 5), cell(row, "question_type")
        return QARecord(
            id=cell(row, "question_id"), benchmark="intentqa", task="multiple_choice",
            video=f"{cell(row, 'video_name')}.mp4", question=cell(row, "question"), answer=cell(row, "answer"),
            options=options, answer_index=answer_index(options, cell(row, "answer")), split="val",
            meta={"question_type": qtype, "report_type": report_type(qtype)})

    return collect(qa_file, rows, convert, errors)


def prepare_star(qa_file: Path) -> Prepared:
    cols = ("video_name", "question", "answer_number", "question_id", "question_type", "a0", "a1", "a2", "a3", "answer")
    rows, errors = read_csv(qa_file, cols)

    def convert(row: dict[str, Any]) -> QARecord:
        clip = cell(row, "video_name")
        # "<CharadesID>_<start>_<end>" with Python-printed floats (38.425000000000004 included): parse, don't rebuild.
        parts = clip.rsplit("_", 2)
        try:
            charades, start, end = parts[0], float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise RowProblem(f"video_name {clip!r} is not <CharadesID>_<start>_<end>") from None
        if not charades or not 0 <= start < end:
            raise RowProblem(f"video_name {clip!r} has no id or an empty time window")
        options, qtype = _mc(row, 4), cell(row, "question_type")
        return QARecord(
            id=cell(row, "question_id"), benchmark="star", task="multiple_choice", video=f"{charades}.mp4",
            question=cell(row, "question"), answer=cell(row, "answer"), options=options,
            answer_index=answer_index(options, cell(row, "answer"), integer(row, "answer_number")),
            start=start, end=end, split="val",
            meta={"clip": clip, "question_type": qtype, "category": star_category(qtype)})

    return collect(qa_file, rows, convert, errors)


VIDEOMME_PREFIX = re.compile(r"^\s*[A-Z]\.\s*")


def prepare_videomme(qa_file: Path) -> Prepared:
    """The Hugging Face `lmms-lab/Video-MME` rows, as parquet (needs pyarrow), JSON list or JSONL."""

    def convert(row: dict[str, Any]) -> QARecord:
        raw = row.get("options")
        if raw is None or isinstance(raw, str) or len(raw) < 2:
            raise RowProblem(f"options must be a list of at least 2 strings, got {raw!r}")
        options = [VIDEOMME_PREFIX.sub("", str(o), count=1) for o in raw]  # "A. Apples." -> "Apples."
        letter = cell(row, "answer").strip()
        if len(letter) != 1 or not 0 <= ord(letter) - ord("A") < len(options):
            raise RowProblem(f"answer {letter!r} is not a letter A..{chr(ord('A') + len(options) - 1)}")
        index = ord(letter) - ord("A")
        return QARecord(
            id=cell(row, "question_id"), benchmark="videomme", task="multiple_choice",
            video=f"{cell(row, 'videoID')}.mp4", question=cell(row, "question"), answer=options[index],
            options=options, answer_index=index, split="test",
            meta={"answer_letter": letter, **{k: row.get(k) for k in
                  ("video_id", "duration", "domain", "sub_category", "task_type", "url")}})

    return collect(qa_file, read_json_rows(qa_file), convert)


VCG_COLUMNS = ("video_name", "question", "question_id", "answer")


def _vcg_record(kind: str, row: dict[str, Any], **extra: Any) -> QARecord:
    qid = cell(row, "question_id")
    # The same question_id appears in the generic, temporal and consistency sheets: prefix the kind.
    return QARecord(id=f"{kind}_{qid}", benchmark="vcgbench", task=f"vcg_{kind}", video=cell(row, "video_name"),
                    question=cell(row, "question"), answer=cell(row, "answer"), split="test",
                    meta={"question_id": qid}, **extra)


def prepare_vcgbench(qa_folder: Path) -> Prepared:
    """Generic_QA.csv, Temporal_QA.csv and the row-aligned Consistency_QA1/2.csv of one folder."""
    qa_folder = Path(qa_folder)
    out = Prepared()
    for kind, name in (("generic", "Generic_QA.csv"), ("temporal", "Temporal_QA.csv")):
        rows, errors = read_csv(qa_folder / name, VCG_COLUMNS)
        part = collect(qa_folder / name, rows, lambda row, kind=kind: _vcg_record(kind, row), errors)
        out.records += part.records
        out.errors += part.errors
    # The two consistency sheets are row-aligned paraphrases; pair them by question_id (unique in
    # each) so a broken row in one sheet cannot shift every later pair.
    first, first_errors = read_csv(qa_folder / "Consistency_QA1.csv", VCG_COLUMNS)
    second, second_errors = read_csv(qa_folder / "Consistency_QA2.csv", VCG_COLUMNS)
    second_by_qid = {row.get("question_id"): (line, row) for line, row in second}
    unpaired = dict(second_by_qid)

    def convert(row: dict[str, Any]) -> QARecord:
        qid = cell(row, "question_id")
        if qid not in second_by_qid:
            raise RowProblem(f"question_id {qid!r} has no row in Consistency_QA2.csv")
        line2, row2 = unpaired.pop(qid, second_by_qid[qid])
        if row2.get("answer") != row.get("answer"):
            raise RowProblem(f"Consistency_QA2.csv line {line2} has the same question_id but another answer")
        return _vcg_record("consistency", row, question2=cell(row2, "question"))

    part = collect(qa_folder / "Consistency_QA1.csv", first, convert, first_errors + second_errors)
    part.errors += [RowError(str(qa_folder / "Consistency_QA2.csv"), line, "no row with this question_id in "
                             "Consistency_QA1.csv") for line, _ in unpaired.values()]
    out.records += part.records
    out.errors += part.errors
    return out


PREPARERS: dict[str, Callable[[Path], Prepared]] = {
    "msvd_qa": _open_ended("msvd_qa", "val", _msvd),
    "msrvtt_qa": _open_ended("msrvtt_qa", "val", _msrvtt),
    "tgif_qa": _open_ended("tgif_qa", "test", _tgif),
    "activitynet_qa": _open_ended("activitynet_qa", "test", _activitynet),
    "nextqa": prepare_nextqa,
    "egoschema": prepare_egoschema,
    "intentqa": prepare_intentqa,
    "star": prepare_star,
    "videomme": prepare_videomme,
    "vcgbench": prepare_vcgbench,
}

__all__ = ["PREPARERS", "Prepared", "RowError"]
