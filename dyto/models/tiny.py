"""A tiny LLaVA-NeXT with RANDOM WEIGHTS, for tests and CPU benchmarks only.

Nothing here has been trained: the model's answers are noise. It exists so that the real
transformers classes (``LlavaNextForConditionalGeneration``, CLIP vision tower, Llama decoder,
``PreTrainedTokenizerFast``) and the real ``save_pretrained`` / ``from_pretrained`` paths run
offline, in seconds, on a CPU.

Shapes at the defaults: frames ``[T, 3, 56, 56]`` -> CLIP (hidden 32, 2 layers, patch 14) ->
4x4 = 16 patch tokens + CLS per frame -> projector -> ``[T, 16, 64]`` in the Llama (hidden 64,
2 layers) embedding space. 64 is divisible by 16, which DyTo's merge metric needs.
"""

from __future__ import annotations

import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from dyto.models.prompts import TEMPLATES
from dyto.models.rope import apply_rope_scaling

TINY_MODEL_NAME = "tiny-random-llava-next (random weights)"
# Config attribute that marks a saved checkpoint as random weights, so it is labelled after reload.
RANDOM_WEIGHTS_FLAG = "dyto_random_weights"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<image>"]

# Fixed training text: the prompt templates plus plain English, so prompts tokenise into a
# few dozen multi-byte merges. Byte-level BPE, so any Unicode still round-trips.
_CORPUS = list(TEMPLATES.values()) + [
    "What is the man doing in the video? He is riding a bike along the road.",
    "The woman cooks food in the kitchen while a dog plays with a ball outside.",
    "Why did the boy run? Because the rain started and he wanted to stay dry.",
    "(A) a cat\n(B) a dog\n(C) a bird\n(D) a fish\n(E) a horse\n",
    "People walk, talk, sing, dance, jump, swim, drive, eat and watch the sky.",
    "0 1 2 3 4 5 6 7 8 9 first second third before after during then next finally",
]


def seeded_model(model_class, config, seed: int, eos_token_id=None, pad_token_id=None):
    """``model_class(config)`` with random weights drawn from ``seed`` (the global RNG left as it was),
    in eval mode, its config flagged as random weights (``RANDOM_WEIGHTS_FLAG``); ``eos_token_id`` /
    ``pad_token_id``, when given, go into its generation config. Every tiny family is built this way."""
    setattr(config, RANDOM_WEIGHTS_FLAG, True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    if eos_token_id is not None:
        model.generation_config.eos_token_id = eos_token_id
    if pad_token_id is not None:
        model.generation_config.pad_token_id = pad_token_id
    return model.eval()


def random_weight_model(model_class, config, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32):
    """``model_class(config)`` in eval mode with random weights, built directly on ``device`` in
    ``dtype`` (no fp32 copy first: a 7B model would not fit twice), with sdpa attention."""
    config._attn_implementation = "sdpa"
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            return model_class(config).eval()
        finally:
            torch.set_default_dtype(previous)


def build_tiny_tokenizer(vocab_size: int = 400, corpus: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in memory on a fixed corpus (deterministic).

    Like the Llama tokenizers, every ``encode`` starts with BOS (a template post-processor) and
    nothing is added at the end. ``corpus`` replaces the fixed training text. ``<image>`` is a special token so that a prompt tokenised whole
    keeps it as one id, as the llava-hf tokenizers do.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS if corpus is None else corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens=["<image>"],
        padding_side="left",
    )


def build_tiny_llava_next(
    seed: int = 0,
    image_size: int = 56,
    patch_size: int = 14,
    vision_hidden_size: int = 32,
    text_hidden_size: int = 64,
    num_layers: int = 2,
    max_position_embeddings: int = 4096,
    rope_scaling_factor: float | None = None,
    initializer_range: float = 0.2,
    vision_layers: int | None = None,
    text_heads: int = 4,
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> tuple[LlavaNextForConditionalGeneration, PreTrainedTokenizerFast]:
    """(model, tokenizer): a RANDOM-WEIGHT LlavaNextForConditionalGeneration, in eval mode, fp32.

    The same ``seed`` gives the same weights and the same tokenizer, without touching the global
    RNG. ``initializer_range`` is larger than HF's 0.02 so that greedy decoding of random weights
    rarely meets near-ties between logits and produces varied tokens. ``rope_scaling_factor``
    turns on dynamic NTK RoPE as :func:`dyto.models.rope.apply_rope_scaling` does for
    real checkpoints. ``vision_layers`` (default: ``num_layers``), ``text_heads`` and ``tokenizer`` (default:
    :func:`build_tiny_tokenizer`) let ``scripts/train_tiny.py`` build its own sizes.
    """
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden_size,
        intermediate_size=2 * vision_hidden_size,
        num_hidden_layers=num_layers if vision_layers is None else vision_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden_size,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden_size,
        intermediate_size=2 * text_hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=text_heads,
        num_key_value_heads=text_heads // 2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=initializer_range,
    )
    grid = image_size // patch_size
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=[[image_size, image_size]],
        image_seq_length=grid * grid,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        initializer_range=initializer_range,
    )
    if rope_scaling_factor is not None:
        apply_rope_scaling(config.text_config, rope_scaling_factor)
    return seeded_model(LlavaNextForConditionalGeneration, config, seed), tokenizer


def save_tiny(directory: str | os.PathLike, seed: int = 0, **kwargs) -> str:
    """Write the tiny RANDOM-WEIGHT model and its tokenizer with ``save_pretrained``.

    The directory then loads through the same ``from_pretrained`` path as a hub checkpoint, so
    tests exercise the real loading code. Returns the directory as a string.
    """
    model, tokenizer = build_tiny_llava_next(seed=seed, **kwargs)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)
