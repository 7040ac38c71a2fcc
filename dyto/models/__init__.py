"""The model side: LLaVA-NeXT video QA as a LightningModule, the reference prompts, and a tiny
RANDOM-WEIGHT LLaVA-NeXT for tests and CPU benchmarks.

``DyToVideoQA`` (``llava_next``) runs frames -> CLIP -> projector -> reducer -> prompt splice ->
greedy generation; ``prompts`` holds the four reference templates; ``inputs`` the chunked
tokenisation, splicing and left padding; ``loading`` the checkpoint loading (dtype, attention,
dynamic RoPE); ``tiny`` the random-weight model.
"""

from dyto.models.inputs import left_pad, splice, tokenize_prompt
from dyto.models.llava_next import CLIP_MEAN, CLIP_STD, DyToVideoQA
from dyto.models.loading import load_llava_next, resolve_attn_implementation, resolve_dtype
from dyto.models.prompts import ANSWER_PREFIX, TEMPLATES, default_conv_mode, model_family, render_prompt
from dyto.models.rope import apply_rope_scaling
from dyto.models.tiny import TINY_MODEL_NAME, build_tiny_llava_next, build_tiny_tokenizer, save_tiny

__all__ = [
    "DyToVideoQA", "CLIP_MEAN", "CLIP_STD", "render_prompt", "default_conv_mode", "model_family",
    "TEMPLATES", "ANSWER_PREFIX", "tokenize_prompt", "splice", "left_pad", "load_llava_next",
    "resolve_dtype", "resolve_attn_implementation", "apply_rope_scaling", "build_tiny_llava_next",
    "build_tiny_tokenizer", "save_tiny", "TINY_MODEL_NAME",
]
