"""A tiny Qwen2.5-VL with RANDOM WEIGHTS and an in-memory ChatML tokenizer, for tests only.

Nothing here has been trained: answers are noise. It exists so that the real transformers
classes (``Qwen2_5_VLForConditionalGeneration``: the windowed-attention vision tower, the 2x2
patch merger, the M-RoPE Qwen2 decoder) and the real chat-template path run offline, in
seconds, on a CPU.

Shapes at the defaults: frames ``[T, 3, 84, 84]`` -> pairs of frames (temporal patch 2) ->
6x6 patches of 14 px per pair -> vision tower (hidden 32, 2 blocks: block 0 windowed with
56 px windows = 2x2 merged cells, so the 3x3 merged grid is padded into 4 windows; block 1
full attention) -> 2x2 merger -> ``[T/2, 9, 64]`` in the text model's (hidden 64, 2 layers)
embedding space. 64 is divisible by 16, which DyTo's merge metric needs.

The tokenizer's chat template mirrors the one Qwen2.5-VL checkpoints ship: a default system
turn, ``<|vision_start|><|video_pad|><|vision_end|>`` for a video item, ``<|im_end|>`` after each
turn and ``<|im_start|>assistant\\n`` as the generation prompt.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from dyto.models.tiny import random_weight_model, seeded_model
from dyto.models.tiny_families import CHATML_SPECIALS, build_chat_tokenizer

__all__ = ["TINY_QWEN_NAME", "QWEN_SPECIAL_TOKENS", "QWEN_CHAT_TEMPLATE", "build_tiny_qwen_tokenizer",
           "build_tiny_qwen2_5_vl", "QWEN2_5_VL_7B", "full_size_qwen2_5_vl"]

TINY_QWEN_NAME = "tiny-random-qwen2.5-vl (random weights)"
QWEN_SPECIAL_TOKENS = CHATML_SPECIALS + ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

# The same structure as the Qwen2.5-VL checkpoints' template (system turn added when the first
# message is not one; string or list content; image / video items become their placeholders).
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Fixed training text: the prompt layout plus plain English, so prompts tokenise into merges.
_CORPUS = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
    "The input consists of a sequence of key frames from a video. Answer concisely with overall "
    "content and context of the video, highlighting any significant events, characters, or objects "
    "that appear throughout the video. Question: what happens? Answer: In the video,",
    "You are a helpful expert in video analysis. Select the best option to answer the question. "
    "Options:\n(A) a cat\n(B) a dog\n(C) a bird\n(D) a fish\nOnly give the best option. Best option:(",
    "What is the man doing in the video? He is riding a bike along the road past the cars.",
    "Why did the rabbit run? Because the rain started and it wanted to stay dry in the forest.",
    "0 1 2 3 4 5 6 7 8 9 first second third before after during then next finally",
]


def build_tiny_qwen_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in memory (deterministic), Qwen2-like: the tiny
    families' :func:`~dyto.models.tiny_families.build_chat_tokenizer` with the vision markers,
    this template and this corpus.

    Like Qwen2's tokenizer: no BOS and nothing appended on encode, ``<|endoftext|>`` is the pad
    token, ``<|im_end|>`` the end of a turn, and the vision markers are single special tokens.
    """
    return build_chat_tokenizer(QWEN_SPECIAL_TOKENS[len(CHATML_SPECIALS):], QWEN_CHAT_TEMPLATE, vocab_size,
                                corpus=_CORPUS, listed_specials=QWEN_SPECIAL_TOKENS[1:])


def build_tiny_qwen2_5_vl(
    seed: int = 0,
    text_hidden_size: int = 64,
    vision_hidden_size: int = 32,
    num_layers: int = 2,
    tokens_per_second: int = 2,
    window_size: int = 56,
    initializer_range: float = 0.2,
    text_heads: int = 4,
) -> tuple[Qwen2_5_VLForConditionalGeneration, PreTrainedTokenizerFast]:
    """(model, tokenizer): a RANDOM-WEIGHT Qwen2_5_VLForConditionalGeneration, eval mode, fp32.

    The same ``seed`` gives the same weights without touching the global RNG. Vision: patch 14,
    temporal patch 2, merge 2, the last block full attention and the others windowed, as in the
    7B's layout (there every 8th block). Text: 4 heads of 16, M-RoPE sections [2, 3, 3] over the
    8 rotary frequencies (the 7B: [16, 24, 24] over 64). ``tokens_per_second`` 2 is the 7B's.
    ``initializer_range`` is larger than HF's 0.02 so that greedy decoding of random weights
    rarely meets near-ties between logits. ``text_heads`` (KV heads: half of them) keeps heads of
    16 in a wider ``text_hidden_size`` (benchmarks/bench_inner.py).
    """
    tokenizer = build_tiny_qwen_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        vision_config=dict(
            depth=num_layers, hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
            num_heads=2, patch_size=14, temporal_patch_size=2, spatial_merge_size=2,
            tokens_per_second=tokens_per_second, window_size=window_size, out_hidden_size=text_hidden_size,
            fullatt_block_indexes=[num_layers - 1], initializer_range=initializer_range,
        ),
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=text_hidden_size, intermediate_size=2 * text_hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=text_heads, num_key_value_heads=text_heads // 2,
            max_position_embeddings=4096, initializer_range=initializer_range,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=None, eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
        ),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    model = seeded_model(Qwen2_5_VLForConditionalGeneration, config, seed, [ids("<|im_end|>"), ids("<|endoftext|>")], ids("<|endoftext|>"))
    return model, tokenizer


# Qwen/Qwen2.5-VL-7B-Instruct's config.json (text + vision), for full-size random-weight benchmarks.
QWEN2_5_VL_7B = dict(
    text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
              num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6,
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
              bos_token_id=151643, eos_token_id=151645),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, temporal_patch_size=2,
                spatial_merge_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2,
                out_hidden_size=3584),
    ids=dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653),
)


def full_size_qwen2_5_vl(device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
                         num_layers: int | None = None) -> tuple[Qwen2_5_VLForConditionalGeneration,
                                                                 PreTrainedTokenizerFast, str]:
    """(model, tokenizer, name): Qwen2.5-VL-7B at its real config with RANDOM WEIGHTS, built on ``device``.

    Nothing is downloaded. ``num_layers`` keeps the real widths with that many text layers (and vision
    blocks, the last one full attention). The tiny tokenizer's ids (< 400) are valid embedding rows;
    the model's own special-token ids are never used (the backbone embeds the text itself).
    """
    text, vision = dict(QWEN2_5_VL_7B["text"]), dict(QWEN2_5_VL_7B["vision"])
    if num_layers:
        text["num_hidden_layers"], vision["depth"] = num_layers, num_layers
        vision["fullatt_block_indexes"] = [i for i in vision["fullatt_block_indexes"] if i < num_layers] or [num_layers - 1]
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **QWEN2_5_VL_7B["ids"])
    model = random_weight_model(Qwen2_5_VLForConditionalGeneration, config, device, dtype)
    tokenizer = build_tiny_qwen_tokenizer()
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, "Qwen/Qwen2.5-VL-7B-Instruct config (random weights)"
