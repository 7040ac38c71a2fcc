"""Every registered backbone through the interface, with its tiny RANDOM-WEIGHT model (real
transformers classes, CPU): encode shapes, the model's own vision path, golden prompts, input
building, the identity-reducer answer against the model's own ``generate``, determinism, and a
demo run through ``trainer.predict`` on the real demo clips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from dyto.datamodules import VideoQADataModule
from dyto.datamodules.base import length_order
from dyto.models import VideoQA
from dyto.models.backbone import BACKBONES, LLMInput, build_backbone, list_backbones
from dyto.models.prompts import chat_layout, render_chat
from dyto.records import read_jsonl
from dyto.reduction import ConcatReducer, DyToReducer

DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"
FAMILIES = list_backbones()
T = 4


@pytest.fixture(scope="module")
def backbones(one_thread):
    return {name: build_backbone(name) for name in FAMILIES}


def reduce_with_extras(backbone, pixels, reducer):
    """encode -> reduce, the encoder's extra per-token tensors (Qwen3-VL's DeepStack) reduced alike."""
    out = backbone.encode(pixels)
    return reducer(out.features, backbone.grid).reduce_extras(out.extras)


def frames_for(backbone, t: int = T, seed: int = 0) -> torch.Tensor:
    h, w = backbone.preprocessing.size
    return torch.randn(t, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_the_registry_holds_every_family():
    assert {"llava_next", "llava_onevision", "internvl"} <= set(FAMILIES)
    assert all(BACKBONES[name].name == name for name in FAMILIES)
    with pytest.raises(ValueError, match="unknown backbone 'nope'.*llava_next"):
        build_backbone("nope")


@pytest.mark.parametrize("name", FAMILIES)
def test_encode_shape_grid_and_chunking(backbones, name):
    b = backbones[name]
    pixels = frames_for(b)
    out = b.encode(pixels)
    per_patch = b.preprocessing.frames_per_patch
    h, w = b.grid
    assert out.grid == b.grid
    assert out.features.shape == (T // per_patch, h * w, b.input_embeddings().weight.shape[1])
    assert out.features.dtype == b.dtype and torch.isfinite(out.features).all()
    chunked = b.vision_chunk_size
    b.vision_chunk_size = 1
    try:
        assert torch.allclose(b.encode(pixels).features, out.features, atol=1e-6)
    finally:
        b.vision_chunk_size = chunked


def test_onevision_frames_are_the_models_own_video_features(backbones):
    """SigLIP (no CLS) -> projector -> 2x bilinear pool: 7x7 -> 4x4 here, as 27x27 -> 14x14 at 384 px."""
    b = backbones["llava_onevision"]
    pixels = frames_for(b, 5)
    config = b.model.config
    own = b.model.model.get_video_features(pixels[None], vision_feature_layer=config.vision_feature_layer,
                                           vision_feature_select_strategy=config.vision_feature_select_strategy)
    own = own.pooler_output[0]  # [T*16 + 1, D]: the frames, then one image_newline
    ours = b.encode(pixels)
    assert ours.grid == (4, 4) and ours.cls is None
    assert torch.equal(ours.features.reshape(-1, ours.features.shape[-1]), own[:-1])
    assert torch.equal(b.model.model.image_newline, own[-1])
    with pytest.raises(ValueError, match="no CLS"):
        b.encode(pixels, with_cls=True)


def test_internvl_frames_are_the_models_own_image_features(backbones):
    """One tile per frame: InternViT, CLS dropped, pixel shuffle 0.5 (8x8 -> 4x4; 32x32 -> 16x16 at 448 px)."""
    b = backbones["internvl"]
    pixels = frames_for(b, 5)
    config = b.model.config
    own = b.model.model.get_image_features(pixels, vision_feature_layer=config.vision_feature_layer,
                                           vision_feature_select_strategy=config.vision_feature_select_strategy)
    ours = b.encode(pixels)
    assert ours.grid == (4, 4) and torch.equal(ours.features, own.pooler_output)
    with pytest.raises(ValueError, match="CLS"):
        b.encode(pixels, with_cls=True)


_SYS_OE = "<|im_start|>system\nAnswer the question.<|im_end|>\n<|im_start|>user\n"
_SYS_MC = ("<|im_start|>system\nYou are a helpful expert in video analysis. Select the best option to answer the "
           "question.<|im_end|>\n<|im_start|>user\n")
_INSTR = ("The input consists of a sequence of key frames from a video. Answer concisely with overall content and "
          "context of the video, highlighting any significant events, characters, or objects that appear throughout "
          "the video.")
_CHAT_OE = (_SYS_OE, f"\n{_INSTR} Question: what happens?<|im_end|>\n<|im_start|>assistant\nAnswer: In the video,")
_CHAT_MC = (_SYS_MC, "\nThe input consists of a sequence of key frames from a video. Question: where is it?\nOptions:\n"
            "(A) a street\n(B) a kitchen\nOnly give the best option.<|im_end|>\n<|im_start|>assistant\nAnswer: Best option:(")
GOLDEN_PROMPTS = {
    "llava_next": {
        "open_ended": ("image_seq_v3", "USER: ", f"\n{_INSTR} Question: what happens? \nASSISTANT:\nAnswer: In the video,"),
        "multiple_choice": (
            "multiple_choice_allvideo_v4",
            "You are a helpful expert in video analysis. Select the best option to answer the question. USER: ",
            "\nThe input consists of a sequence of key frames from a video.\nQuestion: where is it?\nOptions:\n"
            "(A) a street\n(B) a kitchen\nOnly give the best option. \nASSISTANT:\nAnswer: Best option:("),
    },
    "llava_onevision": {"open_ended": ("chat_open_ended", *_CHAT_OE), "multiple_choice": ("chat_multiple_choice", *_CHAT_MC)},
    "internvl": {"open_ended": ("chat_open_ended", *_CHAT_OE), "multiple_choice": ("chat_multiple_choice", *_CHAT_MC)},
}
QUESTIONS = {"open_ended": ("what happens?", None), "multiple_choice": ("where is it?", ["a street", "a kitchen"])}


@pytest.mark.parametrize("task", sorted(QUESTIONS))
@pytest.mark.parametrize("name", sorted(GOLDEN_PROMPTS))
def test_golden_prompts(backbones, name, task):
    prompt = backbones[name].prompt(task, *QUESTIONS[task])
    assert (prompt.mode, prompt.before, prompt.after) == GOLDEN_PROMPTS[name][task]


def test_llava_next_prompt_family_is_explicit_or_guessed():
    from dyto.models.llava_next import LlavaNext

    assert LlavaNext(prompt_family="34b").prompt("open_ended", "q").mode == "image_seq_34b_v3"
    assert LlavaNext().prompt("multiple_choice", "q", ["a"]).mode == "multiple_choice_allvideo_v4"  # "tiny": 7b
    with pytest.raises(ValueError, match="prompt_family"):
        LlavaNext(prompt_family="13b")


class _TypedOnly:
    """A processor-style template that only renders typed content; and a plain-string one."""

    typed = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
             "{% if c['type'] == 'video' %}<video>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    plain = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.parametrize("template", [_TypedOnly.typed, _TypedOnly.plain], ids=["typed", "string"])
def test_render_chat_takes_typed_or_string_templates(backbones, template):
    layout = chat_layout("open_ended", "what happens?")
    before, after = render_chat(backbones["internvl"].tokenizer, layout, "<video>", template)
    assert (before, after) == _CHAT_OE
    with pytest.raises(ValueError, match="exactly one"):  # a template that drops the content
        render_chat(backbones["internvl"].tokenizer, layout, "<video>", "{% for m in messages %}{{ m['role'] }}{% endfor %}")


@pytest.mark.parametrize("name", FAMILIES)
def test_build_input_places_the_visual_tokens_between_the_texts(backbones, name):
    b = backbones[name]
    features = b.encode(frames_for(b)).features
    reduction = reduce_with_extras(b, frames_for(b), ConcatReducer(num_frames=T))
    prompt = b.prompt("open_ended", "what happens?")
    inp = b.build_input(prompt, reduction)
    assert isinstance(inp, LLMInput) and inp.embeds.shape[1] == features.shape[-1]
    rows = reduction.tokens.shape[0]
    assert inp.visual_tokens >= rows
    # every reduced token appears as one row of the input, in order
    found = [(inp.embeds == tok).all(dim=1).nonzero().flatten().tolist() for tok in reduction.tokens]
    assert all(len(f) >= 1 for f in found)
    first = [f[0] for f in found]
    assert first == sorted(first)
    cut = inp.truncated(10)
    assert cut.length == 10 and torch.equal(cut.embeds, inp.embeds[:10])


# The chat template of the InternVL "-hf" checkpoints (OpenGVLab/InternVL3-*-hf), as transformers'
# convert_internvl_weights_to_hf.py writes it into them.
INTERNVL_HF_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\\n' }}{% endif %}"
)


def _internvl_processor_text(b, task, question, options, frames: int) -> str:
    """The prompt as the checkpoint's template renders the conversation and as transformers'
    ``InternVLProcessor`` expands its ``<video>`` (its own ``replace_video_token``; the processor
    itself cannot be built here: its video processor needs torchvision)."""
    from types import SimpleNamespace

    from transformers import InternVLProcessor

    layout = chat_layout(task, question, options)
    messages = [{"role": "system", "content": [{"type": "text", "text": layout.system}]},
                {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": layout.user}]}]
    text = b.tokenizer.apply_chat_template(messages, chat_template=INTERNVL_HF_TEMPLATE, tokenize=False,
                                           add_generation_prompt=True) + layout.answer_prefix
    tokens = SimpleNamespace(start_image_token="<img>", end_image_token="</img>", image_token="<IMG_CONTEXT>",
                             image_seq_length=b.grid[0] * b.grid[1])
    video = InternVLProcessor.replace_video_token(tokens, {"pixel_values_videos": [torch.zeros(frames)]}, 0)
    assert text.count("<video>") == 1
    return text.replace("<video>", video)


def _own_path_answer(b, name, pixels, prompt, new_tokens, question=None):
    """The model's own multimodal forward: expanded placeholder ids + pixels, HF generate."""
    tok, t = b.tokenizer, pixels.shape[0]
    n = b.grid[0] * b.grid[1]
    if name == "llava_onevision":
        text = prompt.before + "<video>" * (t * n + 1) + prompt.after
        kwargs = {"pixel_values_videos": pixels[None]}
    else:
        text = _internvl_processor_text(b, *question, t)
        assert "</img>\nThe input" in text and "</img>\n\n" not in text
        kwargs = {"pixel_values": pixels}
    ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
    config = b.generation_defaults()
    config.update(do_sample=False, max_new_tokens=new_tokens)
    out = b.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config, **kwargs)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("name", ["llava_onevision", "internvl"])
def test_identity_reducer_answers_as_the_models_own_video_path(backbones, name):
    b = backbones[name]
    pixels = frames_for(b, 3)
    question = ("multiple_choice", "where is it?", ["a street", "a kitchen"])
    prompt = b.prompt(*question)
    reduction = ConcatReducer(num_frames=3)(b.encode(pixels).features, b.grid)
    config = b.generation_defaults()
    config.update(do_sample=False, max_new_tokens=8)
    ours = b.generate([b.build_input(prompt, reduction)], config)[0]
    assert ours == _own_path_answer(b, name, pixels, prompt, 8, question)
    assert len(ours) > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_same_seed_same_answers_other_seed_other_weights(name, one_thread):
    first, again, other = build_backbone(name), build_backbone(name), build_backbone(name, seed=1)
    for x, y in zip(first.model.parameters(), again.model.parameters()):
        assert torch.equal(x, y)
    assert any(not torch.equal(x, y) for x, y in zip(first.model.parameters(), other.model.parameters()))
    pixels = frames_for(first)
    module = [VideoQA(b, reducer=DyToReducer(budget=24, num_frames=T), max_new_tokens=6) for b in (first, again)]
    batch = {"ids": ["a"], "records": [{"id": "a", "task": "open_ended", "question": "what happens?"}],
             "pixel_values": [pixels], "frame_indices": [list(range(T))], "status": ["ok"], "error": [""],
             "decode_ms": [0.0]}
    answers = [m.predict_step(batch)[0] for m in module]
    assert answers[0]["status"] == "ok", answers[0]["error"]
    assert answers[0]["prediction"] == answers[1]["prediction"]
    assert answers[0]["visual_tokens_out"] == answers[1]["visual_tokens_out"] < answers[0]["visual_tokens_in"]


@pytest.mark.parametrize("name", FAMILIES)
def test_demo_runs_through_trainer_predict(name, tmp_path, one_thread):
    module = VideoQA(name, reducer=DyToReducer(budget=48, num_frames=16), max_new_tokens=4)
    dm = VideoQADataModule(str(DEMO / "questions.jsonl"), video_root=str(DEMO), batch_size=2, num_workers=0)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False)
    records = [r for batch in trainer.predict(module, datamodule=dm) for r in batch]
    assert dm.image_size == module.image_size == module.preprocessing.size[0]
    assert dm.image_mean == module.preprocessing.mean
    # batch_size 2: data.order auto = length, so the shard runs shortest question first
    assert [r["id"] for r in records] == [dm.records[i].id for i in length_order(dm.records)]
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in read_jsonl(DEMO / "questions.jsonl"))
    for r in records:
        assert r["status"] == "ok", r["error"]
        patches = 16 // module.preprocessing.frames_per_patch  # Qwen2.5-VL: 2 frames per temporal patch
        assert r["visual_tokens_out"] < r["visual_tokens_in"] == patches * module.grid[0] * module.grid[1]
        assert r["prediction"] is not None and r["model"] == module.model_name
    assert all(r["prediction2"] is not None for r in records if r["task"] == "vcg_consistency")
    fp = module.fingerprint()
    assert fp["backbone"] == name and fp["reducer"]["budget"] == 48 and fp["checkpoint"] == module.model_name


def test_fingerprint_keeps_the_pre_backbone_entries_and_adds_the_backbones(one_thread):
    from dyto.models.llava_next import DyToVideoQA

    module = DyToVideoQA(reducer=DyToReducer(num_frames=T), max_new_tokens=3)
    fp = module.fingerprint()
    old = {"checkpoint", "revision", "dtype", "attn_implementation", "vision_feature_layer", "rope_scaling",
           "reducer", "conv_mode", "tokenization", "generation", "max_length", "overflow", "encode_ahead", "seed"}
    assert old <= set(fp) and fp["backbone"] == "llava_next" and fp["prompt_family"] == "7b"
    assert fp["dtype"] == "float32" and fp["attn_implementation"] == "sdpa" and fp["encode_ahead"] is False
    assert DyToVideoQA(reducer=DyToReducer(num_frames=T), max_new_tokens=3, prompt_family="34b").fingerprint() != fp
    chat = VideoQA("internvl", reducer=DyToReducer(num_frames=T)).fingerprint()
    assert chat["backbone"] == "internvl" and chat["frame_labels"] is True and len(chat["chat_template_sha256"]) == 64
    assert VideoQA("internvl", reducer=DyToReducer(num_frames=T)).hparams["model"] == "tiny-internvl"


@pytest.mark.parametrize("name", ["llava_onevision", "internvl"])
def test_dyto_demo_with_another_backbone(capsys, name, one_thread):
    from dyto.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--backbone", name, "--video", str(DEMO / "bikes.mp4"), "--question", "what is this?",
              "--options", "a street", "a kitchen", "--reducer-arg", "budget=96", "--reducer-arg", "num_frames=20",
              "--max-new-tokens", "4"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"tiny-random-{name.replace('_', '-')} (random weights)" in out
    kept = re.search(r"kept (\d+): \[([\d, ]*)\] \(video frame numbers\)", out)
    assert kept and int(kept.group(1)) == len(kept.group(2).split(","))
    assert re.search(r"^answer:", out, re.M)


@pytest.mark.parametrize("name", ["llava_onevision", "internvl"])
def test_a_saved_checkpoint_loads_with_its_template_and_processor_settings(backbones, name, tmp_path):
    """The from_pretrained path: weights, tokenizer + chat template, and the processor config's mean/std."""
    import json

    tiny = backbones[name]
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    size = tiny.preprocessing.size
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.25, 0.5, 0.75], "image_std": [0.5, 0.5, 0.5], "size": {"height": size[0], "width": size[1]}}))
    loaded = build_backbone(name, checkpoint=str(tmp_path))
    assert loaded.model_name == f"{tmp_path} (random weights)" and loaded.run_label == str(tmp_path)
    assert loaded.preprocessing.mean == (0.25, 0.5, 0.75) and loaded.preprocessing.size == size
    assert loaded.chat_template == tiny.chat_template
    prompt = tiny.prompt("open_ended", "what happens?")
    assert loaded.prompt("open_ended", "what happens?") == prompt
    reduction = reduce_with_extras(tiny, frames_for(tiny, 2), ConcatReducer(num_frames=2))
    config = tiny.generation_defaults()
    config.update(do_sample=False, max_new_tokens=5)
    assert loaded.generate([loaded.build_input(prompt, reduction)], config) == \
        tiny.generate([tiny.build_input(prompt, reduction)], config)


POOL = [("open_ended", "what?", None),
        ("multiple_choice", "where is it, and what happens later in the clip?", ["a street", "a kitchen", "a park"]),
        ("open_ended", "who rides?", None),
        ("multiple_choice", "what colour is it, and why does it change near the end?", ["red", "blue", "green", "white"]),
        ("open_ended", "what happens after the second cut, and who is seen there?", None)]


@pytest.mark.parametrize("name", FAMILIES)
def test_batched_generation_equals_one_at_a_time(backbones, name):
    """Left padding with the mask: prompts of different lengths answer as they do alone, whether
    generated all at once, in length-aware groups of 2 or in input-order groups of 2, through the
    module's ``generate`` (answers come back in input order)."""
    b = backbones[name]
    reduction = reduce_with_extras(b, frames_for(b), ConcatReducer(num_frames=T))
    inputs = [b.build_input(b.prompt(task, q, options), reduction) for task, q, options in POOL]
    assert len({i.length for i in inputs}) == len(inputs)
    config = b.generation_defaults()
    config.update(do_sample=False, max_new_tokens=6)
    alone = [b.generate([i], config)[0] for i in inputs]
    assert b.generate(inputs[:2], config) == alone[:2]
    module = VideoQA(b, reducer=ConcatReducer(num_frames=T), max_new_tokens=6)
    assert module.generation_batch_size == "auto" and module.batch_order == "length"
    for size, order in ((None, "length"), ("auto", "length"), (2, "length"), (2, "input"), (1, "length")):
        module.generation_batch_size, module.batch_order = size, order
        assert [text for text, _, _ in module.generate(inputs)] == [a.strip() for a in alone], (size, order)
