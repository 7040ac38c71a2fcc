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

    dyto predict --config configs/models/llava_onevision_7b.yaml --config configs/reducers/dyto.yaml \\
                 --config configs/benchmarks/nextqa.yaml
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from transformers import LlavaOnevisionForConditionalGeneration

from dyto.models.backbone import VisualFeatures, input_cells, register_backbone
from dyto.models.chat_backbone import ChatBackbone
from dyto.models.tiny_families import TINY_ONEVISION_NAME, build_tiny_llava_onevision

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


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
            path does (default True).
        seed: seeds the tiny model's weights.
    """

    model_class = LlavaOnevisionForConditionalGeneration
    tiny_builder = staticmethod(build_tiny_llava_onevision)
    tiny_name = TINY_ONEVISION_NAME
    default_mean, default_std = SIGLIP_MEAN, SIGLIP_STD
    template_marker = marker_token = "<video>"
    video_newline = True

    def __init__(self, checkpoint: str = "tiny", dtype: str = "auto", attn_implementation: str = "sdpa",
                 vision_chunk_size: int = 16, chat_template: str | None = None, system_prompt: bool = True,
                 video_newline: bool = True, seed: int = 0):
        super().__init__(checkpoint, dtype, attn_implementation, vision_chunk_size, chat_template, system_prompt, seed)
        self.video_newline = video_newline

    def tower_size(self) -> tuple[int, int]:
        size = self.model.config.vision_config.image_size
        return (size, size)

    def patch_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        patch = self.model.config.vision_config.patch_size
        return (size[0] // patch, size[1] // patch)

    def output_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = self.patch_grid(size)
        return (math.ceil(h / 2), math.ceil(w / 2))

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
            feats.append(inner.apply_pooling(inner.multi_modal_projector(hidden)))
        return VisualFeatures(torch.cat(feats), self.grid, None)

    def visual_layout(self, reduction) -> tuple[str, list[Tensor]]:
        tokens = reduction.tokens
        if self.video_newline:
            newline = self.model.model.image_newline.to(device=tokens.device, dtype=tokens.dtype)
            tokens = torch.cat([tokens, newline[None]])
        return self.marker_token, [tokens]

    def block_offsets(self, reduction) -> list[tuple[Tensor, int]]:
        """One block: a token at (frame f, cell c) sits at f*N + c of the unreduced video, the
        newline after all T*N of them."""
        frames, cells, t = input_cells(reduction, self.grid)
        n = self.grid[0] * self.grid[1]
        offsets = frames * n + cells
        if self.video_newline:
            return [(torch.cat([offsets, torch.tensor([t * n])]), t * n + 1)]
        return [(offsets, t * n)]

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "video_newline": self.video_newline, "pooling": "bilinear_2x"}
