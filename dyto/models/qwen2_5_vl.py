"""Qwen2.5-VL as a dyto backbone: ``Qwen2_5_VLForConditionalGeneration``'s own video path, split open.

Per question: frames ``[T, 3, S, S]`` (S a multiple of 28; T even, else the last frame is
repeated as the Qwen video processor does) -> patchified as the processor does -> the real
vision tower (windowed + full attention blocks, 2-D rotary) -> the 2x2 patch merger -> tokens
``[T/2, h*w, D]``, one block per temporal patch of two frames, grid ``(h, w) = (S/28, S/28)``
-> reducer -> prompt from the checkpoint's chat template -> text, visual, text embeddings with
3-D M-RoPE ids, every visual token at its own (temporal patch, row, col) from
``Reduction.positions`` -> greedy generation, whose decoding steps continue the ids from there.

What differs from the model's own pipeline (``Qwen2_5_VLProcessor`` + ``generate``):
* frames are squashed to a fixed square size (the data side's ``squash_bicubic``: PIL bicubic,
  aspect ratio ignored) instead of the processor's ``smart_resize`` (aspect-preserving, pixel
  budget per frame); the mean/std are the processor's (OpenAI CLIP).
* temporal ids use a fixed ``second_per_grid_t`` (default 1.0: what the processor reports for
  its default 2 fps sampling; the data side samples a fixed frame count, not a rate).
* text after the video starts at max id + 1 (Qwen's released rule); ``text_after_video=
  "transformers"`` gives the installed transformers' rule instead (see
  :data:`~dyto.models.qwen2_5_vl_inputs.TEXT_AFTER_VIDEO`). The max is the unreduced video's
  (``text_positions="full"``, the default: the ids the full sequence gives the text, as
  VidCom² and FastVID index the full sequence's position ids), or the kept tokens'
  (``"kept"``).
With the identity reducer the answers equal ``model.generate`` on the processor's layout
(tested on the tiny model).

Under ``protocol: lmms_eval`` (lmms-eval's ``qwen2_5_vl.py`` with qwen-vl-utils 0.0.10) frames are
sampled at 2 fps and 32 of them kept, and resized with ``smart_resize`` (aspect kept, a pixel
budget per frame between ``min_pixels`` 256*28*28 and ``max_pixels`` 1605632, smaller for long
clips), so the grid ``(H/28, W/28)`` is the video's own (``grid_for``, ``Reduction.grid``); the
prompt is the checkpoint's template with lmms-eval's messages (system "You are a helpful
assistant.", then the video and the task's text); ``second_per_grid_t`` stays 1.0, which is what
the processor assumes there (no ``fps`` is passed to it).

    dyto predict --config configs/models/qwen2_5_vl_7b.yaml --config configs/reducers/dyto_qwen2_5_vl.yaml \\
                 --config configs/benchmarks/nextqa.yaml
    pytest -q tests/test_backbone_qwen2_5_vl.py tests/test_backbone_qwen2_5_vl_e2e.py
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor
from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

from dyto.datamodules.preprocess import Preprocessing
from dyto.datamodules.video import CLIP_MEAN, CLIP_STD
from dyto.errors import ConfigError, check
from dyto.models.backbone import Backbone, LLMInput, Prompt, VisualFeatures, register_backbone, visual_layout
from dyto.models.inputs import left_pad
from dyto.models.loading import checkpoint_chat_template, load_family, resolve_attn_implementation, resolve_dtype
from dyto.models.lmms_eval import LMMS_EVAL, LmmsEvalModel
from dyto.models.chat_backbone import ChatTemplatePrompt
from dyto.models.prompts import render_lmms_eval_chat
from dyto.models.qwen2_5_vl_inputs import (TEXT_AFTER_VIDEO, TEXT_POSITIONS, VIDEO_PAD, grid_positions,
                                           mrope_positions, patchify)
from dyto.models.qwen2_5_vl_vision import batched_tower, tower_calls
from dyto.models.tiny_qwen2_5_vl import TINY_QWEN_NAME, build_tiny_qwen2_5_vl

__all__ = ["Qwen2_5_VL", "reduction_positions", "VISION_TOWERS"]

# "batched": the vision tower with its window attention batched (dyto/models/qwen2_5_vl_vision.py);
# "transformers": the model's own forward (one attention call per window and per temporal patch)
VISION_TOWERS = ("auto", "batched", "transformers")

TINY_SIZE = 84  # the tiny model's frames: 6x6 patches of 14 px, a 3x3 merged grid
# lmms-eval qwen2_5_vl.py defaults; the tiny model's budget is scaled to its 84 px frames (9 to 36 cells)
LMMS_PIXELS = {"checkpoint": (256 * 28 * 28, 1605632), "tiny": (9 * 28 * 28, 36 * 28 * 28)}


def reduction_positions(reduction, grid: tuple[int, int]) -> Tensor:
    """``[L, 3]`` (temporal patch, row, col) of each reduced token, validated.

    ``reduction.positions`` when the reducer provides it; otherwise derived only where that is
    unambiguous: every output block is one whole frame (``concat``, ``uniform`` with pool 1).
    """
    h, w = grid
    count = reduction.tokens.shape[0]
    positions = getattr(reduction, "positions", None)
    if positions is None:
        blocks = reduction.tokens_per_frame
        if len(blocks) != len(reduction.frames_kept) or any(n != h * w for n in blocks):
            raise ValueError("the reduction carries no positions and its blocks are not whole frames "
                             f"({blocks[:4]}... tokens per block, grid {h}x{w}); Qwen2.5-VL places every "
                             "visual token by its (t, row, col): use a reducer that sets Reduction.positions")
        positions = grid_positions(reduction.frames_kept, grid, device=reduction.tokens.device)
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.shape != (count, 3):
        raise ValueError(f"Reduction.positions must be [L, 3] with L={count}, got {tuple(positions.shape)}")
    if count and (positions.min() < 0 or positions[:, 1].max() >= h or positions[:, 2].max() >= w):
        raise ValueError(f"Reduction.positions fall outside the {h}x{w} grid")
    return positions


@register_backbone("qwen2_5_vl")
class Qwen2_5_VL(ChatTemplatePrompt, Backbone):
    """Qwen2.5-VL video QA backbone (``Qwen/Qwen2.5-VL-7B-Instruct`` and the same layout).

    Args:
        checkpoint: "tiny" (the in-memory RANDOM-WEIGHT model), a hub id or a local directory.
        image_size: frame side in pixels, a multiple of 28 (patch 14 x merge 2); None = 448 for
            a checkpoint (16x16 = 256 tokens per temporal patch), 84 for "tiny".
        dtype: "auto" = bfloat16 with CUDA (the checkpoints' dtype; fp16 overflows in Qwen2.5-VL),
            float32 without; or float16 | bfloat16 | float32.
        attn_implementation: "sdpa" | "eager" | "flash_attention_2" | "auto", as for LLaVA-NeXT.
        second_per_grid_t: seconds per temporal patch for the temporal ids (see module docstring).
        text_after_video: "max_plus_one" (Qwen's rule, default) or "transformers".
        text_positions: with "max_plus_one", the text after the video follows the unreduced
            video ("full", default) or the kept tokens ("kept").
        vision_chunk_size: temporal patches per vision-tower call; None = the whole clip in one
            call, as the model's own path (the tower attends within a temporal patch only, so
            chunks change nothing but rounding). With several videos encoded together
            (``VideoQA(encode_batch="pool")``) a call holds at most this many of the pool's
            temporal patches; None = the whole pool in one call.
        vision_tower: "batched" (window attention batched per layer, see
            :mod:`dyto.models.qwen2_5_vl_vision`: bitwise the model's own features on the CPU, not
            on a GPU, where an H200 in bf16 measured differences up to 0.21), "transformers" (the
            model's own forward) or "auto" (default): "batched" when the module encodes pools
            (``VideoQA(encode_batch="pool")``, the fast path that already rounds differently),
            else the model's own, so one question at a time stays the reference's on any device.
            "batched" runs with ``attn_implementation: sdpa`` only; with another attention the
            model's own forward runs. The fingerprint records what runs.
        chat_template: a Jinja chat template to use instead of the checkpoint's.
        system_prompt: send the reference's system sentence (default) or leave it to the template
            (Qwen's adds "You are a helpful assistant.").
        seed: seeds the tiny model's weights.
    """

    template_marker = VIDEO_PAD  # prompt(): ``before`` ends with <|vision_start|>, ``after`` starts with <|vision_end|>

    def __init__(self, checkpoint: str = "tiny", image_size: int | None = None, dtype: str = "auto",
                 attn_implementation: str = "sdpa", second_per_grid_t: float = 1.0,
                 text_after_video: str = "max_plus_one", vision_chunk_size: int | None = None,
                 chat_template: str | None = None, system_prompt: bool = True, seed: int = 0,
                 text_positions: str = "full", vision_tower: str = "auto"):
        super().__init__()
        self._options(checkpoint, second_per_grid_t, text_after_video, vision_chunk_size, system_prompt, seed,
                      text_positions, vision_tower)
        model, tokenizer, name, stated = load_family(
            Qwen2_5_VLForConditionalGeneration, build_tiny_qwen2_5_vl, TINY_QWEN_NAME, checkpoint,
            resolve_dtype(dtype, cuda_auto=torch.bfloat16), resolve_attn_implementation(attn_implementation), seed)
        self.chat_template = chat_template or checkpoint_chat_template(checkpoint, tokenizer)
        self.attach(model.eval(), tokenizer, name, image_size or (TINY_SIZE if checkpoint == "tiny" else 448),
                    stated.get("image_mean", CLIP_MEAN), stated.get("image_std", CLIP_STD))

    @classmethod
    def from_parts(cls, model, tokenizer, model_name: str, image_size: int = 448, checkpoint: str = "tiny",
                   second_per_grid_t: float = 1.0, text_after_video: str = "max_plus_one",
                   vision_chunk_size: int | None = None, chat_template: str | None = None,
                   system_prompt: bool = True, text_positions: str = "full",
                   vision_tower: str = "auto") -> "Qwen2_5_VL":
        """An already built model and tokenizer (benchmarks: full-size random weights)."""
        self = cls.__new__(cls)
        Backbone.__init__(self)
        self._options(checkpoint, second_per_grid_t, text_after_video, vision_chunk_size, system_prompt, 0,
                      text_positions, vision_tower)
        self.chat_template = chat_template or tokenizer.chat_template
        self.attach(model.eval(), tokenizer, model_name, image_size, CLIP_MEAN, CLIP_STD)
        return self

    def _options(self, checkpoint, second_per_grid_t, text_after_video, vision_chunk_size, system_prompt, seed,
                 text_positions="full", vision_tower="auto"):
        check("text_after_video", text_after_video, TEXT_AFTER_VIDEO)
        check("vision_chunk_size", vision_chunk_size, ">=1", optional=True)
        check("second_per_grid_t", second_per_grid_t, ">0")
        check("text_positions", text_positions, TEXT_POSITIONS)
        check("vision_tower", vision_tower, VISION_TOWERS)
        self.text_positions = text_positions
        self.vision_tower, self._plans = vision_tower, {}  # _plans: the batched tower's per-grid plans
        self.checkpoint, self.second_per_grid_t, self.text_after_video = checkpoint, second_per_grid_t, text_after_video
        self.vision_chunk_size, self.system_prompt, self.seed = vision_chunk_size, system_prompt, seed
        # what run names are made of: a hub id or a path; the tiny model says its family, so its runs
        # never share a folder (and resume state) with another family's tiny model
        self.run_label = f"tiny-{self.name}" if checkpoint == "tiny" else checkpoint

    def attach(self, model: Qwen2_5_VLForConditionalGeneration, tokenizer, model_name: str, image_size: int,
               mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        vision = model.config.vision_config
        unit = vision.patch_size * vision.spatial_merge_size
        if image_size % unit:
            raise ConfigError("image_size", image_size, f"a multiple of {unit} (patch x merge)")
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.grid = (image_size // unit, image_size // unit)
        self.preprocessing = Preprocessing(size=(image_size, image_size), resize="squash_bicubic", mean=mean, std=std,
                                           frames_per_patch=vision.temporal_patch_size)

    # -- the backbone interface --------------------------------------------------------------
    @torch.no_grad()
    def encode(self, pixels: Tensor, with_cls: bool = False) -> VisualFeatures:
        """``[T, 3, S, S]`` -> features ``[ceil(T/2), h*w, D]``, grid ``(h, w)``; no CLS exists."""
        return self.encode_many([pixels], with_cls)[0]

    @torch.no_grad()
    def encode_many(self, pixels: list[Tensor], with_cls: bool = False) -> list[VisualFeatures]:
        """Several videos through the vision tower together (each its own ``grid_thw`` row, as the
        model's own path batches videos), in calls of at most ``vision_chunk_size`` temporal patches."""
        if with_cls:
            raise ValueError("Qwen2.5-VL's vision tower has no CLS token; use a reducer that does not "
                             "need one (e.g. DyTo with descriptor='patch0')")
        vision = self.model.config.vision_config
        dtype = self.model.model.visual.dtype
        videos = [patchify(p.to(self.device, non_blocking=True), vision.patch_size, vision.spatial_merge_size,
                           vision.temporal_patch_size) for p in pixels]    # pinned host memory: no stall
        merged = [[] for _ in videos]                                       # per video: [n*h*w, D] pieces
        for call in tower_calls([grid[0] for _, grid in videos], self.vision_chunk_size):  # (video, first, count)
            rows, grids = [], []
            for v, start, n in call:
                flat, (_, gh, gw) = videos[v]
                rows.append(flat[start * gh * gw : (start + n) * gh * gw])
                grids.append((n, gh, gw))
            out = self._tower(torch.cat(rows).type(dtype), grids)
            for (v, _, _), piece in zip(call, out.split([n * gh * gw // vision.spatial_merge_size**2
                                                          for n, gh, gw in grids])):
                merged[v].append(piece)
        out = []
        for (_, (gt, gh, gw)), pieces in zip(videos, merged):
            h, w = gh // vision.spatial_merge_size, gw // vision.spatial_merge_size
            out.append(VisualFeatures(features=torch.cat(pieces).reshape(gt, h * w, -1), grid=(h, w), cls=None))
        return out

    @property
    def resolved_vision_tower(self) -> str:
        """What runs: "auto" is "batched" for pooled encoding only; "batched" needs SDPA (the model's
        own attention for anything else)."""
        sdpa = self.model.config.vision_config._attn_implementation == "sdpa"
        wanted = ("batched" if self.pooled_encoding else "transformers") if self.vision_tower == "auto" else self.vision_tower
        return "batched" if wanted == "batched" and sdpa else "transformers"

    def _tower(self, flat: Tensor, grids: list[tuple[int, int, int]]) -> Tensor:
        """The merged tokens ``[sum n*gh*gw/4, D]`` of ``flat`` (patchified rows of ``grids``)."""
        visual = self.model.model.visual
        if self.resolved_vision_tower == "batched":
            return batched_tower(visual, flat, grids, self._plans)
        return visual(flat, grid_thw=torch.tensor(grids, device=flat.device)).pooler_output

    def grid_for(self, pixels: Tensor) -> tuple[int, int]:
        """``(H/28, W/28)``: frames of any size whose sides are multiples of 28 (``smart_resize``)."""
        vision = self.model.config.vision_config
        unit = vision.patch_size * vision.spatial_merge_size
        return (pixels.shape[-2] // unit, pixels.shape[-1] // unit)

    def lmms_eval_model(self) -> LmmsEvalModel:
        low, high = LMMS_PIXELS["tiny" if self.checkpoint == "tiny" else "checkpoint"]
        resize = Preprocessing(self.preprocessing.size, "qwen_smart_resize", self.preprocessing.mean,
                               self.preprocessing.std, self.preprocessing.frames_per_patch, min_pixels=low, max_pixels=high)
        return LmmsEvalModel("qwen2_5_vl", f"{LMMS_EVAL} lmms_eval/models/simple/qwen2_5_vl.py 36-49, 220-292; "
                             "QwenLM/Qwen2.5-VL@f0af2996 qwen-vl-utils/src/qwen_vl_utils/vision_process.py 24-332",
                             32, "qwen_fps", resize, 32768, "chat_template")

    def lmms_eval_prompt(self, text: str) -> Prompt:
        """lmms-eval's messages through the checkpoint's template: a system turn (``prompts.LMMS_SYSTEM``), then a
        user turn with the video item and the task's text, split at ``<|video_pad|>``."""
        before, after = render_lmms_eval_chat(self.tokenizer, text, VIDEO_PAD, self.chat_template)
        return Prompt(before, after, "lmms_eval:chat_template")

    def build_input(self, prompt: Prompt, reduction) -> LLMInput:
        """Text, visual, text embeddings ``[S, D]`` and their M-RoPE ids ``[3, S]``.

        The prompt is tokenised whole with one ``<|video_pad|>`` where the video goes, as the
        processor does (there the pad is repeated once per visual token); the visual tokens then
        take that pad's place.
        """
        embed = self.model.get_input_embeddings()
        ids = self.tokenizer(prompt.before + VIDEO_PAD + prompt.after, add_special_tokens=False).input_ids
        pad = self.tokenizer.convert_tokens_to_ids(VIDEO_PAD)
        if ids.count(pad) != 1:
            raise ValueError(f"the prompt holds {ids.count(pad)} {VIDEO_PAD} tokens, expected 1 "
                             "(does the question itself contain one?)")
        at = ids.index(pad)
        grid = getattr(reduction, "grid", None) or self.grid
        cells = reduction_positions(reduction, grid).to(self.device)
        tokens = reduction.tokens.to(device=self.device, dtype=embed.weight.dtype)
        text = embed(torch.tensor(ids, dtype=torch.long, device=self.device))
        embeds = torch.cat([text[:at], tokens, text[at + 1 :]])
        positions = mrope_positions(self.model.model, at, cells, grid, len(ids) - at - 1,
                                    self.second_per_grid_t, self.text_after_video, self.text_positions,
                                    getattr(reduction, "input_frames", None))
        return LLMInput(embeds=embeds, positions=positions, visual_tokens=tokens.shape[0],
                        **visual_layout(at, reduction))

    def llm_batch(self, inputs: list[LLMInput]) -> tuple[Tensor, Tensor, Tensor]:
        """Left-padded embeds, mask and positions ``[4, B, S]`` (the text row the mask builder reads,
        then t, h, w); padding gets id 0 on every row."""
        if any(i.positions is None or i.positions.shape != (3, i.length) for i in inputs):
            raise ValueError("Qwen2.5-VL inputs need M-RoPE positions [3, S] (build them with build_input)")
        pad = self.model.get_input_embeddings()(torch.tensor(self.pad_token_id, device=self.device))
        embeds, mask = left_pad([i.embeds for i in inputs], pad)
        length = embeds.shape[1]
        positions = torch.zeros(4, len(inputs), length, dtype=torch.long, device=self.device)
        positions[0] = (mask.cumsum(-1) - 1).clamp(min=0)
        for b, item in enumerate(inputs):
            positions[1:, b, length - item.embeds.shape[0] :] = item.positions.to(self.device)
        return embeds, mask, positions

    @torch.no_grad()
    def generate_ids(self, inputs: list[LLMInput], generation_config: GenerationConfig, **kwargs) -> Tensor:
        """New token ids ``[B, n]`` for left-padded ``inputs``; positions go to ``generate`` as
        ``[4, B, S]`` (:meth:`llm_batch`), and each decoding step continues every row from the last
        prompt token's id + 1, as the model's own path does."""
        embeds, mask, positions = self.llm_batch(inputs)
        self.before_generation()
        return self.model.generate(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                  generation_config=generation_config, **kwargs)

    def generate(self, inputs: list[LLMInput], generation_config: GenerationConfig,
                 logits_processor=None) -> list[str]:
        """Greedy continuations, decoded (not yet stripped), one per input."""
        ids = self.generate_ids(inputs, generation_config, logits_processor=logits_processor)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def fingerprint(self) -> dict:
        config = self.model.config
        return {
            **self.checkpoint_fingerprint(),
            "preprocessing": self.preprocessing.config(),
            "tokens_per_second": config.vision_config.tokens_per_second,
            "second_per_grid_t": self.second_per_grid_t, "text_after_video": self.text_after_video,
            "text_positions": self.text_positions,
            "vision_chunk_size": self.vision_chunk_size, "vision_tower": self.resolved_vision_tower,
            "system_prompt": self.system_prompt,
            "chat_template_sha256": hashlib.sha256((self.chat_template or "").encode("utf-8")).hexdigest(),
            "tokenization": "whole", "seed": self.seed,
        }
