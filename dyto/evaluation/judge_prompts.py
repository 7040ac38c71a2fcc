"""The Video-ChatGPT GPT-judge protocol: prompts, which dimensions a task gets, reply parsing.

The messages are the protocol's own text (Video-ChatGPT ``quantitative_evaluation/``, carried
unchanged into SF-LLaVA ``eval/eval_prompt.py`` and DyTo), typos and all: the run-on
``"...the task:------##INSTRUCTIONS: "``, the double space in ``is  a string``, the float
``4.8`` example, and the malformed ``{''score': 4.8}`` example of the five VCGBench prompts.
Changing a single character changes what the judge sees and therefore the numbers, so any
edit must bump the prompt set's ``version`` (it is part of every cache key).

Reply parsing is lenient on purpose: the reference applies ``ast.literal_eval`` and silently
re-asks on failure. We recover the dict from the usual malformations first (and keep the raw
reply for audit); only a reply with no verdict at all is asked again, up to the reference's
bound (``protocol.asks_bound``), which matters most at a fixed temperature, where a re-ask
tends to return the same text.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import NamedTuple

_ROLE = "You are an intelligent chatbot designed for evaluating the {what} of generative outputs for {pairs}. "
_HOW = " Here's how you can accomplish the task:------##INSTRUCTIONS: "
_ASK = "Please evaluate the following video-based question-answer pair:\n\n"
_QA = "Question: {question}\nCorrect Answer: {answer}\nPredicted Answer: {prediction}\n\n"
_ONLY = "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
_SCORE_EXAMPLE = "For example, your response should look like this: {{''score': 4.8}}."  # .format-escaped


def _score_request(name: str, top: str, value: str | None = None) -> str:
    """The closing request shared by the score-only prompts (only the criterion name varies)."""
    return (
        f"Provide your evaluation only as a {name} score where the {name} score is an integer value "
        f"between 0 and 5, with 5 indicating the highest level of {top}. "
        "Please generate the response in the form of a Python dictionary string with keys 'score', "
        f"where its value is {value or 'the ' + name} score in INTEGER, not STRING." + _ONLY + _SCORE_EXAMPLE
    )


@dataclass(frozen=True)
class PromptSet:
    """One judge prompt: system message, user template, and the version that keys the cache."""

    dimension: str
    version: str
    system: str
    user: str  # str.format template: question, answer, prediction (consistency: question2, prediction2)
    keys: tuple[str, ...]  # dict keys the reply must carry

    def messages(self, question: str, answer: str, prediction: str,
                 question2: str | None = None, prediction2: str | None = None) -> list[dict[str, str]]:
        user = self.user.format(question=question, answer=answer, prediction=prediction,
                                question2=question2, prediction2=prediction2)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


_SRC = "video-chatgpt@sf-llava-bea0f73"  # where the text was read; part of PROMPT_VERSION

PROMPTS: dict[str, PromptSet] = {
    "default": PromptSet(
        "default", f"{_SRC}/default/v1",
        _ROLE.format(what="correctness", pairs="question-answer pairs")
        + "Your task is to compare the predicted answer with the correct answer and determine if they match meaningfully."
        + _HOW
        + "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Evaluate the correctness of the prediction compared to the answer.",
        _ASK + _QA
        + "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, "
        "with 5 indicating the highest meaningful match. Please generate the response in the form of a Python "
        "dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' or 'no' and "
        "value of 'score' is in INTEGER, not STRING." + _ONLY
        + "For example, your response should look like this: {{'pred': 'yes', 'score': 4.8}}.",
        ("pred", "score"),
    ),
    "correctness": PromptSet(
        "correctness", f"{_SRC}/correctness/v1",
        _ROLE.format(what="factual accuracy", pairs="video-based question-answer pairs")
        + "Your task is to compare the predicted answer with the correct answer and determine if they are factually consistent."
        + _HOW
        + "- Focus on the factual consistency between the predicted answer and the correct answer. The predicted "
        "answer should not contain any misinterpretations or misinformation.\n"
        "- The predicted answer must be factually accurate and align with the video content.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Evaluate the factual accuracy of the prediction compared to the answer.",
        _ASK + _QA + _score_request("factual accuracy", "factual consistency"),
        ("score",),
    ),
    "detailed_orientation": PromptSet(
        "detailed_orientation", f"{_SRC}/detailed_orientation/v1",
        _ROLE.format(what="detail orientation", pairs="video-based question-answer pairs")
        + "Your task is to compare the predicted answer with the correct answer and determine its level of detail, "
        "considering both completeness and specificity." + _HOW
        + "- Check if the predicted answer covers all major points from the video. The response should not leave "
        "out any key aspects.\n"
        "- Evaluate whether the predicted answer includes specific details rather than just generic points. It "
        "should provide comprehensive information that is tied to specific elements of the video.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Provide a single evaluation score that reflects the level of detail orientation of the prediction, "
        "considering both completeness and specificity.",
        _ASK + _QA + _score_request("detail orientation", "detail orientation"),
        ("score",),
    ),
    "context": PromptSet(
        "context", f"{_SRC}/context/v1",
        _ROLE.format(what="contextual understanding", pairs="video-based question-answer pairs")
        + "Your task is to compare the predicted answer with the correct answer and determine if the generated "
        "response aligns with the overall context of the video content." + _HOW
        + "- Evaluate whether the predicted answer aligns with the overall context of the video content. It should "
        "not provide information that is out of context or misaligned.\n"
        "- The predicted answer must capture the main themes and sentiments of the video.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Provide your evaluation of the contextual understanding of the prediction compared to the answer.",
        _ASK + _QA + _score_request("contextual understanding", "contextual understanding",
                                    value="contextual understanding"),
        ("score",),
    ),
    "temporal": PromptSet(
        "temporal", f"{_SRC}/temporal/v1",
        _ROLE.format(what="temporal understanding", pairs="video-based question-answer pairs")
        + "Your task is to compare the predicted answer with the correct answer and determine if they correctly "
        "reflect the temporal sequence of events in the video content." + _HOW
        + "- Focus on the temporal consistency between the predicted answer and the correct answer. The predicted "
        "answer should correctly reflect the sequence of events or details as they are presented in the video content.\n"
        "- Consider synonyms or paraphrases as valid matches, but only if the temporal order is maintained.\n"
        "- Evaluate the temporal accuracy of the prediction compared to the answer.",
        _ASK + _QA + _score_request("temporal accuracy", "temporal consistency"),
        ("score",),
    ),
    "consistency": PromptSet(
        "consistency", f"{_SRC}/consistency/v1",
        _ROLE.format(what="consistency", pairs="similar video-based question-answer pairs")
        + "You will be given two very similar questions, a common answer common to both the questions and predicted "
        "answers for the two questions .Your task is to compare the predicted answers for two very similar question, "
        "with a common correct answer and determine if they are consistent." + _HOW
        + "- Focus on the consistency between the two predicted answers and the correct answer. Both predicted "
        "answers should correspond to the correct answer and to each other, and should not contain any "
        "contradictions or significant differences in the conveyed information.\n"
        "- Both predicted answers must be consistent with each other and the correct answer, in terms of the "
        "information they provide about the video content.\n"
        "- Consider synonyms or paraphrases as valid matches, but only if they maintain the consistency in the "
        "conveyed information.\n"
        "- Evaluate the consistency of the two predicted answers compared to the correct answer.",
        _ASK
        + "Question 1: {question}\nQuestion 2: {question2}\nCorrect Answer: {answer}\n"
        "Predicted Answer to Question 1: {prediction}\nPredicted Answer to Question 2: {prediction2}\n\n"
        + _score_request("consistency", "consistency", value="the consistency"),
        ("score",),
    ),
}

# Which judge dimensions each prediction task gets (multiple choice is parsed, never judged).
TASK_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "open_ended": ("default",),
    "vcg_generic": ("correctness", "detailed_orientation", "context"),
    "vcg_temporal": ("temporal",),
    "vcg_consistency": ("consistency",),
}
PROMPT_VERSION = {dim: p.version for dim, p in PROMPTS.items()}

_VALUE = r"""['"]?\s*:\s*(['"]?)([^,'"}\s]+)\1"""
_BARE_VERDICT = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


class Parsed(NamedTuple):
    verdict: str | None  # "yes" | "no" | None
    score: int | None  # int() of the reply's score, truncating like the reference
    status: str  # "ok" | "unparsable"
    strict: bool  # True when ast.literal_eval alone gave a dict (the reference would have accepted it)


def _verdict(value: object) -> str | None:
    """The reference reads 'yes' if 'yes' is a substring of pred.lower(), else 'no' likewise."""
    text = str(value).lower()
    return "yes" if "yes" in text else "no" if "no" in text else None


def _score(value: object) -> int | None:
    try:
        return int(float(value))  # 4.8 -> 4 (reference int()); "4" -> 4
    except (TypeError, ValueError):
        return None


def parse_reply(text: str | None) -> Parsed:
    """Read a judge reply into (verdict, score).

    Accepted: the exact dict; the dict surrounded by prose or code fences; the protocol's own
    malformed ``{''score': 4.8}``; any-case ``'pred'`` values; a bare leading "Yes"/"No".
    A reply that literal_eval's into a dict is ``ok`` even with keys missing (the reference
    counts it, with score 0); anything with neither a verdict nor a score is ``unparsable``.
    """
    text = (text or "").strip()
    try:
        d = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        d = None
    if isinstance(d, dict):
        pred = d.get("pred")
        return Parsed(_verdict(pred) if pred is not None else None, _score(d.get("score")), "ok", True)
    pred_m = re.search(r"pred" + _VALUE, text, re.IGNORECASE)
    score_m = re.search(r"score" + _VALUE, text, re.IGNORECASE)
    verdict = _verdict(pred_m.group(2)) if pred_m else None
    if verdict is None and (m := _BARE_VERDICT.match(text)):
        verdict = m.group(1).lower()
    score = _score(score_m.group(2)) if score_m else None
    status = "ok" if verdict is not None or score is not None else "unparsable"
    return Parsed(verdict, score, status, False)
