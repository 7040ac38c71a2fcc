"""ActivityNet-QA (open-ended, GPT-judged): IG-VLM's ``ActivityNet_QA.csv``.

Videos are ``v_<id>`` on disk while some sheets drop the prefix, so both spellings are tried.
Three questions of the sheet start with a leaked CSV index (``"\\n5220,"``): it is stripped and
the repair recorded in ``meta["fixed"]``.
"""

from __future__ import annotations

import re
from typing import Any

from dyto.datamodules.benchmarks.lmms_eval_tasks import ACTIVITYNET_QA
from dyto.datamodules.benchmarks.spec import BenchmarkSpec, VideoRule, paper_rows
from dyto.datamodules.sheets import RowProblem, cell, integer, open_ended

ACTIVITYNET_TYPES = {0: "motion", 1: "spatial", 2: "temporal", 3: "yes_no", 4: "color", 5: "object",
                     6: "location", 7: "number", 8: "other"}
# an index leaked by a bad CSV round trip
LEAKED_INDEX = re.compile(r"^\s*\d+,")


def _row(row: dict[str, Any]) -> dict[str, Any]:
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


JUDGE = "judge GPT-3.5-Turbo-0125"
SPEC = BenchmarkSpec(
    name="activitynet_qa",
    tasks=("open_ended",),
    prepare=open_ended("activitynet_qa", "test", _row),
    sheet="ActivityNet_QA.csv (IG-VLM data/open_ended_qa)",
    videos=VideoRule(v_prefix=True),
    published=(*paper_rows("activitynet_qa", "accuracy", {"7B": 54.3, "34B": 59.0}, "S2", JUDGE),
               *paper_rows("activitynet_qa", "score", {"7B": 3.2, "34B": 3.5}, "S2", JUDGE)),
    lmms_eval=ACTIVITYNET_QA,
)
