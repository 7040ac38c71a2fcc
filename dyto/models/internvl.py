"""InternVL as a backbone (``InternVLForConditionalGeneration``: InternViT + Qwen2/2.5, HF format).

Frames ``[T,3,448,448]`` (one 448 tile per frame, as InternVL's video path uses: no dynamic
tiling; bicubic squash, ImageNet mean/std unless the checkpoint's processor config says
otherwise) -> InternViT-300M/14 -> 32x32 patch tokens (CLS dropped) -> pixel shuffle 0.5 ->
16x16 x 4C -> MLP projector -> ``[T,256,D]`` on a 16x16 grid; that is the model's own
``get_image_features`` (checked in tests/test_backbones.py), run in chunks of frames.

In the prompt, each output block of the reducer (a kept frame, for DyTo) is written as the
processor writes a video frame, ``Frame{k}: <img>...</img>`` with k = 1, 2, ... over the blocks
in order, the frames joined by ``\\n`` (``InternVLProcessor.replace_video_token``), replacing the
chat template's ``<video>``, which the template follows with ``\\n``; ``frame_labels: false``
writes one ``<img>...</img>`` around all the visual tokens instead.

Which weights run: only checkpoints in the Hugging Face format that transformers' InternVL
classes read: the ``OpenGVLab/InternVL3-{1B,2B,8B,9B,14B,38B,78B}-hf`` repos, or an original
InternVL2.5 / 3 repo converted with ``convert_internvl_weights_to_hf.py`` from transformers'
source tree (it is not in the wheel). The paper's InternVL2-8B / 26B (``OpenGVLab/InternVL2-8B``)
ship only as ``trust_remote_code`` models in their own layout, which this backbone does not
load; to run them here they must first be converted the same way (InternVL2-8B has the
InternViT-300M + MLP-projector layout of InternVL2.5-8B with an InternLM2 LLM, which the
converter rewrites as Llama). That conversion was not tried offline, so InternVL2 results
through this backbone are unverified; InternVL3-8B-hf is the supported default.

Under ``protocol: lmms_eval`` (lmms-eval's ``internvl3.py``) a frame is up to ``min(12, 64 // 32) = 2``
tiles of the tower's size plus a thumbnail (``dynamic_preprocess``), stacked along the height:
pixels ``[T, 3, k*448, 448]`` -> ``[T, k*256, D]`` on a ``(16k, 16)`` grid (tile after tile).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import InternVLForConditionalGeneration

from dyto.datamodules.preprocess import Preprocessing
from dyto.models.backbone import Prompt, VisualFeatures, input_cells, register_backbone
from dyto.models.chat_backbone import ChatBackbone
from dyto.models.lmms_eval import LMMS_EVAL, LmmsEvalModel, internvl_conversation
from dyto.models.tiny_families import TINY_INTERNVL_NAME, build_tiny_internvl

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@register_backbone("internvl")
class InternVL(ChatBackbone):
    """InternVL (HF format) behind the backbone interface (see the module docstring).

    Args:
        checkpoint: "tiny" (in-memory RANDOM-WEIGHT model), a hub id such as
            ``OpenGVLab/InternVL3-8B-hf``, or a local dir in the HF format.
        dtype: "auto" = fp16 with CUDA, fp32 without; or float16 | bfloat16 | float32.
        attn_implementation: "sdpa" (default), "flash_attention_2", "eager", "auto".
        vision_chunk_size: frames per vision-tower forward; bounds activation memory.
        chat_template: a Jinja chat template to use instead of the checkpoint's.
        system_prompt: send the reference's system sentence (default) or leave it to the template.
        frame_labels: write each visual block as ``Frame{k}: <img>...</img>``, joined by newlines
            (default, the processor's video layout), or all tokens in one ``<img>...</img>``.
        seed: seeds the tiny model's weights.
    """

    model_class = InternVLForConditionalGeneration
    tiny_builder = staticmethod(build_tiny_internvl)
    tiny_name = TINY_INTERNVL_NAME
    default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
    template_marker = "<video>"
    frame_labels = True

    def __init__(self, checkpoint: str = "tiny", dtype: str = "auto", attn_implementation: str = "sdpa",
                 vision_chunk_size: int = 16, chat_template: str | None = None, system_prompt: bool = True,
                 frame_labels: bool = True, seed: int = 0):
        super().__init__(checkpoint, dtype, attn_implementation, vision_chunk_size, chat_template, system_prompt, seed)
        self.frame_labels = frame_labels

    @property
    def marker_token(self) -> str:
        return getattr(self.tokenizer, "context_image_token", None) or "<IMG_CONTEXT>"

    def tower_size(self) -> tuple[int, int]:
        size = self.model.config.vision_config.image_size
        return tuple(size) if isinstance(size, (list, tuple)) else (size, size)

    def output_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        patch = self.model.config.vision_config.patch_size
        patch = patch[0] if isinstance(patch, (list, tuple)) else patch
        scale = self.model.config.downsample_ratio
        return (int(size[0] // patch * scale), int(size[1] // patch * scale))

    def feature_hidden(self, pixels: Tensor) -> Tensor:
        """InternViT's output at ``vision_feature_layer`` ``[t,1+N,C]`` (-1: the tower's output, after
        its final norm, as ``get_image_features`` takes it), running only the layers up to it."""
        tower = self.model.model.vision_tower
        layers, feature_layer = tower.encoder.layer, self.model.config.vision_feature_layer
        hidden = tower.embeddings(pixels)
        for block in layers[: feature_layer % (len(layers) + 1)]:
            out = block(hidden)
            hidden = out[0] if isinstance(out, tuple) else out
        return tower.layernorm(hidden) if feature_layer == -1 else hidden

    def grid_for(self, pixels: Tensor) -> tuple[int, int]:
        """``(16k, 16)`` for frames of k tiles stacked along the height (one tile: ``grid``)."""
        return (self.grid[0] * pixels.shape[-2] // pixels.shape[-1], self.grid[1])

    @torch.no_grad()
    def encode(self, pixels: Tensor, with_cls: bool = False) -> VisualFeatures:
        """``[T,3,448,448]`` -> ``[T,256,D]``: CLS dropped, pixel shuffle, projector (per chunk);
        ``[T,3,k*448,448]`` (tiles stacked along H) -> ``[T,k*256,D]``, tile after tile."""
        if with_cls:
            raise ValueError("InternVL's CLS token has no projection into the LLM's space (the projector "
                             "reads pixel-shuffled 4C vectors); use a reducer descriptor that does not need it")
        config, inner = self.model.config, self.model.model
        if isinstance(config.vision_feature_layer, list):
            raise ValueError("a list of vision_feature_layer values is not supported")
        pixels = pixels.to(self.device, non_blocking=True)
        t, c, height, side = pixels.shape
        tiles = height // side
        pixels = pixels.reshape(t, c, tiles, side, side).transpose(1, 2).reshape(t * tiles, c, side, side)
        feats = []
        for chunk in pixels.split(self.vision_chunk_size):
            hidden = self.feature_hidden(chunk.to(dtype=self.dtype))
            if config.vision_feature_select_strategy == "default":
                hidden = hidden[:, 1:]
            t, n, c = hidden.shape
            side = int(n**0.5)
            shuffled = inner.pixel_shuffle(hidden.reshape(t, side, side, c), scale_factor=config.downsample_ratio)
            feats.append(inner.multi_modal_projector(shuffled.reshape(t, -1, shuffled.shape[-1])))
        features = torch.cat(feats)                                     # [T*k, 256, D]
        return VisualFeatures(features.reshape(-1, tiles * features.shape[1], features.shape[2]),
                              (self.grid[0] * tiles, self.grid[1]), None)

    def visual_layout(self, reduction) -> tuple[str, list[Tensor]]:
        start = getattr(self.tokenizer, "start_image_token", None) or "<img>"
        end = getattr(self.tokenizer, "end_image_token", None) or "</img>"
        marker = self.marker_token
        if not self.frame_labels:
            return f"{start}{marker}{end}", [reduction.tokens]
        blocks = list(reduction.tokens.split(list(reduction.tokens_per_frame)))
        text = "\n".join(f"Frame{k + 1}: {start}{marker}{end}" for k in range(len(blocks)))
        return text, blocks

    def lmms_eval_model(self) -> LmmsEvalModel:
        frames, size = 32, self.preprocessing.size
        tiles = Preprocessing(size, "internvl_tiles", self.preprocessing.mean, self.preprocessing.std,
                              max_tiles=max(1, min(12, 64 // frames)))  # internvl3.py: max_num, total_max_num // num_frame
        return LmmsEvalModel("internvl3", f"{LMMS_EVAL} lmms_eval/models/simple/internvl3.py 25-30, 87-215, 239-257, "
                             "450-471", frames, "internvl_segments", tiles, 1024, "internvl2_5")

    def lmms_eval_prompt(self, text: str) -> Prompt:
        # internvl3.py writes every frame as "Frame{i}: <image>\n", so the task's text follows a
        # newline; the reference layout (the HF processor's) joins frames with "\n" and has none
        before, after = internvl_conversation(text)
        return Prompt(before, "\n" + after, "lmms_eval:internvl2_5")

    def block_offsets(self, reduction) -> list[tuple[Tensor, int]]:
        """Without frame labels one block of T*N; with them one block of N per frame, which needs
        every input frame to be a block of its own (otherwise the unreduced text differs)."""
        grid = reduction.grid or self.grid
        frames, cells, t = input_cells(reduction, grid)
        n = grid[0] * grid[1]
        if not self.frame_labels:
            return [(frames * n + cells, t * n)]
        sizes = list(reduction.tokens_per_frame)
        blocks = list(zip(frames.split(sizes), cells.split(sizes)))
        if len(blocks) != t or any(bool((f != k).any()) for k, (f, _) in enumerate(blocks)):
            raise ValueError("InternVL with frame_labels keeps input positions only when every input frame "
                             f"is one block ({len(blocks)} blocks for {t} frames); use frame_labels: false or "
                             "the reducer's compact positions")
        return [(c, n) for _, c in blocks]

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "downsample_ratio": self.model.config.downsample_ratio,
                "frame_labels": self.frame_labels}
