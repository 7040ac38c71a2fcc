"""What a new user reads first: every command's --help, with its options, defaults and descriptions."""

from __future__ import annotations

import re

import pytest

from dyto.cli import main


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert exit_.value.code in (0, None)
    return capsys.readouterr().out


def test_top_level_help_keeps_its_line_breaks(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert "configs/models/llava_next_7b.yaml \\\n                 --config configs/reducers/dyto.yaml" in out
    assert "\n    dyto sweep --config configs/demo.yaml" in out and "\n    dyto demo [--video" in out


def test_predict_help_lists_the_datamodule_options_with_descriptions(capsys):
    out = help_text(capsys, "predict", "--help")
    data = out[out.index("The DataModule's options"):]
    for name, words in (("records", "written by ``dyto prepare``"), ("video_root", "holding the benchmark's videos"),
                        ("limit", "only the first N questions"), ("only_found_videos", "whose video is not"),
                        ("num_workers", "decoding processes"), ("backend", "video decoder")):
        entry = re.search(rf"\n  --data\.{name} .*?(?=\n  --|\Z)", data, re.S)
        assert entry and words in " ".join(entry.group(0).split()), name
    assert "--data CONFIG" not in data


@pytest.mark.parametrize("command,expected", [
    ("demo", ["--question QUESTION   the question", "(default: auto)", "(default: dyto)", "(default: 256)"]),
    ("reduce-demo", ["(default: release)", "token budget Z", "(default: 3680)", "(default: 100)",
                     "bigbuckbunny.mp4)"])])
def test_demo_helps_give_defaults_and_descriptions(capsys, command, expected):
    out = " ".join(help_text(capsys, command, "--help").split())
    for text in expected:
        assert " ".join(text.split()) in out, text
    assert "(default: None)" not in out
