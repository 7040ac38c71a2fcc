"""`dyto compare`: finished runs side by side, from their files on disk."""

from __future__ import annotations

import json

import pytest

from dyto.cli import main
from dyto.records import write_jsonl


def make_run(path, reducer, tokens, accuracy=None, failed=0):
    preds = [{"id": f"q{i}", "status": "ok", "visual_tokens_out": t, "frames_kept": list(range(8 + i)),
              "reducer": {"name": reducer}, "timings": {"encode": 100.0 * (i + 1), "generate": 50.0}}
             for i, t in enumerate(tokens)]
    preds += [{"id": f"bad{i}", "status": "video_missing", "visual_tokens_out": None, "frames_kept": None,
               "reducer": {"name": reducer}, "timings": {"decode": 1.0}} for i in range(failed)]
    write_jsonl(path / "artifacts" / "predictions.jsonl", preds)
    if accuracy is not None:
        (path / "logs").mkdir(parents=True)
        (path / "logs" / "results.json").write_text(
            json.dumps({"metrics": {"benchmarks": {"nextqa": {"multiple_choice": {"accuracy": accuracy}}}}}))
    return path


def test_compare_writes_a_table_and_the_budget_picture(tmp_path, capsys):
    a = make_run(tmp_path / "nextqa_7b_dyto", "dyto", [3660, 3675], accuracy=65.7, failed=1)
    b = make_run(tmp_path / "nextqa_7b_slowfast", "slowfast", [3680, 3680])
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert exit_.value.code == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| nextqa_7b_dyto | dyto | 2 / 1 | 65.7 | 100.0 | 3668 [3660, 3675] | 8.5 | – | 150 | – | – | 50 |" in table
    assert "| nextqa_7b_slowfast | slowfast | 2 / 0 | not evaluated | – | 3680 [3680, 3680] |" in table
    assert (tmp_path / "cmp" / "budget.png").stat().st_size > 1000
    assert "comparison.md" in capsys.readouterr().out


def test_compare_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(tmp_path / "nothing"), "--out", str(tmp_path / "cmp")])
    assert exit_.value.code == 2
    assert "nothing" in capsys.readouterr().out


# -- paired tests on hand-made, really evaluated run folders ------------------------------------
def mc(qid, right, status="ok"):
    """A multiple-choice prediction answering option A (right) or B (wrong); answer index 0."""
    return {"id": qid, "benchmark": "nextqa", "task": "multiple_choice", "question": "q?", "answer": "x",
            "options": ["x", "y", "z"], "answer_index": 0, "status": status,
            "prediction": ("A" if right else "B") if status == "ok" else None,
            "visual_tokens_out": 10 if status == "ok" else None, "frames_kept": [0], "reducer": {"name": "r"},
            "timings": {}}


def oe(qid, right):
    return {"id": qid, "benchmark": "msvd_qa", "task": "open_ended", "question": "what?", "answer": "a dog",
            "options": None, "answer_index": None, "status": "ok", "prediction": "a dog" if right else "a cat",
            "visual_tokens_out": 10, "frames_kept": [0], "reducer": {"name": "r"}, "timings": {}}


def evaluated_run(path, preds):
    from dyto.evaluation.report import evaluate_run

    write_jsonl(path / "artifacts" / "predictions.jsonl", preds)
    evaluate_run(path, scorer="match")
    return path


def test_mcnemar_against_a_hand_computed_case(tmp_path, capsys):
    # 12 questions: both right 1, only the baseline right b = 1, only the run right c = 9, both wrong 1
    pattern = [(1, 1)] + [(1, 0)] + [(0, 1)] * 9 + [(0, 0)]
    base = evaluated_run(tmp_path / "concat", [mc(f"q{i}", a) for i, (a, _) in enumerate(pattern)]
                         + [mc("only-in-base", True), mc("lost", True)])
    run = evaluated_run(tmp_path / "dyto", [mc(f"q{i}", b) for i, (_, b) in enumerate(pattern)]
                        + [mc("lost", True, status="video_missing")])
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(base), str(run), "--out", str(tmp_path / "cmp")])
    assert exit_.value.code == 0
    [paired] = json.loads((tmp_path / "cmp" / "paired.json").read_text())
    assert paired["mcnemar"] == {"items": 12, "both": 1, "only_baseline": 1, "only_run": 9, "neither": 1,
                                 "p_value": 0.021484375}  # 2 * (1 + 10) / 2^10
    assert paired["dropped"] == {"only-in-base": "only in concat", "lost": "status video_missing in dyto"}
    assert paired["judged_accuracy"] is None and paired["score"] is None
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    # accuracies 4/14 = 28.6% and 10/12 = 83.3% (over ok items); 83.333 / 28.571 = 291.7% of the baseline
    assert "| concat | r | 14 / 0 | 28.6 | 100.0 |" in table
    assert "| dyto | r | 12 / 1 | 83.3 | 291.7 |" in table
    assert "| dyto | 12 of 14 | 1 / 1 / 9 / 1 | 0.02148 | – | – |" in table
    assert "`only-in-base` (only in concat)" in table and "`lost` (status video_missing in dyto)" in table
    assert "Paired tests against `concat`" in capsys.readouterr().out


def test_paired_bootstrap_on_judged_answers_and_the_baseline_option(tmp_path):
    base = evaluated_run(tmp_path / "a", [oe("o1", True), oe("o2", True), oe("o3", False), oe("o4", False)])
    run = evaluated_run(tmp_path / "b", [oe("o1", False), oe("o2", False), oe("o3", False), oe("o4", False)])
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(base), str(run), "--out", str(tmp_path / "cmp"), "--baseline", "b",
              "--resamples", "500"])
    assert exit_.value.code == 0
    [paired] = json.loads((tmp_path / "cmp" / "paired.json").read_text())
    assert paired["baseline"] == "b" and paired["run"] == "a"
    acc, score = paired["judged_accuracy"], paired["score"]
    assert acc["items"] == 4 and acc["difference"] == pytest.approx(50.0)   # 2/4 right against 0/4
    assert 0.0 <= acc["low"] <= 50.0 <= acc["high"] <= 100.0
    assert score["difference"] == pytest.approx(2.5)                          # match scores 5, 5, 0, 0 vs 0
    assert paired["mcnemar"] is None and paired["dropped"] == {}
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| a | r | 4 / 0 | 50.0 | – (baseline 0) |" in table


def test_paired_tests_are_exact_when_every_question_moves_the_same_way(tmp_path):
    from dyto.evaluation.paired import paired_comparison
    from dyto.runs import RunFolder

    base = evaluated_run(tmp_path / "a", [oe(f"o{i}", False) for i in range(5)])
    run = evaluated_run(tmp_path / "b", [oe(f"o{i}", True) for i in range(5)])
    paired = paired_comparison(RunFolder(base).load(), RunFolder(run).load(), resamples=200)
    assert paired["judged_accuracy"]["difference"] == paired["judged_accuracy"]["low"] == \
        paired["judged_accuracy"]["high"] == 100.0
    same = paired_comparison(RunFolder(base).load(), RunFolder(base).load(), resamples=200)
    assert (same["judged_accuracy"]["low"], same["judged_accuracy"]["high"]) == (0.0, 0.0)


def test_runs_judged_by_different_judges_are_not_paired(tmp_path):
    from dyto.evaluation.paired import paired_comparison
    from dyto.runs import RunFolder

    base = evaluated_run(tmp_path / "a", [oe("o1", True), mc("m1", True)])
    other = evaluated_run(tmp_path / "b", [oe("o1", True), mc("m1", False)])
    results = json.loads((other / "logs" / "results.json").read_text())
    results["metrics"]["judge_model"] = "gpt-3.5-turbo-0125"  # as if judged by GPT
    (other / "logs" / "results.json").write_text(json.dumps(results))
    paired = paired_comparison(RunFolder(base).load(), RunFolder(other).load(), resamples=100)
    assert paired["dropped"] == {"o1": "judged by different judges"}
    assert paired["mcnemar"]["only_baseline"] == 1 and paired["mcnemar"]["p_value"] == 1.0
