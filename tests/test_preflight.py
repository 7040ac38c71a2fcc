"""`dyto predict` stops before any weights load, in one line naming the problem and the fix."""

from __future__ import annotations

import contextlib
import io
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


def stop_lines(argv: list[str]) -> list[str]:
    """The ``dyto: `` lines `dyto predict` ends with (exit status 2)."""
    err = io.StringIO()
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(err):
        main(["predict", *argv])
    assert stop.value.code == 2
    return [line for line in err.getvalue().splitlines() if line.startswith("dyto: ")]


def stop_line(argv: list[str]) -> str:
    lines = stop_lines(argv)
    assert len(lines) == 1, lines
    return lines[0]


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
    lines = stop_lines(["--config", "configs/demo_random.yaml", "--data.init_args.records", str(tmp_path / "q.jsonl"),
                        "--data.init_args.video_root", str(tmp_path / "v")])
    assert len(lines) == 2


def test_unknown_benchmark_name(tmp_path):
    msg = stop_line(["--config", "configs/demo_random.yaml", "--data.init_args.benchmark", "nextqa_v9"])
    assert "unknown benchmark 'nextqa_v9' (data.init_args.benchmark); known: " in msg and "nextqa," in msg


def test_unknown_backbone_name():
    msg = stop_line(["--config", "configs/demo_random.yaml", "--model.backbone", "llava_nxt"])
    assert "unknown backbone 'llava_nxt' (model.backbone); known: " in msg and "llava_next" in msg


@pytest.fixture
def no_judge_env(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_gpt_scorer_without_key_or_base_url_stops_before_the_model_loads(no_judge_env, tmp_path):
    msg = stop_line(["--config", "configs/demo.yaml", "--evaluation.scorer", "gpt",
                     "--output.output_dir", str(tmp_path)])
    assert msg.startswith("dyto: evaluation.scorer is gpt but no judge endpoint is configured")
    assert "OPENAI_API_KEY" in msg and "a base URL alone" in msg and "no key needed" in msg
    assert "--evaluation.judge.base_url" in msg and "--evaluation.judge.model set to the model name that server serves" in msg
    assert not any(tmp_path.iterdir())  # no run folder either


def test_sweep_with_gpt_scorer_without_a_judge_stops_before_the_model_loads(no_judge_env, tmp_path):
    err = io.StringIO()
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(err):
        main(["sweep", "--config", "configs/demo.yaml", "--reducers", "uniform", "--retention", "0.5",
              "--scorer", "gpt", "--out", str(tmp_path / "sweep")])
    assert stop.value.code == 2
    assert "evaluation.scorer is gpt but no judge endpoint is configured" in err.getvalue()
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("setting", [["--evaluation.judge.base_url", "http://127.0.0.1:9/v1"], "OPENAI_BASE_URL",
                                     "OPENAI_API_KEY"])
def test_a_base_url_alone_or_a_key_is_a_judge(no_judge_env, monkeypatch, setting):
    from dyto.preflight import preflight

    judge = {}
    if isinstance(setting, list):
        judge["base_url"] = setting[1]
    else:
        monkeypatch.setenv(setting, "http://127.0.0.1:9/v1" if setting == "OPENAI_BASE_URL" else "sk-test")
    preflight({"evaluation": {"scorer": "gpt", "judge": judge}})  # nothing to say
