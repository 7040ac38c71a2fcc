"""MVBench, MLVU dev and LongVideoBench val: their preparers on samples in the published formats,
their official answer rules and lmms-eval's task side against the figures the official code
produced (tests/fixtures/lmms_eval/PROVENANCE-mvbench-mlvu-longvideobench.md), MLVU's M-avg."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dyto.datamodules.benchmarks import get_benchmark
from dyto.datamodules.prepare import prepare
from dyto.errors import RecordsError
from dyto.evaluation.choice import choice_modes, parse_choice
from dyto.evaluation.metrics import compute_metrics
from dyto.records import read_qa_records
from qa_sheets import FORMAT_SAMPLES, QA

FIGURES = json.loads((Path(__file__).parent / "fixtures" / "lmms_eval" / "mvbench_mlvu_longvideobench.json").read_text())


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("long")
    out = {}
    for name, sample in FORMAT_SAMPLES.items():
        report = prepare(name, QA / sample, tmp / f"{name}.jsonl")
        assert report.errors == []
        out[name] = {r.id: r for r in read_qa_records(tmp / f"{name}.jsonl")}
    return out


def test_mvbench_records_carry_task_folders_windows_and_frame_rates(records):
    mv = records["mvbench"]
    assert len({r.meta["task"] for r in mv.values()}) == 20 and len(mv) == 40
    seq = mv["action_sequence_1"]
    assert (seq.video, seq.start, seq.end, seq.answer_index) == ("star/Charades_v1_480/3MSZA.mp4", 2.5, 9.0, 0)
    tv = mv["episodic_reasoning_2"]
    assert tv.video == "tvqa/frames_fps3_hq/friends_s05e12_seg01_clip_03" and tv.meta["frame_fps"] == 3.0
    assert (tv.start, tv.end) == (0.34, 1.66)
    assert mv["object_existence_1"].start is None and "frame_fps" not in mv["object_existence_1"].meta
    assert mv["fine_grained_action_1"].video == "Moments_in_Time_Raw/videos/juggling/yt-3kq_w9xN0jM_51.mp4"


def test_mlvu_and_longvideobench_records(records):
    ml = records["mlvu"]
    needle = ml["needle_1"]
    assert (needle.video, needle.answer, needle.answer_index, needle.split) == ("2_needle/needle_7.mp4", "A clock", 1, "val")
    assert needle.meta["question_type"] == "findNeedle" and needle.meta["task"] == "needle"
    assert {r.meta["task"] for r in ml.values()} == {"plotQA", "needle", "ego", "count", "order", "anomaly_reco",
                                                     "topic_reasoning"}
    lvb = records["longvideobench"]["Zz9Yy8Xx7Ww_3"]
    assert (lvb.video, lvb.answer_index, len(lvb.options), lvb.meta["duration_group"]) == ("Zz9Yy8Xx7Ww.mp4", 0, 5, 600)
    assert lvb.question.startswith("Which subtitle")  # the question with its referring query


def test_bad_rows_are_reported_and_missing_task_files_refused(tmp_path):
    rows = json.loads((QA / "LongVideoBench" / "lvb_val.json").read_text())
    rows[1].pop("correct_choice")  # a test-set row
    rows[2]["correct_choice"] = 7
    rows[3] = ["not", "a", "row"]
    (tmp_path / "lvb.json").write_text(json.dumps(rows))
    report = prepare("longvideobench", tmp_path / "lvb.json", tmp_path / "out.jsonl")
    assert report.records == 2 and [e.line for e in report.errors] == [2, 3, 4]
    assert "lvb_test_wo_gt.json has no answers" in report.errors[0].message
    assert "outside 0..2" in report.errors[1].message and "JSON object" in report.errors[2].message
    shutil.copytree(QA / "MVBench", tmp_path / "mv")
    bad = json.loads((tmp_path / "mv" / "action_sequence.json").read_text())
    bad[0]["end"], bad[1]["answer"] = 1.0, "not a candidate"
    (tmp_path / "mv" / "action_sequence.json").write_text(json.dumps(bad))
    (tmp_path / "mv" / "state_change.json").unlink()
    with pytest.raises(RecordsError, match=r"state_change.json: no such file \(1 of the 20 task files"):
        prepare("mvbench", tmp_path / "mv", tmp_path / "mv.jsonl")
    shutil.copy(QA / "MVBench" / "state_change.json", tmp_path / "mv")
    report = prepare("mvbench", tmp_path / "mv", tmp_path / "mv.jsonl")
    assert report.records == 39 and len(report.errors) == 1 and "empty window" in report.errors[0].message
    assert report.fixes == ["action_sequence_2: answer 'not a candidate' is none of the candidates: kept and always "
                            "counted wrong, as the official scorer counts it"]


def test_mlvu_rows_as_its_scorer_sees_them(tmp_path):
    """MLVU's own files hold a repeated answer, empty candidates and two needle answers that are no
    candidate; its qa_template takes the last match, shows empty options, and scores '(@)' wrong."""
    shutil.copytree(QA / "MLVU", tmp_path / "ml")
    rows = json.loads((tmp_path / "ml" / "1_plotQA.json").read_text())
    rows[0]["candidates"], rows[0]["answer"] = ["Three", "Six", "Three", "Eight"], "Three"
    rows[1]["candidates"], rows[1]["answer"] = ["", "There is a bridge", "There is no bridge", ""], "There is a bridge"
    (tmp_path / "ml" / "1_plotQA.json").write_text(json.dumps(rows))
    needle = json.loads((tmp_path / "ml" / "2_needle.json").read_text())
    needle[0]["answer"] = "Knocking a clock off the shelf"
    (tmp_path / "ml" / "2_needle.json").write_text(json.dumps(needle))
    report = prepare("mlvu", tmp_path / "ml", tmp_path / "ml.jsonl")
    assert report.errors == [] and report.records == 14 and len(report.fixes) == 1
    recs = {r.id: r for r in read_qa_records(tmp_path / "ml.jsonl")}
    assert recs["plotQA_1"].answer_index == 2 and recs["plotQA_2"].options[0] == "" and recs["needle_1"].answer_index is None
    preds = [{**recs[i].to_dict(), "status": "ok", "prediction": reply}
             for i, reply in (("plotQA_1", "C) Three"), ("plotQA_2", "(B) x"), ("needle_1", "B) A clock"))]
    mc = compute_metrics(preds, choice_mode="mlvu")["benchmarks"]["mlvu"]["multiple_choice"]
    assert (mc["correct"], mc["ok"]) == (2, 3)  # the needle row counts, and counts wrong


@pytest.mark.parametrize("benchmark", ["mvbench", "mlvu"])
def test_official_rules_agree_with_the_official_scorers(records, benchmark):
    """The rule each benchmark's own scorer applies (MVBench notebook, MLVU choice_bench), run on
    the same replies: right exactly when the official check said right."""
    assert benchmark in choice_modes()
    rows = [f for f in FIGURES["parse"] if f["benchmark"] == benchmark]
    assert len(rows) >= 200
    for f in rows:
        rec = records[benchmark][f["id"]]
        right = parse_choice(f["reply"], len(rec.options), benchmark) == rec.answer_index
        if benchmark == "mvbench" and not f["reply"].strip():
            assert f["official_correct"] and not right  # "(" is in every "(x)": documented difference
            continue
        assert right == f["official_correct"], (f["id"], f["reply"])


@pytest.mark.parametrize("benchmark", ["mvbench", "mlvu", "longvideobench"])
def test_lmms_eval_text_and_parser_are_lmms_evals(records, benchmark):
    task = get_benchmark(benchmark).lmms_eval
    texts = [f for f in FIGURES["doc_to_text"] if f["benchmark"] == benchmark]
    assert texts
    for f in texts:
        assert task.doc_to_text(records[benchmark][f["id"]].to_dict(), f["model"]) == f["text"], f["id"]
        assert task.max_new_tokens == f["max_new_tokens"]
    for f in (f for f in FIGURES["parse"] if f["benchmark"] == benchmark):
        rec = records[benchmark][f["id"]].to_dict()
        right = task.parse(f["reply"], rec) == rec["answer_index"]
        if benchmark == "mvbench":
            assert right == bool(f["lmms_eval_score"]), (f["id"], f["reply"])
        elif benchmark == "mlvu":
            assert right == f["lmms_eval_correct"], (f["id"], f["reply"])
        elif f["lmms_eval_random"]:
            assert task.parse(f["reply"], rec) is None  # lmms-eval draws a random letter here
        else:  # the letter lmms-eval parsed; one past the options (E of four) is wrong there and None here
            letter = "ABCDE".index(f["lmms_eval_parsed"])
            assert task.parse(f["reply"], rec) == (letter if letter < len(rec["options"]) else None)
            assert right == f["lmms_eval_correct"]
    assert choice_modes()[-3:] == ("longvideobench", "mlvu", "mvbench")


def test_mlvu_m_avg_is_the_mean_of_its_task_accuracies(records):
    """Both needle questions right, everything else wrong, one plotQA question left out: M-avg is
    100 / 7 (the scorer's final_res['Avg']), not 2 right of 13."""
    kept = [r for r in records["mlvu"].values() if r.id != "plotQA_2"]
    preds = [{**r.to_dict(), "status": "ok", "prediction": f"({'ABCD'[r.answer_index]}) x" if r.meta["task"] == "needle"
              else "(E) none"} for r in kept]
    entry = compute_metrics(preds, choice_mode="mlvu")["benchmarks"]["mlvu"]["multiple_choice"]
    assert len(entry["by_type"]) == 7 and entry["macro_over"] == "by_type"
    assert entry["macro_accuracy"] == pytest.approx(100 / 7) and entry["accuracy"] == pytest.approx(200 / 13)
    mv = compute_metrics([{**r.to_dict(), "status": "ok", "prediction": "A)"} for r in records["mvbench"].values()],
                         choice_mode="mvbench")["benchmarks"]["mvbench"]["multiple_choice"]
    assert "macro_accuracy" not in mv and len(mv["by_type"]) == 20  # MVBench's Avg is correct / total
