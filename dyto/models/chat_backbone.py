"""Shared base of the chat-template backbones (LLaVA-OneVision, InternVL).

What such a family shares: loading a checkpoint or the family's tiny random-weight model,
its preprocessing (the family's defaults, overridden by what the checkpoint's processor config
states), the prompt through the checkpoint's chat template with the reference's wording
(:func:`dyto.models.prompts.chat_layout`), and the LLM input built the way the checkpoint's
processor builds it: the prompt is tokenised whole with one marker token (a special token) per
visual block, and each marker's embedding row is replaced by that block's tokens. Since special
tokens split the text before BPE, the text around the visual tokens tokenises exactly as in the
model's own path. Positions are 1-D: 0..S-1 (``LLMInput.positions`` None), or, for a reduction
with ``keep_input_positions`` (FastVID), the ids every token has in the unreduced sequence
(``input_positions``; the subclass says where each block's tokens sit in ``block_offsets``).

A subclass sets the class attributes and implements ``encode`` and ``visual_layout``.
"""

from __future__ import annotations

import hashlib
from typing import Callable, ClassVar

import torch
from torch import Tensor

from dyto.datamodules.preprocess import Preprocessing
from dyto.errors import check
from dyto.models.backbone import Backbone, LLMInput, Prompt, visual_layout
from dyto.models.loading import (
    checkpoint_chat_template,
    load_family,
    resolve_attn_implementation,
    resolve_dtype,
)
from dyto.models.prompts import chat_layout, render_chat


class ChatTemplatePrompt:
    """``prompt`` for a backbone whose prompts go through a chat template: the reference's wording
    (:func:`~dyto.models.prompts.chat_layout`) rendered with ``self.tokenizer``, ``self.chat_template``
    (None: the checkpoint's) and ``self.system_prompt``, split where the template writes
    ``template_marker``. The chat backbones and both Qwen families use it."""

    template_marker: ClassVar[str]

    def prompt(self, task: str, question: str, options: list[str] | None = None) -> Prompt:
        layout = chat_layout(task, question, options)
        before, after = render_chat(self.tokenizer, layout, self.template_marker, self.chat_template,
                                    system=self.system_prompt)
        return Prompt(before, after, layout.mode)


class ChatBackbone(ChatTemplatePrompt, Backbone):
    """Args (every subclass):
        checkpoint: "tiny" (the family's in-memory RANDOM-WEIGHT model), a hub id or a local dir.
        dtype: "auto" = fp16 with CUDA, fp32 without; or float16 | bfloat16 | float32.
        attn_implementation: "sdpa" (default), "flash_attention_2", "eager", "auto".
        vision_chunk_size: frames per vision-tower forward; bounds activation memory.
        chat_template: a Jinja chat template to use instead of the checkpoint's.
        system_prompt: send the reference's system sentence (True, default) or leave the system
            turn to the template (False).
        seed: seeds the tiny model's weights.
    """

    model_class: ClassVar[type]
    tiny_builder: ClassVar[Callable]
    tiny_name: ClassVar[str]
    default_size: ClassVar[tuple[int, int]]
    default_mean: ClassVar[tuple[float, float, float]]
    default_std: ClassVar[tuple[float, float, float]]
    template_marker: ClassVar[str] = "<video>"  # what the chat template writes where the video goes

    def __init__(self, checkpoint: str = "tiny", dtype: str = "auto", attn_implementation: str = "sdpa",
                 vision_chunk_size: int = 16, chat_template: str | None = None, system_prompt: bool = True,
                 seed: int = 0):
        super().__init__()
        check("vision_chunk_size", vision_chunk_size, ">=1")
        self.checkpoint, self.vision_chunk_size, self.system_prompt = checkpoint, vision_chunk_size, system_prompt
        model, tokenizer, name, stated = load_family(self.model_class, type(self).tiny_builder, self.tiny_name,
                                                     checkpoint, resolve_dtype(dtype),
                                                     resolve_attn_implementation(attn_implementation), seed)
        model = model.eval()
        self.run_label = f"tiny-{self.name}" if checkpoint == "tiny" else checkpoint
        self.chat_template = chat_template or checkpoint_chat_template(checkpoint, tokenizer)
        self.attach(model, tokenizer, name, stated)

    @classmethod
    def from_parts(cls, model, tokenizer, model_name: str, **options) -> "ChatBackbone":
        """An already built model and tokenizer (benchmarks: full-size random weights)."""
        self = cls.__new__(cls)
        Backbone.__init__(self)
        self.checkpoint, self.run_label = options.get("checkpoint", "tiny"), model_name
        self.vision_chunk_size = options.get("vision_chunk_size", 16)
        self.system_prompt = options.get("system_prompt", True)
        self.chat_template = options.get("chat_template") or tokenizer.chat_template
        self.attach(model, tokenizer, model_name, {})
        return self

    def attach(self, model, tokenizer, model_name: str, stated: dict) -> None:
        """Use ``model`` / ``tokenizer``; ``stated`` is the checkpoint's processor settings."""
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        size = stated.get("size") or self.tower_size()
        self.preprocessing = Preprocessing(size=size, resize="squash_bicubic",
                                           mean=stated.get("image_mean", self.default_mean),
                                           std=stated.get("image_std", self.default_std))
        self.grid = self.output_grid(size)

    # -- family-specific -------------------------------------------------------------------
    def tower_size(self) -> tuple[int, int]:
        """The input size the vision tower is configured for."""
        raise NotImplementedError

    def output_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of ``encode``'s tokens for frames of ``size``."""
        raise NotImplementedError

    def visual_layout(self, reduction) -> tuple[str, list[Tensor]]:
        """(text that replaces the template's marker, with one marker token per block; the blocks)."""
        raise NotImplementedError

    def block_offsets(self, reduction) -> list[tuple[Tensor, int]]:
        """Per visual block: (offset of each of its rows in the unreduced block [L_k], the
        unreduced block's length), for ``keep_input_positions``."""
        raise ValueError(f"{type(self).__name__} cannot keep a reduction's input positions; "
                         "use the reducer's compact positions (FastVID: positions: compact)")

    marker_token: ClassVar[str]  # the special token each visual block replaces

    # -- shared ----------------------------------------------------------------------------
    def build_input(self, prompt: Prompt, reduction) -> LLMInput:
        visual_text, blocks = self.visual_layout(reduction)
        ids = self.tokenizer(prompt.before + visual_text + prompt.after, add_special_tokens=False).input_ids
        marker = self.tokenizer.convert_tokens_to_ids(self.marker_token)
        at = [i for i, t in enumerate(ids) if t == marker]
        if len(at) != len(blocks):
            raise ValueError(f"the prompt holds {len(at)} {self.marker_token} tokens for {len(blocks)} visual blocks "
                             "(does the question itself contain one?)")
        embed = self.input_embeddings()
        text = embed(torch.tensor(ids, dtype=torch.long, device=embed.weight.device))
        pieces, start, rows, row = [], 0, [], 0
        for i, block in zip(at, blocks):
            pieces += [text[start:i], block.to(device=text.device, dtype=text.dtype)]
            row += i - start
            rows.append(torch.arange(row, row + block.shape[0]))
            row, start = row + block.shape[0], i + 1
        pieces.append(text[start:])
        visual = sum(b.shape[0] for b in blocks)
        # the reducer's tokens are the first L block rows (LLaVA-OneVision's newline comes after them)
        rows = torch.cat(rows)[: reduction.tokens.shape[0]]
        positions = self.input_positions(len(ids), at, reduction) if reduction.keep_input_positions else None
        return LLMInput(torch.cat(pieces), positions, visual, **visual_layout(0, reduction, rows))

    def input_positions(self, length: int, at: list[int], reduction) -> Tensor:
        """``[1, S]`` ids as in the unreduced sequence: text advances by one, a visual block by
        its unreduced length, and each visual row sits at its offset in that block."""
        offsets = self.block_offsets(reduction)
        device = self.input_embeddings().weight.device
        pieces, p, start = [], 0, 0
        for i, (offset, full) in zip(at, offsets):
            text_end = p + i - start
            pieces += [torch.arange(p, text_end), text_end + offset.cpu()]
            p, start = text_end + full, i + 1
        pieces.append(torch.arange(p, p + length - start))
        return torch.cat(pieces).to(device)[None]

    def fingerprint(self) -> dict:
        config = self.model.config
        return {
            **self.checkpoint_fingerprint(),
            "vision_feature_layer": config.vision_feature_layer,
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
            "chat_template_sha256": _sha256(self.chat_template),
            "system_prompt": self.system_prompt,
            "tokenization": "whole",
        }


def _sha256(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()
