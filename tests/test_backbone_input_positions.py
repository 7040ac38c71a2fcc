"""A reduction that keeps its input positions (FastVID's pruning inside the LLM) on the 1-D backbones.

FastVID's public code drops video tokens at the input of the first decoder layer and keeps the
position id each kept token had in the full sequence. The reference here is the model itself
on the FULL sequence (every visual token, plain positions 0..S-1) with the dropped tokens
masked out of attention: a token nobody attends to changes nothing, so greedy answers must
equal those of the pruned sequence with the kept tokens' original ids. The full sequence is the
identity-reducer input, which tests/test_backbones.py checks against each model's own path.
"""

from __future__ import annotations

import pytest
import torch

from dyto.models.backbone import build_backbone
from dyto.reduction import ConcatReducer, FastVIDReducer, Reduction
from dyto.reduction.base import cell_positions

T = 4
FAMILIES = ["llava_next", "llava_onevision", "internvl", "llava_video_grid"]
# LLaVA-Video's layout: a newline after every row of every frame (mm_newline_position: grid)
OPTIONS = {"llava_video_grid": ("llava_onevision", {"mm_newline_position": "grid"})}


@pytest.fixture(scope="module")
def backbones(one_thread):
    built = {}
    for name in FAMILIES:
        family, options = OPTIONS.get(name, (name, {}))
        built[name] = build_backbone(family, **options)
    return built


def greedy(b, new_tokens=8):
    config = b.generation_defaults()
    config.update(do_sample=False, max_new_tokens=new_tokens)
    return config


def pruned(features, grid, keep):
    """Every frame keeps the cells where ``keep(frame, cell)``; input positions kept."""
    t, n, _ = features.shape
    cells = [torch.tensor([c for c in range(n) if keep(f, c)], dtype=torch.long) for f in range(t)]
    frames = torch.cat([torch.full((len(c),), f) for f, c in enumerate(cells)])
    flat = torch.cat(cells)
    return Reduction(features[frames, flat], list(range(t)), [len(c) for c in cells], {},
                     cell_positions(frames, flat, grid[1]), input_frames=t, keep_input_positions=True)


@pytest.mark.parametrize("name", FAMILIES)
def test_pruned_tokens_answer_as_the_full_sequence_with_them_masked(backbones, name):
    b = backbones[name]
    pixels = torch.randn(T, 3, *b.preprocessing.size, generator=torch.Generator().manual_seed(1))
    features = b.encode(pixels).features
    n = features.shape[1]
    prompt = b.prompt("open_ended", "what happens?")
    full = b.build_input(prompt, ConcatReducer(num_frames=T)(features, b.grid))
    reduction = pruned(features, b.grid, lambda f, c: (c + f) % 3 != 1)
    item = b.build_input(prompt, reduction)
    # where each visual token sits in the full sequence (its row there, found by value)
    column = {}
    for f in range(T):
        for c in range(n):
            rows = (full.embeds == features[f, c].to(full.embeds.dtype)).all(dim=1).nonzero().flatten()
            assert len(rows) == 1
            column[f, c] = int(rows[0])
    dropped = [column[f, c] for f in range(T) for c in range(n) if (c + f) % 3 == 1]
    kept_rows = [i for i in range(full.length) if i not in set(dropped)]
    assert item.length == len(kept_rows)
    assert item.positions.tolist() == [kept_rows]                 # each token's id in the full sequence
    torch.testing.assert_close(item.embeds, full.embeds[kept_rows])
    mask = torch.ones(1, full.length, dtype=torch.long)
    mask[0, dropped] = 0
    b.before_generation()
    reference = b.model.generate(inputs_embeds=full.embeds[None], attention_mask=mask,
                                 position_ids=torch.arange(full.length)[None], generation_config=greedy(b))
    expected = b.tokenizer.batch_decode(reference, skip_special_tokens=True)
    assert b.generate([item], greedy(b)) == expected and len(expected[0]) > 0
    # batched with an input of plain positions, the answers stay the same
    compact = b.build_input(prompt, Reduction(reduction.tokens, reduction.frames_kept, reduction.tokens_per_frame,
                                              {}, reduction.positions, input_frames=T))
    assert compact.positions is None
    alone = b.generate([compact], greedy(b))
    assert alone != expected                                      # the ids matter
    assert b.generate([item, compact], greedy(b)) == expected + alone


def test_fastvid_asks_for_input_positions_unless_compact(backbones):
    b = backbones["llava_onevision"]
    features = b.encode(torch.randn(T, 3, *b.preprocessing.size, generator=torch.Generator().manual_seed(2))).features
    prompt = b.prompt("open_ended", "what happens?")
    item = b.build_input(prompt, FastVIDReducer(num_frames=T, c=2)(features, b.grid))
    assert item.positions is not None and item.span > item.length       # gaps where tokens were pruned
    compact = b.build_input(prompt, FastVIDReducer(num_frames=T, c=2, positions="compact")(features, b.grid))
    assert compact.positions is None and compact.span == compact.length
    with pytest.raises(ValueError, match="positions"):
        FastVIDReducer(positions="gapped")


def test_internvl_frame_labels_need_every_frame_as_a_block(backbones):
    b = backbones["internvl"]
    features = b.encode(torch.randn(T, 3, *b.preprocessing.size, generator=torch.Generator().manual_seed(3))).features
    reduction = pruned(features, b.grid, lambda f, c: f != 2)                # frame 2 dropped whole
    reduction.frames_kept = [0, 1, 3]
    reduction.tokens_per_frame = [n for n in reduction.tokens_per_frame if n]
    with pytest.raises(ValueError, match="every input frame"):
        b.build_input(b.prompt("open_ended", "what happens?"), reduction)
