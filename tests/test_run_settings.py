"""A run folder never mixes settings: the fingerprint guard on resume, the digest in the default
run name, and evaluation's refusal to score predictions made with different settings.

Each run goes through the real CLI in-process (LightningCLI, the tiny random-weight LLaVA-NeXT,
the demo clips), on two questions to stay quick.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dyto.cli import main
from dyto.evaluation.judge_cli import judge_main
from dyto.evaluation.report import evaluate_run
from dyto.records import read_jsonl, write_jsonl
from dyto.runs import MixedSettingsError, RunFolder, fingerprint_changes

REPO = Path(__file__).resolve().parents[1]


def predict(out: Path, *extra: str) -> None:
    main(["predict", "--config", "configs/demo_random.yaml", "--data.limit", "2", "--data.num_workers", "0",
          "--model.max_new_tokens", "3", "--output.output_dir", str(out), "--trainer.enable_progress_bar", "false",
          *extra])


def rank_lines(run_dir: Path) -> list[dict]:
    return [r for p in RunFolder(run_dir).rank_logs() for r in read_jsonl(p)]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_rerun_with_another_budget_into_the_same_folder_stops_and_keeps_the_records(tmp_path, capsys):
    predict(tmp_path)  # the demo config names its folder: outputs/demo
    run_dir = tmp_path / "demo"
    before = rank_lines(run_dir)
    assert len(before) == 2 and len({r["fingerprint"] for r in before}) == 1
    fingerprint = json.loads((run_dir / "artifacts" / "fingerprint.json").read_text())
    assert fingerprint["model"]["reducer"]["budget"] == 96 and fingerprint["data"]["num_frames"] == 100

    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        predict(tmp_path, "--model.reducer.init_args.budget", "48")
    [message] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dyto: ")]
    assert stop.value.code == 2 and "model.reducer.budget: 96 -> 48" in message
    assert "--output.run_name" in message and "--output.resume false" in message
    assert rank_lines(run_dir) == before  # nothing predicted, nothing mixed in

    for change in (["--model.max_new_tokens", "5"], ["--model.reducer.init_args.num_frames", "50"],
                   ["--model.backbone.init_args.dtype", "bfloat16"],
                   ["--model.backbone.init_args.conv_mode", "multiple_choice_allvideo_v4"]):
        with pytest.raises(SystemExit):
            main(["predict", "--config", "configs/demo_random.yaml", "--data.limit", "2", "--data.num_workers", "0",
                  "--model.max_new_tokens", "3", "--output.output_dir", str(tmp_path),
                  "--trainer.enable_progress_bar", "false", *change])
        assert "predicted with other settings" in capsys.readouterr().err
    assert rank_lines(run_dir) == before

    capsys.readouterr()
    predict(tmp_path)  # the same settings resume as before
    assert "2 already done, 0 to predict" in capsys.readouterr().out

    predict(tmp_path, "--model.reducer.init_args.budget", "48", "--output.resume", "false")  # the way out
    merged = list(read_jsonl(run_dir / "artifacts" / "predictions.jsonl"))
    assert len(merged) == 2 and {r["fingerprint"] for r in merged} != {before[0]["fingerprint"]}
    assert json.loads((run_dir / "artifacts" / "fingerprint.json").read_text())["model"]["reducer"]["budget"] == 48
    assert (run_dir / "artifacts" / "previous-0" / "fingerprint.json").exists()


def test_default_run_name_carries_the_settings_digest(tmp_path, capsys):
    def run(*extra):
        predict(tmp_path, "--output.run_name", "null", *extra)

    run()
    run("--model.reducer.init_args.budget", "48")
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2 and all(f.startswith("demo_tiny_dyto-") for f in folders)
    capsys.readouterr()
    run()  # the same command finds its own folder and resumes
    assert "2 already done, 0 to predict" in capsys.readouterr().out
    assert len(list(tmp_path.iterdir())) == 2


def test_evaluation_refuses_predictions_with_different_settings(tmp_path, capsys):
    predict(tmp_path, "--output.run_name", "a")
    predict(tmp_path, "--output.run_name", "b", "--model.reducer.init_args.budget", "48")
    a = list(read_jsonl(tmp_path / "a" / "artifacts" / "predictions.jsonl"))
    b = list(read_jsonl(tmp_path / "b" / "artifacts" / "predictions.jsonl"))
    mixed = tmp_path / "mixed"
    write_jsonl(mixed / "artifacts" / "predictions.jsonl", a[:1] + b[1:])
    with pytest.raises(MixedSettingsError, match="different settings"):
        evaluate_run(mixed, scorer="match")
    assert not (mixed / "logs" / "results.json").exists()
    with pytest.raises(MixedSettingsError):
        judge_main(["--predictions", str(mixed), "--base-url", "http://127.0.0.1:9/v1"])


def test_fingerprint_changes_name_every_changed_key():
    old = {"model": {"reducer": {"name": "dyto", "budget": 96}, "dtype": "float32"}, "data": {"num_frames": 100}}
    new = {"model": {"reducer": {"name": "dyto", "budget": 48}, "dtype": "float32"}, "data": {"num_frames": 100,
                                                                                            "sampling": "unique"}}
    assert fingerprint_changes(old, new) == [("data.sampling", None, "unique"), ("model.reducer.budget", 96, 48)]
    assert fingerprint_changes(old, old) == []
