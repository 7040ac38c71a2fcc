"""LLaVA-NeXT as a backbone (the paper's and the reference's model), and ``DyToVideoQA``.

Frames ``[T,3,336,336]`` (CLIP preprocessing: bicubic squash, CLIP mean/std) -> CLIP ViT-L/14
run up to its penultimate layer -> CLS dropped -> projector -> ``[T,576,D]`` on a 24x24 grid.
No anyres tiling and no ``image_newline``: the reference feeds a 4-D tensor, which bypasses both.
Prompts are SF-LLaVA's fixed conv-mode strings (:mod:`dyto.models.prompts`), tokenised chunk by
chunk as LLaVA's ``tokenizer_image_token`` does; multiple-choice answers get SF-LLaVA's
"In the image" -> "In the video" fix.

``DyToVideoQA`` is :class:`~dyto.models.videoqa.VideoQA` over this backbone with the pre-backbone
constructor arguments (``model=...``, ``conv_mode=...``), kept so configs and user code work.

    dyto predict --config configs/models/llava_next_7b.yaml --config configs/reducers/dyto.yaml \\
                 --config configs/benchmarks/nextqa.yaml
"""

from __future__ import annotations

import torch
from torch import Tensor

import dataclasses

from dyto.datamodules.preprocess import Preprocessing
from dyto.datamodules.video import CLIP_MEAN, CLIP_STD
from dyto.errors import ConfigError, check
from dyto.models.backbone import Backbone, LLMInput, Prompt, VisualFeatures, input_cells, register_backbone
from dyto.models.inputs import TOKENIZATIONS, splice, tokenize_prompt
from dyto.models.lmms_eval import LMMS_EVAL, LmmsEvalModel, llava_conversation
from dyto.models.loading import load_llava_next, resolve_attn_implementation, resolve_dtype
from dyto.models.prompts import IMAGE_PLACEHOLDER, TEMPLATES, default_conv_mode, model_family, render_prompt
from dyto.models.rope import ROPE_STATES
from dyto.models.videoqa import VideoQA
from dyto.reduction import TokenReducer

__all__ = ["LlavaNext", "DyToVideoQA", "CLIP_MEAN", "CLIP_STD", "PROMPT_FAMILIES"]

PROMPT_FAMILIES = ("auto", "7b", "34b")


@register_backbone("llava_next")
class LlavaNext(Backbone):
    """LLaVA-NeXT (``LlavaNextForConditionalGeneration``) behind the backbone interface.

    Args:
        checkpoint: "tiny" (the in-memory RANDOM-WEIGHT model), a hub id such as
            ``llava-hf/llava-v1.6-vicuna-7b-hf`` / ``llava-hf/llava-v1.6-34b-hf``, or a local dir.
        prompt_family: which reference templates: "7b" (Vicuna: ``image_seq_v3`` /
            ``multiple_choice_allvideo_v4``), "34b" (Yi, ChatML: the ``*_34b_*`` modes), or "auto"
            (the pre-backbone rule, kept as the default: "34b" if the checkpoint name contains it).
        conv_mode: one template for every task; None picks by ``prompt_family`` and each record's task.
        dtype: "auto" = fp16 with CUDA, fp32 without; or float16 | bfloat16 | float32.
        attn_implementation: "sdpa" (default), "flash_attention_2" (CUDA + flash-attn), "eager",
            "auto" (flash_attention_2 where available, else sdpa).
        vision_chunk_size: frames per vision-tower forward; bounds activation memory.
        tokenization: "reference" (chunk-wise, see :func:`dyto.models.inputs.tokenize_prompt`) or "whole".
        rope_scaling_factor: dynamic NTK RoPE factor (reference: 2.0); None leaves RoPE as shipped.
        seed: seeds the tiny model's weights.
        rope_state: "per_question" (default) resets the dynamic RoPE frequencies before every
            generation, so each answer is what that question gets first in a fresh process;
            "carried" keeps transformers' state across questions (a question past 4096 positions
            then uses the frequencies of the longest one before it: its answer depends on the
            order, the resume point and the number of ranks). See :mod:`dyto.models.rope`.
    """

    def __init__(
        self,
        checkpoint: str = "tiny",
        prompt_family: str = "auto",
        conv_mode: str | None = None,
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        vision_chunk_size: int = 16,
        tokenization: str = "reference",
        rope_scaling_factor: float | None = 2.0,
        seed: int = 0,
        rope_state: str = "per_question",
    ):
        super().__init__()
        self._options(checkpoint, prompt_family, conv_mode, vision_chunk_size, tokenization, rope_scaling_factor,
                      rope_state)
        self.attach(*load_llava_next(checkpoint, resolve_dtype(dtype), resolve_attn_implementation(attn_implementation),
                                     rope_scaling_factor, seed))

    @classmethod
    def from_parts(cls, model, tokenizer, model_name: str, checkpoint: str = "tiny", prompt_family: str = "auto",
                   conv_mode: str | None = None, vision_chunk_size: int = 16, tokenization: str = "reference",
                   rope_scaling_factor: float | None = 2.0, rope_state: str = "per_question") -> "LlavaNext":
        """An already built LLaVA-NeXT and tokenizer (benchmarks: full-size random weights)."""
        self = cls.__new__(cls)
        Backbone.__init__(self)
        self._options(checkpoint, prompt_family, conv_mode, vision_chunk_size, tokenization, rope_scaling_factor,
                      rope_state)
        self.attach(model, tokenizer, model_name)
        return self

    def _options(self, checkpoint, prompt_family, conv_mode, vision_chunk_size, tokenization, rope_scaling_factor,
                 rope_state):
        check("rope_state", rope_state, ROPE_STATES)
        self.rope_state = rope_state
        check("prompt_family", prompt_family, PROMPT_FAMILIES)
        check("conv_mode", conv_mode, tuple(sorted(TEMPLATES)), optional=True)
        check("vision_chunk_size", vision_chunk_size, ">=1")
        check("tokenization", tokenization, TOKENIZATIONS)
        check("rope_scaling_factor", rope_scaling_factor, ">0", optional=True)
        self.checkpoint, self.conv_mode, self.prompt_family = checkpoint, conv_mode, prompt_family
        self.family = model_family(checkpoint) if prompt_family == "auto" else prompt_family
        self.vision_chunk_size, self.tokenization, self.rope_scaling_factor = vision_chunk_size, tokenization, rope_scaling_factor
        self.run_label = checkpoint  # "tiny", a hub id or a path: what run names are made of

    def attach(self, model, tokenizer, model_name: str) -> None:
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        vision = model.config.vision_config
        side = vision.image_size // vision.patch_size
        self.grid = (side, side)
        self.preprocessing = Preprocessing(size=(vision.image_size, vision.image_size), resize="squash_bicubic",
                                           mean=CLIP_MEAN, std=CLIP_STD)

    def fingerprint(self) -> dict:
        config = self.model.config
        return {
            **self.checkpoint_fingerprint(),
            "vision_feature_layer": config.vision_feature_layer,
            "rope_scaling": getattr(config.text_config, "rope_scaling", None),
            "rope_state": self.rope_state,
            "conv_mode": self.conv_mode or "auto",
            "prompt_family": self.family,
            "tokenization": self.tokenization,
        }

    # -- vision ----------------------------------------------------------------------------
    def vision_hidden(self, pixels: Tensor) -> Tensor:
        """CLIP's hidden state at ``vision_feature_layer`` for ``[t,3,S,S]`` -> ``[t,1+N,C]``.

        Runs only the encoder layers up to that layer: the HF tower's ``hidden_states[k]`` is the
        output of layer k (0 = the embeddings after ``pre_layrnorm``), and the layers after the
        feature layer (the last one, for the reference's -2) never influence an answer. That is
        1/24 less vision compute than the full tower and no stack of all hidden states held in
        memory; the result is bit-identical to ``tower(x, output_hidden_states=True)
        .hidden_states[vision_feature_layer]`` (tested).
        """
        tower = self.model.model.vision_tower
        layers = tower.encoder.layers
        hidden = tower.pre_layrnorm(tower.embeddings(pixels))
        for block in layers[: self.model.config.vision_feature_layer % (len(layers) + 1)]:
            hidden = block(hidden, None)
        return hidden

    @torch.no_grad()
    def encode(self, pixels: Tensor, with_cls: bool = False) -> VisualFeatures:
        """``[T,3,S,S]`` -> features ``[T,N,D]`` (+ projected CLS ``[T,D]`` with ``with_cls``).

        The penultimate CLIP layer with CLS dropped, through the projector, as the reference's
        ``feature_select('patch')`` + ``mm_projector``, in chunks of ``vision_chunk_size`` frames.
        The CLS hidden state of the same layer goes through the same projector, so a reducer that
        wants it (``needs_cls``: the paper's descriptor) gets a vector in the tokens' space.
        """
        tower, projector = self.model.model.vision_tower, self.model.model.multi_modal_projector
        feats, cls = [], []
        # one copy of all frames first: from pinned memory it does not block this thread, so a
        # side stream's chunks are all queued at once
        pixels = pixels.to(self.device, non_blocking=True)
        for chunk in pixels.split(self.vision_chunk_size):
            hidden = self.vision_hidden(chunk.to(dtype=tower.dtype))
            feats.append(projector(hidden[:, 1:]))
            if with_cls:
                cls.append(projector(hidden[:, :1])[:, 0])
        return VisualFeatures(torch.cat(feats), self.grid, torch.cat(cls) if with_cls else None)

    # -- text ------------------------------------------------------------------------------
    def prompt(self, task: str, question: str, options: list[str] | None = None) -> Prompt:
        mode = self.conv_mode or default_conv_mode(self.family, task)
        before, after = render_prompt(mode, question, options).split(IMAGE_PLACEHOLDER)
        return Prompt(before, after, mode)

    def build_input(self, prompt: Prompt, reduction) -> LLMInput:
        before, after = tokenize_prompt(self.tokenizer, prompt.before + IMAGE_PLACEHOLDER + prompt.after,
                                        self.tokenization)
        embeds = splice(self.input_embeddings(), before, reduction.tokens, after)
        positions = None
        if reduction.keep_input_positions:   # each token at its place in the unreduced sequence
            frames, cells, t = input_cells(reduction, self.grid)
            n, b = self.grid[0] * self.grid[1], len(before)
            positions = torch.cat([torch.arange(b), b + frames * n + cells,
                                   torch.arange(len(after)) + b + t * n])[None].to(embeds.device)
        return LLMInput(embeds, positions, reduction.tokens.shape[0])

    def lmms_eval_model(self) -> LmmsEvalModel:
        """lmms-eval's ``llava_vid.py`` with its defaults (``conv_template=vicuna_v1``, ``max_frames_num=20``,
        ``video_fps=1``) and the CLIP processor of LLaVA-NeXT's original checkpoints. Its 2x2 average
        pooling and per-row newlines are not applied: this backbone keeps the reference's 24x24 tokens."""
        if self.family != "7b":
            raise ConfigError("model.protocol", "lmms_eval", "'reference'", "lmms-eval's llava_vid defaults are "
                              "written for Vicuna (7B); LLaVA-NeXT-34B's template there is not set")
        return LmmsEvalModel("llava_vid", f"{LMMS_EVAL} lmms_eval/models/simple/llava_vid.py 86-106, 331-349, 505-524",
                             20, "fps_then_linspace",
                             dataclasses.replace(self.preprocessing, resize="shortest_edge_center_crop"), 1024, "vicuna_v1")

    def lmms_eval_prompt(self, text: str) -> Prompt:
        before, after = llava_conversation("vicuna_v1", text)
        return Prompt(before, after, "lmms_eval:vicuna_v1")

    def clean_answer(self, task: str, text: str) -> str:
        # SF-LLaVA's fix: its multiple-choice answers sometimes speak of "the image"
        return text.replace("In the image", "In the video") if task == "multiple_choice" else text


class DyToVideoQA(VideoQA):
    """``VideoQA`` over :class:`LlavaNext`, with the pre-backbone arguments (kept for configs and code).

    ``model`` is the LLaVA-NeXT checkpoint ("tiny" = random weights); the other arguments are
    :class:`LlavaNext`'s and :class:`VideoQA`'s. ``llava`` is the HF model.
    """

    def __init__(
        self,
        model: str = "tiny",
        reducer: TokenReducer | None = None,
        conv_mode: str | None = None,
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        max_new_tokens: int = 128,
        vision_chunk_size: int = 16,
        max_length: int = 8192,
        overflow: str = "too_long",
        tokenization: str = "reference",
        rope_scaling_factor: float | None = 2.0,
        generation_batch_size: int | str | None = "auto",
        encode_ahead: bool | None = False,
        seed: int = 0,
        prompt_family: str = "auto",
        batch_order: str = "length",
        generation_loop: str = "eager",
        rope_state: str = "per_question",
    ):
        self.check_settings(max_new_tokens, max_length, overflow, generation_batch_size, batch_order, generation_loop)
        backbone = LlavaNext(model, prompt_family, conv_mode, dtype, attn_implementation, vision_chunk_size,
                             tokenization, rope_scaling_factor, seed, rope_state)
        super().__init__(backbone, reducer, max_new_tokens, max_length, overflow, generation_batch_size,
                         encode_ahead, seed, batch_order=batch_order, generation_loop=generation_loop)

    @property
    def llava(self):
        return self.backbone.model

    @property
    def conv_mode(self) -> str | None:
        return self.backbone.conv_mode

    @property
    def tokenization(self) -> str:
        return self.backbone.tokenization

    @property
    def family(self) -> str:
        return self.backbone.family

    def vision_hidden(self, pixels: Tensor) -> Tensor:
        return self.backbone.vision_hidden(pixels)

    def attach_backbone(self, llava, tokenizer, model_name: str) -> None:
        """Use an already built LLaVA-NeXT and tokenizer (benchmarks: full-size random weights)."""
        old = self.backbone
        self.set_backbone(LlavaNext.from_parts(
            llava, tokenizer, model_name, checkpoint=old.checkpoint, prompt_family=old.prompt_family,
            conv_mode=old.conv_mode, vision_chunk_size=old.vision_chunk_size, tokenization=old.tokenization,
            rope_scaling_factor=old.rope_scaling_factor, rope_state=old.rope_state))
