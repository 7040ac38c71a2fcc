"""The reference prompt templates (spec §7), character for character.

DyTo keeps SlowFast-LLaVA's ``prompt.py``: four "conv modes", each a fixed string with ``%s``
slots. They do not go through LLaVA's ``conv_templates``; the 7B open-ended template has no
system sentence and the 7B multiple-choice template puts its instruction before ``USER:``.
VCGBench uses the open-ended template.

Every template ends with an answer prefix that the model continues ("Answer: In the video," or
"Answer: Best option:("). Generation is fed the embeddings of the whole prompt, so the decoded
output is only the continuation; that continuation, stripped, is what a prediction record
stores (the reference does the same). :data:`ANSWER_PREFIX` names the prefix of each mode for
whoever wants to show the full answer.
"""

from __future__ import annotations

from typing import Sequence

IMAGE_PLACEHOLDER = "<image>"

_INSTRUCTION = (
    "The input consists of a sequence of key frames from a video. Answer concisely with overall "
    "content and context of the video, highlighting any significant events, characters, or objects "
    "that appear throughout the video."
)

# Open-ended templates take (question,); multiple-choice templates take (question, options block).
TEMPLATES: dict[str, str] = {
    "image_seq_v3": (
        "USER: <image>\n" + _INSTRUCTION + " Question: %s \nASSISTANT:\nAnswer: In the video,"
    ),
    "image_seq_34b_v3": (
        "<|im_start|>system\n Answer the question. <|im_end|>\n<|im_start|>user\n <image>\n"
        + _INSTRUCTION
        + " Question: %s <|im_end|>\n<|im_start|>assistant\nAnswer: In the video,"
    ),
    "multiple_choice_allvideo_v4": (
        "You are a helpful expert in video analysis. Select the best option to answer the question. "
        "USER: <image>\nThe input consists of a sequence of key frames from a video.\nQuestion: %s\n"
        "Options:\n%sOnly give the best option. \nASSISTANT:\nAnswer: Best option:("
    ),
    "multiple_choice_allvideo_34b_v4": (
        "<|im_start|>system\n You are a helpful expert in video analysis. Select the best option to "
        "answer the question. <|im_end|>\n<|im_start|>user\n <image>\nThe input consists of a sequence "
        "of key frames from a video. Question: %s\nOptions:\n%sOnly give the best option. <|im_end|>\n"
        "<|im_start|>assistant\nAnswer: Best option:("
    ),
}

MULTIPLE_CHOICE_MODES = frozenset({"multiple_choice_allvideo_v4", "multiple_choice_allvideo_34b_v4"})

# The text each template ends with and the model continues; not part of the stored prediction.
ANSWER_PREFIX: dict[str, str] = {
    mode: ("Answer: Best option:(" if mode in MULTIPLE_CHOICE_MODES else "Answer: In the video,")
    for mode in TEMPLATES
}


def options_block(options: Sequence[str]) -> str:
    """``(A) text\\n(B) text\\n...``: SF-LLaVA's ``get_option_prompt(version="v4")``."""
    return "".join(f"({chr(ord('A') + i)}) {text}\n" for i, text in enumerate(options))


def render_prompt(conv_mode: str, question: str, options: Sequence[str] | None = None) -> str:
    """The full prompt for one question, with exactly one ``<image>`` placeholder.

    Multiple-choice modes need ``options``; open-ended modes refuse them, so a record routed to
    the wrong template fails loudly instead of silently dropping its candidates.
    """
    if conv_mode not in TEMPLATES:
        raise ValueError(f"unknown conv_mode {conv_mode!r}; expected one of {sorted(TEMPLATES)}")
    template = TEMPLATES[conv_mode]
    if conv_mode in MULTIPLE_CHOICE_MODES:
        if not options:
            raise ValueError(f"conv_mode {conv_mode!r} is multiple choice and needs options")
        return template % (question, options_block(options))
    if options:
        raise ValueError(f"conv_mode {conv_mode!r} is open-ended but options were given")
    return template % (question,)


def default_conv_mode(model_family: str, task: str) -> str:
    """The reference's conv mode for a model family ("7b" | "34b") and a record task (spec §3)."""
    if model_family not in ("7b", "34b"):
        raise ValueError(f"unknown model family {model_family!r}; expected '7b' or '34b'")
    suffix = "_34b" if model_family == "34b" else ""
    if task == "multiple_choice":
        return f"multiple_choice_allvideo{suffix}_v4"
    return f"image_seq{suffix}_v3"


def model_family(model_name: str) -> str:
    """"34b" if the model name says so (llava-v1.6-34b), else "7b" (Vicuna-7B and the tiny model)."""
    return "34b" if "34b" in model_name.lower() else "7b"
