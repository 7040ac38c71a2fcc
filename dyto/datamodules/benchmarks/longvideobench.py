"""LongVideoBench val (multiple choice, 4-5 options, without subtitles): ``lvb_val.json`` of the
Hugging Face release ``longvideobench/LongVideoBench``.

A row (longvideobench/LongVideoBench@fc3c553 ``longvideobench/longvideobench_dataset.py`` reads
them) is ``{"video_id", "question", "question_wo_referring_query", "candidates",
"correct_choice", "position", "topic_category", "question_category", "level", "id",
"video_path", "subtitle_path", "duration_group", "starting_timestamp_for_subtitles",
"duration", "view_count"}``; ``correct_choice`` is the index of the right candidate (the test
file, ``lvb_test_wo_gt.json``, has none, and its rows are refused). The question is ``question``
(with its referring query), as the official loader and lmms-eval ask it.

Videos: ``videos/<video_path>`` (``video_root`` = the release's ``videos/`` folder). Subtitles are
not given to the model: dyto answers LongVideoBench *without subtitles* (lmms-eval's
``longvideobench_val_v``); the interleaved-subtitle setting is not supported. Accuracy over all
questions, by duration group (15, 60, 600, 3600 s) and by question category, as lmms-eval's
aggregation reports them; the official rule (``choice_mode: longvideobench``) is the letter parser
the LongVideoBench authors wrote for lmms-eval.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from dyto.datamodules.benchmarks.spec import BenchmarkSpec, LmmsEvalTask
from dyto.datamodules.sheets import Prepared, RowProblem, cell, collect_json_lists, options_list
from dyto.records import QARecord

META = ("video_id", "duration_group", "question_category", "topic_category", "level", "duration", "position",
        "question_wo_referring_query", "subtitle_path", "starting_timestamp_for_subtitles", "view_count")


def prepare_longvideobench(qa_file: Path) -> Prepared:
    def convert(task: str, number: int, row: dict[str, Any]) -> QARecord:
        options = options_list(row)
        choice = row.get("correct_choice")
        if isinstance(choice, bool) or not isinstance(choice, int):
            raise RowProblem(f"correct_choice must be an option index, got {choice!r} "
                             "(lvb_test_wo_gt.json has no answers: prepare lvb_val.json)")
        if not 0 <= choice < len(options):
            raise RowProblem(f"correct_choice {choice} is outside 0..{len(options) - 1}")
        if row.get("duration_group") is None:
            raise RowProblem("no duration_group")
        return QARecord(id=cell(row, "id"), benchmark="longvideobench", task="multiple_choice",
                        video=cell(row, "video_path"), question=cell(row, "question"), answer=options[choice],
                        options=options, answer_index=choice, split="val", meta={k: row.get(k) for k in META})

    return collect_json_lists({"val": Path(qa_file)}, convert)


_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer", "The best option is",
             "The correct option is", "Best answer:", "Best option:")


def official_choice(text: str, num_options: int) -> int | None:
    """``parse_multi_choice_response`` of lmms-eval's LongVideoBench utils (lines 187-213), written by
    the benchmark's author: answer prefixes removed, then the first of A-E anywhere. Where it finds
    no letter (or a reply of more than ten words without one) it draws a random option; here the
    reply selects none (counted wrong), so a rerun scores the same."""
    s = text.strip()
    for prefix in _PREFIXES:
        s = s.replace(prefix, "")
    match = re.search(r"[ABCDE]", s)
    index = "ABCDE".index(match.group(0)) if match else -1
    return index if 0 <= index < num_options else None


# ------------------------------------------------------------------ lmms-eval (protocol: lmms_eval)
LMMS_EVAL = "EvolvingLMMs-Lab/lmms-eval@75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3"
POST_PROMPT = "Answer with the option's letter from the given choices directly.\n"  # longvideobench_val_v.yaml


def lmms_eval_text(record: Mapping[str, Any], model: str = "default") -> str:
    """``longvideobench_doc_to_text`` without subtitles (utils.py lines 129-152): the question, the
    options as ``A. text`` lines, the post prompt (only a ``default`` entry)."""
    options = "\n".join(f"{chr(ord('A') + i)}. {o}" for i, o in enumerate(record["options"]))
    return f"{record['question']}\n{options}\n{POST_PROMPT}"


def lmms_eval_parse(text: str, record: Mapping[str, Any]) -> int | None:
    """``longvideobench_process_results``: the same parser as the official rule."""
    return official_choice(text or "", len(record["options"]))


LMMS_EVAL_TASK = LmmsEvalTask("longvideobench_val_v", f"{LMMS_EVAL} lmms_eval/tasks/longvideobench/"
                              "longvideobench_val_v.yaml, utils.py 129-152 and 187-308", lmms_eval_text, 32,
                              lmms_eval_parse)

SPEC = BenchmarkSpec(
    name="longvideobench",
    tasks=("multiple_choice",),
    prepare=prepare_longvideobench,
    sheet="lvb_val.json (longvideobench/LongVideoBench)",
    breakdown_fields=("duration_group", "question_category"),
    lmms_eval=LMMS_EVAL_TASK,
    choice_rule=official_choice,
)
