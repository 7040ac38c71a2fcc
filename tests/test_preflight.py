"""`dyto predict` stops before any weights load, in one line naming the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from dyto.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_model_may_load(monkeypatch):
    """Any transformers model built (tiny or from a checkpoint) fails the test."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("a model was built before the config was checked")

    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", refuse)
    monkeypatch.chdir(REPO)


def stop_line(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main(["predict", *argv])
    message = str(stop.value.code)
    assert message.startswith("dyto: ") and "\n" not in message, message
    return message


def test_missing_records_file_names_the_prepare_command(tmp_path):
    msg = stop_line(["--config", "configs/trainer/cpu.yaml", "--config", "configs/models/tiny.yaml",
                     "--config", "configs/benchmarks/nextqa.yaml", "--data.records", str(tmp_path / "nextqa.jsonl"),
                     "--data.video_root", str(tmp_path)])
    assert f"records file {tmp_path / 'nextqa.jsonl'} does not exist" in msg
    assert f"dyto prepare nextqa --qa-file <its QA sheet> --out {tmp_path / 'nextqa.jsonl'} --video-root {tmp_path}" in msg


def test_missing_video_folder(tmp_path):
    msg = stop_line(["--config", "configs/demo_random.yaml", "--data.init_args.video_root", str(tmp_path / "nowhere")])
    assert f"video folder {tmp_path / 'nowhere'} does not exist (data.video_root)" in msg


def test_gpu_config_on_a_machine_without_one():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # CI and the dev machines have none
    msg = stop_line(["--config", "configs/demo_random.yaml", "--config", "configs/trainer/gpu.yaml"])
    assert "asks for a GPU (trainer.accelerator: gpu) but torch sees none" in msg and "cpu.yaml" in msg


def test_checkpoint_neither_local_nor_cached_while_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    msg = stop_line(["--config", "configs/demo_random.yaml", "--model.backbone.init_args.checkpoint",
                     "llava-hf/llava-v1.6-vicuna-7b-hf"])
    assert ("checkpoint llava-hf/llava-v1.6-vicuna-7b-hf (model.backbone.init_args.checkpoint) is not in the "
            "Hugging Face cache") in msg
    assert "hf download llava-hf/llava-v1.6-vicuna-7b-hf" in msg


def test_checkpoint_folder_that_does_not_exist(tmp_path):
    msg = stop_line(["--config", "configs/demo_random.yaml", "--model.backbone.init_args.checkpoint", str(tmp_path / "my-llava")])
    assert f"checkpoint folder {tmp_path / 'my-llava'} does not exist (model.backbone.init_args.checkpoint)" in msg


def test_several_problems_are_listed_together(tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", "configs/demo_random.yaml", "--data.init_args.records", str(tmp_path / "q.jsonl"),
              "--data.init_args.video_root", str(tmp_path / "v")])
    lines = str(stop.value.code).splitlines()
    assert len(lines) == 2 and all(line.startswith("dyto: ") for line in lines)


def test_unknown_benchmark_name(tmp_path):
    msg = stop_line(["--config", "configs/demo_random.yaml", "--data.init_args.benchmark", "nextqa_v9"])
    assert "unknown benchmark 'nextqa_v9' (data.init_args.benchmark); known: " in msg and "nextqa," in msg


def test_unknown_backbone_name():
    msg = stop_line(["--config", "configs/demo_random.yaml", "--model.backbone", "llava_nxt"])
    assert "unknown backbone 'llava_nxt' (model.backbone); known: " in msg and "llava_next" in msg
