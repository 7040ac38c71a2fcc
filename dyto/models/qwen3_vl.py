"""Qwen3-VL as a dyto backbone: ``Qwen3VLForConditionalGeneration``'s own video path, split open.

Per question: frames ``[T, 3, H, W]`` (sides multiples of 32, as the processor's ``smart_resize``
makes them; T even, else the last frame is repeated as the processor does) -> patchified as the
processor does -> the real vision tower -> the 2x2 patch merger: tokens ``[T/2, h*w, D]``, grid
``(h, w) = (H/32, W/32)``, and the DeepStack mergers of three vision layers: extras
``[T/2, h*w, D]`` each (``VisualFeatures.extras``)
-> reducer, whose assignment (``Reduction.assignment``) reduces the extras the same way
-> prompt from the checkpoint's chat template, the video written as the processor writes it
(``<t seconds><|vision_start|>...<|vision_end|>`` per temporal patch, from the sampled frames'
times) with the ids of the model's ``get_rope_index`` (:mod:`dyto.models.qwen3_vl_inputs`)
-> greedy generation through the model's own ``generate``: the reduced tokens and their DeepStack
features go in as ``mm_encoder_outputs`` (pre-encoded video outputs), so the model itself scatters
them into the placeholders and adds the DeepStack features after its first LLM layers.

What differs from the model's own pipeline (``Qwen3VLProcessor`` + ``generate``):
* frames are resized by the processor's rule (``smart_resize``: aspect kept, sides multiples of
  32, the clip's T*H*W within the checkpoint's ``size`` budget) with PIL bicubic on uint8 frames
  instead of torchvision's antialiased bicubic (last-digit rounding); ``image_size`` squashes every
  frame to a fixed square instead (the tiny model: 96 px); mean/std are the processor's.
* with a reducer, a temporal patch with no token left loses its timestamp and markers, and every
  kept token and text token keeps the id it has in the full sequence (``VideoLayout``).
With the identity reducer (``concat``) the answers equal ``model.generate`` on the processor's
output (tested on the tiny model, bitwise on CPU).

    dyto predict --config configs/models/qwen3_vl_8b.yaml --config configs/reducers/dyto_qwen3_vl.yaml \\
                 --config configs/benchmarks/videomme.yaml
    pytest -q tests/test_backbone_qwen3_vl.py
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor
from transformers import GenerationConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

from dyto.datamodules.preprocess import Preprocessing
from dyto.errors import ConfigError
from dyto.models.backbone import Backbone, LLMInput, Prompt, VisualFeatures, register_backbone
from dyto.models.inputs import left_pad
from dyto.models.lmms_eval import LMMS_EVAL, LmmsEvalModel
from dyto.models.loading import checkpoint_chat_template, load_family, resolve_attn_implementation, resolve_dtype
from dyto.models.chat_backbone import ChatTemplatePrompt
from dyto.models.prompts import render_lmms_eval_chat
from dyto.models.qwen2_5_vl import reduction_positions
from dyto.models.qwen2_5_vl_inputs import patchify
from dyto.models.qwen3_vl_inputs import (CLIP_PIXELS, DEFAULT_FPS, VIDEO_PAD, Qwen3Input, VideoLayout, clip_pixels,
                                         patch_timestamps)
from dyto.models.tiny_qwen3_vl import TINY_QWEN3_NAME, build_tiny_qwen3_vl

__all__ = ["Qwen3_VL", "Qwen3Input"]

TINY_SIZE = 96            # the tiny model's frames: 6x6 patches of 16 px, a 3x3 merged grid
CHECKPOINT_SIZE = 480     # smart_resize of a square video at 100 frames, 8B budget: 15x15 per patch
# lmms-eval qwen3_vl.py's min_pixels / max_pixels (lines 85-86); the tiny model's at its scale
LMMS_PIXELS = {"checkpoint": (256 * 28 * 28, 1605632), "tiny": (9 * 32 * 32, 36 * 32 * 32)}
QWEN3_MEAN = QWEN3_STD = (0.5, 0.5, 0.5)   # Qwen3VLVideoProcessor's image_mean / image_std


@register_backbone("qwen3_vl")
class Qwen3_VL(ChatTemplatePrompt, Backbone):
    """Qwen3-VL video QA backbone (``Qwen/Qwen3-VL-8B-Instruct`` and the same layout).

    Args:
        checkpoint: "tiny" (the in-memory RANDOM-WEIGHT model), a hub id or a local directory.
        image_size: None (default): the video processor's own rule for a checkpoint (``smart_resize``:
            aspect kept, sides multiples of 32, the clip's T*H*W within ``video_pixels``; a square
            100-frame clip gets 480 px, 15x15 = 225 tokens per temporal patch), a 96 px square for
            "tiny"; an int: every frame squashed to that square side (a multiple of 32).
        video_pixels: (min, max) pixels of a whole clip for the processor's rule; None = the
            checkpoint's ``video_preprocessor_config.json`` ``size`` (else the 8B's 4096, 25165824).
            Given with "tiny", the tiny model uses the processor's rule too.
        dtype: "auto" = bfloat16 with CUDA (the checkpoints' dtype), float32 without; or
            float16 | bfloat16 | float32.
        attn_implementation: "sdpa" | "eager" | "flash_attention_2" | "auto".
        vision_chunk_size: temporal patches per vision-tower call; None = the whole clip in one
            call, as the model's own path (the tower attends within a temporal patch only).
        chat_template: a Jinja chat template to use instead of the checkpoint's.
        system_prompt: send the reference's system sentence (default) or none (Qwen3-VL's
            template adds no default system turn).
        seed: seeds the tiny model's weights.
    """

    has_cls = False
    template_marker = VIDEO_PAD  # prompt(): ``before`` ends with <|vision_start|>, ``after`` starts with <|vision_end|>

    def __init__(self, checkpoint: str = "tiny", image_size: int | None = None, dtype: str = "auto",
                 attn_implementation: str = "sdpa", vision_chunk_size: int | None = None,
                 chat_template: str | None = None, system_prompt: bool = True, seed: int = 0,
                 video_pixels: tuple[int, int] | None = None):
        super().__init__()
        self._options(checkpoint, vision_chunk_size, system_prompt, seed)
        # auto: bfloat16 with CUDA, the checkpoints' dtype
        model, tokenizer, name, stated = load_family(
            Qwen3VLForConditionalGeneration, build_tiny_qwen3_vl, TINY_QWEN3_NAME, checkpoint,
            resolve_dtype(dtype, cuda_auto=torch.bfloat16), resolve_attn_implementation(attn_implementation), seed)
        self.chat_template = chat_template or checkpoint_chat_template(checkpoint, tokenizer)
        if image_size is None and checkpoint == "tiny" and video_pixels is None:
            image_size = TINY_SIZE
        if image_size is None and video_pixels is None:
            video_pixels = clip_pixels(checkpoint)
        self.attach(model.eval(), tokenizer, name, image_size, stated.get("image_mean", QWEN3_MEAN),
                    stated.get("image_std", QWEN3_STD), video_pixels)

    @classmethod
    def from_parts(cls, model, tokenizer, model_name: str, image_size: int | None = CHECKPOINT_SIZE,
                   checkpoint: str = "tiny", vision_chunk_size: int | None = None, chat_template: str | None = None,
                   system_prompt: bool = True, video_pixels: tuple[int, int] | None = None) -> "Qwen3_VL":
        """An already built model and tokenizer (benchmarks: full-size random weights)."""
        self = cls.__new__(cls)
        Backbone.__init__(self)
        self._options(checkpoint, vision_chunk_size, system_prompt, 0)
        self.chat_template = chat_template or tokenizer.chat_template
        self.attach(model.eval(), tokenizer, model_name, image_size, QWEN3_MEAN, QWEN3_STD,
                    video_pixels or (CLIP_PIXELS if image_size is None else None))
        return self

    def _options(self, checkpoint, vision_chunk_size, system_prompt, seed):
        if vision_chunk_size is not None and vision_chunk_size < 1:
            raise ValueError(f"vision_chunk_size must be >= 1 or None, got {vision_chunk_size}")
        self.checkpoint, self.vision_chunk_size, self.system_prompt, self.seed = (checkpoint, vision_chunk_size,
                                                                                  system_prompt, seed)
        self.run_label = f"tiny-{self.name}" if checkpoint == "tiny" else checkpoint

    def attach(self, model, tokenizer, model_name: str, image_size: int | None, mean, std,
               video_pixels: tuple[int, int] | None = None) -> None:
        """``image_size`` a square side, or None with ``video_pixels`` for the processor's rule (then
        ``grid`` is the nominal one of a square 100-frame clip; each video's is ``grid_for``'s)."""
        vision = model.config.vision_config
        unit = vision.patch_size * vision.spatial_merge_size
        if image_size is not None and (image_size < unit or image_size % unit):
            raise ConfigError("image_size", image_size, f"a multiple of {unit} (patch x merge), or null")
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        side = image_size or CHECKPOINT_SIZE
        self.grid = (side // unit, side // unit)
        if image_size is None:
            low, high = video_pixels
            self.preprocessing = Preprocessing(size=(side, side), resize="qwen3_processor", mean=mean, std=std,
                                               frames_per_patch=vision.temporal_patch_size, min_pixels=int(low),
                                               max_pixels=int(high))
        else:
            self.preprocessing = Preprocessing(size=(side, side), resize="squash_bicubic", mean=mean, std=std,
                                               frames_per_patch=vision.temporal_patch_size)

    @property
    def extra_levels(self) -> int:
        """How many DeepStack tensors ``encode`` returns (the vision layers the model taps)."""
        return len(self.model.config.vision_config.deepstack_visual_indexes)

    # -- the backbone interface --------------------------------------------------------------
    @torch.no_grad()
    def encode(self, pixels: Tensor, with_cls: bool = False) -> VisualFeatures:
        """``[T, 3, S, S]`` -> features ``[ceil(T/2), h*w, D]`` and the DeepStack extras, each
        ``[ceil(T/2), h*w, D]``, raster order per temporal patch; no CLS exists."""
        if with_cls:
            raise ValueError("Qwen3-VL's vision tower has no CLS token; use a reducer that does not need one "
                             "(e.g. DyTo with descriptor='patch0')")
        vision = self.model.config.vision_config
        visual = self.model.model.visual
        pixels = pixels.to(self.device, non_blocking=True)
        flat, (gt, gh, gw) = patchify(pixels, vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size)
        per_patch = gh * gw
        step = self.vision_chunk_size or gt
        main, extras = [], [[] for _ in range(self.extra_levels)]
        for start in range(0, gt, step):
            n = min(step, gt - start)
            grid_thw = torch.tensor([[n, gh, gw]], device=self.device)
            out = visual(flat[start * per_patch: (start + n) * per_patch].type(visual.dtype), grid_thw=grid_thw)
            main.append(out.pooler_output)                              # [n*h*w, D], raster per patch
            for level, feature in zip(extras, out.deepstack_features):
                level.append(feature)
        h, w = gh // vision.spatial_merge_size, gw // vision.spatial_merge_size
        shape = (gt, h * w, -1)
        return VisualFeatures(features=torch.cat(main).reshape(shape), grid=(h, w), cls=None,
                              extras=tuple(torch.cat(level).reshape(shape) for level in extras))

    def grid_for(self, pixels: Tensor) -> tuple[int, int]:
        """``(H/32, W/32)`` of frames whose sides are multiples of 32."""
        vision = self.model.config.vision_config
        unit = vision.patch_size * vision.spatial_merge_size
        return (pixels.shape[-2] // unit, pixels.shape[-1] // unit)

    # -- protocol: lmms_eval -------------------------------------------------------------------
    def lmms_eval_model(self) -> LmmsEvalModel:
        """lmms-eval's ``qwen3_vl.py`` at its defaults: 32 frames (``nframes``), qwen-vl-utils 0.0.14's
        resize with ``min_pixels`` 256*28*28 and ``max_pixels`` 1605632, 128 new tokens."""
        low, high = LMMS_PIXELS["tiny" if self.checkpoint == "tiny" else "checkpoint"]
        pre = self.preprocessing
        resize = Preprocessing(pre.size, "qwen3_smart_resize", pre.mean, pre.std, pre.frames_per_patch,
                               min_pixels=low, max_pixels=high)
        return LmmsEvalModel("qwen3_vl", f"{LMMS_EVAL} lmms_eval/models/simple/qwen3_vl.py 70-95, 213-230, 297-394; "
                             "QwenLM/Qwen3-VL@9658872 qwen-vl-utils/src/qwen_vl_utils/vision_process.py "
                             "24-181, 292-329, 403-473", 32, "qwen_nframes", resize, 128, "chat_template")

    def lmms_eval_prompt(self, text: str) -> Prompt:
        """lmms-eval's messages (``qwen3_vl.py`` 304-337): a system turn "You are a helpful assistant.",
        then the video and the task's text, through the checkpoint's template, split at ``<|video_pad|>``."""
        before, after = render_lmms_eval_chat(self.tokenizer, text, VIDEO_PAD, self.chat_template)
        return Prompt(before, after, "lmms_eval:chat_template")

    def patch_times(self, reduction) -> list[float]:
        """Seconds of every input temporal patch (``Reduction.input_frames`` of them): from
        ``reduction.frame_times`` (the sampled frames' index / fps, set by ``VideoQA``), else frames
        0, 1, ... at the processor's fallback of 24 fps."""
        per = self.preprocessing.frames_per_patch
        patches = reduction.input_frames
        if patches is None:
            patches = int(reduction.positions[:, 0].max()) + 1 if reduction.positions is not None \
                else max(reduction.frames_kept) + 1
        times = reduction.frame_times
        if times is None:
            times = [i / DEFAULT_FPS for i in range(patches * per)]
        stamps = patch_timestamps(times, per)
        if len(stamps) != patches:
            raise ValueError(f"{len(times)} frame times make {len(stamps)} temporal patches, the reduction "
                             f"has {patches}")
        return stamps

    def build_input(self, prompt: Prompt, reduction) -> Qwen3Input:
        """The processor's layout of the reduced video (:class:`VideoLayout`): embeddings ``[S, D]``,
        M-RoPE ids ``[3, S]``, the visual rows and the reduced DeepStack features."""
        grid = getattr(reduction, "grid", None) or self.grid
        cells = reduction_positions(reduction, grid)
        layout = VideoLayout.build(self.tokenizer, self.model.model, prompt.before, prompt.after,
                                   self.patch_times(reduction), grid, device=self.device)
        if len(cells) and int(cells[:, 0].max()) >= len(layout.pad_start):
            raise ValueError(f"tokens of temporal patch {int(cells[:, 0].max())} but only {len(layout.pad_start)} "
                             "patches have times")
        rows, visual = layout.reduced(cells)
        embed = self.input_embeddings()
        embeds = embed(layout.ids[rows])
        tokens = reduction.tokens.to(device=self.device, dtype=embeds.dtype)
        embeds[visual] = tokens
        extras = tuple(e.to(device=self.device, dtype=embeds.dtype) for e in getattr(reduction, "extras", ()) or ())
        if self.extra_levels and len(extras) != self.extra_levels:
            raise ValueError(f"Qwen3-VL adds {self.extra_levels} DeepStack tensors but the reduction carries "
                             f"{len(extras)} (reduce the encoder's extras with Reduction.reduce_extras)")
        visual_rows = visual.nonzero().flatten()  # timestamps sit between the patches: never contiguous
        span = (int(visual_rows[0]), int(visual_rows[-1]) + 1) if len(visual_rows) else (0, 0)
        return Qwen3Input(embeds=embeds, positions=layout.positions[:, rows], visual_tokens=tokens.shape[0],
                          visual_rows=visual_rows, visual_span=span,
                          blocks=tuple(int(n) for n in reduction.tokens_per_frame), deepstack=extras)

    def llm_batch(self, inputs: list[LLMInput]) -> tuple[Tensor, Tensor, Tensor]:
        """Left-padded embeds ``[B, S, D]``, mask ``[B, S]`` and positions ``[4, B, S]`` (the text row
        the mask builder reads, then t, h, w), as for Qwen2.5-VL."""
        if any(i.positions is None or i.positions.shape != (3, i.length) for i in inputs):
            raise ValueError("Qwen3-VL inputs need M-RoPE positions [3, S] (build them with build_input)")
        pad = self.input_embeddings()(torch.tensor(self.pad_token_id, device=self.device))
        embeds, mask = left_pad([i.embeds for i in inputs], pad)
        length = embeds.shape[1]
        positions = torch.zeros(4, len(inputs), length, dtype=torch.long, device=self.device)
        positions[0] = (mask.cumsum(-1) - 1).clamp(min=0)
        for b, item in enumerate(inputs):
            positions[1:, b, length - item.length:] = item.positions.to(self.device)
        return embeds, mask, positions

    def inner_hook(self, inputs: list[Qwen3Input]):
        """For an inner-LLM stage's own layer loop (docs/internals.md, Seams): ``hook(layer, hidden
        [B, S, D], columns [B, S]) -> hidden`` adds the DeepStack rows after each of the first
        ``extra_levels`` layers, as the model's ``_deepstack_process`` does, at the rows that still
        hold a visual token (``columns``: the column of the left-padded batch a row holds, -1 padding)."""
        levels = self.extra_levels
        if not levels:
            return None
        length = max(item.length for item in inputs)
        row_of = torch.full((len(inputs), length), -1, dtype=torch.long, device=self.device)  # column -> DeepStack row
        offset = 0
        for b, item in enumerate(inputs):
            columns = item.visual_rows.to(self.device) + (length - item.length)
            row_of[b, columns] = torch.arange(offset, offset + len(columns), device=self.device)
            offset += len(columns)
        stacks = [torch.cat([item.deepstack[level].to(self.device) for item in inputs]) for level in range(levels)]

        def hook(layer: int, hidden: Tensor, columns: Tensor) -> Tensor:
            if layer >= levels:
                return hidden
            rows = torch.where(columns >= 0, row_of.gather(1, columns.clamp(min=0)), -1)   # [B, S]
            visual = rows >= 0
            hidden = hidden.clone()
            hidden[visual] = hidden[visual] + stacks[layer][rows[visual]].to(hidden.dtype)
            return hidden

        return hook

    def model_inputs(self, inputs: list[Qwen3Input]) -> dict:
        """The model's forward / ``generate`` arguments for a batch: ``<|video_pad|>`` placeholders at
        the visual rows of the left-padded embeddings, and the tokens with their DeepStack rows as
        ``mm_encoder_outputs``, so the model's own forward scatters them in and adds the DeepStack
        rows at those rows of its first layers."""
        embeds, mask, positions = self.llm_batch(inputs)
        video = self.input_embeddings()(torch.tensor(self.model.config.video_token_id, device=self.device))
        length, tokens, levels = embeds.shape[1], [], [[] for _ in range(self.extra_levels)]
        for b, item in enumerate(inputs):
            rows = item.visual_rows.to(self.device) + (length - item.length)
            tokens.append(embeds[b, rows].clone())
            embeds[b, rows] = video
            for level, feature in zip(levels, item.deepstack):
                level.append(feature.to(self.device))
        outputs = {"video": BaseModelOutputWithDeepstackFeatures(pooler_output=tuple(tokens),
                                                                 deepstack_features=[tuple(level) for level in levels])}
        return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions,
                "mm_encoder_outputs": outputs}

    @torch.no_grad()
    def generate_ids(self, inputs: list[Qwen3Input], generation_config: GenerationConfig, **kwargs) -> Tensor:
        """New token ids ``[B, n]`` from the model's own ``generate`` on :meth:`model_inputs`."""
        batch = self.model_inputs(inputs)
        self.before_generation()
        return self.model.generate(**batch, generation_config=generation_config, **kwargs)

    def generate(self, inputs: list[LLMInput], generation_config: GenerationConfig,
                 logits_processor=None) -> list[str]:
        """Greedy continuations, decoded (not yet stripped), one per input."""
        ids = self.generate_ids(inputs, generation_config, logits_processor=logits_processor)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def fingerprint(self) -> dict:
        return {
            **self.checkpoint_fingerprint(),
            "preprocessing": self.preprocessing.config(),
            "vision_chunk_size": self.vision_chunk_size, "system_prompt": self.system_prompt,
            "chat_template_sha256": hashlib.sha256((self.chat_template or "").encode("utf-8")).hexdigest(),
            "deepstack_visual_indexes": list(self.model.config.vision_config.deepstack_visual_indexes),
            "layout": "timestamps per temporal patch, full-sequence ids",
            "tokenization": "whole", "seed": self.seed,
        }
