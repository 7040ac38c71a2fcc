"""The backbone interface: what a video LLM must provide for the generic :class:`~dyto.models.videoqa.VideoQA`.

A backbone wraps one Hugging Face vision-language model and its tokenizer. The LightningModule
runs, per question::

    pixels [T,3,H,W]  --encode-->  VisualFeatures(features [T',N,D], grid, cls [T',D] | None)
                      --reducer--> Reduction(tokens [L,D], frames_kept, tokens_per_frame, positions?)
    prompt(task, question, options) -> Prompt(before, after, mode)
    build_input(prompt, reduction)  -> LLMInput(embeds [S,D], positions [3,S] | None, visual_tokens)
    generate([LLMInput, ...], generation_config, logits_processor) -> [answer text, ...]

and ``clean_answer(task, text)`` turns the decoded continuation into the stored prediction.
``T'`` is ``T / preprocessing.frames_per_patch`` (Qwen2.5-VL folds 2 frames into one temporal
patch; every other family has 1). Everything a backbone produces lives in the LLM's embedding
space, so reducers never see a family-specific detail.

Registry (as for reducers): ``@register_backbone("name")`` on the class, ``build_backbone(name,
**kwargs)``, ``list_backbones()``, ``BACKBONES``. In YAML a backbone is either a registry name
(``model.backbone: llava_onevision``, the tiny random-weight model) or a class with arguments::

    model:
      backbone:
        class_path: dyto.models.LlavaNext
        init_args: {checkpoint: llava-hf/llava-v1.6-vicuna-7b-hf}

Changed against the first contract draft: ``prompt`` returns a :class:`Prompt` (before, after and
the template's name, which prediction records store as ``conv_mode``), ``build_input`` takes that
Prompt, ``generate`` takes the timing ``logits_processor`` list, and ``clean_answer`` carries
per-family answer fixes (SF-LLaVA's "In the image" on LLaVA-NeXT).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from transformers import GenerationConfig

from dyto.datamodules.preprocess import Preprocessing
from dyto.errors import ConfigError
from dyto.models.inputs import left_pad
from dyto.models.rope import reset_dynamic_rope
from dyto.registry import registering

__all__ = ["Backbone", "VisualFeatures", "LLMInput", "Prompt", "BACKBONES", "register_backbone",
           "build_backbone", "list_backbones", "left_pad", "input_cells", "visual_layout", "check_reducer_fits"]


@dataclass
class VisualFeatures:
    """What ``encode`` returns: per-frame (or per temporal patch) tokens in the LLM's space."""

    features: Tensor            # [T', N, D]
    grid: tuple[int, int]       # (h, w) with N == h * w, row-major
    cls: Tensor | None = None   # [T', D] per-frame CLS through the same projector (CLIP); None without one
    extras: tuple[Tensor, ...] = ()  # extra per-token tensors on the same grid, each [T', N, E] (Qwen3-VL's
    #                                  DeepStack features); reduced by the reducer's assignment


@dataclass
class Prompt:
    """A rendered prompt split at the visual tokens."""

    before: str                 # text before the visual tokens (without a placeholder)
    after: str                  # text after them, ending with the answer prefix the model continues
    mode: str                   # template name (recorded as ``conv_mode``)


@dataclass
class LLMInput:
    """One sequence ready for the LLM.

    ``visual_span`` / ``visual_rows`` / ``blocks`` tell an inner-LLM stage (:mod:`dyto.models.inner`)
    where the visual tokens are; ``counts`` is filled by the inner loop (tokens per layer)."""

    embeds: Tensor                # [S, D] text + visual embeddings
    positions: Tensor | None      # None: 0..S-1; [1, S]: explicit 1-D ids (a reduction that keeps
                                  # input positions); M-RoPE: LongTensor [3, S] (t, h, w) ids
    visual_tokens: int            # how many of the S rows are visual
    visual_span: tuple[int, int] | None = None  # (first row, end row) of the reducer's tokens in embeds
    visual_rows: Tensor | None = None           # [V] their rows when the span also holds text (InternVL's labels)
    blocks: tuple[int, ...] | None = None       # the reducer's tokens per block (tokens_per_frame), sum V
    counts: object | None = None                # cost.LayerCounts of the prefill, set by an inner stage's loop

    @property
    def length(self) -> int:
        return self.embeds.shape[0]

    @property
    def span(self) -> int:
        """1-D positions the sequence reaches: its largest explicit 1-D id + 1, else its length
        (what dynamic RoPE scales by)."""
        if self.positions is not None and self.positions.shape[0] == 1 and self.length:
            return int(self.positions.max()) + 1
        return self.length

    def truncated(self, length: int) -> "LLMInput":
        """The first ``length`` rows (the reference's right-side cut of the input embeddings); a cut
        through the visual tokens drops the last ones from ``visual_rows`` and ``blocks``."""
        pos = None if self.positions is None else self.positions[:, :length]
        span, rows, blocks = self.visual_span, self.visual_rows, self.blocks
        if span is not None and span[1] > length:
            all_rows = torch.arange(*span) if rows is None else rows
            rows = all_rows[all_rows < length]
            span = (span[0], max(span[0], min(span[1], length)))
            left, cut = len(rows), []
            for n in blocks or ():
                cut.append(min(n, left))
                left -= cut[-1]
            blocks = tuple(n for n in cut if n) if blocks is not None else None
        return LLMInput(self.embeds[:length], pos, self.visual_tokens, span, rows, blocks)


def visual_layout(start: int, reduction, rows: Tensor | None = None) -> dict:
    """``visual_span`` / ``visual_rows`` / ``blocks`` for a reduction whose tokens start at row
    ``start`` (contiguous) or sit at ``rows``."""
    count = reduction.tokens.shape[0]
    blocks = tuple(int(n) for n in reduction.tokens_per_frame)
    if rows is None:
        return {"visual_span": (start, start + count), "blocks": blocks}
    contiguous = bool(len(rows) == 0 or (rows == torch.arange(int(rows[0]), int(rows[0]) + len(rows))).all())
    span = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (start, start)
    return {"visual_span": span, "visual_rows": None if contiguous else rows.cpu(), "blocks": blocks}


def input_cells(reduction, grid: tuple[int, int]) -> tuple[Tensor, Tensor, int]:
    """(frame [L], raster cell [L], input frames T) of a reduction that keeps input positions."""
    if reduction.positions is None or reduction.input_frames is None:
        raise ValueError("keep_input_positions needs Reduction.positions and Reduction.input_frames")
    positions = reduction.positions.cpu()
    return positions[:, 0], positions[:, 1] * grid[1] + positions[:, 2], int(reduction.input_frames)


BACKBONES: dict[str, type["Backbone"]] = {}


register_backbone = registering(BACKBONES, "backbone")  # @register_backbone("llava_next")


# Modules whose backbones register themselves on import; a backbone elsewhere is usable by
# class_path at once, and by name once its module is imported (or listed here).
FAMILY_MODULES = ("dyto.models.llava_next", "dyto.models.llava_onevision", "dyto.models.internvl",
                  "dyto.models.qwen2_5_vl", "dyto.models.qwen3_vl")


def _load_families() -> None:
    for module in FAMILY_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def list_backbones() -> list[str]:
    _load_families()
    return sorted(BACKBONES)


def build_backbone(name: str, **kwargs) -> "Backbone":
    """``build_backbone("llava_onevision", checkpoint="tiny")``; unknown names list the known ones."""
    _load_families()
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def check_reducer_fits(reducer, backbone: "Backbone") -> None:
    """One line (``ConfigError``) before anything runs when ``reducer`` cannot run on ``backbone``:
    it reads a CLS the backbone's tower does not have, or the backbone's encoder returns extra
    per-token tensors (DeepStack) and the reducer reports no assignment to reduce them by."""
    name = getattr(reducer, "name", None) or type(reducer).__name__
    if getattr(reducer, "needs_cls", False) and not backbone.has_cls:
        raise ConfigError("reducer", name, "a reducer that needs no CLS (DyTo: descriptor 'patch0')",
                          f"{backbone.name}'s vision tower has no CLS token")
    if backbone.extra_levels and not getattr(reducer, "assigns", False):
        raise ConfigError("reducer", name, "a reducer that reports its keep/merge assignment",
                          f"{backbone.name} carries {backbone.extra_levels} DeepStack tensors per token, which follow "
                          "the tokens only by the reducer's Reduction.assignment")


class Backbone(torch.nn.Module):
    """Base class. Subclasses set, in ``__init__``: ``model`` (the HF ``*ForConditionalGeneration``,
    eval mode), ``tokenizer``, ``model_name`` (records; "... (random weights)" for random weights),
    ``preprocessing`` (:class:`Preprocessing`), ``grid`` ((h, w) of ``encode``'s output), and
    implement ``encode``, ``prompt``, ``build_input`` and ``fingerprint``.

    The default ``generate`` runs HF greedy generation on left-padded input embeddings with
    1-D positions (0..S-1, or the explicit ``[1, S]`` ids of ``LLMInput.positions``, which the
    decoding steps continue from the last one + 1); a backbone with its own positions (M-RoPE)
    overrides it.
    """

    name: ClassVar[str] = "?"
    rope_state: str = "per_question"  # see dyto.models.rope; LLaVA-NeXT makes it an option
    has_cls: ClassVar[bool] = True    # False: the tower has no CLS (a reducer needing one is refused up front)
    pooled_encoding: bool = False     # set by VideoQA: True under encode_batch "pool" (Qwen2.5-VL's tower "auto")
    model: torch.nn.Module
    tokenizer: object
    model_name: str
    preprocessing: Preprocessing
    grid: tuple[int, int]

    # -- required --------------------------------------------------------------------------
    def encode(self, pixels: Tensor, with_cls: bool = False) -> VisualFeatures:
        """``pixels [T,3,H,W]`` as ``preprocessing`` made them (any device) -> VisualFeatures."""
        raise NotImplementedError

    def prompt(self, task: str, question: str, options: list[str] | None = None) -> Prompt:
        """The prompt for one question of a record task (open_ended | multiple_choice | vcg_*)."""
        raise NotImplementedError

    def build_input(self, prompt: Prompt, reduction) -> LLMInput:
        """Tokenise, embed and splice ``reduction.tokens [L,D]`` between ``prompt.before`` and ``.after``."""
        raise NotImplementedError

    def fingerprint(self) -> dict:
        """Every backbone setting that can change an answer, as plain values (start from
        :meth:`checkpoint_fingerprint`)."""
        raise NotImplementedError

    def checkpoint_fingerprint(self) -> dict:
        """The entries every family records: checkpoint, revision, resolved dtype and attention."""
        config = self.model.config
        return {
            "checkpoint": self.model_name,
            "revision": getattr(config, "_commit_hash", None),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "attn_implementation": config._attn_implementation,
        }

    # -- protocol: lmms_eval (dyto/models/lmms_eval.py) ------------------------------------------
    def lmms_eval_model(self):
        """How lmms-eval's model file runs this family (an ``LmmsEvalModel``); a family without one
        cannot run ``protocol: lmms_eval``."""
        raise ConfigError("model.protocol", "lmms_eval", "'reference'", f"backbone {self.name!r} has no lmms-eval model")

    def lmms_eval_prompt(self, text: str) -> Prompt:
        """A task's lmms-eval user text in this family's lmms-eval template, split at the visual tokens."""
        raise ConfigError("model.protocol", "lmms_eval", "'reference'", f"backbone {self.name!r} has no lmms-eval model")

    def encode_many(self, pixels: list[Tensor], with_cls: bool = False) -> list[VisualFeatures]:
        """Several videos' features (``VideoQA(encode_batch="pool")``): one :meth:`encode` each unless
        the family's tower takes several videos in one call (Qwen2.5-VL)."""
        return [self.encode(p, with_cls=with_cls) for p in pixels]

    def grid_for(self, pixels: Tensor) -> tuple[int, int]:
        """(h, w) of the tokens ``encode`` makes from ``pixels [T,3,H,W]``: ``grid`` unless the
        family's grid depends on the frame size (Qwen2.5-VL's ``smart_resize``, InternVL's tiles)."""
        return self.grid

    # -- defaults --------------------------------------------------------------------------
    @property
    def extra_levels(self) -> int:
        """How many extra per-token tensors ``encode`` returns (``VisualFeatures.extras``; Qwen3-VL's
        DeepStack: 3); reducers must report an assignment to carry them."""
        return 0

    def clean_answer(self, task: str, text: str) -> str:
        """The stored prediction for a decoded continuation (already stripped)."""
        return text

    def before_generation(self) -> None:
        """Runs at the start of every ``generate`` call. With ``rope_state == "per_question"`` it
        puts dynamic RoPE back to the checkpoint's frequencies, so an answer never depends on the
        questions generated before it (:mod:`dyto.models.rope`); a no-op without dynamic RoPE."""
        if self.rope_state == "per_question":
            reset_dynamic_rope(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def input_embeddings(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    def generation_defaults(self) -> GenerationConfig:
        """A copy of the checkpoint's own generation config (its eos ids), pad id set."""
        base = getattr(self.model, "generation_config", None)
        config = copy.deepcopy(base) if base is not None else GenerationConfig()
        config.pad_token_id = self.pad_token_id
        if config.eos_token_id is None:
            config.eos_token_id = self.tokenizer.eos_token_id
        return config

    def llm_batch(self, inputs: list[LLMInput]) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(embeds [B,S,D] left-padded, attention mask [B,S], position ids [B,S] | None)``: what
        ``generate`` hands Hugging Face's ``generate`` and the inner-stage loop. None: 1-D positions
        from the mask; ids when an input carries explicit ``[1, S]`` ones (a reduction that keeps its
        input positions), right-aligned as the embeds, the others counting from their first row."""
        if any(i.positions is not None and i.positions.shape != (1, i.length) for i in inputs):
            raise ValueError(f"{type(self).__name__} places tokens by 1-D positions [1, S] only")
        embed = self.input_embeddings()
        pad = embed(torch.tensor(self.pad_token_id, device=embed.weight.device))
        embeds, mask = left_pad([i.embeds for i in inputs], pad)
        if all(i.positions is None for i in inputs):
            return embeds, mask, None
        ids = (mask.cumsum(-1) - 1).clamp(min=0)
        for b, item in enumerate(inputs):
            if item.positions is not None:
                ids[b, ids.shape[1] - item.length :] = item.positions[0].to(ids.device)
        return embeds, mask, ids

    def inner_hook(self, inputs: list[LLMInput]):
        """For inner stages: None, or ``hook(layer, hidden [B,S,D], columns [B,S]) -> hidden`` called after
        every prefill layer, ``columns`` = the original row each current row holds (-1: padding).
        A backbone that adds per-visual-token state inside the LLM (Qwen3-VL's DeepStack features)
        indexes that state with ``columns`` so it follows the tokens an inner stage kept."""
        return None

    @torch.no_grad()
    def generate(self, inputs: list[LLMInput], generation_config: GenerationConfig,
                 logits_processor=None) -> list[str]:
        """Greedy continuations of left-padded ``inputs`` (one batch), decoded, not yet stripped."""
        embeds, mask, ids = self.llm_batch(inputs)
        kwargs = {} if ids is None else {"position_ids": ids}
        self.before_generation()
        ids = self.model.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=generation_config,
                                  logits_processor=logits_processor, **kwargs)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)
