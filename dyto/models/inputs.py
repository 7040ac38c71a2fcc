"""Building the language model's input: prompt tokenisation, visual-token splicing, left padding.

The reference (LLaVA's ``tokenizer_image_token`` + ``prepare_inputs_labels_for_multimodal``)
never tokenises ``<image>``: it splits the prompt there, tokenises each chunk on its own and
puts the L visual vectors between the chunk embeddings. Positions are plain 0..S-1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dyto.models.prompts import IMAGE_PLACEHOLDER

TOKENIZATIONS = ("reference", "whole")


def tokenize_prompt(tokenizer, prompt: str, mode: str = "reference") -> tuple[list[int], list[int]]:
    """(ids before the visual tokens, ids after them) for a prompt with one ``<image>``.

    ``mode="reference"`` (default) is ``tokenizer_image_token``: each chunk between
    placeholders is tokenised by its own call with special tokens, so each starts with BOS and,
    for SentencePiece-style tokenizers, with the dummy-prefix piece "▁" (the slow Llama/Yi
    tokenizers the reference loads with ``use_fast=False`` do this on every call; the
    transformers 5.x fast ``LlamaTokenizer`` does the same through its ``Metaspace``
    pre-tokenizer when ``add_prefix_space=True``, its default: ``prepend_scheme`` is "first"
    with ``legacy=False`` and "always" with ``legacy=True``, and both prepend "▁" at the start of
    each call; they differ only after special tokens inside a chunk). The tokenizer is used as
    the checkpoint ships it; this equivalence could not be checked against the real llava-hf
    tokenizers offline. If the first chunk starts with BOS, that BOS is kept and the first
    token (the BOS) of every later chunk is dropped. The second chunk, which starts with "\\n",
    therefore does not tokenise as it would inside one long string; that is the reference's
    behaviour and it is kept.

    ``mode="whole"`` tokenises the prompt in one call, as the llava-hf processor does with its
    added ``<image>`` token, and splits at that token id. An explicit alternative, not the
    reference.

    The placeholder id is never returned, so it can never reach the embedding layer.
    """
    if prompt.count(IMAGE_PLACEHOLDER) != 1:
        raise ValueError(f"prompt must contain exactly one {IMAGE_PLACEHOLDER}, got {prompt.count(IMAGE_PLACEHOLDER)}")
    if mode == "reference":
        before, after = (tokenizer(chunk, add_special_tokens=True).input_ids for chunk in prompt.split(IMAGE_PLACEHOLDER))
        offset = 1 if before and before[0] == tokenizer.bos_token_id else 0
        return list(before), list(after[offset:])
    if mode == "whole":
        ids = tokenizer(prompt, add_special_tokens=True).input_ids
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
        positions = [i for i, t in enumerate(ids) if t == image_id]
        if len(positions) != 1:
            raise ValueError(f"tokenizer does not keep {IMAGE_PLACEHOLDER} as one token; use tokenization='reference'")
        return ids[: positions[0]], ids[positions[0] + 1 :]
    raise ValueError(f"unknown tokenization {mode!r}; expected one of {TOKENIZATIONS}")


def splice(embed: torch.nn.Embedding, before: list[int], visual: Tensor, after: list[int]) -> Tensor:
    """``[len(before) + L + len(after), D]``: text embeddings with the L visual vectors between."""
    device = embed.weight.device

    def text(ids: list[int]) -> Tensor:
        return embed(torch.tensor(ids, dtype=torch.long, device=device))

    return torch.cat([text(before), visual.to(device=device, dtype=embed.weight.dtype), text(after)], dim=0)


def left_pad(sequences: list[Tensor], pad: Tensor) -> tuple[Tensor, Tensor]:
    """Stack ``[S_i, D]`` sequences into ``([B, S, D], attention mask [B, S])``, padded on the left.

    Left padding keeps every sequence's last prompt token at the same column, which is where
    generation continues; padded positions get the ``pad`` embedding ``[D]`` and mask 0, so a
    batched run matches batch size 1 (positions come from the mask's cumulative sum).
    """
    length = max(s.shape[0] for s in sequences)
    embeds = pad.expand(len(sequences), length, pad.shape[-1]).clone()
    mask = torch.zeros(len(sequences), length, dtype=torch.long, device=pad.device)
    for i, s in enumerate(sequences):
        embeds[i, length - s.shape[0] :] = s
        mask[i, length - s.shape[0] :] = 1
    return embeds, mask
