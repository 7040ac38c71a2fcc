"""`dyto reduce-demo` and `dyto demo`: real clips, real reducers, the tiny random-weight model and the
tiny trained one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dyto.cli import main

DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"


def test_reduce_demo_reports_kept_frames_and_budget(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["reduce-demo", "--video", str(DEMO / "bikes.mp4")])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    kept = re.search(r"kept (\d+) frames \(video frame numbers\): \[([\d, ]+)\]", out)
    assert kept and int(kept.group(1)) == len(kept.group(2).split(","))
    frames = [int(x) for x in kept.group(2).split(",")]
    assert frames == sorted(frames) and all(0 <= f < 250 for f in frames)
    total = int(re.search(r"(\d+) visual tokens in total \(budget 3680\)", out).group(1))
    assert total <= 3680
    assert "SlowFast-LLaVA: 50 frames -> 3680 tokens" in out


def test_demo_answers_one_question_with_the_tiny_model(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--video", str(DEMO / "bigbuckbunny.mp4"), "--question", "what animal is this?",
              "--model", "tiny", "--reducer-arg", "budget=96", "--max-new-tokens", "8"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "random weights" in out
    assert re.search(r"tokens:\s+\d+ visual in -> (\d+) out", out)
    assert int(re.search(r"-> (\d+) out", out).group(1)) <= 96
    assert re.search(r"^answer:", out, re.M)


def test_demo_by_default_asks_a_shipped_synthetic_clip_the_trained_model(capsys):
    """No arguments: the first shipped synthetic clip (a blue flash on frames 57-59 of 100) and its
    open-ended question, the tiny trained model, DyTo at its default budget."""
    with pytest.raises(SystemExit) as exit_:
        main(["demo"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "model:    tiny-trained (sha256 " in out and "question: What colour was the flash?" in out
    kept = [int(x) for x in re.search(r"kept \d+: \[([\d, ]*)\]", out).group(1).split(",")]
    assert {57, 58, 59} <= set(kept)
    assert re.search(r"^answer:\s+blue\s+\(expected: blue\)$", out, re.M)


def test_demo_reports_a_missing_video(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--video", str(tmp_path / "nope.mp4"), "--question", "?"])
    assert exit_.value.code == 1
    assert "video_missing" in capsys.readouterr().out
