"""A benchmark defined in ONE place (the spec below) runs end to end through the real CLI:
`dyto prepare toy` on a QA sheet this test writes -> `dyto predict` (tiny random-weight
LLaVA-NeXT, uniform sampling, the demo clips) -> evaluation with the offline `match` scorer ->
logs/results.json with the spec's breakdown and published number beside the measured ones.

Nothing else is registered or edited for it: no table, no DataModule subclass, no path rule.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from dyto.datamodules.benchmarks import (BenchmarkSpec, get_benchmark, paper_rows, register_benchmark,
                                         unregister_benchmark)
from dyto.datamodules.sheets import Prepared, answer_index, cell, collect, read_csv
from dyto.records import QARecord, read_jsonl

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "dyto" / "assets" / "demo"

# ---------------------------------------------------------------- the toy benchmark: one spec
TOY_COLUMNS = ("qid", "clip", "question", "answer", "options", "topic")


def prepare_toy(qa_file: Path) -> Prepared:
    """toy.csv: one question per row; `options` is "a|b|c" for multiple choice, empty for open-ended."""
    rows, errors = read_csv(qa_file, TOY_COLUMNS)

    def convert(row: dict[str, Any]) -> QARecord:
        options = row["options"].split("|") if row["options"].strip() else None
        return QARecord(id=f"toy-{cell(row, 'qid')}", benchmark="toy",
                        task="multiple_choice" if options else "open_ended", video=cell(row, "clip"),
                        question=cell(row, "question"), answer=cell(row, "answer"), options=options,
                        answer_index=answer_index(options, cell(row, "answer")) if options else None,
                        split="test", meta={"topic": cell(row, "topic")})

    return collect(qa_file, rows, convert, errors)


TOY = BenchmarkSpec(
    name="toy",
    tasks=("open_ended", "multiple_choice"),
    prepare=prepare_toy,
    sheet="toy.csv (written by this test)",
    breakdown_fields=("topic",),
    published=paper_rows("toy", "accuracy", {"?": 42.0}, "T0", "made up for this test"),
)
# ----------------------------------------------------------------

SHEET = """qid,clip,question,answer,options,topic
1,bikes,where does the video take place?,on a city street,in a kitchen|on a city street|under water,place
2,bikes,what vehicles drive past?,cars,,traffic
3,bigbuckbunny,which animal is shown?,a rabbit,a rabbit|a whale|a snake,animals
4,no_such_clip,what happens?,nothing,,animals
"""


@pytest.fixture
def toy():
    register_benchmark(TOY)
    try:
        yield TOY
    finally:
        unregister_benchmark("toy")


def test_toy_benchmark_prepare_predict_evaluate(toy, tmp_path, monkeypatch, capsys):
    from dyto.cli import main

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    (tmp_path / "toy.csv").write_text(SHEET)
    records = tmp_path / "toy.jsonl"
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "toy", "--qa-file", str(tmp_path / "toy.csv"), "--out", str(records),
              "--video-root", str(DEMO)])
    assert exit_.value.code == 0
    assert "wrote 4 records" in (out := capsys.readouterr().out) and "2/3 found" in out and "no_such_clip" in out
    tasks = [r["task"] for r in read_jsonl(records)]
    assert tasks == ["multiple_choice", "open_ended", "multiple_choice", "open_ended"]

    # its run config, as configs/benchmarks/toy.yaml would hold it
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({"data": {"class_path": "dyto.datamodules.VideoQADataModule", "init_args": {
        "benchmark": "toy", "records": str(records), "video_root": str(DEMO), "batch_size": 2, "num_workers": 0}}}))
    monkeypatch.chdir(REPO)
    main(["predict", "--config", "configs/trainer/cpu.yaml", "--config", "configs/models/tiny.yaml",
          "--config", "configs/reducers/uniform.yaml", "--config", str(config), "--model.max_new_tokens", "4",
          "--output.output_dir", str(tmp_path / "out"), "--output.run_name", "toy", "--evaluation.scorer", "match",
          "--trainer.enable_progress_bar", "false"])

    run_dir = tmp_path / "out" / "toy"
    merged = list(read_jsonl(run_dir / "artifacts" / "predictions.jsonl"))
    assert [r["id"] for r in merged] == ["toy-1", "toy-2", "toy-3", "toy-4"]
    assert [r["status"] for r in merged] == ["ok", "ok", "ok", "video_missing"]
    assert all(r["benchmark"] == "toy" for r in merged) and merged[0]["frames_sampled"] == 6  # uniform.yaml

    results = json.loads((run_dir / "logs" / "results.json").read_text())
    assert results["scorer"] == "match"
    entry = results["metrics"]["benchmarks"]["toy"]
    assert entry["items"] == 4 and entry["status"] == {"ok": 3, "video_missing": 1}
    mc = entry["multiple_choice"]
    assert (mc["items"], mc["ok"]) == (2, 2)
    assert {k: v["items"] for k, v in mc["by_topic"].items()} == {"place": 1, "animals": 1}  # the spec's breakdown
    assert set(mc) & {"by_type", "by_group"} == set()  # the spec declares no question types
    judged = entry["judged"]["default"]
    assert (judged["items"], judged["ok"], judged["failed"], judged["judged"]) == (2, 1, 1, 1)
    assert results["paper"]["toy"] == [{"benchmark": "toy", "metric": "accuracy", "size": "?", "value": 42.0,
                                        "source": "T0", "note": "made up for this test"}]
    report = (run_dir / "logs" / "report.md").read_text()
    assert "42.0 (?, T0, made up for this test)" in report and "### toy: accuracy by topic" in report


def test_an_unregistered_benchmark_is_a_clear_error(tmp_path):
    from dyto.datamodules import VideoQADataModule
    from dyto.datamodules.prepare import main as prepare_main

    with pytest.raises(ValueError, match=r"unknown benchmark 'toy'; known benchmarks: activitynet_qa, .*videomme"):
        get_benchmark("toy")
    with pytest.raises(ValueError, match="unknown benchmark 'toy'"):
        VideoQADataModule(str(tmp_path / "toy.jsonl"), benchmark="toy")
    with pytest.raises(SystemExit):  # argparse: invalid choice
        prepare_main(["toy", "--qa-file", "x.csv", "--out", str(tmp_path / "toy.jsonl")])
