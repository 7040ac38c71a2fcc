"""LLaVA-OneVision as a backbone (``LlavaOnevisionForConditionalGeneration``: SigLIP + Qwen2).

Frames ``[T,3,384,384]`` (bicubic squash, SigLIP mean/std 0.5 unless the checkpoint's processor
config says otherwise) -> SigLIP so400m/14 -> 27x27 = 729 patch tokens per frame (SigLIP has no
CLS; ``vision_feature_select_strategy: full`` keeps them all) -> projector -> bilinear pooling to
ceil(27/2) = 14 -> ``[T,196,D]`` on a 14x14 grid. That is the model's own video path
(``get_video_features`` / ``apply_pooling``, checked in tests/test_backbones.py), run in chunks
of frames and only up to the feature layer. After the (reduced) frames the model's video path
appends ONE ``image_newline`` vector; ``video_newline`` keeps that (default) or drops it.

The prompt is the checkpoint's chat template (llava-hf ships one) with the reference's wording;
the visual tokens replace its ``<video>`` token.

LLaVA-Video-7B-Qwen2 is this architecture with another checkpoint (configs/models/llava_video_7b.yaml).
Its own video path (LLaVA-NeXT's ``llava_arch``, as lmms-eval's ``llava_vid.py`` runs it) differs
from the HF class's in two settings, both options here named as in LLaVA's config:
``mm_spatial_pool_mode: average`` (``avg_pool2d`` stride 2: 27x27 -> 13x13 = 169 tokens) and
``mm_newline_position: grid`` (``image_newline`` after every row of every frame; after a
reduction, after every run of output tokens from the same (frame, row)). ``lmms_eval_as`` picks
the lmms-eval model file whose settings ``protocol: lmms_eval`` follows (``llava_onevision`` or
``llava_vid``).

    dyto predict --config configs/models/llava_onevision_7b.yaml --config configs/reducers/dyto.yaml \\
                 --config configs/benchmarks/nextqa.yaml
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import LlavaOnevisionForConditionalGeneration

from dyto.errors import ConfigError
from dyto.models.backbone import Prompt, VisualFeatures, input_cells, register_backbone
from dyto.models.chat_backbone import ChatBackbone
from dyto.models.lmms_eval import LMMS_EVAL, LmmsEvalModel, llava_conversation
from dyto.models.tiny_families import TINY_ONEVISION_NAME, build_tiny_llava_onevision

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
POOL_MODES = ("bilinear", "average")
NEWLINE_POSITIONS = ("one_token", "grid")
LMMS_EVAL_AS = ("llava_onevision", "llava_vid")


@register_backbone("llava_onevision")
class LlavaOnevision(ChatBackbone):
    """LLaVA-OneVision behind the backbone interface (see the module docstring).

    Args:
        checkpoint: "tiny" (in-memory RANDOM-WEIGHT model), a hub id such as
            ``llava-hf/llava-onevision-qwen2-7b-ov-hf``, or a local dir in the HF format.
        dtype: "auto" = fp16 with CUDA, fp32 without; or float16 | bfloat16 | float32.
        attn_implementation: "sdpa" (default), "flash_attention_2", "eager", "auto".
        vision_chunk_size: frames per vision-tower forward; bounds activation memory.
        chat_template: a Jinja chat template to use instead of the checkpoint's.
        system_prompt: send the reference's system sentence (default) or leave it to the template.
        video_newline: append the model's ``image_newline`` after the visual tokens, as its video
            path does (default True); False: no newline at all.
        mm_spatial_pool_mode: "bilinear" (the HF video path, ceil(27/2) = 14) or "average"
            (LLaVA-Video's: ``avg_pool2d`` stride 2, 13x13).
        mm_newline_position: "one_token" (one newline after all frames, the HF video path) or
            "grid" (LLaVA-Video's: one after every row of every frame).
        lmms_eval_as: the lmms-eval model file ``protocol: lmms_eval`` follows: "llava_onevision"
            (32 frames) or "llava_vid" (LLaVA-Video's recipe: 1 fps, at most 64 frames).
        seed: seeds the tiny model's weights.
    """

    model_class = LlavaOnevisionForConditionalGeneration
    tiny_builder = staticmethod(build_tiny_llava_onevision)
    tiny_name = TINY_ONEVISION_NAME
    default_mean, default_std = SIGLIP_MEAN, SIGLIP_STD
    template_marker = marker_token = "<video>"
    video_newline = True
    mm_spatial_pool_mode, mm_newline_position, lmms_eval_as = "bilinear", "one_token", "llava_onevision"

    def __init__(self, checkpoint: str = "tiny", dtype: str = "auto", attn_implementation: str = "sdpa",
                 vision_chunk_size: int = 16, chat_template: str | None = None, system_prompt: bool = True,
                 video_newline: bool = True, mm_spatial_pool_mode: str = "bilinear",
                 mm_newline_position: str = "one_token", lmms_eval_as: str = "llava_onevision", seed: int = 0):
        for key, value, allowed in (("mm_spatial_pool_mode", mm_spatial_pool_mode, POOL_MODES),
                                    ("mm_newline_position", mm_newline_position, NEWLINE_POSITIONS),
                                    ("lmms_eval_as", lmms_eval_as, LMMS_EVAL_AS)):
            if value not in allowed:
                raise ConfigError(key, value, " | ".join(allowed))
        super().__init__(checkpoint, dtype, attn_implementation, vision_chunk_size, chat_template, system_prompt, seed)
        self.video_newline, self.mm_newline_position, self.lmms_eval_as = video_newline, mm_newline_position, lmms_eval_as
        self.mm_spatial_pool_mode = mm_spatial_pool_mode
        self.grid = self.output_grid(self.preprocessing.size)

    def tower_size(self) -> tuple[int, int]:
        size = self.model.config.vision_config.image_size
        return (size, size)

    def patch_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        patch = self.model.config.vision_config.patch_size
        return (size[0] // patch, size[1] // patch)

    def output_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = self.patch_grid(size)
        if self.mm_spatial_pool_mode == "average":
            return (h // 2, w // 2)
        return (math.ceil(h / 2), math.ceil(w / 2))

    def pool(self, projected: Tensor) -> Tensor:
        """``[t, h*w, D]`` -> the pooled ``[t, h'*w', D]``: the model's ``apply_pooling`` (bilinear) or
        LLaVA-NeXT's ``get_2dPool`` with ``avg_pool2d(stride=2)``."""
        if self.mm_spatial_pool_mode == "bilinear":
            return self.model.model.apply_pooling(projected)
        t, n, d = projected.shape
        h, w = self.patch_grid(self.preprocessing.size)
        grid = projected.view(t, h, w, d).permute(0, 3, 1, 2)
        return F.avg_pool2d(grid, 2).permute(0, 2, 3, 1).reshape(t, -1, d)

    def feature_hidden(self, pixels: Tensor) -> Tensor:
        """SigLIP's hidden state at ``vision_feature_layer`` ``[t,N,C]``, running only the layers up to it
        (``hidden_states[k]`` is the output of layer k; post_layernorm is not part of it)."""
        tower = self.model.model.vision_tower
        tower = getattr(tower, "vision_model", tower)  # older transformers nest the transformer
        layers = tower.encoder.layers
        hidden = tower.embeddings(pixels)
        for block in layers[: self.model.config.vision_feature_layer % (len(layers) + 1)]:
            out = block(hidden, None)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    @torch.no_grad()
    def encode(self, pixels: Tensor, with_cls: bool = False) -> VisualFeatures:
        """``[T,3,S,S]`` -> ``[T, ceil(h/2)*ceil(w/2), D]`` as ``get_video_features`` makes them (without
        the trailing newline, which ``build_input`` adds after the reduced tokens)."""
        if with_cls:
            raise ValueError("LLaVA-OneVision's SigLIP tower has no CLS token; use a reducer descriptor "
                             "that does not need one")
        if isinstance(self.model.config.vision_feature_layer, list):
            raise ValueError("a list of vision_feature_layer values is not supported")
        inner = self.model.model
        pixels = pixels.to(self.device, non_blocking=True)
        feats = []
        for chunk in pixels.split(self.vision_chunk_size):
            hidden = self.feature_hidden(chunk.to(dtype=self.dtype))
            if self.model.config.vision_feature_select_strategy == "default":
                hidden = hidden[:, 1:]
            feats.append(self.pool(inner.multi_modal_projector(hidden)))
        return VisualFeatures(torch.cat(feats), self.grid, None)

    def visual_layout(self, reduction) -> tuple[str, list[Tensor]]:
        tokens = reduction.tokens
        if self.video_newline:
            newline = self.model.model.image_newline.to(device=tokens.device, dtype=tokens.dtype)
            if self.mm_newline_position == "grid":
                tokens = grid_newlines(tokens, row_ids(reduction, self.grid), newline)
            else:
                tokens = torch.cat([tokens, newline[None]])
        return self.marker_token, [tokens]

    def lmms_eval_model(self) -> LmmsEvalModel:
        if self.lmms_eval_as == "llava_vid":  # LLaVA-NeXT docs/LLaVA_Video_1003.md lines 123-135: its lmms-eval args
            return LmmsEvalModel("llava_vid", f"{LMMS_EVAL} lmms_eval/models/simple/llava_vid.py 86-106, 331-349, "
                                 "505-524; LLaVA-VL/LLaVA-NeXT@df179663 docs/LLaVA_Video_1003.md 123-135",
                                 64, "fps_then_linspace", self.preprocessing, 1024, "qwen_1_5")
        return LmmsEvalModel("llava_onevision", f"{LMMS_EVAL} lmms_eval/models/simple/llava_onevision.py 66-84, "
                             "393-402, 470-481, 516-538", 32, "linspace", self.preprocessing, 1024, "qwen_1_5")

    def lmms_eval_prompt(self, text: str) -> Prompt:
        before, after = llava_conversation("qwen_1_5", text)
        return Prompt(before, after, "lmms_eval:qwen_1_5")

    def block_offsets(self, reduction) -> list[tuple[Tensor, int]]:
        """One block: a token at (frame f, cell c) sits at f*N + c of the unreduced video, the
        newline after all T*N of them; with ``mm_newline_position: grid`` every row of the unreduced
        video is w tokens and a newline, and a kept row's newline keeps its own offset."""
        grid = reduction.grid or self.grid
        frames, cells, t = input_cells(reduction, grid)
        h, w = grid
        if self.video_newline and self.mm_newline_position == "grid":
            rows = frames * h + cells // w                               # [L] (frame, row) id
            ends = torch.ones_like(rows, dtype=torch.bool)
            ends[:-1] = rows[1:] != rows[:-1]                              # as grid_newlines
            pairs = torch.stack([rows * (w + 1) + cells % w, rows * (w + 1) + w], 1)  # [L, 2] token, its newline
            keep = torch.stack([torch.ones_like(ends), ends], 1)
            return [(pairs[keep], t * h * (w + 1))]
        offsets = frames * h * w + cells
        if self.video_newline:
            return [(torch.cat([offsets, torch.tensor([t * h * w])]), t * h * w + 1)]
        return [(offsets, t * h * w)]

    def fingerprint(self) -> dict:
        pooling = "bilinear_2x" if self.mm_spatial_pool_mode == "bilinear" else "average_2x"
        extra = {"mm_newline_position": "grid"} if self.mm_newline_position == "grid" else {}
        return {**super().fingerprint(), "video_newline": self.video_newline, "pooling": pooling, **extra}


def row_ids(reduction, grid: tuple[int, int]) -> Tensor:
    """``[L]`` frame * h + row of every reduced token (``Reduction.positions``; whole frames without)."""
    positions = reduction.positions
    if positions is None:
        h, w = grid
        if any(n != h * w for n in reduction.tokens_per_frame):
            raise ValueError("mm_newline_position: grid needs Reduction.positions (the reducer gave none)")
        frames = torch.arange(len(reduction.tokens_per_frame)).repeat_interleave(h * w)
        return frames * h + torch.arange(h * w).repeat(len(reduction.tokens_per_frame)) // w
    return positions[:, 0].long() * grid[0] + positions[:, 1].long()


def grid_newlines(tokens: Tensor, rows: Tensor, newline: Tensor) -> Tensor:
    """``tokens [L, D]`` with ``newline [D]`` after every run of tokens sharing a (frame, row) id: on
    whole frames, LLaVA-NeXT's ``add_token_per_grid`` (a newline after each row of each frame)."""
    rows = rows.to(tokens.device)
    ends = torch.ones(len(rows), dtype=torch.bool, device=tokens.device)
    ends[:-1] = rows[1:] != rows[:-1]
    shift = torch.cumsum(ends.long(), 0) - ends.long()           # newlines before each token
    at = torch.arange(len(rows), device=tokens.device) + shift   # each token's place in the output
    out = tokens.new_empty(len(rows) + int(ends.sum()), tokens.shape[1])
    out[at] = tokens
    out[at[ends] + 1] = newline
    return out
