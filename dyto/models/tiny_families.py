"""Tiny RANDOM-WEIGHT LLaVA-OneVision and InternVL, with in-memory ChatML tokenizers (the
builder, :func:`build_chat_tokenizer`, also makes the tiny Qwen2.5-VL's).

Tests and CPU benchmarks only: nothing has been trained, answers are noise. The real
transformers classes run (``LlavaOnevisionForConditionalGeneration`` with a SigLIP tower and a
Qwen2 decoder; ``InternVLForConditionalGeneration`` with an InternViT tower and a Qwen2 decoder)
at toy sizes, offline, in seconds. The LLaVA-NeXT one is in :mod:`dyto.models.tiny`.

Shapes at the defaults:
- OneVision: ``[T,3,98,98]`` -> SigLIP (32-d, patch 14) -> 7x7 -> projector -> bilinear pool
  to ceil(7/2) = 4x4 = 16 tokens per frame, ``[T,16,64]`` (the real 384 px model: 27x27 -> 14x14).
- InternVL: ``[T,3,112,112]`` -> InternViT (32-d, patch 14) -> 8x8 (CLS dropped) -> pixel
  shuffle 0.5 -> 4x4 x 128 -> projector -> ``[T,16,64]`` (the real 448 px model: 32x32 -> 16x16).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLVisionConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)

from dyto.models.prompts import TEMPLATES
from dyto.models.tiny import seeded_model

TINY_ONEVISION_NAME = "tiny-random-llava-onevision (random weights)"
TINY_INTERNVL_NAME = "tiny-random-internvl (random weights)"
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Qwen2's ChatML as llava-onevision-qwen2 writes it (LLaVA's "qwen_1_5" conversation: a default
# system turn "You are a helpful assistant." when none is given); typed content puts the
# visual token first, followed by a newline, as the checkpoints' processors do.
_CHATML = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' and DEFAULT_SYSTEM -%}"
    "{{ '<|im_start|>system\\n' + DEFAULT_SYSTEM + '<|im_end|>\\n' }}{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'video' -%}{{ '<video>\\n' }}"
    "{%- elif part['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- else -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def chatml_template(default_system: str | None) -> str:
    """The ChatML template above with ``default_system`` (None: no system turn unless given)."""
    value = repr(default_system) if default_system else "''"
    return "{%- set DEFAULT_SYSTEM = " + value + " -%}" + _CHATML


ONEVISION_CHAT_TEMPLATE = chatml_template("You are a helpful assistant.")
INTERNVL_CHAT_TEMPLATE = chatml_template(None)

_CORPUS = list(TEMPLATES.values()) + [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
    "Frame1: Frame2: Frame3: Frame4: Frame5: Frame6: Frame7: Frame8: Frame9: Frame10:",
    "What is the man doing in the video? He is riding a bike along the road.",
    "The woman cooks food in the kitchen while a dog plays with a ball outside.",
    "(A) a cat\n(B) a dog\n(C) a bird\n(D) a fish\n(E) a horse\n",
    "People walk, talk, sing, dance, jump, swim, drive, eat and watch the sky.",
]


def build_chat_tokenizer(extra_specials: list[str], chat_template: str, vocab_size: int = 400, *,
                         corpus: list[str] | None = None, listed_specials: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer in memory with Qwen2's conventions (deterministic); every tiny
    ChatML family's (OneVision, InternVL, Qwen2.5-VL) is made here.

    No BOS, ``<|im_end|>`` ends a turn and generation (eos), ``<|endoftext|>`` pads, left padding;
    ``extra_specials`` (``<video>``, ``<img>``, ...) are single special tokens, as in the
    checkpoints' tokenizers, with ids right after ``CHATML_SPECIALS``. ``chat_template`` is stored
    on the tokenizer. ``corpus`` is the BPE training text (default: the prompt templates plus plain
    English); ``listed_specials`` the tokens it lists as ``extra_special_tokens`` (default
    ``extra_specials``; the tiny Qwen2.5-VL lists ``<|im_start|>`` and ``<|im_end|>`` too).
    Another corpus is another vocabulary, i.e. other answers from the tiny models.
    """
    specials = CHATML_SPECIALS + extra_specials
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS if corpus is None else corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens=extra_specials if listed_specials is None else listed_specials, padding_side="left")
    tokenizer.chat_template = chat_template
    return tokenizer


def _qwen2(tokenizer, hidden: int, layers: int, init: float) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, initializer_range=init,
        tie_word_embeddings=False,
    )


def build_tiny_llava_onevision(seed: int = 0, image_size: int = 98, patch_size: int = 14, vision_hidden_size: int = 32,
                               text_hidden_size: int = 64, num_layers: int = 2, initializer_range: float = 0.2):
    """(model, tokenizer): a RANDOM-WEIGHT LlavaOnevisionForConditionalGeneration, eval mode, fp32."""
    tokenizer = build_chat_tokenizer(["<image>", "<video>"], ONEVISION_CHAT_TEMPLATE)
    vision = SiglipVisionConfig(hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
                                num_hidden_layers=num_layers, num_attention_heads=2, image_size=image_size,
                                patch_size=patch_size)
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=_qwen2(tokenizer, text_hidden_size, num_layers, initializer_range),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1, vision_feature_select_strategy="full",
        image_grid_pinpoints=[[image_size, image_size]], initializer_range=initializer_range,
    )
    return seeded_model(LlavaOnevisionForConditionalGeneration, config, seed, config.text_config.eos_token_id,
                        config.text_config.pad_token_id), tokenizer


def build_tiny_internvl(seed: int = 0, image_size: int = 112, patch_size: int = 14, vision_hidden_size: int = 32,
                        text_hidden_size: int = 64, num_layers: int = 2, initializer_range: float = 0.2):
    """(model, tokenizer): a RANDOM-WEIGHT InternVLForConditionalGeneration, eval mode, fp32."""
    tokenizer = build_chat_tokenizer(["<img>", "</img>", "<IMG_CONTEXT>", "<video>"], INTERNVL_CHAT_TEMPLATE)
    vision = InternVLVisionConfig(hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
                                  num_hidden_layers=num_layers, num_attention_heads=2,
                                  image_size=[image_size, image_size], patch_size=[patch_size, patch_size],
                                  initializer_range=initializer_range)
    grid = image_size // patch_size
    config = InternVLConfig(
        vision_config=vision, text_config=_qwen2(tokenizer, text_hidden_size, num_layers, initializer_range),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=(grid // 2) ** 2,
        downsample_ratio=0.5, vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    config.initializer_range = initializer_range
    return seeded_model(InternVLForConditionalGeneration, config, seed, config.text_config.eos_token_id,
                        config.text_config.pad_token_id), tokenizer
