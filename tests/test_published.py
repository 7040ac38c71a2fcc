"""The peers' published numbers (dyto/assets/published/results.csv): the table loads and every row
is checked, a bad row is refused with its line, a run finds the cells of its (method, backbone,
benchmark, retention), and report.md, ``dyto compare`` and the sweep table print them."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from dyto.errors import RecordsError
from dyto.evaluation.published import (FIELDS, TABLE, RunCell, all_results, backbone_of, load_published, matching,
                                       run_cell)
from dyto.evaluation.report import evaluate
from dyto.evaluation.sweep_report import render_sweep
from dyto.records import write_jsonl


def test_the_shipped_table_loads_with_a_source_for_every_row():
    rows = load_published(TABLE)
    assert Counter(r.reported_by for r in rows) == {"HoliTom": 54, "VidCom2": 40, "DyCoke": 33, "DyTo": 15,
                                                    "PruneVid": 8, "FastVID": 2, "V-CAST": 128}
    assert {r.method for r in rows} == {"concat", "dyto", "dycoke", "fastvid", "prunevid", "holitom", "vidcom2",
                                        "vcast"}
    assert all("@" in r.source or r.source.startswith("S2") for r in rows)  # a repository commit, or the paper
    dyto = [r for r in all_results() if r.method == "dyto" and r.backbone == "llava_next"]
    assert {(r.benchmark, r.size, r.value) for r in dyto} >= {("nextqa", "7B", 65.7), ("mvbench", "34B", 52.9)}


def write_table(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    return path


GOOD = {"method": "fastvid", "variant": "", "backbone": "llava_onevision", "size": "7B", "benchmark": "mvbench",
        "metric": "accuracy", "retention": "0.25", "tokens": "", "frames": "32", "protocol": "lmms_eval",
        "value": "56.5", "reported_by": "HoliTom", "source": "repo@abc file", "note": ""}


@pytest.mark.parametrize("change,message", [
    ({"method": "fastv"}, "method 'fastv' is not a reducer"), ({"benchmark": "perceptiontest"}, "not registered"),
    ({"retention": "1.5"}, "outside (0, 1]"), ({"method": "concat"}, "unreduced (concat) row has retention 1.0"),
    ({"value": "156"}, "outside 0..100"), ({"size": "seven"}, "size 'seven'"), ({"frames": "x"}, "frames 'x' is not"),
    ({"source": ""}, "source must be given"), ({"metric": "f1"}, "metric 'f1'")])
def test_a_bad_row_is_refused_naming_its_line(tmp_path, change, message):
    table = write_table(tmp_path / "t.csv", [GOOD, {**GOOD, **change, "retention": change.get("retention", "0.2")}])
    with pytest.raises(RecordsError, match=rf"t.csv:3: .*{re.escape(message)}"):
        load_published(table)


def test_duplicates_and_wrong_headers_are_refused(tmp_path):
    with pytest.raises(RecordsError, match=r"t.csv:3: the same cell as line 2"):
        load_published(write_table(tmp_path / "t.csv", [GOOD, GOOD]))
    (tmp_path / "h.csv").write_text("method,value\nfastvid,1\n")
    with pytest.raises(RecordsError, match=r"h.csv:1: header must be method,variant"):
        load_published(tmp_path / "h.csv")


def test_backbone_and_size_from_checkpoint_names():
    assert backbone_of("lmms-lab/LLaVA-Video-7B-Qwen2") == ("llava_video", "7B")
    assert backbone_of("llava-hf/llava-onevision-qwen2-0.5b-ov-hf") == ("llava_onevision", "0.5B")
    assert backbone_of("llava-hf/llava-v1.6-34b-hf") == ("llava_next", "34B")
    assert backbone_of("Qwen/Qwen2.5-VL-7B-Instruct") == ("qwen2_5_vl", "7B")
    assert backbone_of("tiny-llava_onevision") == (None, None) == backbone_of(None)


def test_a_run_finds_the_cells_of_its_key():
    holitom = RunCell("holitom", "llava_onevision", "7B", 0.25, None, 32.0, "reference")
    assert [(r.variant, r.value) for r in matching(holitom, "mvbench")] == [("w/o M", 58.5), ("full", 58.4)]
    dycoke = RunCell("dycoke", "llava_onevision", "7B", 0.25, None, 32.0, "reference")
    assert sorted((r.reported_by, r.value) for r in matching(dycoke, "mvbench")) == [("HoliTom", 53.1), ("VidCom2", 49.5)]
    assert [r.value for r in matching(replace(dycoke, retention=0.3), "mlvu")] == [60.3]  # VidCom2's table
    dyto = RunCell("dyto", "llava_next", "7B", None, 3680, 100.0, "reference")
    assert [r.value for r in matching(dyto, "nextqa")] == [65.7]
    assert matching(RunCell("dyto", "llava_next", "7B", None, 1024, 100.0, "reference"), "nextqa") == []
    assert [r.value for r in matching(RunCell("concat", "llava_video", "7B", 1.0, None, 64.0, "x"), "mlvu")] == [70.3, 67.3]
    vcast = RunCell("vcast", "qwen3_vl", "8B", 0.25, None, 64.0, "lmms_eval")        # V-CAST's table, 64 and 32 frames
    assert [(r.variant, r.value) for r in matching(vcast, "videomme")] == [("max_frames=64", 65.1), ("max_frames=32", 63.5)]
    assert matching(RunCell("fastvid", "llava_onevision", "7B", 0.3, None, 32.0, "x"), "mvbench") == []
    cell = run_cell([{"status": "ok", "model": "llava-hf/llava-onevision-qwen2-7b-ov-hf", "frames_sampled": 32,
                      "reducer": {"name": "concat", "num_frames": 32, "retention": None, "target_tokens": None}}])
    assert (cell.method, cell.backbone, cell.size, cell.retention, cell.frames) == ("concat", "llava_onevision", "7B",
                                                                                    1.0, 32.0)


def mvbench_run(folder: Path, reducer: dict, model: str, right: int, total: int = 4) -> Path:
    preds = [{"id": f"action_count_{i}", "benchmark": "mvbench", "task": "multiple_choice", "question": "how many?",
              "answer": "2", "options": ["3", "2", "4"], "answer_index": 1, "meta": {"task": "action_count"},
              "status": "ok", "prediction": "B) 2" if i < right else "C) 4", "model": model, "reducer": reducer,
              "frames_sampled": 32, "visual_tokens_out": 100, "frames_kept": [0], "timings": {}}
             for i in range(total)]
    write_jsonl(folder / "artifacts" / "predictions.jsonl", preds)
    return folder


def test_report_puts_the_run_beside_its_published_cells(tmp_path):
    run = mvbench_run(tmp_path / "run", {"name": "holitom", "retention": 0.25, "target_tokens": None},
                      "llava-hf/llava-onevision-qwen2-7b-ov-hf", right=3)
    results = evaluate(run / "artifacts" / "predictions.jsonl", run, choice_mode="mvbench")
    cells = results["published_cells"]
    assert cells["cell"]["method"] == "holitom" and cells["benchmarks"]["mvbench"]["accuracy"]["ours"] == 75.0
    report = (run / "logs" / "report.md").read_text()
    assert "`holitom` (retention 0.25) on llava_onevision 7B, reference protocol, 32.0 frames" in report
    assert "| mvbench | accuracy | 75.0 | 58.5 (HoliTom; w/o M; 32 frames; lmms_eval) | lmms_eval |" in report
    other = mvbench_run(tmp_path / "other", {"name": "holitom", "retention": 0.33, "target_tokens": None},
                        "llava-hf/llava-onevision-qwen2-7b-ov-hf", right=1)
    evaluate(other / "artifacts" / "predictions.jsonl", other, choice_mode="mvbench")
    assert "| mvbench | accuracy | 25.0 | none published for this cell |" in (other / "logs" / "report.md").read_text()


def test_compare_and_sweep_show_the_published_cell(tmp_path):
    from dyto.evaluation.compare import compare_runs

    a = mvbench_run(tmp_path / "vidcom2", {"name": "vidcom2", "retention": 0.25}, "lmms-lab/LLaVA-Video-7B-Qwen2", 2)
    b = mvbench_run(tmp_path / "tiny", {"name": "vidcom2", "retention": 0.25}, "tiny-llava_onevision", 2)
    for run in (a, b):
        evaluate(run / "artifacts" / "predictions.jsonl", run, choice_mode="mvbench")
    table = compare_runs([a, b], tmp_path / "cmp", resamples=200)
    assert "published, same (method, backbone, benchmark, retention)" in table
    assert "| 57.0 (VidCom2; 64 frames; lmms_eval); 57.0 (V-CAST; lmms_eval) |" in table and "| none published |" in table
    rows = [{"cell": "vidcom2-retention0.25", "label": "vidcom2", "knob": "retention", "value": 0.25, "reducer": "vidcom2",
             "visual_tokens": None, "ok": 4, "failed": 0, "accuracy": None, "percent_of_baseline": None,
             "published": "57.0 (VidCom2; 64 frames; lmms_eval)"}]
    assert "| – | 57.0 (VidCom2; 64 frames; lmms_eval) |" in render_sweep(rows, 64, None, {})
    assert json.loads((a / "logs" / "results.json").read_text())["published_cells"]["cell"]["backbone"] == "llava_video"
