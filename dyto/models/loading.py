"""Loading LLaVA-NeXT checkpoints (or the tiny random-weight one) with the reference's settings."""

from __future__ import annotations

import json
import os

import torch
from transformers import AutoConfig, AutoTokenizer, LlavaNextForConditionalGeneration
from transformers.utils import cached_file, is_flash_attn_2_available

from dyto.errors import ConfigError
from dyto.models.rope import apply_rope_scaling
from dyto.models.tiny import RANDOM_WEIGHTS_FLAG, TINY_MODEL_NAME, build_tiny_llava_next
from dyto.models.tiny_trained import TRAINED_DIR, TRAINED_NAME, trained_label

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def resolve_dtype(dtype: str, cuda_auto: torch.dtype = torch.float16) -> torch.dtype:
    """"auto" is ``cuda_auto`` when CUDA is available (fp16: the reference's precision; the Qwen
    families pass bfloat16, their checkpoints' dtype) and fp32 on CPU."""
    if dtype == "auto":
        return cuda_auto if torch.cuda.is_available() else torch.float32
    if dtype not in DTYPES:
        raise ConfigError("dtype", dtype, "'auto' or one of " + ", ".join(sorted(DTYPES)))
    return DTYPES[dtype]


def resolve_attn_implementation(attn_implementation: str) -> str:
    """"auto" is flash_attention_2 only with CUDA and the flash-attn package, else sdpa.

    Flash attention is never requested without CUDA: it has no CPU kernel, and transformers
    would fail at load time.
    """
    cuda = torch.cuda.is_available()
    if attn_implementation == "auto":
        return "flash_attention_2" if cuda and is_flash_attn_2_available() else "sdpa"
    if attn_implementation == "flash_attention_2" and not cuda:
        raise ConfigError("attn_implementation", attn_implementation, "'sdpa' or 'auto' without CUDA",
                          "flash_attention_2 needs CUDA: it has no CPU kernel")
    return attn_implementation


def load_device_map() -> dict[str, torch.device] | None:
    """Where a checkpoint's weights are loaded: straight onto this process's GPU when there is one.

    Under DDP every rank builds its own model; staging the weights in host memory first would
    need ranks x model size of RAM (8 x 69 GB for the 34B model in fp16). LOCAL_RANK is set by
    Lightning's launcher and torchrun; Lightning then moves the module to the rank's device, a
    no-op when it is already there. Without CUDA the weights load on the CPU as usual.
    """
    if not torch.cuda.is_available():
        return None
    return {"": torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())}


def load_llava_next(
    name: str,
    dtype: torch.dtype,
    attn_implementation: str,
    rope_scaling_factor: float | None,
    seed: int = 0,
) -> tuple[LlavaNextForConditionalGeneration, object, str]:
    """(model in eval mode, tokenizer, model name for prediction records).

    ``name="tiny"`` builds the tiny RANDOM-WEIGHT model in memory from ``seed``;
    ``name="tiny-trained"`` reads the shipped tiny TRAINED model (:mod:`dyto.models.tiny_trained`)
    with ``from_pretrained``; anything else is a hub id or local directory read the same way. A checkpoint written by
    :func:`dyto.models.tiny.save_tiny` carries a flag in its config, and its record name says
    "(random weights)" as well.
    """
    if name == "tiny":
        model, tokenizer = build_tiny_llava_next(seed=seed, rope_scaling_factor=rope_scaling_factor)
        model.set_attn_implementation(attn_implementation)
        return model.to(dtype).eval(), tokenizer, TINY_MODEL_NAME
    def dynamic_rope(config) -> None:
        if rope_scaling_factor is not None:
            apply_rope_scaling(config.text_config, rope_scaling_factor)

    if name == TRAINED_NAME:
        label = trained_label()
        model, tokenizer, _ = load_checkpoint(LlavaNextForConditionalGeneration, str(TRAINED_DIR), dtype,
                                              attn_implementation, dynamic_rope)
        return model, tokenizer, label
    return load_checkpoint(LlavaNextForConditionalGeneration, name, dtype, attn_implementation, dynamic_rope)


def load_checkpoint(model_class, name: str, dtype: torch.dtype, attn_implementation: str, configure=None):
    """(model in eval mode, tokenizer, record name) for any ``*ForConditionalGeneration`` checkpoint;
    ``configure(config)`` may edit the checkpoint's config before the weights load."""
    config = AutoConfig.from_pretrained(name)
    if configure is not None:
        configure(config)
    model = model_class.from_pretrained(
        name, config=config, dtype=dtype, attn_implementation=attn_implementation, device_map=load_device_map()
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(name)
    label = f"{name} (random weights)" if getattr(config, RANDOM_WEIGHTS_FLAG, False) else name
    return model, tokenizer, label


def load_family(model_class, tiny_builder, tiny_name: str, checkpoint: str, dtype: torch.dtype,
                attn_implementation: str, seed: int = 0):
    """(model, tokenizer, record name, what the checkpoint's processor states) of a backbone family:
    ``checkpoint="tiny"`` builds its in-memory random-weight model with ``tiny_builder(seed=seed)``
    (no processor: ``{}``); anything else goes through :func:`load_checkpoint` and
    :func:`checkpoint_preprocessing` (mean/std; a Qwen "size" is a pixel budget and goes unused)."""
    if checkpoint == "tiny":
        model, tokenizer = tiny_builder(seed=seed)
        model.set_attn_implementation(attn_implementation)
        return model.to(dtype), tokenizer, tiny_name, {}
    model, tokenizer, name = load_checkpoint(model_class, checkpoint, dtype, attn_implementation)
    return model, tokenizer, name, checkpoint_preprocessing(checkpoint)


def _checkpoint_file(name: str, filename: str) -> str | None:
    try:
        return cached_file(name, filename, _raise_exceptions_for_missing_entries=False)
    except OSError:
        return None


def checkpoint_preprocessing(name: str) -> dict:
    """``image_mean`` / ``image_std`` / ``size`` the checkpoint's processor config states ({} if none).

    The video processor's config wins over the image processor's where both exist; a size is
    returned as (height, width) when it is given as such or as ``shortest_edge``.
    """
    found: dict = {}
    for filename in ("preprocessor_config.json", "video_preprocessor_config.json"):
        path = _checkpoint_file(name, filename)
        if path is None:
            continue
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        for key in ("image_mean", "image_std"):
            if raw.get(key) is not None:
                found[key] = tuple(float(v) for v in raw[key])
        size = raw.get("size")
        if isinstance(size, dict) and "height" in size and "width" in size:
            found["size"] = (int(size["height"]), int(size["width"]))
        elif isinstance(size, dict) and "shortest_edge" in size:
            found["size"] = (int(size["shortest_edge"]),) * 2
    return found


def checkpoint_chat_template(name: str, tokenizer) -> str | None:
    """The chat template the checkpoint ships: the tokenizer's, else the processor's file."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    path = _checkpoint_file(name, "chat_template.jinja")
    if path is not None:
        with open(path, encoding="utf-8") as f:
            return f.read()
    path = _checkpoint_file(name, "chat_template.json")
    if path is not None:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("chat_template")
    return None
