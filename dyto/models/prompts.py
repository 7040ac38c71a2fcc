"""The reference prompt templates (docs/method.md §7), character for character.

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

from dataclasses import dataclass
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
    """The reference's conv mode for a model family ("7b" | "34b") and a record task (docs/method.md §3)."""
    if model_family not in ("7b", "34b"):
        raise ValueError(f"unknown model family {model_family!r}; expected '7b' or '34b'")
    suffix = "_34b" if model_family == "34b" else ""
    if task == "multiple_choice":
        return f"multiple_choice_allvideo{suffix}_v4"
    return f"image_seq{suffix}_v3"


def model_family(model_name: str) -> str:
    """"34b" if the model name says so (llava-v1.6-34b), else "7b" (Vicuna-7B and the tiny model)."""
    return "34b" if "34b" in model_name.lower() else "7b"


# -- chat-template backbones ---------------------------------------------------------------
# Backbones whose checkpoints ship a chat template (LLaVA-OneVision, InternVL, Qwen2.5-VL) get the
# reference's wording laid out as chat messages: the system sentence, the user turn (visual
# tokens first, then the instruction, question and options) and the answer prefix after the
# template's generation prompt. The wording is that of the reference's ChatML templates (the
# *_34b_* modes above), stripped of the padding spaces those strings carry around the text.
CHAT_MODES = ("chat_open_ended", "chat_multiple_choice")


@dataclass(frozen=True)
class ChatLayout:
    """One question as chat messages; ``user`` is the text that follows the visual tokens."""

    mode: str
    system: str
    user: str
    answer_prefix: str


def chat_layout(task: str, question: str, options: Sequence[str] | None = None) -> ChatLayout:
    """The reference's wording for ``task`` as (system, user text, answer prefix)."""
    if task == "multiple_choice":
        if not options:
            raise ValueError("a multiple-choice question needs options")
        return ChatLayout(
            "chat_multiple_choice",
            "You are a helpful expert in video analysis. Select the best option to answer the question.",
            f"The input consists of a sequence of key frames from a video. Question: {question}\nOptions:\n"
            f"{options_block(options)}Only give the best option.",
            ANSWER_PREFIX["multiple_choice_allvideo_34b_v4"],
        )
    if options:
        raise ValueError(f"task {task!r} is open-ended but options were given")
    return ChatLayout("chat_open_ended", "Answer the question.", f"{_INSTRUCTION} Question: {question}",
                      ANSWER_PREFIX["image_seq_34b_v3"])


def render_chat(tokenizer, layout: ChatLayout, visual_marker: str, chat_template: str | None = None,
                system: bool = True) -> tuple[str, str]:
    """(text before the visual tokens, text after them) through the tokenizer's chat template.

    The user turn is given as the processors' typed content, ``[{"type": "video"}, {"type":
    "text", ...}]``; the template writes ``visual_marker`` (the checkpoint's video token) where the
    frames go. A template that only takes string content gets ``visual_marker + "\\n" + text``.
    The answer prefix is appended after the generation prompt, so the model continues it.
    """
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError("the tokenizer has no chat template; pass chat_template=... to the backbone")
    head = [{"role": "system", "content": [{"type": "text", "text": layout.system}]}] if system else []
    typed = head + [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": layout.user}]}]
    text = tokenizer.apply_chat_template(typed, chat_template=template, tokenize=False, add_generation_prompt=True)
    if text.count(visual_marker) != 1:
        head = [{"role": "system", "content": layout.system}] if system else []
        plain = head + [{"role": "user", "content": f"{visual_marker}\n{layout.user}"}]
        text = tokenizer.apply_chat_template(plain, chat_template=template, tokenize=False, add_generation_prompt=True)
    if text.count(visual_marker) != 1:
        raise ValueError(f"the chat template does not place exactly one {visual_marker!r}: {text!r}")
    before, after = text.split(visual_marker)
    return before, after + layout.answer_prefix


# lmms-eval's Qwen model files (qwen2_5_vl.py, qwen3_vl.py) send this system turn before the video
LMMS_SYSTEM = "You are a helpful assistant."


def render_lmms_eval_chat(tokenizer, text: str, visual_marker: str, chat_template: str | None = None) -> tuple[str, str]:
    """(before, after) ``visual_marker`` of lmms-eval's Qwen messages through the chat template: a
    system turn ``LMMS_SYSTEM``, then a user turn holding the video item and the task's ``text``."""
    messages = [{"role": "system", "content": LMMS_SYSTEM},
                {"role": "user", "content": [{"type": "video", "video": "video"}, {"type": "text", "text": text}]}]
    rendered = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False,
                                             add_generation_prompt=True)
    if rendered.count(visual_marker) != 1:
        raise ValueError(f"the chat template does not place exactly one {visual_marker}: {rendered!r}")
    before, after = rendered.split(visual_marker)
    return before, after
