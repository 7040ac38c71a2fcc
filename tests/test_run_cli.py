"""End-to-end runs through the real CLI: the demo, 2-process DDP, a real kill -9 then resume.

These start real processes (LightningCLI, gloo DDP on CPU, the tiny random-weight LLaVA-NeXT,
real MP4 decoding), so they are the slowest tests; each asserts the "nothing lost, nothing
counted twice" contract on the files the run leaves behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dyto.datamodules.base import question_length
from dyto.records import QARecord, read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "dyto" / "assets" / "demo"
SECRET = "sk-dyto-test-secret-0123456789"


def make_records(path: Path, n: int, missing: int = 0) -> list[str]:
    """n questions alternating over the two demo clips; the last `missing` point at no file."""
    recs = []
    for i in range(n):
        video = "does_not_exist.mp4" if i >= n - missing else ("bikes.mp4", "bigbuckbunny.mp4")[i % 2]
        if i % 3 == 1:
            recs.append(QARecord(id=f"q{i:03d}", benchmark="demo", task="multiple_choice", video=video,
                                 question=f"question {i}?", answer="b", options=["a", "b", "c"], answer_index=1,
                                 split="test"))
        else:
            recs.append(QARecord(id=f"q{i:03d}", benchmark="demo", task="open_ended", video=video,
                                 question=f"what happens in part {i}?", answer="riding", split="test"))
    write_jsonl(path, [r.to_dict() for r in recs])
    return [r.id for r in recs]


def cli_args(records: Path, out: Path, run: str, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "cli.py"), "predict", "--config", str(REPO / "configs" / "demo_random.yaml"),
            "--data.init_args.records", str(records), "--data.init_args.video_root", str(DEMO),
            "--output.output_dir", str(out), "--output.run_name", run, *extra]


def run_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               OPENAI_API_KEY=SECRET, PYTHONUNBUFFERED="1")
    env.pop("OPENAI_BASE_URL", None)
    env.pop("WANDB_API_KEY", None)
    return {**env, **overrides}


def run_cli(args: list[str], timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=REPO, env=run_env(**env), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    return proc


def attempts(run_dir: Path) -> list[dict]:
    return [r for p in sorted((run_dir / "artifacts").glob("predictions.rank*.jsonl")) for r in read_jsonl(p)]


def assert_complete(run_dir: Path, ids: list[str]) -> list[dict]:
    merged = list(read_jsonl(run_dir / "artifacts" / "predictions.jsonl"))
    assert [r["id"] for r in merged] == ids  # input order, every id once
    summary = json.loads((run_dir / "artifacts" / "summary.json").read_text())
    assert summary["missing"] == [] and summary["records"] == len(ids)
    return merged


def assert_no_secret(run_dir: Path) -> None:
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(encoding="utf-8", errors="replace"), path


@pytest.mark.slow
def test_ddp_two_processes_predict_every_question_once(tmp_path):
    ids = make_records(tmp_path / "q.jsonl", 7, missing=1)
    # W&B (offline) listed before the CLI's own callbacks: its on_predict_end evaluates first,
    # which must still see both ranks' records
    run_cli(cli_args(tmp_path / "q.jsonl", tmp_path / "out", "ddp", "--config", str(REPO / "configs/logging/wandb.yaml"),
                     "--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.init_args.batch_size", "2"),
            WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
            WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))
    run_dir = tmp_path / "out" / "ddp"
    merged = assert_complete(run_dir, ids)
    per_rank = {p.name: len(list(read_jsonl(p))) for p in (run_dir / "artifacts").glob("predictions.rank*.jsonl")}
    assert sorted(per_rank) == ["predictions.rank0.jsonl", "predictions.rank1.jsonl"]
    assert sorted(per_rank.values()) == [3, 4]  # 7 split 4 + 3: no padding duplicates
    # batch_size 2 -> data.order auto = length: each rank predicted its shard shortest question first
    questions = {r["id"]: QARecord.from_dict(r) for r in read_jsonl(tmp_path / "q.jsonl")}
    for log in (run_dir / "artifacts").glob("predictions.rank*.jsonl"):
        lengths = [question_length(questions[r["id"]]) for r in read_jsonl(log)]
        assert lengths == sorted(lengths), log.name
    assert Counter(r["id"] for r in attempts(run_dir)) == Counter(ids)
    statuses = {r["id"]: r["status"] for r in merged}
    assert statuses.pop(ids[-1]) == "video_missing"
    assert set(statuses.values()) == {"ok"}
    results = json.loads((run_dir / "logs" / "results.json").read_text())
    assert results["metrics"]["benchmarks"]["demo"]["items"] == 7  # evaluated after both ranks
    assert (run_dir / "config.yaml").exists()
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert_no_secret(run_dir)

    # The missing video turns up; the rerun has 1 question for 2 ranks, so one rank gets no batch
    # at all (Lightning then skips its predict loop): every rank must still meet at the writer's
    # barrier, and the merge must hold all 7.
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("bikes.mp4", "bigbuckbunny.mp4"):
        (videos / name).symlink_to(DEMO / name)
    (videos / "does_not_exist.mp4").symlink_to(DEMO / "bikes.mp4")
    out = run_cli(cli_args(tmp_path / "q.jsonl", tmp_path / "out", "ddp", "--data.init_args.video_root", str(videos),
                           "--trainer.devices", "2", "--trainer.strategy", "ddp"), timeout=300)
    assert "6 already done, 1 to predict" in out.stdout
    assert {r["status"] for r in assert_complete(run_dir, ids)} == {"ok"}
    assert Counter(r["id"] for r in attempts(run_dir)) == Counter(ids + [ids[-1]])


@pytest.mark.slow
def test_kill_9_then_resume_gives_exactly_the_input_set(tmp_path):
    ids = make_records(tmp_path / "q.jsonl", 14)
    args = cli_args(tmp_path / "q.jsonl", tmp_path / "out", "killed",
                    "--data.init_args.batch_size", "1", "--data.init_args.num_workers", "0")
    rank_log = tmp_path / "out" / "killed" / "artifacts" / "predictions.rank0.jsonl"
    proc = subprocess.Popen(args, cwd=REPO, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if rank_log.exists() and rank_log.read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed:\n" + proc.stderr.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = [r["id"] for r in read_jsonl(rank_log)]
    assert 4 <= len(first) < len(ids)
    assert not (rank_log.parent / "predictions.jsonl").exists()

    out = run_cli(args)
    assert f"{len(first)} already done" in out.stdout
    run_dir = tmp_path / "out" / "killed"
    merged = assert_complete(run_dir, ids)
    assert {r["status"] for r in merged} == {"ok"}
    # every question was predicted exactly once over the two runs: nothing redone, nothing lost
    assert Counter(r["id"] for r in attempts(run_dir)) == Counter(ids)


@pytest.mark.slow
def test_demo_config_runs_in_process_and_reports(tmp_path, monkeypatch, capsys):
    from dyto.cli import main

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    main(["predict", "--config", "configs/demo_random.yaml", "--output.output_dir", str(tmp_path)])
    run_dir = tmp_path / "demo"
    ids = [r["id"] for r in read_jsonl(DEMO / "questions.jsonl")]
    merged = assert_complete(run_dir, ids)
    assert {r["status"] for r in merged} == {"ok"}
    assert all(r["visual_tokens_out"] <= 96 for r in merged)
    consistency = [r for r in merged if r["task"] == "vcg_consistency"]
    assert consistency and all(r["prediction2"] is not None for r in consistency)
    results = json.loads((run_dir / "logs" / "results.json").read_text())
    assert results  # the report step ran on the merged file
    assert (run_dir / "logs" / "report.md").exists()
    assert str(run_dir) in capsys.readouterr().out

    # a rerun of the finished run predicts nothing (Lightning then skips its predict hooks) but
    # still merges and evaluates
    (run_dir / "logs" / "results.json").unlink()
    main(["predict", "--config", "configs/demo_random.yaml", "--output.output_dir", str(tmp_path)])
    assert "5 already done, 0 to predict" in capsys.readouterr().out
    assert json.loads((run_dir / "logs" / "results.json").read_text())["metrics"]["benchmarks"]["demo"]["items"] == 5
    assert_complete(run_dir, ids)


@pytest.mark.slow
def test_a_failing_picture_does_not_stop_the_run(tmp_path, monkeypatch):
    from dyto import viz
    from dyto.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib backend exploded")

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(viz, "keyframe_strip", broken)  # fault injection into the pictures step
    with pytest.warns(UserWarning, match="could not draw the run's pictures"):
        main(["predict", "--config", "configs/demo_random.yaml", "--output.output_dir", str(tmp_path),
              "--trainer.enable_progress_bar", "false"])
    ids = [r["id"] for r in read_jsonl(DEMO / "questions.jsonl")]
    assert_complete(tmp_path / "demo", ids)
    assert (tmp_path / "demo" / "logs" / "results.json").exists()


@pytest.mark.slow
def test_prepared_benchmark_runs_with_composed_configs(tmp_path, monkeypatch, capsys):
    """The real chain: `dyto prepare` on the NExT-QA sample sheet, one of its videos on disk,
    then `dyto predict` composed from trainer / model / reducer / benchmark configs."""
    from dyto.cli import main

    sheet = REPO / "tests" / "fixtures" / "qa" / "NExT_QA.csv"
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "4010069381.mp4").symlink_to(DEMO / "bikes.mp4")  # the sheet's first video id
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "nextqa", "--qa-file", str(sheet), "--out", str(tmp_path / "nextqa.jsonl"),
              "--video-root", str(videos)])
    assert exit_.value.code == 0
    assert "1/29 found" in capsys.readouterr().out
    monkeypatch.chdir(REPO)
    main(["predict", "--config", "configs/trainer/cpu.yaml", "--config", "configs/models/tiny.yaml",
          "--config", "configs/reducers/slowfast.yaml", "--config", "configs/benchmarks/nextqa.yaml",
          "--data.records", str(tmp_path / "nextqa.jsonl"), "--data.video_root", str(videos),
          "--data.num_workers", "0", "--model.max_new_tokens", "4", "--output.output_dir", str(tmp_path / "out"),
          "--trainer.enable_progress_bar", "false"])
    (run_dir,) = (tmp_path / "out").glob("nextqa_tiny_slowfast-*")  # the default name ends with the settings' digest
    merged = list(read_jsonl(run_dir / "artifacts" / "predictions.jsonl"))
    assert len(merged) == 30
    assert Counter(r["status"] for r in merged) == {"ok": 1, "video_missing": 29}
    ok = next(r for r in merged if r["status"] == "ok")
    assert ok["id"] == "4010069381_6" and ok["reducer"]["name"] == "slowfast" and ok["frames_sampled"] == 50
    mc = json.loads((run_dir / "logs" / "results.json").read_text())["metrics"]["benchmarks"]["nextqa"]["multiple_choice"]
    assert mc["items"] == 30 and mc["ok"] == 1


@pytest.mark.slow
def test_rerun_retries_failures_and_resume_false_redoes_everything(tmp_path, monkeypatch, capsys):
    from dyto.cli import main

    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "bikes.mp4").symlink_to(DEMO / "bikes.mp4")
    recs = [QARecord(id=f"r{i}", benchmark="demo", task="open_ended", video=v, question="what?", answer="x",
                     split="test") for i, v in enumerate(["bikes.mp4", "late.mp4", "bikes.mp4"])]
    write_jsonl(tmp_path / "q.jsonl", [r.to_dict() for r in recs])
    monkeypatch.chdir(REPO)
    args = ["predict", "--config", "configs/demo_random.yaml", "--data.records", str(tmp_path / "q.jsonl"),
            "--data.video_root", str(videos), "--data.num_workers", "0", "--output.output_dir", str(tmp_path / "out"),
            "--output.run_name", "rerun", "--trainer.enable_progress_bar", "false"]
    run_dir = tmp_path / "out" / "rerun"
    main(args)
    assert [r["status"] for r in assert_complete(run_dir, ["r0", "r1", "r2"])] == ["ok", "video_missing", "ok"]

    (videos / "late.mp4").symlink_to(DEMO / "bigbuckbunny.mp4")  # the missing video turns up
    capsys.readouterr()
    main(args)
    assert "2 already done, 1 to predict" in capsys.readouterr().out
    assert [r["status"] for r in assert_complete(run_dir, ["r0", "r1", "r2"])] == ["ok", "ok", "ok"]
    assert [r["id"] for r in attempts(run_dir)] == ["r0", "r1", "r2", "r1"]  # only the failure was redone

    main(args + ["--output.resume", "false"])  # start over: old logs are kept aside, not deleted
    assert "0 already done, 3 to predict" in capsys.readouterr().out
    assert sorted(p.name for p in (run_dir / "artifacts" / "previous-0").iterdir()) == ["fingerprint.json",
                                                                                      "predictions.rank0.jsonl"]
    assert [r["id"] for r in attempts(run_dir)] == ["r0", "r1", "r2"]
    assert [r["status"] for r in assert_complete(run_dir, ["r0", "r1", "r2"])] == ["ok", "ok", "ok"]
