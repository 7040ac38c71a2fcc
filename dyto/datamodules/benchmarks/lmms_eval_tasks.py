"""lmms-eval's task side for the benchmarks dyto and lmms-eval share (``protocol: lmms_eval``).

Written from EvolvingLMMs-Lab/lmms-eval at commit 75571cfe (2026-08-06), ``lmms_eval/tasks/``:
the user text each task's ``doc_to_text`` builds (with the ``lmms_eval_specific_kwargs`` entry of
the model that runs it), its ``generation_kwargs.max_new_tokens`` and its answer parser. A dyto
record is first put back into the fields of lmms-eval's dataset row (``doc``): VideoMME and
EgoSchema options carry their ``"A. "`` letter there, NExT-QA's are ``a0``..``a4``.

What differs from lmms-eval on purpose: where its parser finds no option it draws one with
``random.choice`` (EgoSchema, NExT-QA); here the reply is ``unparsed`` (counted wrong), so a
rerun scores the same. The goldens (tests/test_lmms_eval_protocol.py) compare every function
here with what lmms-eval's own functions return on the same rows (tests/fixtures/lmms_eval/).

| dyto benchmark | lmms-eval task | prompt | max_new_tokens | parser |
|---|---|---|---|---|
| videomme | ``videomme`` (no subtitles) | instruction, question, options, post prompt | 16 | ``extract_mcq_answer`` (A-D) |
| egoschema | ``egoschema_subset`` (500) | question, options, post prompt | 16 | MMMU-style, first match |
| nextqa | ``nextqa_mc_test`` | question, options | model default | MMMU-style, last match |
| activitynet_qa | ``activitynetqa`` | ``question.capitalize() + "?"``, post prompt | 64 | (GPT-judged) |
"""

from __future__ import annotations

from typing import Mapping, Sequence

from dyto.datamodules.benchmarks.spec import LmmsEvalTask

__all__ = ["VIDEOMME", "EGOSCHEMA", "NEXTQA", "ACTIVITYNET_QA", "extract_mcq_answer", "mmmu_choice", "specific_kwargs"]

REPO = "EvolvingLMMs-Lab/lmms-eval@75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3"
LETTERS = "ABCDEFGH"


def specific_kwargs(table: Mapping[str, Mapping[str, str]], model: str) -> Mapping[str, str]:
    """The ``lmms_eval_specific_kwargs`` entry lmms-eval's ``Task`` gives ``doc_to_text``: the
    model's own entry when the task has one, else ``default`` (api/task.py lines 887-894)."""
    return table.get(model) or table.get("default", {})


def lettered(options: Sequence[str]) -> list[str]:
    """``["A. text", "B. text", ...]``: the option strings of lmms-eval's VideoMME / EgoSchema rows."""
    return [f"{LETTERS[i]}. {text}" for i, text in enumerate(options)]


# ------------------------------------------------------------------------------ VideoMME
VIDEOMME_KWARGS = {  # tasks/videomme/videomme.yaml, lmms_eval_specific_kwargs
    "default": {"pre_prompt": "", "post_prompt": "\nAnswer with the option's letter from the given choices directly."},
    "llava_vid": {"pre_prompt": "", "post_prompt": "The best answer is:"},
    "qwen3_vl": {"format": "qwen3_vl", "pre_prompt": "Question: ", "post_prompt": "Answer with the option letter only."},
}
VIDEOMME_INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video and the "
                        "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")


def videomme_text(record: Mapping, model: str = "default") -> str:
    """``videomme_doc_to_text`` (tasks/videomme/utils.py): the instruction, the question and its
    lettered options one per line, the post prompt (``qwen3_vl``: its own layout)."""
    kwargs = specific_kwargs(VIDEOMME_KWARGS, model)
    options = "\n".join(lettered(record["options"]))
    if kwargs.get("format") == "qwen3_vl":
        return f"{kwargs.get('pre_prompt', '')}{record['question']}\nOptions:\n{options}\n{kwargs.get('post_prompt', '')}"
    post = kwargs.get("post_prompt", "The best answer is:")
    return f"{VIDEOMME_INSTRUCTION}\n{record['question']}\n{options}\n{post}"


_ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)
_PRIORITY = {"start": 10, "end": 9, "phrase": 7, "parentheses": 6, "period": 5, "colon": 4, "right_paren": 3,
             "space": 2, "fallback": 0}


def extract_mcq_answer(response: str, choices: Sequence[str] = tuple(LETTERS)) -> str:
    """lmms-eval's ``_task_utils/mcq_extract.extract_mcq_answer``: every letter found in one of its
    formats is a candidate; the highest-priority format wins, then the latest position; "" if none."""
    if not response or not response.strip():
        return ""
    text = response.strip()
    for char in ",.!?;:'\"":
        text = text.strip(char)
    text = f" {text} "
    found: list[tuple[str, int, str]] = []
    for fmt, pattern in (("parentheses", "({})"), ("period", "{}."), ("colon", "{}:"), ("right_paren", "{})"),
                         ("space", "{} ")):
        found += [(c, text.rfind(pattern.format(c)), fmt) for c in choices if pattern.format(c) in text]
    lower = text.lower()
    for phrase in _ANSWER_PHRASES:
        at = lower.find(phrase)
        if at != -1:
            found += [(c, text.find(c, at + len(phrase)), "phrase") for c in choices
                      if text.find(c, at + len(phrase)) != -1]
    stripped = text.strip()
    found += [(c, 0, "start") for c in choices
              if stripped.startswith(c) and (len(stripped) == 1 or not stripped[1].isalpha())]
    found += [(c, len(text) - 1, "end") for c in choices
              if stripped.endswith(c) and (len(stripped) == 1 or not stripped[-2].isalpha())]
    if not found:
        found = [(c, text.rfind(c), "fallback") for c in choices if c in text]
    if not found:
        return ""
    found.sort(key=lambda x: (_PRIORITY[x[2]], x[1]), reverse=True)  # stable, as lmms-eval's list.sort
    return found[0][0]


def videomme_parse(text: str, record: Mapping) -> int | None:
    """``videomme_process_results``: the letter ``extract_mcq_answer`` finds among A-D."""
    letter = extract_mcq_answer(text or "", ["A", "B", "C", "D"])
    return LETTERS.index(letter) if letter else None


# ------------------------------------------------------------------------------ EgoSchema / NExT-QA
def mmmu_choice(response: str, index2ans: Mapping[str, str], pick: str) -> str | None:
    """The MMMU-style ``parse_multi_choice_response`` of lmms-eval's EgoSchema (``pick="first"``)
    and NExT-QA (``pick="last"``) utils, without the random draw (None instead).

    EgoSchema collects ``(X)``, ``X `` and ``X.`` candidates together and keeps the one whose
    last occurrence comes first; NExT-QA looks for ``(X)``, then ``X ``, then ``X.``, and keeps
    the latest (of ``(X)`` or `` X ``). Both fall back to the option texts in a reply of more
    than five words."""
    for char in ",.!?;:'":
        response = response.strip(char)
    response = f" {response} "
    letters = list(index2ans)
    index_ans, bracket, candidates = True, False, []
    if pick == "first":
        candidates = ([f"({c})" for c in letters if f"({c})" in response] + [f"{c} " for c in letters if f"{c} " in response]
                      + [f"{c}." for c in letters if f"{c}." in response])
    else:
        candidates = [c for c in letters if f"({c})" in response]
        bracket = bool(candidates)
        for pattern in ("{} ", "{}."):
            if not candidates:
                candidates = [c for c in letters if pattern.format(c) in response]
    if not candidates and len(response.split()) > 5:
        candidates, index_ans = [c for c, ans in index2ans.items() if ans.lower() in response.lower()], False
    if not candidates:
        return None  # lmms-eval: random.choice(all_choices)
    if len(candidates) == 1:
        chosen = candidates[0]
    else:
        if not index_ans:
            where = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
        elif pick == "first":
            where = [response.rfind(c) for c in candidates]
        else:
            where = [response.rfind(f"({c})" if bracket else f" {c} ") for c in candidates]
        best = min(where) if pick == "first" else max(where)
        chosen = candidates[where.index(best)]  # np.argmin / np.argmax: the first of equal values
    return chosen.replace("(", "").replace(")", "").replace(".", "").strip()


def egoschema_text(record: Mapping, model: str = "default") -> str:
    """``egoschema_doc_to_text``: the question, each lettered option on its own line, and (rows with
    options) the fixed post prompt."""
    pre = specific_kwargs({"default": {"pre_prompt": ""}, "aria": {
        "pre_prompt": "Please answer the question about the video:\n"}}, model).get("pre_prompt", "")
    question = record["question"] + "".join(f"\n{o}" for o in lettered(record["options"]))
    return f"{pre}{question}\nAnswer with the option's letter from the given choices directly."


def egoschema_parse(text: str, record: Mapping) -> int | None:
    """``egoschema_process_results_generation``: the MMMU-style parse over the lettered options."""
    index2ans = {LETTERS[i]: o.strip() for i, o in enumerate(lettered(record["options"]))}
    letter = mmmu_choice(text or "", index2ans, "first")
    return LETTERS.index(letter) if letter and letter in index2ans else None


def nextqa_text(record: Mapping, model: str = "default") -> str:
    """``nextqa_doc_to_text_mc``: the question, then ``A. a0`` ... ``E. a4`` (no pre/post prompt:
    ``nextqa_mc_test.yaml`` sets none)."""
    lines = [record["question"].strip()] + [f"{LETTERS[i]}. {o.strip()}" for i, o in enumerate(record["options"])]
    return "\n".join(lines)


def nextqa_parse(text: str, record: Mapping) -> int | None:
    """``nextqa_mc_process_results``: the MMMU-style parse, latest candidate."""
    index2ans = {LETTERS[i]: o.strip() for i, o in enumerate(record["options"])}
    letter = mmmu_choice(text or "", index2ans, "last")
    return LETTERS.index(letter) if letter else None


def activitynet_text(record: Mapping, model: str = "default") -> str:
    """``activitynetqa_doc_to_text``: ``question.capitalize() + "?"`` and the post prompt."""
    return f"{record['question'].capitalize()}? Answer the question using a single word or phrase."


VIDEOMME = LmmsEvalTask("videomme", f"{REPO} lmms_eval/tasks/videomme/videomme.yaml, utils.py 142-175 and 260-296",
                        videomme_text, 16, videomme_parse)
EGOSCHEMA = LmmsEvalTask("egoschema_subset", f"{REPO} lmms_eval/tasks/egoschema/egoschema_subset.yaml, "
                         "_default_template_yaml, utils.py 44-182", egoschema_text, 16, egoschema_parse)
NEXTQA = LmmsEvalTask("nextqa_mc_test", f"{REPO} lmms_eval/tasks/nextqa/nextqa_mc_test.yaml, utils.py 56-134",
                      nextqa_text, None, nextqa_parse)
ACTIVITYNET_QA = LmmsEvalTask("activitynetqa", f"{REPO} lmms_eval/tasks/activitynetqa/activitynetqa_generation.yaml, "
                              "_default_template_yaml, utils.py 55-79", activitynet_text, 64, None)
