"""The model side of ``protocol: lmms_eval``: what each backbone does as lmms-eval's model file does.

A backbone's :meth:`~dyto.models.backbone.Backbone.lmms_eval_model` returns an
:class:`LmmsEvalModel` (frames, sampling, resolution, default decoding length, the lmms-eval
model name whose task prompts apply) and its ``lmms_eval_prompt(text)`` wraps a task's user
text in the template that model file uses. The templates below are written from the files
lmms-eval's model files call (each cited); tests/test_lmms_eval_protocol.py compares them with
the strings those files produce (tests/fixtures/lmms_eval/prompts.json).

| backbone | lmms-eval model file | template | frames | sampling |
|---|---|---|---|---|
| llava_onevision | ``llava_onevision.py`` | LLaVA ``qwen_1_5`` | 32 | ``linspace`` |
| llava_onevision (LLaVA-Video) | ``llava_vid.py`` + the model card's args | LLaVA ``qwen_1_5`` | 1 fps, at most 64 | ``fps_then_linspace`` |
| llava_next | ``llava_vid.py`` defaults | LLaVA ``vicuna_v1`` | 1 fps, at most 20 | ``fps_then_linspace`` |
| internvl | ``internvl3.py`` | InternVL ``internvl2_5`` | 32 | ``internvl_segments`` |
| qwen2_5_vl | ``qwen2_5_vl.py`` | the checkpoint's chat template | 2 fps, 32 kept | ``qwen_fps`` |
"""

from __future__ import annotations

from dataclasses import dataclass

from dyto.datamodules.benchmarks import find_benchmark
from dyto.datamodules.preprocess import Preprocessing
from dyto.errors import ConfigError

__all__ = ["LMMS_EVAL", "LmmsEvalModel", "llava_conversation", "internvl_conversation", "INTERNVL_SYSTEM", "task_prompt"]

LMMS_EVAL = "EvolvingLMMs-Lab/lmms-eval@75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3"
LLAVA_NEXT = "LLaVA-VL/LLaVA-NeXT@df179663 llava/conversation.py"
INTERNVL = "OpenGVLab/InternVL@2410d1db internvl_chat/internvl/conversation.py"


@dataclass(frozen=True)
class LmmsEvalModel:
    """How lmms-eval's model file runs one backbone (docs/backbones.md, "The lmms-eval protocol").

    model: lmms-eval's model name (the key of a task's ``lmms_eval_specific_kwargs``).
    source: the file and lines read.
    num_frames: frames sampled (at most: the rate-based rules may take fewer).
    sampling: the data-side rule (``dyto.datamodules.video.SAMPLING_RULES``).
    preprocessing: the resolution rule (a :class:`Preprocessing`).
    max_new_tokens: the model file's default, used where the task sets none.
    template: the chat template's name, recorded as ``conv_mode`` = ``lmms_eval:<template>``.
    """

    model: str
    source: str
    num_frames: int
    sampling: str
    preprocessing: Preprocessing
    max_new_tokens: int
    template: str

    def config(self) -> dict:
        """Plain values for the run fingerprint."""
        return {"model": self.model, "num_frames": self.num_frames, "sampling": self.sampling,
                "preprocessing": self.preprocessing.config(), "max_new_tokens": self.max_new_tokens,
                "template": self.template}


# LLaVA's conv_templates (LLaVA-NeXT llava/conversation.py): get_prompt() of a conversation with one
# user message "<image>\n" + text and an open assistant turn, split at "<image>".
_LLAVA = {
    # conv_qwen, SeparatorStyle.CHATML, lines 443-452
    "qwen_1_5": ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
                 "<|im_end|>\n<|im_start|>assistant\n"),
    # conv_vicuna_v1, SeparatorStyle.TWO (sep " "), lines 345-354
    "vicuna_v1": ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                  "helpful, detailed, and polite answers to the user's questions. USER: ", " ASSISTANT:"),
}
# internvl2_5 (InternVL internvl_chat/internvl/conversation.py lines 394-401), the template InternVL3 runs
INTERNVL_SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


def llava_conversation(template: str, text: str) -> tuple[str, str]:
    """(before, after) the visual tokens of lmms-eval's LLaVA prompt: the user turn is
    ``"<image>\\n" + text`` (``llava_onevision.py`` / ``llava_vid.py``) in ``conv_templates[template]``."""
    if template not in _LLAVA:
        raise ValueError(f"unknown LLaVA conversation template {template!r}; expected one of {sorted(_LLAVA)}")
    head, tail = _LLAVA[template]
    return head, f"\n{text}{tail}"


def internvl_conversation(text: str) -> tuple[str, str]:
    """(before, after) the ``Frame{k}: <image>\\n`` lines of ``internvl3.py``'s video prompt, through
    ``model.chat``'s ``internvl2_5`` template (MPT separators ``<|im_end|>\\n``)."""
    return (f"<|im_start|>system\n{INTERNVL_SYSTEM}<|im_end|>\n<|im_start|>user\n",
            f"{text}<|im_end|>\n<|im_start|>assistant\n")


def task_prompt(backbone, model: LmmsEvalModel, record: dict):
    """(the backbone's lmms-eval prompt for ``record``, the task's ``max_new_tokens`` or None): the
    benchmark's lmms-eval task writes the user text for ``model.model``; no task: ``ConfigError``."""
    spec = find_benchmark(record.get("benchmark"))
    if spec is None or spec.lmms_eval is None:
        raise ConfigError("model.protocol", "lmms_eval", "'reference'",
                          f"benchmark {record.get('benchmark')!r} has no lmms-eval task")
    return backbone.lmms_eval_prompt(spec.lmms_eval.text(record, model.model)), spec.lmms_eval.max_new_tokens
