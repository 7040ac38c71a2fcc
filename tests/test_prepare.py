"""`dyto prepare`: every benchmark's sheet -> canonical records, with the spec's traps handled."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter

import pytest

from dyto.datamodules.benchmarks import BENCHMARKS
from dyto.datamodules.prepare import main, prepare
from dyto.records import SPLITS, TASKS, read_qa_records
from qa_sheets import FORMAT_SAMPLES, QA, SHEETS, SYNTHETIC_SAMPLE, unpack_full_sheet

# qa/SOURCES.md; VCGBench = 1996 generic + 499 temporal + 499 consistency pairs.
FULL_COUNTS = {"msvd_qa": 6415, "msrvtt_qa": 12278, "tgif_qa": 13691, "activitynet_qa": 8000, "nextqa": 4996,
               "egoschema": 500, "intentqa": 2044, "star": 7098, "vcgbench": 2994}
SPLIT = {"msvd_qa": "val", "msrvtt_qa": "val", "tgif_qa": "test", "activitynet_qa": "test", "nextqa": "val",
         "egoschema": "subset", "intentqa": "val", "star": "val", "videomme": "test", "vcgbench": "test",
         "mvbench": "test", "mlvu": "val", "longvideobench": "val"}
SAMPLE_COUNTS = {**{b: 30 for b in SHEETS}, "vcgbench": 90, "videomme": 4, "mvbench": 40, "mlvu": 14,
                 "longvideobench": 5, "synthetic": 20}
SPLIT["synthetic"] = "test"


def videomme_rows() -> list[dict]:
    """Synthetic rows in the lmms-lab/Video-MME schema (the real sheet may not be redistributed)."""
    rows = []
    for v in range(2):
        for q in range(2):
            rows.append({"video_id": f"00{v}", "duration": ["short", "long"][v], "domain": "Knowledge",
                         "sub_category": "Humanity & History", "url": f"https://www.youtube.com/watch?v=yt{v}",
                         "videoID": f"yt{v}", "question_id": f"00{v}-{q + 1}", "task_type": "Counting Problem",
                         "question": f"How many things, {v}/{q}?", "options": ["A. Apples.", "B. Candles.", "C. Berries.",
                                                                             "D. The same number."],
                         "answer": "ABCD"[q + v]})
    return rows


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("videomme")
    (d / "videomme.json").write_text(json.dumps(videomme_rows()))
    return {**{b: QA / s for b, s in {**SHEETS, **FORMAT_SAMPLES}.items()}, "videomme": d / "videomme.json",
            "synthetic": SYNTHETIC_SAMPLE}


def test_registry_covers_every_benchmark():
    assert set(BENCHMARKS) == set(SHEETS) | set(FORMAT_SAMPLES) | {"videomme", "synthetic"}


@pytest.mark.parametrize("benchmark", sorted(BENCHMARKS))
def test_sample_prepares_cleanly(benchmark, sources, tmp_path):
    out = tmp_path / "qa.jsonl"
    report = prepare(benchmark, sources[benchmark], out)
    assert report.errors == [] and report.records == SAMPLE_COUNTS[benchmark]
    records = read_qa_records(out)  # unique ids, valid fields
    assert len(records) == report.records
    for r in records:
        assert r.benchmark == benchmark and r.split == SPLIT[benchmark] and r.task in TASKS and r.split in SPLITS
        assert r.question.strip() and r.answer.strip() and r.video
        if r.task == "multiple_choice":
            assert r.options[r.answer_index] == r.answer
    first = out.read_bytes()
    prepare(benchmark, sources[benchmark], out)
    assert out.read_bytes() == first  # byte-identical rerun


@pytest.mark.parametrize("benchmark", sorted(FULL_COUNTS))
def test_full_sheet_counts(benchmark, tmp_path):
    report = prepare(benchmark, unpack_full_sheet(SHEETS[benchmark], tmp_path / "sheet"), tmp_path / "qa.jsonl")
    assert report.errors == [] and report.records == FULL_COUNTS[benchmark]
    records = read_qa_records(tmp_path / "qa.jsonl")
    assert len({r.id for r in records}) == FULL_COUNTS[benchmark]
    if benchmark == "activitynet_qa":
        fixed = {r.id: r.question for r in records if "fixed" in r.meta}
        assert sorted(fixed) == sorted(["v_UzmsAb15Bso_9", "v_6O4S2CpRB0A_9", "v_utgRhyBvtRU_10"])
        assert fixed["v_UzmsAb15Bso_9"] == "what are the benefits of skateboarding" and len(report.fixes) == 3
    if benchmark == "tgif_qa":
        assert all(r.id.startswith("FRAMEQA") for r in records)
        assert len({r.meta["question_id"] for r in records}) < 13691  # the sheet's question_id is per GIF
    if benchmark == "vcgbench":
        assert Counter(r.task for r in records) == {"vcg_generic": 1996, "vcg_temporal": 499, "vcg_consistency": 499}
        assert all(r.question2 for r in records if r.task == "vcg_consistency")
    if benchmark == "star":
        noisy = [r for r in records if r.meta["clip"] == "OY3LS_22.1_38.425000000000004"]
        assert noisy and noisy[0].end == 38.425000000000004 and noisy[0].video == "OY3LS.mp4"
        assert Counter(r.meta["category"] for r in records) == {"Interaction": 2398, "Sequence": 3586,
                                                                "Prediction": 624, "Feasibility": 490}


def test_benchmark_specific_fields(sources, tmp_path):
    def first(benchmark):
        prepare(benchmark, sources[benchmark], tmp_path / f"{benchmark}.jsonl")
        return read_qa_records(tmp_path / f"{benchmark}.jsonl")

    nextqa = first("nextqa")
    assert (nextqa[0].id, nextqa[0].video, nextqa[0].answer_index) == ("4010069381_6", "4010069381.mp4", 0)
    assert all(r.meta["report_type"] == ("TN" if r.meta["question_type"] == "TP" else r.meta["question_type"])
               for r in nextqa)
    ego = first("egoschema")[0]
    assert (ego.id, ego.answer_index, ego.video) == ("0074f737-11cb-497d-8d07-77c3a8127391", 3,
                                                     "0074f737-11cb-497d-8d07-77c3a8127391.mp4")
    assert "500" in ego.meta["subset"]
    star = first("star")[0]
    assert (star.video, star.start, star.end, star.answer_index) == ("6H78U.mp4", 11.1, 19.6, 2)
    tgif = first("tgif_qa")[0]
    assert (tgif.id, tgif.video, tgif.meta["question_id"]) == ("FRAMEQA1159", "tumblr_no73q2fm0I1uuf348o1_250", "27138")
    mme = first("videomme")
    assert mme[0].options == ["Apples.", "Candles.", "Berries.", "The same number."]
    assert [r.answer_index for r in mme] == [0, 1, 1, 2] and mme[3].video == "yt1.mp4"
    assert mme[3].meta["duration"] == "long" and mme[3].meta["task_type"] == "Counting Problem"


def test_videomme_jsonl_and_parquet(tmp_path):
    jsonl = tmp_path / "v.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in videomme_rows()))
    assert prepare("videomme", jsonl, tmp_path / "a.jsonl").records == 4
    import pyarrow as pa
    import pyarrow.parquet as pq

    # the official distribution: one parquet file, `options` a list column
    pq.write_table(pa.Table.from_pylist(videomme_rows()), tmp_path / "v.parquet")
    assert prepare("videomme", tmp_path / "v.parquet", tmp_path / "b.jsonl").records == 4
    assert (tmp_path / "b.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match=r"broken\.parquet: not a readable parquet file"):
        prepare("videomme", tmp_path / "broken.parquet", tmp_path / "c.jsonl")


def test_malformed_rows_are_reported_and_skipped(tmp_path):
    header = ["", "video_name", "frame_count", "width", "height", "question", "answer_number", "question_id",
              "question_type", "a0", "a1", "a2", "a3", "a4", "answer"]
    good = ["0", "11", "9", "640", "480", "q?", "1", "111", "TP", "a", "b", "c", "d", "e", "b"]
    rows = [good,
            good[:5],                                          # line 3: missing cells
            [*good[:6], "x", "112", *good[8:]],                # line 4: answer number not an integer
            [*good[:6], "2", "113", *good[8:]],                # line 5: number points at another option
            [*good[:6], "1", "114", *good[8:-1], "zzz"],       # line 6: answer not among the options
            [*good[:5], "", "1", "115", *good[8:]],            # line 7: empty question
            [*good[:7], "999", *good[8:]],                     # line 8: question_id not <video><qid>
            good]                                              # line 9: duplicate id
    path = tmp_path / "next.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    report = prepare("nextqa", path, tmp_path / "out.jsonl")
    assert report.records == 1
    assert [(e.line, e.file) for e in report.errors] == [(n, str(path)) for n in range(3, 10)]
    messages = [e.message for e in report.errors]
    for expected, got in zip(["expected 15 cells", "not an integer", "is option 'c'", "not among the options",
                              "empty 'question'", "not video '11'", "duplicate id '11_1'"], messages):
        assert expected in got
    assert read_qa_records(tmp_path / "out.jsonl")[0].meta["report_type"] == "TN"


def test_coverage_report_uses_the_datamodule_resolution(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    (root / "v_1QIUV7WYKXg.mp4").write_bytes(b"x")  # ActivityNet: v_ kept
    (root / "9eniCub7u60.mkv").write_bytes(b"x")    # v_ stripped, another extension
    report = prepare("activitynet_qa", QA / "ActivityNet_QA.csv", tmp_path / "a.jsonl", video_root=root)
    records = read_qa_records(tmp_path / "a.jsonl")
    videos = {r.video for r in records}
    assert report.videos_found == 2 and len(report.videos_missing) == len(videos) - 2
    assert "v_1QIUV7WYKXg" not in report.videos_missing and "v_9eniCub7u60" not in report.videos_missing
    assert report.questions_without_video == sum(r.video in report.videos_missing for r in records)
    assert "2/" in report.summary() and "missing" in report.summary()


def test_cli_main(tmp_path, capsys):
    shutil.copy(QA / "STAR.csv", tmp_path / "STAR.csv")
    assert main(["star", "--qa-file", str(tmp_path / "STAR.csv"), "--out", str(tmp_path / "s.jsonl")]) == 0
    assert "star: wrote 30 records" in capsys.readouterr().out
    assert main(["star", "--qa-file", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "absent.csv" in capsys.readouterr().err


def test_a_broken_videomme_jsonl_names_file_and_line(tmp_path):
    from dyto.datamodules.sheets import read_json_rows

    path = tmp_path / "videomme.jsonl"
    path.write_text('{"video_id": "001"}\n\n{"video_id": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"videomme\.jsonl:3: not valid JSON"):
        read_json_rows(path)


@pytest.mark.parametrize("name", ["NExT_QA.csv", "VCGBench"])
def test_a_gzipped_sheet_is_read_as_the_sheet_it_holds(name, tmp_path, capsys):
    from qa_sheets import QA_FULL

    benchmark = next(b for b, s in SHEETS.items() if s == name)
    plain = unpack_full_sheet(name, tmp_path / "plain")
    packed = QA_FULL / name if name == "VCGBench" else QA_FULL / f"{name}.gz"  # as shipped
    prepare(benchmark, plain, tmp_path / "plain.jsonl")
    assert main([benchmark, "--qa-file", str(packed), "--out", str(tmp_path / "packed.jsonl")]) == 0
    assert f"wrote {FULL_COUNTS[benchmark]} records" in capsys.readouterr().out
    assert (tmp_path / "packed.jsonl").read_bytes() == (tmp_path / "plain.jsonl").read_bytes()


def test_every_missing_video_is_listed_in_a_file(tmp_path, capsys):
    root = tmp_path / "videos"
    root.mkdir()
    (root / "4010069381.mp4").write_bytes(b"x")
    out = tmp_path / "prepared" / "nextqa.jsonl"
    assert main(["nextqa", "--qa-file", str(QA / "NExT_QA.csv"), "--out", str(out), "--video-root", str(root)]) == 0
    printed = capsys.readouterr().out
    videos = sorted({r.video for r in read_qa_records(out)} - {"4010069381.mp4"})
    listing = tmp_path / "prepared" / "nextqa.missing_videos.txt"
    assert len(videos) > 20 and listing.read_text().splitlines() == videos  # the printed list stops at 20
    assert f"1/{len(videos) + 1} found" in printed and f"every missing video, one per line: {listing}" in printed
    for v in videos:  # now every video is there: the list is gone, since it would be wrong
        (root / v).write_bytes(b"x")
    assert main(["nextqa", "--qa-file", str(QA / "NExT_QA.csv"), "--out", str(out), "--video-root", str(root)]) == 0
    assert not listing.exists() and "0 missing" in capsys.readouterr().out


def test_a_video_root_that_does_not_exist_is_named_so(tmp_path, capsys):
    root = tmp_path / "no" / "such" / "folder"
    assert main(["nextqa", "--qa-file", str(QA / "NExT_QA.csv"), "--out", str(tmp_path / "n.jsonl"),
                 "--video-root", str(root)]) == 0
    printed = capsys.readouterr().out
    assert f"videos: {root} does not exist, so no video was checked" in printed and "found" not in printed
    assert not (tmp_path / "n.missing_videos.txt").exists()
