"""The tiny RANDOM-WEIGHT Qwen2.5-VL through the generic VideoQA module, Lightning and the real
DataModule on the demo clips: every record is answered, and an answer equals the backbone's own
path (encode -> reduce -> build_input -> generate) on the same frames."""

from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from dyto.datamodules.base import VideoQADataModule
from dyto.models.backbone import build_backbone, list_backbones
from dyto.models.qwen2_5_vl import Qwen2_5_VL
from dyto.models.videoqa import VideoQA
from dyto.reduction import ConcatReducer, DyToReducer

DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"
FRAMES = 8  # 4 temporal patches of 3x3 tokens


def run(module):
    dm = VideoQADataModule(str(DEMO / "questions.jsonl"), video_root=str(DEMO), batch_size=2, num_workers=0)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    return dm, [r for batch in trainer.predict(module, datamodule=dm) for r in batch]


@pytest.fixture(scope="module")
def concat_run(one_thread):
    module = VideoQA(backbone="qwen2_5_vl", reducer=ConcatReducer(FRAMES), max_new_tokens=6)
    return module, *run(module)


def test_registered_and_built_by_name():
    assert "qwen2_5_vl" in list_backbones()
    backbone = build_backbone("qwen2_5_vl", seed=1)
    assert isinstance(backbone, Qwen2_5_VL) and backbone.run_label == "tiny-qwen2_5_vl"
    assert backbone.preprocessing.frames_per_patch == 2 and backbone.preprocessing.size == (84, 84)


def test_demo_through_trainer_predict(concat_run):
    module, dm, records = concat_run
    assert len(records) == 5 and all(r["status"] == "ok" for r in records), records
    assert {r["visual_tokens_in"] for r in records} == {FRAMES // 2 * 9}
    assert {r["visual_tokens_out"] for r in records} == {FRAMES // 2 * 9}
    assert {r["conv_mode"] for r in records} == {"chat_open_ended", "chat_multiple_choice"}
    assert all(r["prediction"] for r in records)
    # the first record again, by hand, from the frames the DataModule made
    batch = next(iter(dm.predict_dataloader()))
    backbone, qa = module.backbone, batch["records"][0]
    feats = backbone.encode(batch["pixel_values"][0])
    item = backbone.build_input(backbone.prompt(qa["task"], qa["question"], qa["options"]),
                                module.reducer(feats.features, feats.grid))
    (text,) = backbone.generate([item], module.generation_config)
    assert records[0]["id"] == qa["id"] and records[0]["prediction"] == text.strip()


def test_an_odd_frame_count_is_refused_by_the_module():
    with pytest.raises(ValueError, match="temporal patch"):
        VideoQA(backbone="qwen2_5_vl", reducer=ConcatReducer(7))


def test_dyto_through_the_module(concat_run):
    """DyTo places merged tokens by Reduction.positions; a reducer without them gets an error record."""
    module = VideoQA(backbone=concat_run[0].backbone, reducer=DyToReducer(budget=12, num_frames=FRAMES),
                     max_new_tokens=6)
    _, records = run(module)
    probe = module.reducer(module.backbone.encode(next(iter(concat_run[1].predict_dataloader()))["pixel_values"][0])
                           .features, module.backbone.grid)
    if getattr(probe, "positions", None) is None:
        assert all(r["status"] == "error" and "Reduction.positions" in r["error"] for r in records)
    else:
        assert all(r["status"] == "ok" for r in records), records
        assert all(r["visual_tokens_out"] < r["visual_tokens_in"] for r in records)


@pytest.mark.parametrize("overflow", ["too_long", "truncate"])
def test_overflow_keeps_positions_aligned(concat_run, overflow):
    """A cut input keeps one M-RoPE id per embedding row; too long inputs get their status."""
    backbone = concat_run[0].backbone
    module = VideoQA(backbone=backbone, reducer=ConcatReducer(FRAMES), max_new_tokens=4, max_length=60,
                     overflow=overflow)
    batch = next(iter(concat_run[1].predict_dataloader()))
    (record, _) = module.predict_step(batch)
    if overflow == "too_long":
        assert record["status"] == "too_long" and record["prompt_tokens"] > 56
    else:
        assert record["status"] == "ok" and record["prompt_tokens"] == 60 and "truncated" in record["error"]
