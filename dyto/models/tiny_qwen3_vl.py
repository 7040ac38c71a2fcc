"""A tiny Qwen3-VL with RANDOM WEIGHTS and an in-memory ChatML tokenizer, for tests and the demo;
and the real 8B's config with random weights, for GPU benchmarks.

Nothing here has been trained: answers are noise. The real transformers classes run
(``Qwen3VLForConditionalGeneration``: the vision tower with learned, bilinearly resampled
position embeddings and 2-D rotary, the 2x2 patch merger, the DeepStack mergers of vision
layers 0 and 1, the Qwen3 decoder with interleaved M-RoPE) offline, in seconds, on a CPU.

Shapes at the defaults: frames ``[T, 3, 96, 96]`` -> pairs of frames (temporal patch 2) -> 6x6
patches of 16 px per pair -> vision tower (hidden 32, 3 blocks; DeepStack taps after blocks 0
and 1) -> 2x2 merger -> ``[T/2, 9, 64]`` in the text model's (hidden 64, 2 layers) space, plus
two DeepStack tensors ``[T/2, 9, 64]`` added to the hidden states after LLM layers 0 and 1.

The tokenizer's chat template mirrors the one Qwen3-VL checkpoints ship for these messages: no
default system turn, ``<|vision_start|><|video_pad|><|vision_end|>`` for a video item,
``<|im_end|>`` after each turn and ``<|im_start|>assistant\\n`` as the generation prompt.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast, Qwen3VLConfig, Qwen3VLForConditionalGeneration

from dyto.models.tiny import random_weight_model, seeded_model
from dyto.models.tiny_families import CHATML_SPECIALS, build_chat_tokenizer

__all__ = ["TINY_QWEN3_NAME", "QWEN3_CHAT_TEMPLATE", "build_tiny_qwen3_tokenizer", "build_tiny_qwen3_vl",
           "QWEN3_VL_8B", "full_size_qwen3_vl"]

TINY_QWEN3_NAME = "tiny-random-qwen3-vl (random weights)"
_VISION_SPECIALS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

# The structure of Qwen3-VL-*-Instruct's chat_template.jinja for system / user / assistant turns
# with string or typed content (its tool-calling branches are left out): no default system turn.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for content in message['content'] -%}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif content['type'] == 'video' or 'video' in content -%}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in content -%}{{ content['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Fixed training text: the prompt layout, the timestamps Qwen3-VL writes, plain English.
_CORPUS = [
    "<|im_start|>system\nAnswer the question.<|im_end|>\n<|im_start|>user\n",
    "<0.5 seconds><1.0 seconds><2.5 seconds><3.0 seconds><10.5 seconds><24.0 seconds>",
    "The input consists of a sequence of key frames from a video. Answer concisely with overall "
    "content and context of the video, highlighting any significant events, characters, or objects "
    "that appear throughout the video. Question: what happens? Answer: In the video,",
    "You are a helpful expert in video analysis. Select the best option to answer the question. "
    "Options:\n(A) a cat\n(B) a dog\n(C) a bird\n(D) a fish\nOnly give the best option. Best option:(",
    "What is the man doing in the video? He is riding a bike along the road past the cars.",
    "0 1 2 3 4 5 6 7 8 9 first second third before after during then next finally",
]


def build_tiny_qwen3_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in memory (deterministic), Qwen-like: no BOS, nothing
    appended, ``<|endoftext|>`` the pad, ``<|im_end|>`` the end of a turn, the vision markers
    single special tokens (:func:`~dyto.models.tiny_families.build_chat_tokenizer`)."""
    return build_chat_tokenizer(_VISION_SPECIALS, QWEN3_CHAT_TEMPLATE, vocab_size, corpus=_CORPUS,
                                listed_specials=CHATML_SPECIALS[1:] + _VISION_SPECIALS)


def _config(text: dict, vision: dict, ids: dict) -> Qwen3VLConfig:
    return Qwen3VLConfig(text_config=text, vision_config=vision, **ids)


def build_tiny_qwen3_vl(seed: int = 0, text_hidden_size: int = 64, vision_hidden_size: int = 32,
                        num_layers: int = 2, initializer_range: float = 0.2
                        ) -> tuple[Qwen3VLForConditionalGeneration, PreTrainedTokenizerFast]:
    """(model, tokenizer): a RANDOM-WEIGHT Qwen3VLForConditionalGeneration, eval mode, fp32.

    The same ``seed`` gives the same weights without touching the global RNG. Vision: patch 16,
    temporal patch 2, merge 2, ``num_layers + 1`` blocks with DeepStack taps after the first
    ``num_layers`` (the 8B: 27 blocks, taps 8, 16, 24), a 8x8 learned position grid (the 8B:
    48x48). Text: 4 heads of 16, interleaved M-RoPE sections [4, 2, 2] over the 8 rotary
    frequencies (the 8B: [24, 20, 20] over 64). ``initializer_range`` is larger than HF's 0.02 so
    that greedy decoding of random weights rarely meets near-ties between logits.
    """
    tokenizer = build_tiny_qwen3_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    config = _config(
        text=dict(vocab_size=len(tokenizer), hidden_size=text_hidden_size, intermediate_size=2 * text_hidden_size,
                  num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=4096, initializer_range=initializer_range,
                  rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [4, 2, 2],
                                   "mrope_interleaved": True},
                  bos_token_id=None, eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>")),
        vision=dict(depth=num_layers + 1, hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
                    num_heads=2, patch_size=16, temporal_patch_size=2, spatial_merge_size=2,
                    out_hidden_size=text_hidden_size, num_position_embeddings=64,
                    deepstack_visual_indexes=list(range(num_layers)), initializer_range=initializer_range),
        ids=dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                 vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>")),
    )
    model = seeded_model(Qwen3VLForConditionalGeneration, config, seed, [ids("<|im_end|>"), ids("<|endoftext|>")], ids("<|endoftext|>"))
    return model, tokenizer


# Qwen/Qwen3-VL-8B-Instruct's config.json (text + vision), for full-size random-weight benchmarks.
QWEN3_VL_8B = dict(
    text=dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
              num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
              rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151645,
              rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                               "mrope_interleaved": True}),
    vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16,
                temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=4096, num_position_embeddings=2304,
                deepstack_visual_indexes=[8, 16, 24]),
    ids=dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653),
)


def full_size_qwen3_vl(device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
                       num_layers: int | None = None) -> tuple[Qwen3VLForConditionalGeneration,
                                                               PreTrainedTokenizerFast, str]:
    """(model, tokenizer, name): Qwen3-VL-8B at its real config with RANDOM WEIGHTS, built on ``device``.

    Nothing is downloaded. ``num_layers`` keeps the real widths with that many text layers and
    vision blocks (the DeepStack taps that still exist kept, else the first blocks). The tiny
    tokenizer's ids (< 400) are valid embedding rows; the model's own special-token ids are never
    used (the backbone embeds the text itself).
    """
    text, vision = dict(QWEN3_VL_8B["text"]), dict(QWEN3_VL_8B["vision"])
    if num_layers:
        text["num_hidden_layers"], vision["depth"] = num_layers, num_layers
        taps = [i for i in vision["deepstack_visual_indexes"] if i < num_layers - 1]
        vision["deepstack_visual_indexes"] = taps or list(range(min(3, num_layers - 1) or 1))
    model = random_weight_model(Qwen3VLForConditionalGeneration, _config(text, vision, QWEN3_VL_8B["ids"]),
                                device, dtype)
    tokenizer = build_tiny_qwen3_tokenizer()
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, "Qwen/Qwen3-VL-8B-Instruct config (random weights)"
