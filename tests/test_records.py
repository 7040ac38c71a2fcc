"""JSONL I/O: torn writes from killed processes, bad lines named by file and line."""

from __future__ import annotations

import json

import pytest

from dyto.errors import RecordsError
from dyto.records import QARecord, open_append_log, append_jsonl, read_jsonl, read_qa_records, write_jsonl


def torn_log(path):
    path.write_text('{"id": "a", "status": "ok"}\n{"id": "b", "status": "ok"}\n{"id": "c", "sta', encoding="utf-8")


def test_a_torn_last_line_is_an_error_unless_the_file_is_an_append_log(tmp_path):
    path = tmp_path / "log.jsonl"
    torn_log(path)
    with pytest.raises(ValueError, match=r"log\.jsonl:3: not valid JSON"):
        list(read_jsonl(path))
    assert [r["id"] for r in read_jsonl(path, allow_torn_tail=True)] == ["a", "b"]


def test_a_bad_line_in_the_middle_is_always_an_error(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": "a"}\n{"id": \n{"id": "c"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"log\.jsonl:2: not valid JSON"):
        list(read_jsonl(path, allow_torn_tail=True))


@pytest.mark.parametrize("content", ['{"id": "a", "status": "ok"}\n{"id": "b", "sta', '{"id": "b", "sta', ""])
def test_open_append_log_cuts_a_torn_tail_before_appending(tmp_path, content):
    path = tmp_path / "log.jsonl"
    path.write_text(content, encoding="utf-8")
    with open_append_log(path) as f:
        append_jsonl(f, [{"id": "b", "status": "ok"}])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line) for line in lines)  # every line parses: the log stays readable
    assert [json.loads(line)["id"] for line in lines][-1] == "b"
    assert len(lines) == content.count("\n") + 1


def test_open_append_log_keeps_a_clean_log_and_creates_a_missing_one(tmp_path):
    path = tmp_path / "sub" / "log.jsonl"
    with open_append_log(path) as f:
        append_jsonl(f, [{"id": "a"}])
    with open_append_log(path) as f:
        append_jsonl(f, [{"id": "b"}])
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]


MC = {"id": "m", "benchmark": "demo", "task": "multiple_choice", "video": "v.mp4", "question": "where?",
      "answer": "a street", "options": ["a kitchen", "a street"], "answer_index": 1}
OE = {"id": "x", "benchmark": "demo", "task": "open_ended", "video": "v.mp4", "question": "q", "answer": "a"}


@pytest.mark.parametrize("bad, problem", [
    (dict(OE, id="m"), "duplicate id 'm' (first at line 1)"),
    (dict(OE, colour="red"), "record 'x': unknown field colour"),
    (dict(OE, task="essay"), "record 'x': unknown task 'essay'"),
    ({k: v for k, v in OE.items() if k not in ("question", "answer")}, "missing required fields question, answer"),
    (dict(OE, id=7), "id must be a non-empty string, got 7"),
    (dict(OE, video=""), "video must be a non-empty string"),
    (dict(OE, meta=None), "meta must be a JSON object"),
    (dict(OE, start="0:10"), "start must be a number of seconds or null"),
    (dict(MC, id="x", options=["only one"], answer="only one", answer_index=0), "needs options, a list of at least 2"),
    (dict(MC, id="x", answer_index=2), "answer_index must be an integer in 0..1, got 2"),
    (dict(MC, id="x", answer_index=True), "answer_index must be an integer in 0..1, got True"),
    (dict(MC, id="x", answer_index=0), "answer 'a street' is not option 0 ('a kitchen')"),
    (dict(MC, id="x", answer_index=None), "answer_index is null but the answer 'a street' is option 1"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_qa_record_is_named_by_file_and_line(tmp_path, bad, problem):
    path = tmp_path / "qa.jsonl"  # line 2 is blank: lines count in the file, not records
    path.write_text(json.dumps(MC) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(RecordsError) as err:
        read_qa_records(path)
    assert (err.value.path, err.value.line) == (str(path), 3) and problem in str(err.value), str(err.value)
    assert str(err.value).startswith(f"{path}:3: ")


def test_good_qa_records_round_trip(tmp_path):
    path = tmp_path / "qa.jsonl"
    none_of_them = dict(MC, id="n", answer="a forest", answer_index=None)  # MLVU keeps such rows, always wrong
    write_jsonl(path, [MC, OE, none_of_them])
    assert [r.to_dict() for r in read_qa_records(path)] == [QARecord(**r).to_dict() for r in (MC, OE, none_of_them)]
