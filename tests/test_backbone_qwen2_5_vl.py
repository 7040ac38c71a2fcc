"""The Qwen2.5-VL backbone on the tiny RANDOM-WEIGHT model (real transformers classes, real clips).

The key test: with the identity reducer (``concat``), greedy token ids from the backbone's path
(encode -> reduce -> build_input -> generate) equal ``model.generate`` fed the model's own video
inputs (``input_ids`` with the expanded ``<|video_pad|>`` run, ``pixel_values_videos``,
``video_grid_thw``, ``mm_token_type_ids``, as the Qwen processor makes them).
"""

from pathlib import Path

import pytest
import torch

from dyto.datamodules.video import decode_video
from dyto.models.backbone import LLMInput
from dyto.models.qwen2_5_vl import Qwen2_5_VL, reduction_positions
from dyto.models.qwen2_5_vl_inputs import VIDEO_PAD, grid_positions, mrope_positions, patchify
from dyto.reduction import ConcatReducer, DyToReducer, Reduction

DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"
NEW = 10  # max_new_tokens


@pytest.fixture(scope="module")
def backbone(one_thread):
    return Qwen2_5_VL("tiny")


def greedy(backbone):
    """The checkpoint's generation config with plain greedy decoding, as the generic module sets it."""
    config = backbone.generation_defaults()
    config.update(do_sample=False, num_beams=1, max_new_tokens=NEW, use_cache=True)
    return config


def pixels(backbone, clip: str, frames: int) -> torch.Tensor:
    return backbone.preprocessing(decode_video(str(DEMO / clip), frames).frames)


def model_video_path(backbone, px, task, question, options):
    """New token ids from the model's own video path (processor layout + ``model.generate``)."""
    flat, grid_thw = patchify(px)
    merge = backbone.model.config.vision_config.spatial_merge_size
    n_video = grid_thw[0] * grid_thw[1] * grid_thw[2] // merge**2
    prompt = backbone.prompt(task, question, options)
    text = prompt.before + VIDEO_PAD * n_video + prompt.after          # the processor's expansion
    ids = torch.tensor([backbone.tokenizer(text).input_ids])
    types = (ids == backbone.model.config.video_token_id).int() * 2  # 2 = video, as the processor marks it
    out = backbone.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=flat,
                                 video_grid_thw=torch.tensor([grid_thw]), mm_token_type_ids=types,
                                 generation_config=greedy(backbone))
    return out[:, ids.shape[1]:]


def backbone_path(backbone, px, task, question, options, reducer):
    feats = backbone.encode(px)
    reduction = reducer(feats.features, feats.grid)
    item = backbone.build_input(backbone.prompt(task, question, options), reduction)
    return backbone.generate_ids([item], greedy(backbone)), item, reduction


@pytest.mark.parametrize("clip, frames, rule, task", [
    # 2 temporal patches: temporal ids 0, 2 stay below max(h, w) = 3, so both text rules agree
    ("bikes.mp4", 4, "max_plus_one", "open_ended"),
    ("bigbuckbunny.mp4", 4, "max_plus_one", "multiple_choice"),
    # 4 temporal patches (ids up to 6): only the installed transformers' rule matches its generate
    ("bigbuckbunny.mp4", 8, "transformers", "open_ended"),
    ("bikes.mp4", 7, "transformers", "multiple_choice"),  # odd: last frame repeated, as the processor does
])
def test_identity_reducer_matches_the_models_own_video_path(backbone, clip, frames, rule, task):
    backbone.text_after_video = rule
    try:
        px = pixels(backbone, clip, frames)
        options = ["a rabbit", "a car", "a bird"] if task == "multiple_choice" else None
        ours, item, _ = backbone_path(backbone, px, task, "what is in the video?", options, ConcatReducer(frames))
        reference = model_video_path(backbone, px, task, "what is in the video?", options)
    finally:
        backbone.text_after_video = "max_plus_one"
    assert ours.shape[1] >= 3 and ours.tolist() == reference.tolist()
    # the positions matter: plain 1-D positions give other answers
    flat = torch.arange(item.embeds.shape[0]).expand(3, -1)
    plain = backbone.generate_ids([LLMInput(item.embeds, flat, item.visual_tokens)], greedy(backbone))
    assert plain.tolist() != reference.tolist()


def test_positions_equal_get_rope_index_and_the_text_rules(backbone):
    """4 temporal patches: the full grid's ids are the model's; text after differs by rule."""
    grid, patches = backbone.grid, 4
    cells = grid_positions(range(patches), grid)
    n_vis = len(cells)
    ids = torch.tensor([[20] * 5 + [backbone.model.config.video_token_id] * n_vis + [21] * 3])
    expected, _ = backbone.model.model.get_rope_index(
        ids, (ids == backbone.model.config.video_token_id).int() * 2,
        video_grid_thw=torch.tensor([[patches, grid[0] * 2, grid[1] * 2]]))
    hf = mrope_positions(backbone.model.model, 5, cells, grid, 3, 1.0, "transformers")
    assert torch.equal(hf, expected[:, 0])
    ours = mrope_positions(backbone.model.model, 5, cells, grid, 3, 1.0, "max_plus_one", input_frames=patches)
    assert torch.equal(ours[:, : 5 + n_vis], hf[:, : 5 + n_vis])
    top = 5 + (patches - 1) * backbone.model.config.vision_config.tokens_per_second  # largest temporal id
    assert ours[:, 5 + n_vis :].tolist() == [[top + 1, top + 2, top + 3]] * 3
    # fractional seconds per temporal patch: ids are floor(t * 2 * 0.7) = 0, 1, 2, 4
    frac = mrope_positions(backbone.model.model, 0, cells, grid, 0, 0.7, input_frames=patches)
    assert frac[0].unique().tolist() == [0, 1, 2, 4]


def released_rope_index(n_before: int, patches: int, grid: tuple[int, int], n_after: int,
                        tokens_per_second: float, second_per_grid_t: float = 1.0) -> torch.Tensor:
    """[3, S] ids of text, one video, text by the get_rope_index Qwen2.5-VL was released with
    (transformers 4.49 up to 5.2), written out: text counts up from 0; a video cell (t, row, col)
    gets (long(t * second_per_grid_t * tokens_per_second), row, col) + the text length before it;
    the text after starts one past the largest id so far, over all three axes."""
    h, w = grid
    t_index = (torch.arange(patches).view(-1, 1).expand(-1, h * w) * second_per_grid_t * tokens_per_second).long()
    h_index = torch.arange(h).view(1, -1, 1).expand(patches, -1, w).flatten()
    w_index = torch.arange(w).view(1, 1, -1).expand(patches, h, -1).flatten()
    video = torch.stack([t_index.flatten(), h_index, w_index]) + n_before
    before = torch.arange(n_before).view(1, -1).expand(3, -1)
    after = torch.arange(n_after).view(1, -1).expand(3, -1) + video.max() + 1
    return torch.cat([before, video, after], dim=1)


def test_text_after_a_pruned_video_follows_the_full_video(backbone):
    """4 temporal patches, the last one and every other cell pruned: with ``text_positions: full``
    (default) the sequence keeps the columns of the full sequence's released ids, as VidCom² and
    FastVID index them; ``kept`` starts the text one past the kept tokens' largest id."""
    grid, patches = backbone.grid, 4
    cells = grid_positions(range(patches), grid)
    keep = torch.tensor([i for i, (t, r, c) in enumerate(cells.tolist()) if t < 3 and (r * grid[1] + c) % 2 == 0])
    tokens = torch.randn(len(keep), backbone.model.config.text_config.hidden_size)
    frames = cells[keep, 0]
    pruned = Reduction(tokens, [0, 1, 2], [int((frames == f).sum()) for f in range(3)], {}, cells[keep],
                       input_frames=patches)
    prompt = backbone.prompt("open_ended", "what happens?", None)
    ids = backbone.tokenizer(prompt.before + VIDEO_PAD + prompt.after).input_ids
    start = ids.index(backbone.tokenizer.convert_tokens_to_ids(VIDEO_PAD))
    n_after = len(ids) - start - 1
    tps = backbone.model.config.vision_config.tokens_per_second
    full = released_rope_index(start, patches, grid, n_after, tps)
    columns = torch.cat([torch.arange(start), start + keep, start + patches * grid[0] * grid[1] + torch.arange(n_after)])
    item = backbone.build_input(prompt, pruned)
    assert torch.equal(item.positions, full[:, columns])
    assert int(full[0, -n_after]) == start + (patches - 1) * tps + 1 > start + max(grid)   # past 2 patches
    backbone.text_positions = "kept"
    try:
        kept = backbone.build_input(prompt, pruned).positions
    finally:
        backbone.text_positions = "full"
    assert torch.equal(kept[:, : start + len(keep)], item.positions[:, : start + len(keep)])
    assert kept[:, start + len(keep):].tolist() == [list(range(start + 2 * tps + 1, start + 2 * tps + 1 + n_after))] * 3
    with pytest.raises(ValueError, match="input_frames"):     # "full" cannot guess the unreduced length
        backbone.build_input(prompt, Reduction(tokens, [0, 1, 2], pruned.tokens_per_frame, {}, cells[keep]))


def test_patchify_is_the_layout_the_patch_embedding_reads(backbone):
    """Each row is the (frame pair, y, x) patch the Conv3d would see in the video, in merge-block order."""
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(3, 3, 56, 56, generator=gen)                       # odd T: padded to 4
    flat, (gt, gh, gw) = patchify(video)
    assert (gt, gh, gw) == (2, 4, 4) and flat.shape == (2 * 16, 3 * 2 * 14 * 14)
    padded = torch.cat([video, video[-1:]])                                # last frame repeated
    conv = backbone.model.model.visual.patch_embed.proj
    dense = conv(padded.permute(1, 0, 2, 3)[None])[0]                       # [C', gt, gh, gw]
    embedded = backbone.model.model.visual.patch_embed(flat)                # [gt*gh*gw, C']
    row = 0
    for t in range(gt):
        for by in range(2):
            for bx in range(2):
                for y in range(2):
                    for x in range(2):
                        cell = dense[:, t, by * 2 + y, bx * 2 + x]
                        torch.testing.assert_close(embedded[row], cell, rtol=1e-5, atol=1e-5)
                        row += 1
    with pytest.raises(ValueError, match="multiples of 28"):
        patchify(torch.zeros(2, 3, 50, 56))


def test_reduced_positions_are_a_subset_of_the_full_grid(backbone):
    """A reducer that drops tokens: every visual id column is one of the full grid's columns."""
    px = pixels(backbone, "bikes.mp4", 8)
    feats = backbone.encode(px)
    reducer = DyToReducer(budget=12, num_frames=8)
    reduction = reducer(feats.features, feats.grid)
    assert reduction.tokens.shape[0] < feats.features.shape[0] * feats.features.shape[1]
    prompt = backbone.prompt("open_ended", "what happens?", None)
    if getattr(reduction, "positions", None) is None:      # reducers without positions: a clear error
        with pytest.raises(ValueError, match="Reduction.positions"):
            backbone.build_input(prompt, reduction)
        # the same tokens with hand-made cells (the kept frames' first cells) must then work
        h, w = feats.grid
        cells = torch.cat([grid_positions([f], feats.grid)[1 : 1 + n] for f, n in
                           zip(reduction.frames_kept, reduction.tokens_per_frame)])
        reduction = Reduction(reduction.tokens, reduction.frames_kept, reduction.tokens_per_frame, {})
        reduction.positions = cells
    item = backbone.build_input(prompt, reduction)
    full = backbone.build_input(prompt, ConcatReducer(8)(feats.features, feats.grid))
    n_before = len(backbone.tokenizer(prompt.before).input_ids)
    assert prompt.before.endswith("<|vision_start|>")
    visual = item.positions[:, n_before : n_before + item.visual_tokens].T.tolist()
    grid_ids = set(map(tuple, full.positions[:, n_before : n_before + full.visual_tokens].T.tolist()))
    assert set(map(tuple, visual)) <= grid_ids
    assert item.positions[:, n_before + item.visual_tokens].tolist() == [max(map(max, zip(*visual))) + 1] * 3
    # deterministic: the same clip gives the same reduction and the same answer
    again = reducer(backbone.encode(px).features, feats.grid)
    assert torch.equal(again.tokens, reduction.tokens)
    first = backbone.generate_ids([item], greedy(backbone))
    assert torch.equal(first, backbone.generate_ids([item], greedy(backbone)))
    # batched with a longer sequence (left padding): the same answer
    batched = backbone.generate_ids([full, item], greedy(backbone))
    assert batched[1, : first.shape[1]].tolist() == first[0].tolist()


def test_positions_without_a_reducer_rule_are_refused(backbone):
    h, w = backbone.grid
    tokens = torch.zeros(h * w + 1, 64)
    with pytest.raises(ValueError, match="not whole frames"):
        reduction_positions(Reduction(tokens, [0], [h * w + 1], {}), backbone.grid)
    bad = Reduction(tokens[:2], [0], [2], {})
    bad.positions = torch.tensor([[0, 0, 0], [0, h, 0]])
    with pytest.raises(ValueError, match="outside"):
        reduction_positions(bad, backbone.grid)
    with pytest.raises(ValueError, match="no CLS"):
        backbone.encode(torch.zeros(2, 3, 84, 84), with_cls=True)
    with pytest.raises(ValueError, match="M-RoPE positions"):
        backbone.generate([LLMInput(torch.zeros(4, 64), None, 0)], greedy(backbone))


def test_golden_prompts(backbone):
    """The chat-template layout, character for character, for both tasks."""
    prompt = backbone.prompt("open_ended", "what animal is this?", None)
    before, after = prompt.before, prompt.after
    assert prompt.mode == "chat_open_ended"
    assert before == "<|im_start|>system\nAnswer the question.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
    assert after == (
        "<|vision_end|>The input consists of a sequence of key frames from a video. Answer concisely with "
        "overall content and context of the video, highlighting any significant events, characters, or "
        "objects that appear throughout the video. Question: what animal is this?<|im_end|>\n"
        "<|im_start|>assistant\nAnswer: In the video,")
    prompt = backbone.prompt("multiple_choice", "where is it?", ["a street", "a forest"])
    before, after = prompt.before, prompt.after
    assert before == ("<|im_start|>system\nYou are a helpful expert in video analysis. Select the best option "
                      "to answer the question.<|im_end|>\n<|im_start|>user\n<|vision_start|>")
    assert prompt.mode == "chat_multiple_choice"
    assert after == ("<|vision_end|>The input consists of a sequence of key frames from a video. Question: "
                     "where is it?\nOptions:\n(A) a street\n(B) a forest\nOnly give the best option.<|im_end|>\n"
                     "<|im_start|>assistant\nAnswer: Best option:(")
    # without the system sentence the template's own default system turn is used
    plain = Qwen2_5_VL.from_parts(backbone.model, backbone.tokenizer, "t", image_size=84, system_prompt=False)
    assert plain.prompt("open_ended", "q", None).before.startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>")
    with pytest.raises(ValueError, match="needs options"):
        backbone.prompt("multiple_choice", "q", None)
    with pytest.raises(ValueError, match="video_pad"):
        backbone.build_input(backbone.prompt("open_ended", "is <|video_pad|> here?", None),
                             ConcatReducer(2)(torch.zeros(1, 9, 64), (3, 3)))


def test_saved_checkpoint_loads_through_from_pretrained(tmp_path, backbone):
    """The real loading path: save_pretrained of the tiny model, the template only in chat_template.json."""
    import json

    backbone.model.save_pretrained(tmp_path)
    template = backbone.tokenizer.chat_template
    backbone.tokenizer.chat_template = None
    try:
        backbone.tokenizer.save_pretrained(tmp_path)
    finally:
        backbone.tokenizer.chat_template = template
    assert "chat_template" not in (tmp_path / "tokenizer_config.json").read_text()
    assert not list(tmp_path.glob("*.jinja"))
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    loaded = Qwen2_5_VL(str(tmp_path))
    assert loaded.model_name == f"{tmp_path} (random weights)" and loaded.grid == (16, 16)
    assert loaded.prompt("open_ended", "why?", None) == backbone.prompt("open_ended", "why?", None)
    for name, weight in backbone.model.state_dict().items():
        assert torch.equal(weight, loaded.model.state_dict()[name]), name


def test_full_size_config_and_from_parts(backbone):
    """The 7B's real config (8.29 B parameters, counted on the meta device) and the benchmarks' entry point."""
    from dyto.models.tiny_qwen2_5_vl import build_tiny_qwen2_5_vl, full_size_qwen2_5_vl

    model, _, name = full_size_qwen2_5_vl("meta")
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656 and "random weights" in name
    assert sum(p.numel() for p in model.model.visual.parameters()) == 676_550_144
    tiny, tokenizer = build_tiny_qwen2_5_vl()
    parts = Qwen2_5_VL.from_parts(tiny, tokenizer, "tiny parts", image_size=84)
    assert parts.grid == backbone.grid and parts.preprocessing == backbone.preprocessing
    assert parts.fingerprint() == {**backbone.fingerprint(), "checkpoint": "tiny parts"}


def test_vision_chunks_change_only_rounding(backbone):
    """The tower attends within a temporal patch, so encoding patch by patch gives the same tokens."""
    px = pixels(backbone, "bigbuckbunny.mp4", 6)
    whole = backbone.encode(px).features
    backbone.vision_chunk_size = 1
    try:
        chunked = backbone.encode(px).features
    finally:
        backbone.vision_chunk_size = None
    assert whole.shape == (3, 9, 64)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(whole[0], whole[1])        # different frames, different tokens


def test_pruned_tokens_keep_the_ids_the_full_sequence_gives_them(backbone):
    """Dropping visual tokens = deleting their columns from the full sequence's get_rope_index ids
    (the installed rule, whose text ids do not depend on the video's length)."""
    px = pixels(backbone, "bikes.mp4", 8)
    feats = backbone.encode(px)
    full = ConcatReducer(8)(feats.features, feats.grid)
    keep = torch.tensor([i for i in range(full.tokens.shape[0]) if i % 3 != 1])   # drop a third, keep order
    cells = grid_positions(range(4), feats.grid)[keep]
    pruned = Reduction(full.tokens[keep], [0, 1, 2, 3], [int((cells[:, 0] == f).sum()) for f in range(4)], {})
    pruned.positions = cells
    backbone.text_after_video = "transformers"
    try:
        prompt = backbone.prompt("open_ended", "what happens?", None)
        item = backbone.build_input(prompt, pruned)
    finally:
        backbone.text_after_video = "max_plus_one"
    ids = backbone.tokenizer(prompt.before + VIDEO_PAD * full.tokens.shape[0] + prompt.after).input_ids
    ids = torch.tensor([ids])
    video = ids == backbone.model.config.video_token_id
    reference, _ = backbone.model.model.get_rope_index(ids, video.int() * 2, video_grid_thw=torch.tensor([[4, 6, 6]]))
    start = int(video[0].nonzero()[0])
    columns = torch.cat([torch.arange(start), start + keep, torch.arange(start + len(video[0].nonzero()), ids.shape[1])])
    assert torch.equal(item.positions, reference[:, 0, columns])
    assert torch.equal(item.embeds[start : start + len(keep)], full.tokens[keep])
