"""DyToVideoQA end to end on the tiny RANDOM-WEIGHT LLaVA-NeXT (real transformers classes, CPU)."""

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image

import dyto.models.loading as loading
from dyto.models.inputs import left_pad, splice, tokenize_prompt
from dyto.models.llava_next import CLIP_MEAN, CLIP_STD, DyToVideoQA
from dyto.models.prompts import render_prompt
from dyto.models.tiny import save_tiny
from dyto.records import PREDICTION_FIELDS
from dyto.reduction import (ConcatReducer, DyCokeReducer, DyToReducer, FastVIDReducer,
                            HoliTomReducer, PruneVidReducer, Reduction, SlowFastReducer,
                            TokenReducer, UniformReducer, VidCom2Reducer)

BIKES = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo" / "bikes.mp4"
T = 8  # frames per test video
NEW = 6  # max_new_tokens in these tests


class KeepEvenFrames(TokenReducer):
    """A transparent stand-in: even frames, first 4 tokens each; can demand CLS or fail on NaN."""

    name = "keep_even"

    def __init__(self, num_frames: int = T, needs_cls: bool = False):
        self.num_frames, self.needs_cls, self.seen_cls = num_frames, needs_cls, None

    def __call__(self, features, grid, cls=None):
        if not torch.isfinite(features).all():
            raise ValueError("features contain NaN")
        self.seen_cls = cls
        kept = list(range(0, features.shape[0], 2))
        return Reduction(features[kept, :4].reshape(-1, features.shape[-1]), kept, [4] * len(kept), {})

    def config(self):
        return {"name": self.name, "num_frames": self.num_frames}


def _frames(start: int) -> torch.Tensor:
    """T real frames of bikes.mp4 (every 10th from `start`), reference "resize" to 56x56, CLIP-normalised."""
    with av.open(str(BIKES)) as c:
        rgb = [f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0)) if i >= start and (i - start) % 10 == 0]
    images = [np.asarray(Image.fromarray(a).resize((56, 56), Image.BICUBIC), np.float32) / 255 for a in rgb[:T]]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


def _qa(i, task="open_ended", **kw):
    qa = dict(id=f"q{i}", benchmark="test", task=task, video="bikes.mp4", question=f"What happens in part {i}?",
              answer="bikes", options=None, answer_index=None, start=None, end=None, question2=None,
              split="val", meta={})
    return {**qa, **kw}


def _batch(items):
    """items: (qa, pixel_values or None, status) -> the data side's batch dict."""
    return dict(
        ids=[qa["id"] for qa, _, _ in items], records=[qa for qa, _, _ in items],
        pixel_values=[pv for _, pv, _ in items],
        frame_indices=[list(range(0, 10 * T, 10)) if pv is not None else [] for _, pv, _ in items],
        frames_total=[250] * len(items), status=[s for _, _, s in items],
        error=["" if s == "ok" else "cannot open bikes.mp4" for _, _, s in items], decode_ms=[3.5] * len(items),
    )


@pytest.fixture(scope="module")
def frames():
    return [_frames(s) for s in (0, 3, 6, 9)]


@pytest.fixture(scope="module")
def items(frames):
    return [
        (_qa(0), frames[0], "ok"),
        (_qa(1, "multiple_choice", options=["a bike race", "a cooking show", "a swim"], answer_index=0), frames[1], "ok"),
        (_qa(2, "vcg_consistency", question2="Describe the riders."), frames[2], "ok"),
        (_qa(3), frames[3], "ok"),
    ]


@pytest.fixture(scope="module")
def module():
    return DyToVideoQA(reducer=DyToReducer(num_frames=T), max_new_tokens=NEW)


def _answers(records):
    return [(r["status"], r["prediction"], r["prediction2"]) for r in records]


def test_open_ended_multiple_choice_and_consistency(module, items):
    records = module.predict_step(_batch(items), 0)
    assert [r["id"] for r in records] == ["q0", "q1", "q2", "q3"]
    for r in records:
        assert list(r) == list(PREDICTION_FIELDS) and r["status"] == "ok" and r["error"] is None
        assert isinstance(r["prediction"], str) and r["prediction"] == r["prediction"].strip()
        assert r["frames_sampled"] == T and r["visual_tokens_in"] == T * 16
        assert 0 < r["visual_tokens_out"] <= T * 16 and r["frames_kept"] == sorted(r["frames_kept"])
        assert r["model"] == "tiny-random-llava-next (random weights)" and r["seed"] == 0
        assert r["reducer"] == module.reducer.config()
        assert set(r["timings"]) == {"decode", "encode", "reduce", "prefill", "generate"} and r["timings"]["decode"] == 3.5
    assert [r["conv_mode"] for r in records] == ["image_seq_v3", "multiple_choice_allvideo_v4", "image_seq_v3", "image_seq_v3"]
    assert records[2]["prediction2"] is not None and records[0]["prediction2"] is None
    # prompt_tokens = text tokens + visual tokens
    text = tokenize_prompt(module.tokenizer, render_prompt("image_seq_v3", items[0][0]["question"]))
    assert records[0]["prompt_tokens"] == len(text[0]) + len(text[1]) + records[0]["visual_tokens_out"]


def test_batched_generation_equals_batch_size_one(module, items):
    batched = module.predict_step(_batch(items), 0)
    single = [module.predict_step(_batch([it]), 0)[0] for it in items]
    assert _answers(batched) == _answers(single)
    default, module.generation_batch_size = module.generation_batch_size, 2
    try:
        assert _answers(module.predict_step(_batch(items), 0)) == _answers(single)
    finally:
        module.generation_batch_size = default
    assert len({r["prediction"] for r in single}) > 1  # the outputs do depend on the input


def test_visual_tokens_are_spliced_between_the_chunks(module, items):
    qa, pv, _ = items[0]
    prompt = render_prompt("image_seq_v3", qa["question"])
    before, after = tokenize_prompt(module.tokenizer, prompt)
    tok = module.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    assert before[0] == tok.bos_token_id and (before + after).count(tok.bos_token_id) == 1
    assert image_id not in before + after
    assert before == tok("USER: ").input_ids
    assert after == tok("\n" + prompt.split("<image>")[1][1:]).input_ids[1:]  # BOS of chunk 2 dropped
    reduction = module.reducer(module.encode_frames(pv)[0], module.grid)
    seen = []
    hook = module.llava.model.language_model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["inputs_embeds"]), with_kwargs=True)
    try:
        module.predict_step(_batch([items[0]]), 0)
    finally:
        hook.remove()
    prefill = seen[0][0]
    embed = module.llava.get_input_embeddings()
    n, L = len(before), reduction.tokens.shape[0]
    assert prefill.shape[0] == n + L + len(after)
    torch.testing.assert_close(prefill[:n], embed(torch.tensor(before)))
    torch.testing.assert_close(prefill[n : n + L], reduction.tokens)
    torch.testing.assert_close(prefill[n + L :], embed(torch.tensor(after)))


def test_whole_prompt_tokenization_option(module):
    prompt = render_prompt("image_seq_v3", "Why?")
    before, after = tokenize_prompt(module.tokenizer, prompt, mode="whole")
    assert before[0] == module.tokenizer.bos_token_id and module.tokenizer.convert_tokens_to_ids("<image>") not in after
    with pytest.raises(ValueError, match="exactly one"):
        tokenize_prompt(module.tokenizer, "no placeholder")


def test_left_pad():
    a, b = torch.ones(2, 3), 2 * torch.ones(4, 3)
    embeds, mask = left_pad([a, b], torch.zeros(3))
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert embeds[0, :2].abs().sum() == 0 and torch.equal(embeds[0, 2:], a) and torch.equal(embeds[1], b)


def test_failed_video_gets_a_record_without_a_model_call(module, items, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model must not run for a failed video")

    monkeypatch.setattr(module, "encode_frames", boom)
    monkeypatch.setattr(module, "generate", boom)
    (r,) = module.predict_step(_batch([(_qa(9), None, "video_unreadable")]), 0)
    assert r["status"] == "video_unreadable" and r["error"] == "cannot open bikes.mp4" and r["prediction"] is None
    assert r["frames_sampled"] == 0 and r["timings"] == {"decode": 3.5}


def test_per_sample_exception_is_an_error_record(frames):
    module = DyToVideoQA(reducer=KeepEvenFrames(), max_new_tokens=NEW)
    nan = torch.full_like(frames[0], float("nan"))
    bad_mc = _qa(2, "multiple_choice")  # no options
    records = module.predict_step(_batch([(_qa(0), nan, "ok"), (_qa(1), frames[1], "ok"), (bad_mc, frames[2], "ok")]), 0)
    assert [r["status"] for r in records] == ["error", "ok", "error"]
    assert "NaN" in records[0]["error"] and "needs options" in records[2]["error"]
    assert records[1]["prediction"]


def test_too_long_and_truncate(frames):
    reducer = KeepEvenFrames()
    long = DyToVideoQA(reducer=reducer, max_new_tokens=NEW, max_length=40)
    (r,) = long.predict_step(_batch([(_qa(0), frames[0], "ok")]), 0)
    assert r["status"] == "too_long" and r["prediction"] is None and "max_length 40" in r["error"]
    assert r["prompt_tokens"] > 40 - NEW and r["visual_tokens_out"] == 16
    cut = DyToVideoQA(reducer=reducer, max_new_tokens=NEW, max_length=40, overflow="truncate")
    (r,) = cut.predict_step(_batch([(_qa(0), frames[0], "ok")]), 0)
    assert r["status"] == "ok" and r["prompt_tokens"] == 40 and "truncated" in r["error"] and r["prediction"] is not None


def test_multiple_choice_output_says_video_not_image(module, items, monkeypatch):
    monkeypatch.setattr(module, "generate", lambda seqs: [("In the image, a bike. B)", 1.0, 2.0)] * len(seqs))
    open_r, mc_r = module.predict_step(_batch(items[:2]), 0)
    assert mc_r["prediction"] == "In the video, a bike. B)" and open_r["prediction"] == "In the image, a bike. B)"


def test_cls_reaches_a_reducer_that_needs_it(frames):
    reducer = KeepEvenFrames(needs_cls=True)
    module = DyToVideoQA(reducer=reducer, max_new_tokens=2)
    module.predict_step(_batch([(_qa(0), frames[0], "ok")]), 0)
    assert reducer.seen_cls.shape == (T, 64)
    features, cls = module.encode_frames(frames[0], with_cls=True)
    module.vision_chunk_size = 3  # chunking the vision tower does not change the features
    chunked, chunked_cls = module.encode_frames(frames[0], with_cls=True)
    torch.testing.assert_close(chunked, features)
    torch.testing.assert_close(chunked_cls, cls)
    assert module.encode_frames(frames[0])[1] is None  # no CLS work unless asked


def test_vision_hidden_equals_the_full_towers_feature_layer(frames):
    module = DyToVideoQA(reducer=DyToReducer(num_frames=T), max_new_tokens=2)
    tower = module.llava.model.vision_tower
    full = tower(frames[0], output_hidden_states=True).hidden_states[module.llava.config.vision_feature_layer]
    assert torch.equal(module.vision_hidden(frames[0]), full)


def test_save_reload_and_seed_determinism(tmp_path, module, items):
    reference = _answers(module.predict_step(_batch(items[:2]), 0))
    again = DyToVideoQA(reducer=DyToReducer(num_frames=T), max_new_tokens=NEW)
    assert _answers(again.predict_step(_batch(items[:2]), 0)) == reference
    other_seed = DyToVideoQA(reducer=DyToReducer(num_frames=T), max_new_tokens=NEW, seed=1)
    assert _answers(other_seed.predict_step(_batch(items[:2]), 0)) != reference
    save_tiny(tmp_path / "tiny", seed=0, rope_scaling_factor=None)
    loaded = DyToVideoQA(model=str(tmp_path / "tiny"), reducer=DyToReducer(num_frames=T), max_new_tokens=NEW)
    records = loaded.predict_step(_batch(items[:2]), 0)
    assert _answers(records) == reference
    assert records[0]["model"] == f"{tmp_path / 'tiny'} (random weights)"
    assert loaded.llava.model.language_model.rotary_emb.rope_type == "dynamic"


def test_rope_scaling_is_active_and_optional(module):
    rope = module.llava.model.language_model.rotary_emb
    assert rope.rope_type == "dynamic" and module.llava.config.text_config.rope_parameters["factor"] == 2.0
    plain = DyToVideoQA(reducer=KeepEvenFrames(), rope_scaling_factor=None)
    assert plain.llava.model.language_model.rotary_emb.rope_type == "default"


def test_flash_attention_is_never_requested_on_cpu(monkeypatch, module):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(loading, "is_flash_attn_2_available", lambda: True)
    assert loading.resolve_attn_implementation("auto") == "sdpa"
    with pytest.raises(ValueError, match="needs CUDA"):
        loading.resolve_attn_implementation("flash_attention_2")
    assert loading.resolve_dtype("auto") == torch.float32
    assert module.llava.config._attn_implementation == "sdpa"


def test_data_side_attributes(module):
    assert module.num_frames == T and module.image_size == 56 and module.grid == (4, 4)
    assert module.image_mean == CLIP_MEAN and module.image_std == CLIP_STD


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="overflow"):
        DyToVideoQA(reducer=KeepEvenFrames(), overflow="drop")
    with pytest.raises(ValueError, match="tokenization"):
        DyToVideoQA(reducer=KeepEvenFrames(), tokenization="slow")


def test_runs_under_a_lightning_trainer(module, items):
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    loader = torch.utils.data.DataLoader([_batch(items[:2])], batch_size=None)
    (records,) = trainer.predict(module, dataloaders=loader)
    assert _answers(records) == _answers(module.predict_step(_batch(items[:2]), 0))


def test_splice_shapes(module):
    embed = module.llava.get_input_embeddings()
    out = splice(embed, [1, 5], torch.zeros(3, 64), [7])
    assert out.shape == (6, 64) and out[2:5].abs().sum() == 0


@pytest.mark.parametrize(
    "reducer",
    [
        DyToReducer(num_frames=T, descriptor="cls"),
        SlowFastReducer(num_frames=T, slow_frames=2, fast_grid=2),
        ConcatReducer(num_frames=T),
        UniformReducer(num_frames=T, pool=2),
        DyCokeReducer(num_frames=T),
        FastVIDReducer(num_frames=T, retention=0.5),
        PruneVidReducer(num_frames=T),
        HoliTomReducer(num_frames=T, target_tokens=30),
        VidCom2Reducer(num_frames=T),
        DyToReducer(num_frames=T, target_tokens=30),
    ],
    ids=lambda r: r.config()["name"] + ("-target" if r.target_for(T, 16) else ""),
)
def test_real_reducers_end_to_end(reducer, frames):
    module = DyToVideoQA(reducer=reducer, max_new_tokens=2)
    (r,) = module.predict_step(_batch([(_qa(0), frames[0], "ok")]), 0)
    assert r["status"] == "ok", r["error"]
    assert r["reducer"] == reducer.config() and r["visual_tokens_in"] == T * 16
    if reducer.target_for(T, 16) is not None and reducer.exact_budget:
        assert r["visual_tokens_out"] == reducer.target_for(T, 16)


def test_typed_init_builds_from_a_cli_config():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(DyToVideoQA, "model")
    cfg = parser.parse_args(["--model.reducer", '{"class_path": "dyto.reduction.SlowFastReducer", '
                             '"init_args": {"num_frames": 8, "slow_frames": 2}}', "--model.max_new_tokens", "3"])
    module = parser.instantiate_classes(cfg).model
    assert isinstance(module.reducer, SlowFastReducer) and module.num_frames == 8 and module.max_new_tokens == 3
    assert isinstance(DyToVideoQA().reducer, DyToReducer)  # the default is the release DyTo


def test_generation_is_plain_greedy_whatever_the_checkpoint_says(tmp_path):
    import json as _json

    from dyto.models.tiny import save_tiny

    directory = save_tiny(tmp_path / "tiny")
    config_path = tmp_path / "tiny" / "generation_config.json"
    cfg = _json.loads(config_path.read_text()) if config_path.exists() else {}
    cfg.update(repetition_penalty=1.7, no_repeat_ngram_size=2, do_sample=True, temperature=0.9, min_new_tokens=3)
    config_path.write_text(_json.dumps(cfg))
    module = DyToVideoQA(model=str(directory), reducer=DyToReducer(num_frames=T), max_new_tokens=NEW)
    assert module.llava.generation_config.repetition_penalty == 1.7  # the checkpoint's own setting
    gen = module.generation_config
    assert (gen.do_sample, gen.num_beams, gen.repetition_penalty, gen.no_repeat_ngram_size) == (False, 1, 1.0, 0)
    assert gen.min_new_tokens is None and gen.max_new_tokens == NEW


def test_encode_ahead_gives_the_same_answers_and_encodes_each_video_once(items, monkeypatch):
    """Batches [q0,q1], [q2, failed, q3] with the second announced by the first (as the
    LookaheadDataLoader does): with encode_ahead the second batch's readable videos are encoded
    during the first step and only there."""
    from dyto.datamodules.base import UpcomingBatch

    failed = (_qa(9), None, "video_missing")
    first, second = _batch(items[:2]), _batch([items[2], failed, items[3]])
    plain = DyToVideoQA(reducer=DyToReducer(num_frames=T), max_new_tokens=NEW, encode_ahead=False)
    expected = plain.predict_step(first, 0) + plain.predict_step(second, 1)

    ahead = DyToVideoQA(reducer=DyToReducer(num_frames=T), max_new_tokens=NEW, encode_ahead=True)
    assert not plain.encodes_ahead and ahead.encodes_ahead
    encoded = []
    encode = ahead.encode_frames
    monkeypatch.setattr(ahead, "encode_frames", lambda pv, **kw: encoded.append(pv) or encode(pv, **kw))
    records = ahead.predict_step(dict(first, upcoming=UpcomingBatch(second)), 0)
    assert len(encoded) == 4 and encoded[2] is items[2][1] and encoded[3] is items[3][1]  # q0, q1, then ahead
    assert set(ahead.lookahead.pending) == {"q2", "q3"}
    records += ahead.predict_step(second, 1)
    assert len(encoded) == 4 and ahead.lookahead.pending == {}  # nothing encoded twice, nothing left over
    assert _answers(records) == _answers(expected)
    assert [r["frames_kept"] for r in records] == [r["frames_kept"] for r in expected]


def test_encode_ahead_entries_are_for_the_next_step_only(items):
    """Features encoded ahead for a batch that never comes are dropped, not used for another."""
    from dyto.datamodules.base import UpcomingBatch

    module = DyToVideoQA(reducer=DyToReducer(num_frames=T), max_new_tokens=NEW, encode_ahead=True)
    module.predict_step(dict(_batch(items[:1]), upcoming=UpcomingBatch(_batch(items[1:2]))), 0)
    assert set(module.lookahead.pending) == {"q1"}
    module.predict_step(_batch(items[2:3]), 1)  # not the announced batch
    assert module.lookahead.pending == {}


def test_encode_ahead_under_a_trainer_with_the_datamodule(tmp_path):
    """Through Lightning with the real DataModule (which attaches `upcoming`) on real clips: the
    same records with and without encode_ahead."""
    from dyto.datamodules.base import VideoQADataModule
    from dyto.records import write_jsonl

    clips = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"
    rows = [dict(_qa(i, video=name), id=f"v{i}") for i, name in enumerate(["bikes.mp4", "bigbuckbunny.mp4", "bikes.mp4"])]
    write_jsonl(tmp_path / "qa.jsonl", rows)
    runs = []
    for ahead in (False, True):
        module = DyToVideoQA(reducer=DyToReducer(num_frames=T), max_new_tokens=NEW, encode_ahead=ahead)
        dm = VideoQADataModule(str(tmp_path / "qa.jsonl"), video_root=str(clips), batch_size=2, num_workers=0, image_size=56)
        trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
        runs.append([r for batch in trainer.predict(module, datamodule=dm) for r in batch])
        assert module.lookahead.pending == {}
    assert [r["id"] for r in runs[1]] == ["v0", "v1", "v2"] and all(r["status"] == "ok" for r in runs[1])
    assert _answers(runs[0]) == _answers(runs[1])


def test_a_failed_encode_ahead_is_redone_in_its_own_step(items, monkeypatch):
    from dyto.datamodules.base import UpcomingBatch

    module = DyToVideoQA(reducer=DyToReducer(num_frames=T), max_new_tokens=NEW, encode_ahead=True)
    expected = module.predict_step(_batch(items[1:2]), 0)
    encode, calls = module.encode_frames, []

    def out_of_memory_on_the_second_call(pv, **kw):  # the second call is the look-ahead
        calls.append(pv)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (injected)")
        return encode(pv, **kw)

    monkeypatch.setattr(module, "encode_frames", out_of_memory_on_the_second_call)
    module.predict_step(dict(_batch(items[:1]), upcoming=UpcomingBatch(_batch(items[1:2]))), 0)
    assert module.lookahead.pending == {}
    records = module.predict_step(_batch(items[1:2]), 1)
    assert len(calls) == 3 and _answers(records) == _answers(expected)
