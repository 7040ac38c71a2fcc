"""VideoMME (multiple choice, 4 options, without subtitles): the Hugging Face ``lmms-lab/Video-MME``
rows, as parquet (needs pyarrow), a JSON list or JSONL. Options lose their ``"A. "`` prefix; the
answer letter is kept in ``meta``. Accuracy is broken down by duration, domain, sub-category and
task type."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dyto.datamodules.benchmarks.lmms_eval_tasks import VIDEOMME
from dyto.datamodules.benchmarks.spec import BenchmarkSpec, paper_rows
from dyto.datamodules.sheets import Prepared, RowProblem, cell, collect, read_json_rows
from dyto.records import QARecord

VIDEOMME_PREFIX = re.compile(r"^\s*[A-Z]\.\s*")
BREAKDOWNS = ("duration", "domain", "sub_category", "task_type")


def prepare_videomme(qa_file: Path) -> Prepared:
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
            meta={"answer_letter": letter, **{k: row.get(k) for k in ("video_id", *BREAKDOWNS, "url")}})

    return collect(qa_file, read_json_rows(qa_file), convert)


SPEC = BenchmarkSpec(
    name="videomme",
    tasks=("multiple_choice",),
    prepare=prepare_videomme,
    sheet="lmms-lab/Video-MME rows (.parquet, .json or .jsonl)",
    breakdown_fields=BREAKDOWNS,
    published=paper_rows("videomme", "accuracy", {"7B": 41.2, "34B": 53.4}, "S2",
                         "w/o subtitles; the ablation table gives 42.7 (7B)"),
    lmms_eval=VIDEOMME,
)
