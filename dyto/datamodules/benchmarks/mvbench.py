"""MVBench (OpenGVLab, 20 temporal tasks, multiple choice): the ``json/`` folder of the Hugging Face
release ``OpenGVLab/MVBench``, one JSON list per task.

Read as the MVBench notebook reads it (OpenGVLab/Ask-Anything@4dd8210 ``video_chat2/mvbench.ipynb``,
cells 11-12, ``data_list`` and ``MVBench_dataset``): each task names its JSON file, its video folder
under ``video/``, its source type and whether its rows carry a ``(start, end)`` window in seconds.
A row is ``{"video", "question", "candidates", "answer"[, "start", "end"]}``; the answer is the
text of a candidate (the last one when it is given twice, and no index at all when it is none of
them: the notebook then counts the question wrong, and so does dyto). The rows have no ids, so a
record's id is ``<task>_<row number>``.

Videos: ``video/<task folder>/<video>`` (``video_root`` = the release's ``video/`` folder).
Episodic Reasoning reads TVQA frames (``tvqa/frames_fps3_hq/<clip>/00001.jpg`` ...) at 3 frames per
second (the notebook's ``read_frame(..., fps=3)``): its records carry ``meta["frame_fps"] = 3``.
Windowed tasks sample inside ``[start, end]``. Accuracy per task and over all questions (the
notebook's ``Avg``: correct / total); the official rule (``choice_mode: mvbench``) is the
notebook's ``check_ans`` on the answer continued after ``Best option:(``.

Under ``protocol: lmms_eval``: lmms-eval's ``mvbench_*`` tasks (one per task, group ``mvbench``).
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Mapping

from dyto.datamodules.benchmarks.spec import BenchmarkSpec, LmmsEvalTask, paper_rows
from dyto.datamodules.sheets import Prepared, RowProblem, cell, collect_json_lists, options_list, scorer_answer
from dyto.records import QARecord

# task (JSON stem) -> (name in the notebook, video folder under video/, source type, has a window)
TASKS: dict[str, tuple[str, str, str, bool]] = {
    "action_sequence": ("Action Sequence", "star/Charades_v1_480", "video", True),
    "action_prediction": ("Action Prediction", "star/Charades_v1_480", "video", True),
    "action_antonym": ("Action Antonym", "ssv2_video", "video", False),
    "fine_grained_action": ("Fine-grained Action", "Moments_in_Time_Raw/videos", "video", False),
    "unexpected_action": ("Unexpected Action", "FunQA_test/test", "video", False),
    "object_existence": ("Object Existence", "clevrer/video_validation", "video", False),
    "object_interaction": ("Object Interaction", "star/Charades_v1_480", "video", True),
    "object_shuffle": ("Object Shuffle", "perception/videos", "video", False),
    "moving_direction": ("Moving Direction", "clevrer/video_validation", "video", False),
    "action_localization": ("Action Localization", "sta/sta_video", "video", True),
    "scene_transition": ("Scene Transition", "scene_qa/video", "video", False),
    "action_count": ("Action Count", "perception/videos", "video", False),
    "moving_count": ("Moving Count", "clevrer/video_validation", "video", False),
    "moving_attribute": ("Moving Attribute", "clevrer/video_validation", "video", False),
    "state_change": ("State Change", "perception/videos", "video", False),
    "fine_grained_pose": ("Fine-grained Pose", "nturgbd", "video", False),
    "character_order": ("Character Order", "perception/videos", "video", False),
    "egocentric_navigation": ("Egocentric Navigation", "vlnqa", "video", False),
    "episodic_reasoning": ("Episodic Reasoning", "tvqa/frames_fps3_hq", "frame", True),
    "counterfactual_inference": ("Counterfactual Inference", "clevrer/video_validation", "video", False),
}
FRAME_FPS = 3.0  # the notebook's read_frame(video_path, bound, fps=3)


def _seconds(row: dict[str, Any], name: str) -> float:
    value = row.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowProblem(f"{name!r} must be a number of seconds, got {value!r}")
    return float(value)


def prepare_mvbench(json_dir: Path) -> Prepared:
    def convert(task: str, number: int, row: dict[str, Any]) -> QARecord:
        name, folder, source, windowed = TASKS[task]
        options = options_list(row, allow_empty=True)
        answer, index, note = scorer_answer(row, options)  # the notebook's qa_template: the last match
        start = end = None
        if windowed:
            start, end = _seconds(row, "start"), _seconds(row, "end")
            if not 0 <= start < end:
                raise RowProblem(f"empty window start={start} end={end}")
        meta: dict[str, Any] = {"task": task, "task_name": name, "source": source, **note}
        if source == "frame":
            meta["frame_fps"] = FRAME_FPS
        return QARecord(id=f"{task}_{number}", benchmark="mvbench", task="multiple_choice",
                        video=f"{folder}/{cell(row, 'video')}", question=cell(row, "question"), answer=answer,
                        options=options, answer_index=index, start=start, end=end, split="test",
                        meta=meta)

    return collect_json_lists({task: Path(json_dir) / f"{task}.json" for task in TASKS}, convert)


def official_choice(text: str, num_options: int) -> int | None:
    """The notebook's ``check_ans``, as a parser: the reply (continued after ``Best option:(``) gets
    the ``(`` back (``return_prompt``), its first line's first word, dots removed, must contain or
    be contained in ``(x)`` of the option. Difference: a reply that matches every option (an empty
    one: ``(`` is in every ``(x)``, so the notebook counts it right) selects none here."""
    word = ("(" + text.strip().split("\n")[0]).lower().split(" ")[0].replace(".", "")
    hits = [i for i in range(num_options) if word in f"({string.ascii_lowercase[i]})" or
            f"({string.ascii_lowercase[i]})" in word]
    return hits[0] if len(hits) == 1 else None


# ------------------------------------------------------------------ lmms-eval (protocol: lmms_eval)
LMMS_EVAL = "EvolvingLMMs-Lab/lmms-eval@75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3"
POST_PROMPT = "Only give the best option.\n"  # every mvbench_<task>.yaml, lmms_eval_specific_kwargs.default


def lmms_eval_text(record: Mapping[str, Any], model: str = "default") -> str:
    """``mvbench_doc_to_text`` (tasks/mvbench/utils.py lines 85-94); every task yaml has only a
    ``default`` entry, so the model name changes nothing."""
    options = "".join(f"({string.ascii_uppercase[i]}) {o}\n" for i, o in enumerate(record["options"]))
    return "Question:" + record["question"] + "\nOption:\n" + options + POST_PROMPT


_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # lmms-eval's pattern, typo included ("?!<=" is not a lookbehind)
_COMMA = re.compile(r"(\d)(\,)(\d)")
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]


def _mcq_process(answer: str) -> str:
    """``process`` inside ``mcq_acc`` (utils.py lines 97-136): an ``X. text`` reply is its letter; else
    punctuation is removed and the first standalone letter A-E (any case) is taken."""
    match = re.match(r"^([A-E])\.\s*(.+)$", answer.strip(), re.IGNORECASE)
    if match:
        return match.group(1).upper()
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or re.search(_COMMA, text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD.sub("", out, re.UNICODE)  # the flags land in sub's count argument, as in lmms-eval
    out = out.strip("'").strip('"').strip(")").strip("(").strip().lower()
    letter = re.search(r"\b([A-E])\b", out, re.IGNORECASE)
    return letter.group(1).upper() if letter else out


def lmms_eval_parse(text: str, record: Mapping[str, Any]) -> int | None:
    """``mvbench_process_results``: right when ``mcq_acc``'s processed reply equals the answer's
    letter, i.e. when the reply processes to that letter. lmms-eval's average leaves empty replies
    out of its denominator (``total_answered``); here they are unparsed, counted wrong."""
    letter = _mcq_process(text or "")
    index = string.ascii_uppercase.find(letter) if len(letter) == 1 else -1
    return index if 0 <= index < len(record["options"]) else None


LMMS_EVAL_TASK = LmmsEvalTask(
    "mvbench", f"{LMMS_EVAL} lmms_eval/tasks/mvbench/_default_template_yaml (max_new_tokens 16), mvbench.yaml, "
    "mvbench_<task>.yaml, utils.py 85-172", lmms_eval_text, 16, lmms_eval_parse)

SPEC = BenchmarkSpec(
    name="mvbench",
    tasks=("multiple_choice",),
    prepare=prepare_mvbench,
    sheet="the json/ folder of OpenGVLab/MVBench (20 <task>.json files)",
    windows=True,
    type_field="task",
    published=paper_rows("mvbench", "accuracy", {"7B": 45.2, "34B": 52.9}, "S2"),
    lmms_eval=LMMS_EVAL_TASK,
    choice_rule=official_choice,
)
