"""``protocol: lmms_eval`` against what lmms-eval's own code produces (tests/fixtures/lmms_eval/,
made outside the repository by running lmms-eval's, LLaVA-NeXT's, InternVL's and qwen-vl-utils'
functions on the rows and frames recorded there; PROVENANCE.md says which and how).

* the task side: every benchmark's user text for every lmms-eval model name, its
  ``max_new_tokens`` and its parser on ~1,700 replies;
* the model side: each tiny backbone's full prompt (template + frame labels) for those texts,
  under both protocols; frame indices, Qwen2.5-VL frame sizes, InternVL tiles (bitwise), and
  LLaVA-NeXT's CLIP centre crop against transformers' own processor;
* end to end: every tiny backbone through ``trainer.predict`` with ``protocol="lmms_eval"``,
  scored with the task's parser; a benchmark without an lmms-eval task is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from dyto.datamodules.base import VideoQADataModule
from dyto.datamodules.benchmarks import BENCHMARKS, get_benchmark
from dyto.datamodules.lmms_frames import qwen_nframes, qwen_video_size, tile_frames
from dyto.datamodules.prepare import prepare
from dyto.datamodules.video import sample_frame_indices
from dyto.errors import ConfigError
from dyto.evaluation.metrics import compute_metrics
from dyto.models.backbone import build_backbone
from dyto.models.videoqa import VideoQA
from dyto.records import read_qa_records
from dyto.reduction import Reduction, UniformReducer

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LMMS = FIXTURES / "lmms_eval"
DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"
TASKS = json.loads((LMMS / "tasks.json").read_text(encoding="utf-8"))
PROMPTS = json.loads((LMMS / "prompts.json").read_text(encoding="utf-8"))
FRAMES = json.loads((LMMS / "frames.json").read_text())
LMMS_BENCHMARKS = ("videomme", "egoschema", "nextqa", "activitynet_qa")
FAMILIES = ("llava_onevision", "llava_next", "internvl", "qwen2_5_vl")


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict[str, dict[str, dict]]:
    """The fixture rows through dyto's own preparers: benchmark -> id -> record."""
    d = tmp_path_factory.mktemp("lmms")
    (d / "videomme.json").write_text(json.dumps(TASKS["videomme"]["rows"]))
    sources = {"videomme": d / "videomme.json", "egoschema": FIXTURES / "qa" / "EgoSchema.csv",
               "nextqa": FIXTURES / "qa" / "NExT_QA.csv", "activitynet_qa": FIXTURES / "qa" / "ActivityNet_QA.csv"}
    out = {}
    for bench, src in sources.items():
        prepare(bench, src, d / f"{bench}.jsonl")
        out[bench] = {r.id: r.to_dict() for r in read_qa_records(d / f"{bench}.jsonl")}
    return out


def fixture_ids(bench: str) -> list[str]:
    return TASKS[bench].get("ids") or [r["question_id"] for r in TASKS[bench]["rows"]]


@pytest.fixture(scope="module")
def backbones(one_thread):
    return {name: build_backbone(name) for name in FAMILIES}


# ------------------------------------------------------------------------------ the task side
def test_every_benchmark_lmms_eval_has_a_task_is_filled():
    assert {n for n, s in BENCHMARKS.items() if s.lmms_eval is not None} >= set(LMMS_BENCHMARKS)
    assert {get_benchmark(b).lmms_eval.task for b in LMMS_BENCHMARKS} == {
        "videomme", "egoschema_subset", "nextqa_mc_test", "activitynetqa"}


@pytest.mark.parametrize("bench", LMMS_BENCHMARKS)
def test_user_text_and_decoding_length_are_lmms_evals(records, bench):
    task = get_benchmark(bench).lmms_eval
    for model, texts in TASKS[bench]["texts"].items():
        assert [task.text(records[bench][i], model) for i in fixture_ids(bench)] == texts, model
    yaml = {"videomme": "videomme/videomme.yaml", "egoschema": "egoschema/egoschema_subset.yaml",
            "nextqa": "nextqa/nextqa_mc_test.yaml", "activitynet_qa": "activitynetqa/activitynetqa_generation.yaml"}
    assert task.max_new_tokens == TASKS["max_new_tokens"][yaml[bench]]


@pytest.mark.parametrize("bench", ["videomme", "egoschema", "nextqa"])
def test_parsers_pick_what_lmms_evals_pick(records, bench):
    """lmms-eval's random draw for a reply without an option is recorded as null: unparsed here."""
    cases = TASKS["parsers"][bench]
    assert len(cases) > 400 and len({c["letter"] for c in cases}) >= 5
    parse = get_benchmark(bench).lmms_eval.parse
    got = [parse(c["reply"], records[bench][c["row"]]) for c in cases]
    want = [None if not c["letter"] else "ABCDEFGH".index(c["letter"]) for c in cases]
    wrong = [(c["reply"], g, w) for c, g, w in zip(cases, got, want) if g != w]
    assert not wrong, wrong[:5]


# ------------------------------------------------------------------------------ the model side
def full_prompt(backbones, family: str, text: str, frames: int) -> str:
    backbone = backbones[family]
    prompt = backbone.lmms_eval_prompt(text)
    if family == "internvl":  # its visual layout writes the Frame{k} labels around each block
        width = backbone.model.config.text_config.hidden_size
        layout, _ = backbone.visual_layout(Reduction(torch.zeros(frames, width), list(range(frames)), [1] * frames))
        return prompt.before + layout + prompt.after
    return prompt.before + ("<|video_pad|>" if family == "qwen2_5_vl" else "<image>") + prompt.after


GOLDEN = {"llava_onevision": "llava_onevision", "llava_next": "llava_vid_vicuna_v1", "internvl": "internvl3_filled",
          "qwen2_5_vl": "qwen2_5_vl"}


@pytest.mark.parametrize("family", FAMILIES)
def test_full_prompts_are_the_model_files(backbones, family):
    frames = PROMPTS["internvl3_frames"]
    got = [full_prompt(backbones, family, text, frames) for text in PROMPTS["contexts"]]
    assert got == PROMPTS[GOLDEN[family]]
    assert PROMPTS["llava_vid_qwen_1_5"] == PROMPTS["llava_onevision"]  # LLaVA-Video: the same template


@pytest.mark.parametrize("bench", LMMS_BENCHMARKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_each_backbone_and_benchmark_under_both_protocols(backbones, records, family, bench):
    """Reference: the reference's wording (its goldens: tests/test_backbones.py GOLDEN_PROMPTS);
    lmms_eval: the model file's template around the task's text for that model's name."""
    backbone, qa = backbones[family], records[bench][fixture_ids(bench)[0]]
    reference = backbone.prompt(qa["task"], qa["question"], qa["options"])
    assert not reference.mode.startswith("lmms_eval:") and "Answer:" in reference.after
    name = backbone.lmms_eval_model().model
    text = get_benchmark(bench).lmms_eval.text(qa, name)
    lmms = backbone.lmms_eval_prompt(text)
    assert lmms.mode.startswith("lmms_eval:") and text in lmms.after and "Answer: " not in lmms.after
    if name in TASKS[bench]["texts"]:
        assert text == TASKS[bench]["texts"][name][0]


def test_frame_indices_are_the_model_files():
    for case in FRAMES["sampling"]:
        assert sample_frame_indices(case["total"], case["n"], case["rule"], case["fps"]) == case["indices"], case
    for case in FRAMES["qwen"]:
        assert sample_frame_indices(case["total"], 32, "qwen_fps", case["fps"]) == case["indices"], case
        nframes = qwen_nframes(case["total"], case["fps"])
        assert nframes == case["nframes"]
        size = qwen_video_size(case["height"], case["width"], nframes, case["min_pixels"], case["max_pixels"])
        assert list(size) == case["size"], case
    assert len({tuple(c["size"]) for c in FRAMES["qwen"]}) >= 5  # the budget depends on the clip's length


def test_internvl_tiles_are_dynamic_preprocess_bit_for_bit():
    frames = np.load(LMMS / "frames.npz")
    for case in FRAMES["tiles"]:
        stacked = tile_frames(frames[case["input"]][None], case["max_num"], case["size"])[0]
        assert list(stacked.shape) == case["shape"] and hashlib.sha256(stacked.tobytes()).hexdigest() == case["sha256"]


def test_llava_next_center_crop_is_the_clip_processors(backbones):
    from transformers import CLIPImageProcessor

    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 70, 3), dtype=np.uint8)
    ours = backbones["llava_next"].lmms_eval_model().preprocessing
    size = ours.size[0]
    hf = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                            image_mean=list(ours.mean), image_std=list(ours.std))
    want = torch.as_tensor(np.asarray(hf(list(frames), return_tensors="np")["pixel_values"]))
    assert torch.equal(ours(frames), want)


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def runs(backbones, tmp_path_factory):
    """Every tiny backbone on one VideoMME-style demo question (bikes.mp4: 250 frames, 25 fps, 640x272)."""
    path = tmp_path_factory.mktemp("demo") / "q.jsonl"
    path.write_text((DEMO / "questions_lmms_eval.jsonl").read_text().splitlines()[0] + "\n")
    out = {}
    for family in FAMILIES:
        module = VideoQA(backbone=backbones[family], reducer=UniformReducer(num_frames=8, pool=1), protocol="lmms_eval")
        dm = VideoQADataModule(str(path), video_root=str(DEMO), num_workers=0)
        trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                          enable_checkpointing=False)
        out[family] = module, dm, [r for batch in trainer.predict(module, datamodule=dm) for r in batch]
    return out


# frames each model file reads from a 10 s clip: 32; 1 fps -> 10; 2 fps -> 20 (all kept)
EXPECTED_FRAMES = {"llava_onevision": 32, "internvl": 32, "llava_next": 10, "qwen2_5_vl": 20}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_tiny_backbone_runs_the_protocol(runs, family):
    module, dm, (record,) = runs[family]
    assert record["status"] == "ok" and record["protocol"] == "lmms_eval", record
    assert record["conv_mode"] == f"lmms_eval:{module.lmms_model.template}" and record["prediction"] is not None
    assert record["frames_sampled"] == EXPECTED_FRAMES[family] and dm.num_frames == module.lmms_model.num_frames
    assert dm.sampling == module.lmms_model.sampling and dm.preprocessing == module.lmms_model.preprocessing
    fingerprint = module.fingerprint()
    assert fingerprint["protocol"] == "lmms_eval" and fingerprint["lmms_eval"] == module.lmms_model.config()
    assert module.generation_config.max_new_tokens == module.max_new_tokens  # the task's length is per group
    metrics = compute_metrics([record])["benchmarks"]["videomme"]["multiple_choice"]
    assert metrics["parse_mode"] == "lmms_eval:videomme" and metrics["items"] == 1


def test_frames_take_each_videos_own_size(runs):
    """bikes.mp4 is 640x272: Qwen2.5-VL's smart_resize keeps the aspect, InternVL makes 2 tiles + a thumbnail."""
    qwen, dm, (record,) = runs["qwen2_5_vl"]
    pixels = next(iter(dm.predict_dataloader()))["pixel_values"][0]
    h, w = qwen.backbone.grid_for(pixels)
    assert w > 2 * h and record["visual_tokens_in"] == 20 // 2 * h * w
    internvl, dm, (record,) = runs["internvl"]
    g = internvl.backbone.grid[0]
    assert record["visual_tokens_in"] == 32 * 3 * g * g


def test_reference_records_say_so_and_keep_their_fingerprint(backbones):
    module = VideoQA(backbone=backbones["llava_onevision"], reducer=UniformReducer(num_frames=4, pool=1))
    assert module.sampling is None and "protocol" not in module.fingerprint() and module.lmms_model is None


def test_a_benchmark_without_a_task_is_refused_before_predicting(backbones):
    module = VideoQA(backbone=backbones["llava_onevision"], reducer=UniformReducer(num_frames=4, pool=1),
                     protocol="lmms_eval")
    dm = VideoQADataModule(str(DEMO / "questions.jsonl"), video_root=str(DEMO), num_workers=0)
    dm.trainer = type("T", (), {"lightning_module": module})()
    with pytest.raises(ConfigError, match="lmms-eval has no task for.*questions_lmms_eval"):
        dm.setup("predict")
    with pytest.raises(ConfigError, match=r"protocol: 'lmms_eval_x' is not allowed; expected reference \| lmms_eval"):
        VideoQA(backbone=backbones["llava_onevision"], protocol="lmms_eval_x")


def test_preflight_refuses_it_before_any_weights_load():
    from dyto.preflight import PreflightError, preflight

    def config(records):
        return {"trainer": {"accelerator": "cpu"}, "model": {"protocol": "lmms_eval", "backbone": "llava_onevision"},
                "data": {"class_path": "dyto.datamodules.VideoQADataModule",
                         "init_args": {"records": str(DEMO / records), "video_root": str(DEMO)}}}

    with pytest.raises(PreflightError, match="benchmark 'demo' has no lmms-eval task.*videomme"):
        preflight(config("questions.jsonl"))
    preflight(config("questions_lmms_eval.jsonl"))  # VideoMME rows: fine


def test_llava_video_pooling_and_row_newlines_are_llava_nexts(backbones):
    """LLaVA-NeXT's get_2dPool (average, stride 2) and add_token_per_grid (fixture: llava_video.json)."""
    from dyto.models.llava_onevision import LlavaOnevision, grid_newlines, row_ids
    from dyto.reduction import ConcatReducer

    fx = json.loads((LMMS / "llava_video.json").read_text())
    video = LlavaOnevision(mm_spatial_pool_mode="average", mm_newline_position="grid", lmms_eval_as="llava_vid")
    assert video.patch_grid(video.preprocessing.size) == (fx["side"], fx["side"]) and video.grid == (3, 3)
    pooled = video.pool(torch.tensor(fx["features"]))
    assert torch.allclose(pooled, torch.tensor(fx["pooled"]), atol=1e-6)
    whole = ConcatReducer(num_frames=3)(pooled, video.grid)
    for reduction in (whole, Reduction(whole.tokens, whole.frames_kept, whole.tokens_per_frame)):  # positions or none
        rows = grid_newlines(reduction.tokens, row_ids(reduction, video.grid), torch.tensor(fx["newline"]))
        assert torch.allclose(rows, torch.tensor(fx["with_row_newlines"]), atol=1e-6)
    assert video.lmms_eval_model().model == "llava_vid" and video.fingerprint()["pooling"] == "average_2x"
