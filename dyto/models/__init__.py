"""The model side: the generic video-QA LightningModule over a backbone registry.

``VideoQA`` (``videoqa``) runs frames -> ``backbone.encode`` -> reducer -> ``backbone.build_input``
-> greedy ``backbone.generate``; ``backbone`` holds the interface and the registry; one module per
family (``llava_next``: LLaVA-NeXT and the compatibility class ``DyToVideoQA``;
``llava_onevision``; ``internvl``; ``chat_backbone`` their shared chat-template base); ``prompts`` the reference templates and the chat-template
layout; ``inputs`` the chunked tokenisation, splicing and left padding; ``loading`` checkpoint
loading (dtype, attention, dynamic RoPE); ``batching`` and ``generation_loop`` how answers are
batched and decoded; ``encode_ahead`` the next batch's encoding on a side CUDA stream; ``tiny``,
``tiny_families`` and ``tiny_qwen2_5_vl`` the random-weight models.
"""

from dyto.models.backbone import (
    BACKBONES,
    Backbone,
    LLMInput,
    Prompt,
    VisualFeatures,
    build_backbone,
    list_backbones,
    register_backbone,
)
from dyto.models.internvl import InternVL
from dyto.models.inputs import left_pad, splice, tokenize_prompt
from dyto.models.llava_next import CLIP_MEAN, CLIP_STD, DyToVideoQA, LlavaNext
from dyto.models.llava_onevision import LlavaOnevision
from dyto.models.loading import load_llava_next, resolve_attn_implementation, resolve_dtype
from dyto.models.prompts import ANSWER_PREFIX, TEMPLATES, default_conv_mode, model_family, render_prompt
from dyto.models.rope import apply_rope_scaling
from dyto.models.tiny import TINY_MODEL_NAME, build_tiny_llava_next, build_tiny_tokenizer, save_tiny
from dyto.models.videoqa import VideoQA

__all__ = [
    "VideoQA", "DyToVideoQA", "Backbone", "VisualFeatures", "LLMInput", "Prompt", "BACKBONES",
    "register_backbone", "build_backbone", "list_backbones", "LlavaNext", "LlavaOnevision", "InternVL",
    "CLIP_MEAN", "CLIP_STD", "render_prompt", "default_conv_mode", "model_family",
    "TEMPLATES", "ANSWER_PREFIX", "tokenize_prompt", "splice", "left_pad", "load_llava_next",
    "resolve_dtype", "resolve_attn_implementation", "apply_rope_scaling", "build_tiny_llava_next",
    "build_tiny_tokenizer", "save_tiny", "TINY_MODEL_NAME",
]
