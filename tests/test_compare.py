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
    assert "| nextqa_7b_dyto | dyto | 2 / 1 | 65.7 | 3668 [3660, 3675] | 8.5 | – | 150 | – | – | 50 |" in table
    assert "| nextqa_7b_slowfast | slowfast | 2 / 0 | not evaluated | 3680 [3680, 3680] |" in table
    assert (tmp_path / "cmp" / "budget.png").stat().st_size > 1000
    assert "comparison.md" in capsys.readouterr().out


def test_compare_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(tmp_path / "nothing"), "--out", str(tmp_path / "cmp")])
    assert exit_.value.code == 2
    assert "nothing" in capsys.readouterr().out
