"""The synthetic benchmark: clips generated from a seed, written as real MP4s (PyAV) and decoded
back by the data side; every answer is checked against the decoded pixels, not against the
generator's own bookkeeping. Then `dyto synthetic` / `dyto prepare synthetic` make records, a bad
sheet row is reported with its line, and the demo clips shipped in the package are exactly what
the generator makes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dyto.datamodules import synthetic as syn
from dyto.datamodules.prepare import prepare
from dyto.datamodules.video import decode_video, sample_frame_indices
from dyto.records import read_qa_records

DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "synthetic_demo"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One clip of each kind, written to MP4 and decoded with the run's frame sampling."""
    out = tmp_path_factory.mktemp("synthetic")
    sheet = syn.generate(out, "test", seed=0, clips=2 * len(syn.KINDS))
    rows = [json.loads(line) for line in sheet.read_text().splitlines()]
    decoded = {r["video"]: decode_video(out / "videos" / r["video"], syn.FRAMES) for r in rows}
    return out, rows, decoded


def nearest_colour(rgb) -> str:
    return min(syn.COLOURS, key=lambda c: np.abs(np.asarray(syn.COLOURS[c]) - rgb).sum())


def foreground(frame: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels that are not the frame's background (its corner colour)."""
    return np.abs(frame.astype(int) - frame[0, 0].astype(int)).sum(-1) > 30


def test_the_answers_are_true_of_the_decoded_frames(written):
    _, rows, decoded = written
    assert {r["kind"] for r in rows} == set(syn.KINDS) and len(rows) == 4 * len(syn.KINDS)
    for row in rows:
        video = decoded[row["video"]]
        frames, answer = video.frames.astype(int), row["answer"]
        assert video.total_frames == syn.FRAMES and frames.shape[1:] == (112, 112, 3)
        assert video.indices == sample_frame_indices(syn.FRAMES, syn.FRAMES)
        if row["kind"] == "flash":  # 2-3 frames of one flat colour, the answer's
            flat = [i for i, f in enumerate(frames) if np.ptp(f.reshape(-1, 3), axis=0).max() < 8]
            flashed = {video.indices[i] for i in flat}  # (frame 50 is sampled twice)
            assert 2 <= len(flashed) <= 3 and nearest_colour(frames[flat[0], 56, 56]) == answer
        elif row["kind"] == "count":  # the circle is on in `answer` separate runs of frames
            on = [foreground(f).any() for f in frames]
            assert sum(a and not b for a, b in zip(on, [False] + on[:-1])) == int(answer)
        elif row["kind"] == "order":  # the first foreground is the answer's colour
            first = next(f for f in frames if foreground(f).any())
            assert nearest_colour(first[foreground(first)].mean(0)) == answer
        elif row["kind"] == "direction":  # the foreground's centre moves that way
            ys, xs = zip(*(np.argwhere(foreground(f)).mean(0) for f in frames[[0, -1]]))
            step = {"right": xs[1] - xs[0], "left": xs[0] - xs[1], "down": ys[1] - ys[0], "up": ys[0] - ys[1]}
            assert step[answer] > 20
        else:  # cut: the last frame's shape is the answer (its fill share of the bounding box)
            mask = foreground(frames[-1])
            ys, xs = np.nonzero(mask)
            fill = mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
            expected = {"square": 1.0, "circle": np.pi / 4, "cross": 5 / 9, "triangle": 0.5}[answer]
            assert abs(fill - expected) < 0.06, (answer, fill)


def test_each_question_has_both_forms_and_options_in_one_fixed_order(written):
    _, rows, _ = written
    order = [*syn.COLOURS, *syn.SHAPES, *syn.DIRECTIONS, *syn.COUNTS]
    for oe, mc in zip(rows[::2], rows[1::2]):
        assert (oe["form"], mc["form"]) == syn.FORMS and oe["question"] == mc["question"] and oe["options"] is None
        assert mc["answer"] in mc["options"] and mc["options"] == sorted(mc["options"], key=order.index)


def test_clips_depend_on_seed_split_and_index_only():
    assert syn.scene(0, "test", 3) == syn.scene(0, "test", 3)
    np.testing.assert_array_equal(syn.render(syn.scene(0, "test", 3)), syn.render(syn.scene(0, "test", 3)))
    train = [syn.scene(0, "train", i) for i in range(50)]
    assert not any(syn.scene(0, "test", i) in train for i in range(50))  # the splits share no clip
    assert syn.scene(1, "test", 3) != syn.scene(0, "test", 3)
    short = syn.scene(0, "train", 7, frames=25)
    assert syn.render(short).shape == (25, 112, 112, 3) and short["kind"] == syn.KINDS[7 % len(syn.KINDS)]


def test_dyto_synthetic_writes_clips_sheet_and_records(tmp_path, capsys):
    from dyto.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["synthetic", "--out", str(tmp_path / "test"), "--clips", "5", "--records", str(tmp_path / "s.jsonl")])
    assert exit_.value.code == 0
    assert "wrote 10 records" in (out := capsys.readouterr().out) and "5/5 found" in out
    records = read_qa_records(tmp_path / "s.jsonl")
    assert [r.task for r in records] == list(syn.FORMS) * 5 and {r.meta["kind"] for r in records} == set(syn.KINDS)
    assert all(r.benchmark == "synthetic" and r.split == "test" for r in records)
    assert records[1].options[records[1].answer_index] == records[1].answer


def test_a_bad_sheet_row_is_reported_with_file_and_line(tmp_path):
    rows = [json.loads(line) for line in (DEMO / "questions.jsonl").read_text().splitlines()[:4]]
    assert [r["form"] for r in rows] == ["open_ended", "multiple_choice"] * 2
    rows[1]["kind"] = "zoom"
    rows[3]["options"] = None  # a multiple-choice row without options
    sheet = tmp_path / "questions.jsonl"
    sheet.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = prepare("synthetic", sheet, tmp_path / "r.jsonl")
    assert report.records == 2
    assert [str(e) for e in report.errors] == [
        f"{sheet}:2: 'kind' is 'zoom'; expected one of {syn.KINDS}",
        f"{sheet}:4: a multiple-choice row needs a list of at least 2 'options', got None"]


def test_the_shipped_demo_is_the_generator_output(tmp_path):
    shipped = [json.loads(line) for line in (DEMO / "questions.jsonl").read_text().splitlines()]
    clips = len(shipped) // 2
    sheet = syn.generate(tmp_path, "test", seed=0, clips=clips)
    assert [json.loads(line) for line in sheet.read_text().splitlines()] == shipped
    prepare("synthetic", DEMO / "questions.jsonl", tmp_path / "records.jsonl")
    assert (tmp_path / "records.jsonl").read_bytes() == (DEMO / "records.jsonl").read_bytes()
    for row in shipped[::2]:  # the MP4 bytes may differ across x264 builds; the frames may not
        ours = decode_video(tmp_path / "videos" / row["video"], syn.FRAMES).frames.astype(int)
        theirs = decode_video(DEMO / "videos" / row["video"], syn.FRAMES).frames.astype(int)
        assert np.abs(ours - theirs).max() <= 1
