"""Qwen2.5-VL's batched vision tower (dyto/models/qwen2_5_vl_vision.py) against transformers' own:
the model's ``visual`` forward and ``get_video_features``, bitwise on the CPU, for grids whose
merged size is a multiple of the window and for partial windows (the per-video grids lmms-eval's
``smart_resize`` makes), one video and several in one call; then the backbone's ``encode_many``
and ``VideoQA(encode_batch="pool")`` answering a pool exactly as one question at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

from dyto.api import question_batch
from dyto.errors import ConfigError
from dyto.models import VideoQA
from dyto.models.qwen2_5_vl import Qwen2_5_VL
from dyto.models.qwen2_5_vl_inputs import patchify
from dyto.models.qwen2_5_vl_vision import PLAN_CACHE_SIZE, batched_tower, tower_calls, window_plan
from dyto.models.tiny_qwen2_5_vl import QWEN2_5_VL_7B
from dyto.records import QARecord, read_jsonl
from dyto.reduction import DyToReducer

DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"
# (frames, height, width): tiny window = 2x2 merged tokens
SIZES = [(4, 84, 84),      # 3x3 merged: four windows of 4, 2, 2, 1 tokens per temporal patch
         (2, 112, 112),    # 4x4 merged: whole windows only (one length, no gather)
         (6, 140, 196),    # 5x7 merged: partial windows on both edges, non-square
         (3, 56, 252)]     # odd frame count (last frame repeated), 2x9 merged


@pytest.fixture(scope="module")
def tiny(one_thread):
    return Qwen2_5_VL("tiny")


def video(shape, seed=0):
    t, h, w = shape
    return torch.randn(t, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", SIZES)
def test_batched_tower_is_bitwise_the_models_own(tiny, shape):
    visual = tiny.model.model.visual
    flat, grid = patchify(video(shape))
    ours = batched_tower(visual, flat, [grid])
    assert torch.equal(ours, visual(flat, grid_thw=torch.tensor([grid])).pooler_output)
    own = tiny.model.get_video_features(flat, torch.tensor([grid])).pooler_output
    assert torch.equal(ours, torch.cat(list(own)))


def test_several_videos_in_one_call_equal_each_alone_and_the_models_batch(tiny):
    visual, cache = tiny.model.model.visual, {}
    parts = [patchify(video(shape, seed)) for seed, shape in enumerate(SIZES)]
    flat, grids = torch.cat([f for f, _ in parts]), [g for _, g in parts]
    ours = batched_tower(visual, flat, grids, cache)
    assert torch.equal(ours, visual(flat, grid_thw=torch.tensor(grids)).pooler_output)
    alone = torch.cat([batched_tower(visual, f, [g], cache) for f, g in parts])
    assert torch.equal(ours, alone)
    assert len(cache) == len(SIZES)  # one plan per grid, reused across calls
    plan = cache[((3, 10, 14), "cpu")]  # 5x7 merged into 2x2 windows: lengths 4, 2 (edges) and 1 (corner)
    assert sorted(plan.windows) == [4, 8, 16] and plan.frames == {140: None}
    first = cache[((2, 6, 6), "cpu")]
    for k in range(1, 9):  # 8 more grids: the least recently used plans make room
        flat, grid = patchify(video((2, 56, 56 + 28 * k)))
        batched_tower(visual, flat, [grid], cache)
    assert len(cache) == PLAN_CACHE_SIZE == 8 and ((2, 6, 6), "cpu") not in cache
    batched_tower(visual, parts[0][0], [parts[0][1]], cache)
    assert cache[((2, 6, 6), "cpu")] is not first and list(cache)[-1] == ((2, 6, 6), "cpu")


def test_full_size_widths_with_partial_windows():
    """Qwen2.5-VL-7B's vision widths (1280 wide, 16 heads of 80, 112-px windows = 4x4 merged
    tokens), two blocks (windowed, then full), random weights; a 10x14 patch grid -> 5x7 merged."""
    vision = dict(QWEN2_5_VL_7B["vision"], depth=2, fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=dict(QWEN2_5_VL_7B["text"], num_hidden_layers=1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        visual = Qwen2_5_VisionTransformerPretrainedModel._from_config(config.vision_config).eval()
        for p in visual.parameters():
            torch.nn.init.normal_(p, std=0.02)
    flat, grid = patchify(video((2, 140, 196)))
    with torch.no_grad():
        assert torch.equal(batched_tower(visual, flat, [grid]), visual(flat, grid_thw=torch.tensor([grid])).pooler_output)
    plan = window_plan(visual, grid, "cpu")
    assert sorted(plan.windows) == [12, 16, 48, 64]  # 4x4, 4x3, 1x4, 1x3 merged tokens of 4 patches


def test_encode_many_in_chunks_and_the_transformers_option(tiny):
    pixels = [video(shape, seed) for seed, shape in enumerate(SIZES)]
    one_by_one = [tiny.encode(p).features for p in pixels]
    together = tiny.encode_many(pixels)
    assert all(torch.equal(a, b.features) for a, b in zip(one_by_one, together))
    assert [f.grid for f in together] == [(3, 3), (4, 4), (5, 7), (2, 9)]
    tiny.vision_chunk_size = 3  # calls of at most 3 temporal patches, cutting across videos
    try:
        assert tower_calls([2, 1, 3, 2], 3) == [[(0, 0, 2), (1, 0, 1)], [(2, 0, 3)], [(3, 0, 2)]]
        assert tower_calls([5], 3) == [[(0, 0, 3)], [(0, 3, 2)]] and tower_calls([5, 2], None) == [[(0, 0, 5), (1, 0, 2)]]
        chunked = tiny.encode_many(pixels)
    finally:
        tiny.vision_chunk_size = None
    assert all(torch.equal(a, b.features) for a, b in zip(one_by_one, chunked))
    own = Qwen2_5_VL.from_parts(tiny.model, tiny.tokenizer, tiny.model_name, image_size=84, vision_tower="transformers")
    batched = Qwen2_5_VL.from_parts(tiny.model, tiny.tokenizer, tiny.model_name, image_size=84, vision_tower="batched")
    assert own.fingerprint()["vision_tower"] == "transformers" and batched.fingerprint()["vision_tower"] == "batched"
    # auto: the model's own one question at a time (bitwise the reference on a GPU too), batched for pools
    assert tiny.fingerprint()["vision_tower"] == "transformers"
    assert VideoQA(backbone=tiny, encode_batch="pool").backbone.fingerprint()["vision_tower"] == "batched"
    assert VideoQA(backbone=tiny).backbone.fingerprint()["vision_tower"] == "transformers"
    assert all(torch.equal(a, batched.encode(p).features) for a, p in zip(one_by_one, pixels))
    assert all(torch.equal(a, own.encode(p).features) for a, p in zip(one_by_one, pixels))
    with pytest.raises(ConfigError, match="vision_tower"):
        Qwen2_5_VL.from_parts(tiny.model, tiny.tokenizer, "x", image_size=84, vision_tower="fast")


def test_a_pool_encoded_together_answers_as_one_question_at_a_time(tiny, capsys):
    """The five demo questions in one batch: encode_batch pool (one tower call) against one question at
    a time, through predict_step; the pool's encode time is shared out by frames. A pool that fails
    to encode together is encoded question by question, said once."""
    records = []
    for row in read_jsonl(DEMO / "questions.jsonl"):
        records.append(QARecord.from_dict(dict(row, video=str(DEMO / row["video"]))))
    reducer = DyToReducer(budget=24, num_frames=8, descriptor="patch0")
    alone = VideoQA(tiny, reducer=reducer, max_new_tokens=4, generation_batch_size=1)
    pooled = VideoQA(tiny, reducer=reducer, max_new_tokens=4, encode_batch="pool")
    samples = [question_batch(alone, r) for r in records]
    batch = {k: [x for s in samples for x in s[k]] for k in samples[0]}
    expected = [alone.predict_step(s)[0] for s in samples]
    calls = []
    tiny.encode_many = lambda pixels, with_cls=False: calls.append(len(pixels)) or Qwen2_5_VL.encode_many(tiny, pixels)
    try:
        got = pooled.predict_step(batch)
    finally:
        del tiny.encode_many
    assert calls == [len(records)]
    assert [(r["prediction"], r["prediction2"]) for r in got] == [(r["prediction"], r["prediction2"]) for r in expected]
    assert all(r["status"] == "ok" and r["timings"]["encode"] > 0 for r in got)
    assert pooled.fingerprint()["encode_batch"] == "pool" and "encode_batch" not in alone.fingerprint()
    # a pool that cannot be encoded together (one video at a time can)
    tiny.encode_many = lambda pixels, with_cls=False: Qwen2_5_VL.encode_many(tiny, pixels) if len(pixels) == 1 else 1 / 0
    try:
        fallback = [pooled.predict_step(batch) for _ in range(2)]
    finally:
        del tiny.encode_many
    assert all([r["prediction"] for r in f] == [r["prediction"] for r in expected] for f in fallback)
    assert capsys.readouterr().out.count("encoding 5 videos together failed (ZeroDivisionError") == 1
    with pytest.raises(ConfigError, match="encode_batch"):
        VideoQA(tiny, reducer=reducer, encode_batch="all")
