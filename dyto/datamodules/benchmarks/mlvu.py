"""MLVU dev, multiple choice (MLVU-M, 7 tasks): the JSON files of the MLVU release (JUNJIE99/MLVU
``data/``, the Hugging Face ``MLVU/MVLU`` ``json/`` folder), one list per task.

Read as the official scorer reads them (JUNJIE99/MLVU@fd060c1
``evaluation/multiple_choice_evaluation/choice_bench.py``, lines 24-101 and 121-131): seven files,
``1_plotQA.json`` .. ``7_topic_reasoning.json``; a row is ``{"video", "duration", "question",
"candidates", "answer", "question_type"}`` with the answer as the text of a candidate. The two
generation tasks (``8_sub_scene``, ``9_summary``) are not multiple choice and not read. Records are
``<task>_<row number>``; ``meta["task"]`` is the scorer's task key (``needle`` for the rows whose
``question_type`` is ``findNeedle``). As the scorer's ``qa_template``: an answer given twice among
the candidates is the last of them, empty candidates (and topic_reasoning's one empty row) stay,
and the two needle rows whose answer is none of the candidates are kept and always count wrong
(the prepare report lists them).

Videos: ``<json stem>/<video>`` under ``video_root`` (the release's ``video/`` folder); any other
layout is found by a one-time scan (the names are unique across the seven tasks). The benchmark's
number is **M-avg**: the mean of the seven task accuracies (``final_res['Avg']`` of the scorer),
in ``results.json`` as ``macro_accuracy``; the official rule (``choice_mode: mlvu``) is the
scorer's ``check_ans``.

Under ``protocol: lmms_eval``: lmms-eval's ``mlvu_dev`` (``sy1998/MLVU_dev``), whose ``question``
field already holds the lettered options (rebuilt here; see :func:`lmms_eval_question`).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Mapping, Sequence

from dyto.datamodules.benchmarks.lmms_eval_tasks import extract_mcq_answer
from dyto.datamodules.benchmarks.spec import BenchmarkSpec, LmmsEvalTask, VideoRule
from dyto.datamodules.sheets import Prepared, RowProblem, cell, collect_json_lists, options_list, scorer_answer
from dyto.records import QARecord

# the scorer's task key -> its file (choice_bench.py main(), data_list)
TASKS = {"plotQA": "1_plotQA", "needle": "2_needle", "ego": "3_ego", "count": "4_count", "order": "5_order",
         "anomaly_reco": "6_anomaly_reco", "topic_reasoning": "7_topic_reasoning"}


def prepare_mlvu(json_dir: Path) -> Prepared:
    def convert(task: str, number: int, row: dict[str, Any]) -> QARecord:
        options = options_list(row, allow_empty=True)  # plotQA and topic_reasoning hold empty candidates
        answer, index, note = scorer_answer(row, options)
        question = row.get("question")
        if not isinstance(question, str):
            raise RowProblem(f"question must be a string, got {question!r}")
        if not question.strip():  # topic_reasoning row 27: everything empty; the scorer asks it anyway
            note = {"fixed": "empty question: kept, as the official scorer asks it (its answer is the last "
                             "candidate equal to the answer)"}
        duration = row.get("duration")
        return QARecord(id=f"{task}_{number}", benchmark="mlvu", task="multiple_choice",
                        video=f"{TASKS[task]}/{cell(row, 'video')}", question=question, answer=answer,
                        options=options, answer_index=index, split="val",
                        meta={"task": task, "question_type": row.get("question_type"),
                              "duration": duration if isinstance(duration, (int, float)) else None, **note})

    return collect_json_lists({task: Path(json_dir) / f"{stem}.json" for task, stem in TASKS.items()}, convert)


def official_choice(text: str, num_options: int) -> int | None:
    """The scorer's ``check_ans``: the character before the reply's first ``)`` when it has one, else
    the whole reply, must be the answer's letter (``(B) ...`` and ``B)`` read B, ``B.`` reads nothing)."""
    if ")" in text:
        at = text.index(")")
        text = text[at - 1:at]
    index = string.ascii_uppercase.find(text) if len(text) == 1 else -1
    return index if 0 <= index < num_options else None


# ------------------------------------------------------------------ lmms-eval (protocol: lmms_eval)
LMMS_EVAL = "EvolvingLMMs-Lab/lmms-eval@75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3"
KWARGS = {  # tasks/mlvu/mlvu_dev.yaml, lmms_eval_specific_kwargs
    "default": {"pre_prompt": "", "post_prompt": "\nOnly give the best option.\nBest option: ("},
    "plm": {"pre_prompt": "", "post_prompt": "\nOnly give the best option."},
}


def lmms_eval_question(question: str, options: Sequence[str]) -> str:
    """The ``question`` field of a ``sy1998/MLVU_dev`` row: the question, then ``(A) option`` lines,
    each ending in a newline. That layout was not read from the parquet file (not reachable from
    here) but from a description of lmms-eval's logged MLVU rows; docs/datasets.md says so."""
    return question + "\n" + "".join(f"({string.ascii_uppercase[i]}) {o}\n" for i, o in enumerate(options))


def lmms_eval_text(record: Mapping[str, Any], model: str = "default") -> str:
    """``mlvu_doc_to_text`` (tasks/mlvu/utils.py lines 55-62): pre prompt + question + post prompt,
    with the model's ``lmms_eval_specific_kwargs`` entry (``plm``), else ``default``."""
    kwargs = KWARGS.get(model) or KWARGS["default"]
    return kwargs["pre_prompt"] + lmms_eval_question(record["question"], record["options"]) + kwargs["post_prompt"]


def lmms_eval_parse(text: str, record: Mapping[str, Any]) -> int | None:
    """``mlvu_process_results``: the letter ``extract_mcq_answer`` finds among A-D (the answer is
    right when it equals the row's letter)."""
    letter = extract_mcq_answer(text or "", ["A", "B", "C", "D"])
    index = "ABCD".find(letter) if letter else -1
    return index if 0 <= index < len(record["options"]) else None


LMMS_EVAL_TASK = LmmsEvalTask("mlvu_dev", f"{LMMS_EVAL} lmms_eval/tasks/mlvu/mlvu_dev.yaml, utils.py 55-128, "
                              "_task_utils/mcq_extract.py 66-158", lmms_eval_text, 16, lmms_eval_parse)

SPEC = BenchmarkSpec(
    name="mlvu",
    tasks=("multiple_choice",),
    prepare=prepare_mlvu,
    sheet="the MLVU json folder (1_plotQA.json .. 7_topic_reasoning.json)",
    videos=VideoRule(nested=True),
    type_field="task",
    macro_over="by_type",
    lmms_eval=LMMS_EVAL_TASK,
    choice_rule=official_choice,
)
