"""JSONL I/O: torn writes from killed processes, bad lines named by file and line."""

from __future__ import annotations

import json

import pytest

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


def test_qa_records_reject_duplicates_and_unknown_fields_with_the_record_number(tmp_path):
    rec = QARecord(id="x", benchmark="demo", task="open_ended", video="v.mp4", question="q", answer="a").to_dict()
    path = tmp_path / "qa.jsonl"
    write_jsonl(path, [rec, dict(rec, id="y"), rec])
    with pytest.raises(ValueError, match=r"record 3: duplicate id 'x' \(first at record 1\)"):
        read_qa_records(path)
    write_jsonl(path, [dict(rec, colour="red")])
    with pytest.raises(ValueError, match=r"record 1: .*unknown fields \['colour'\]"):
        read_qa_records(path)
    write_jsonl(path, [dict(rec, task="essay")])
    with pytest.raises(ValueError, match="unknown task 'essay'"):
        read_qa_records(path)
