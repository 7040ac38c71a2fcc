"""Golden snapshots of the four reference prompt templates (docs/method.md §7; SF-LLaVA prompt.py)."""

import pytest

from dyto.models.prompts import (
    ANSWER_PREFIX,
    TEMPLATES,
    default_conv_mode,
    model_family,
    options_block,
    render_prompt,
)

Q = "What is the man doing?"
OPTS = ["riding a bike", "cooking", "swimming"]

# Copied character for character from docs/method.md §7 (and SF-LLaVA's prompt.py), %s filled by hand.
GOLDEN = {
    "image_seq_v3": (
        "USER: <image>\nThe input consists of a sequence of key frames from a video. Answer concisely "
        "with overall content and context of the video, highlighting any significant events, characters, "
        "or objects that appear throughout the video. Question: What is the man doing? \nASSISTANT:\n"
        "Answer: In the video,"
    ),
    "image_seq_34b_v3": (
        "<|im_start|>system\n Answer the question. <|im_end|>\n<|im_start|>user\n <image>\nThe input "
        "consists of a sequence of key frames from a video. Answer concisely with overall content and "
        "context of the video, highlighting any significant events, characters, or objects that appear "
        "throughout the video. Question: What is the man doing? <|im_end|>\n<|im_start|>assistant\n"
        "Answer: In the video,"
    ),
    "multiple_choice_allvideo_v4": (
        "You are a helpful expert in video analysis. Select the best option to answer the question. "
        "USER: <image>\nThe input consists of a sequence of key frames from a video.\nQuestion: What is "
        "the man doing?\nOptions:\n(A) riding a bike\n(B) cooking\n(C) swimming\nOnly give the best "
        "option. \nASSISTANT:\nAnswer: Best option:("
    ),
    "multiple_choice_allvideo_34b_v4": (
        "<|im_start|>system\n You are a helpful expert in video analysis. Select the best option to "
        "answer the question. <|im_end|>\n<|im_start|>user\n <image>\nThe input consists of a sequence "
        "of key frames from a video. Question: What is the man doing?\nOptions:\n(A) riding a bike\n"
        "(B) cooking\n(C) swimming\nOnly give the best option. <|im_end|>\n<|im_start|>assistant\n"
        "Answer: Best option:("
    ),
}


@pytest.mark.parametrize("mode", sorted(GOLDEN))
def test_golden_prompt(mode):
    options = OPTS if "multiple_choice" in mode else None
    assert render_prompt(mode, Q, options) == GOLDEN[mode]
    assert GOLDEN[mode].count("<image>") == 1
    assert GOLDEN[mode].endswith(ANSWER_PREFIX[mode])


def test_exactly_the_four_reference_modes():
    assert set(TEMPLATES) == set(GOLDEN)


def test_options_block_v4():
    assert options_block(["x", "y"]) == "(A) x\n(B) y\n"
    assert options_block([f"o{i}" for i in range(5)]).splitlines()[-1] == "(E) o4"


def test_question_with_percent_sign_is_inserted_verbatim():
    assert "Question: 50% of %s? \n" in render_prompt("image_seq_v3", "50% of %s?")


@pytest.mark.parametrize(
    "mode,options,message",
    [
        ("multiple_choice_allvideo_v4", None, "needs options"),
        ("multiple_choice_allvideo_34b_v4", [], "needs options"),
        ("image_seq_v3", OPTS, "open-ended"),
        ("vicuna_v1", None, "unknown conv_mode"),
    ],
)
def test_render_errors(mode, options, message):
    with pytest.raises(ValueError, match=message):
        render_prompt(mode, Q, options)


@pytest.mark.parametrize(
    "family,task,mode",
    [
        ("7b", "open_ended", "image_seq_v3"),
        ("7b", "vcg_generic", "image_seq_v3"),
        ("7b", "vcg_consistency", "image_seq_v3"),
        ("7b", "multiple_choice", "multiple_choice_allvideo_v4"),
        ("34b", "open_ended", "image_seq_34b_v3"),
        ("34b", "vcg_temporal", "image_seq_34b_v3"),
        ("34b", "multiple_choice", "multiple_choice_allvideo_34b_v4"),
    ],
)
def test_default_conv_mode(family, task, mode):
    assert default_conv_mode(family, task) == mode


def test_default_conv_mode_rejects_unknown_family():
    with pytest.raises(ValueError):
        default_conv_mode("13b", "open_ended")


def test_model_family():
    assert model_family("llava-hf/llava-v1.6-34b-hf") == "34b"
    assert model_family("llava-hf/llava-v1.6-vicuna-7b-hf") == "7b"
    assert model_family("tiny") == "7b"
