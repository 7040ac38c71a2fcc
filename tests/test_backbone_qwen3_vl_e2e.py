"""The tiny RANDOM-WEIGHT Qwen3-VL end to end: every registered reducer through ``VideoQA`` on a demo
clip, ``dyto sweep`` with a reducer x budget grid on the demo (``dyto predict`` with the demo clips
runs in tests/test_backbones.py for every family), the processor's resolution rule against the
processor's own token count, and lmms-eval's sizes written out from qwen-vl-utils' formula."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from dyto.api import question_batch
from dyto.cli import main
from dyto.datamodules.lmms_frames import lmms_frame_indices, qwen3_video_size
from dyto.datamodules.video import decode_video
from dyto.models.qwen3_vl import Qwen3_VL
from dyto.models.videoqa import VideoQA
from dyto.records import QARecord, read_jsonl
from dyto.reduction import REDUCERS, build_reducer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "dyto" / "assets" / "demo"
FRAMES = 16  # 8 temporal patches of 3x3 tokens


@pytest.fixture(scope="module")
def backbone(one_thread):
    return Qwen3_VL("tiny")


def record(video="bikes.mp4", task="open_ended", options=None):
    return QARecord(id="q", benchmark="demo", task=task, video=str(DEMO / video), question="what happens?",
                    answer="", options=options, split="test")


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_every_reducer_answers_on_qwen3_vl(backbone, name):
    """Each reducer at its own default and at half the tokens; a budget below a method's floor is
    an error record naming it (as on every backbone), anything else is answered."""
    answered = 0
    for params in ({}, {"retention": 0.5}):
        reducer = build_reducer(name, **params)
        reducer.num_frames = FRAMES
        module = VideoQA(backbone, reducer=reducer, max_new_tokens=3)
        out = module.predict_step(question_batch(module, record()))[0]
        if out["status"] == "error":
            assert "target" in out["error"], out["error"]
            continue
        assert out["status"] == "ok" and out["prediction"] is not None, out
        assert out["visual_tokens_in"] == FRAMES // 2 * 9
        assert 0 < out["visual_tokens_out"] or not params      # FastVID's int(9 * 0.1) = 0 a frame on 3x3
        answered += 1
    assert answered >= 1


def test_sweep_on_qwen3_vl_runs_a_reducer_by_budget_grid(tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--config", str(ROOT / "configs" / "demo.yaml"), "--config",
            str(ROOT / "configs" / "models" / "tiny_qwen3_vl.yaml"), "--model.max_new_tokens", "2",
            "--data.init_args.num_workers", "0", "--data.init_args.limit", "2", "--reducers", "dyto", "vcast", "tango",
            "concat", "--retention", "0.25", "0.5", "--num-frames", "16", "--out", str(out), "--resamples", "200"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 0
    table = json.loads((out / "sweep.json").read_text())
    cells = {row["cell"] for row in table["cells"]}
    assert cells >= {f"{r}-retention{b}" for r in ("dyto", "vcast", "tango", "concat") for b in ("0.25", "0.5")}
    for cell in cells:
        preds = list(read_jsonl(out / cell / "artifacts" / "predictions.jsonl"))
        assert len(preds) == 2 and all(p["model"].startswith("tiny-random-qwen3-vl") for p in preds)
        assert all(p["status"] == "ok" for p in preds) or cell.startswith("concat-retention0.25")
    assert (out / "dyto-retention0.25" / "logs" / "keyframes.png").exists()      # the cell's pictures too


def test_the_processors_resolution_rule(one_thread):
    """``video_pixels`` (or a checkpoint by default) resizes as Qwen3VLVideoProcessor does: the token
    count equals the processor's own ``get_num_of_video_patches``; the grid is the video's."""
    budget = (4096, 16 * 96 * 96)
    b = Qwen3_VL("tiny", video_pixels=budget)
    processor = Qwen3VLVideoProcessor(patch_size=16, temporal_patch_size=2, merge_size=2,
                                      size={"shortest_edge": budget[0], "longest_edge": budget[1]})
    for name in ("bikes.mp4", "bigbuckbunny.mp4"):
        video = decode_video(str(DEMO / name), FRAMES)
        pixels = b.preprocessing(video.frames)
        h, w = b.grid_for(pixels)
        patches = processor.get_num_of_video_patches(FRAMES, *video.frames.shape[1:3], {"cap_pixels_per_frame": False})
        assert FRAMES // 2 * h * w * 4 == patches and b.encode(pixels).grid == (h, w)
    module = VideoQA(b, reducer=build_reducer("vcast", num_frames=FRAMES), max_new_tokens=2)
    out = module.predict_step(question_batch(module, record("bigbuckbunny.mp4")))[0]
    assert out["status"] == "ok" and out["visual_tokens_in"] == FRAMES // 2 * 2 * 4   # 64x128 px: a 2x4 grid


def test_lmms_eval_sizes_and_frames(backbone):
    model = Qwen3_VL.lmms_eval_model(type("B", (), {"checkpoint": "Qwen/Qwen3-VL-8B-Instruct",
                                                    "preprocessing": backbone.preprocessing})())
    assert (model.model, model.num_frames, model.sampling) == ("qwen3_vl", 32, "qwen_nframes")
    assert model.max_new_tokens == 128
    assert (model.preprocessing.min_pixels, model.preprocessing.max_pixels) == (256 * 28 * 28, 1605632)
    # qwen-vl-utils 0.0.14 at 32 frames: per frame min(768*32*32, 128000*32*32*0.9/32*2) = 786432 px,
    # so 720x1280 shrinks by sqrt(921600/786432): 640 x 1152, sides multiples of 32
    assert qwen3_video_size(720, 1280, 32, 256 * 28 * 28, 1605632) == (640, 1152)
    assert lmms_frame_indices(300, 32, "qwen_nframes") == torch.linspace(0, 299, 32).round().long().tolist()
    assert lmms_frame_indices(3, 32, "qwen_nframes") == [0, 2]
    prompt = backbone.lmms_eval_prompt("Answer with the option's letter.")
    assert prompt.before.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert prompt.after.startswith("<|vision_end|>Answer with the option's letter.<|im_end|>\n<|im_start|>assistant\n")
