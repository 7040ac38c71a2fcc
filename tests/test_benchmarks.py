"""Every registered benchmark is complete, checked from the registry itself: a benchmark added
later is checked by the same tests without editing them (except for naming its sample sheet).

For each spec: the preparer turns the sample sheet in tests/fixtures/qa/ into records of the
spec's tasks, windows and breakdown fields; the video rule is the one resolution uses; its YAML
exists, parses and names it; its published numbers are well-formed and reach the report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dyto.datamodules.benchmarks import (BENCHMARKS, METRICS, BenchmarkSpec, Published, VideoRule, breakdown_keys,
                                         get_benchmark, paper_rows, register_benchmark, unregister_benchmark)
from dyto.datamodules.paths import resolver_for
from dyto.datamodules.prepare import prepare
from dyto.evaluation import paper
from dyto.evaluation.published import all_results
from dyto.records import read_qa_records
from qa_sheets import FORMAT_SAMPLES, SHEETS, SYNTHETIC_SAMPLE
from test_prepare import videomme_rows
from videos_util import FIXTURES

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "benchmarks"
# The published sample of each benchmark's sheet (qa/SOURCES.md); VideoMME's may not be
# redistributed, so its rows are synthetic (tests/test_prepare.py).
SAMPLES = {**SHEETS, **FORMAT_SAMPLES, "videomme": None, "synthetic": SYNTHETIC_SAMPLE}
UNPUBLISHED = {"synthetic"}  # generated here (dyto synthetic): no paper reports a number on it
NAMES = sorted(BENCHMARKS)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """name -> the records its preparer makes of its sample sheet."""
    tmp = tmp_path_factory.mktemp("samples")
    (tmp / "videomme.json").write_text(json.dumps(videomme_rows()))
    out = {}
    for name in NAMES:
        if name not in SAMPLES:
            continue  # test_every_benchmark_has_a_sample_sheet says what to do
        sheet = FIXTURES / "qa" / SAMPLES[name] if SAMPLES[name] else tmp / "videomme.json"
        report = prepare(name, sheet, tmp / f"{name}.jsonl")
        assert report.errors == [], f"{name}: the sample sheet should prepare cleanly: {report.errors[:3]}"
        out[name] = read_qa_records(tmp / f"{name}.jsonl")
    return out


def test_every_benchmark_has_a_sample_sheet():
    missing = sorted(set(NAMES) - set(SAMPLES))
    assert not missing, f"add a sample of the QA sheet of {missing} to tests/fixtures/qa/ and to SAMPLES here"


@pytest.mark.parametrize("name", NAMES)
def test_spec_prepares_records_with_its_tasks_windows_and_breakdowns(name, prepared):
    spec = get_benchmark(name)
    if name not in prepared:
        pytest.fail(f"{name}: no sample sheet (see test_every_benchmark_has_a_sample_sheet)")
    records = prepared[name]
    assert records and all(r.benchmark == name for r in records)
    assert {r.task for r in records} == set(spec.tasks)  # every declared task occurs, no other
    windowed = [r.start is not None and r.end is not None for r in records]
    assert (any(windowed) if spec.windows else not any(windowed)), f"{name}: windows are as declared"
    mc = [r for r in records if r.task == "multiple_choice"]
    for field in spec.breakdown_fields:
        assert all(r.meta.get(field) is not None for r in mc), f"{name}: meta[{field!r}] missing"
    if spec.type_field:
        types = {spec.reporting_type(r.meta) for r in mc}
        assert None not in types and all(r.meta.get(spec.type_field) is not None for r in mc)
        if spec.type_groups:
            assert types <= set(spec.type_groups), f"{name}: types {types - set(spec.type_groups)} have no group"
    for r in mc:  # what metrics counts each record under: the spec's kinds, and only those
        kinds = {k for k, _ in breakdown_keys(name, r.meta)}
        assert kinds == ({"by_type"} if spec.type_field else set()) | ({"by_group"} if spec.type_groups else set()) \
            | {f"by_{f}" for f in spec.breakdown_fields}


@pytest.mark.parametrize("name", NAMES)
def test_spec_video_rule_and_frames(name, tmp_path):
    spec = get_benchmark(name)
    assert isinstance(spec.videos, VideoRule) and resolver_for(name, tmp_path).resolution == spec.videos
    assert spec.num_frames is None or spec.num_frames >= 1
    assert spec.sheet, f"{name}: say what --qa-file expects"


@pytest.mark.parametrize("name", NAMES)
def test_spec_config_exists_parses_and_names_it(name):
    path = CONFIGS / f"{name}.yaml"
    assert path.is_file(), f"add configs/benchmarks/{name}.yaml"
    data = yaml.safe_load(path.read_text())["data"]
    assert data["class_path"] == "dyto.datamodules.VideoQADataModule"
    assert data["init_args"]["benchmark"] == name and data["init_args"]["records"].endswith(f"{name}.jsonl")


@pytest.mark.parametrize("name", NAMES)
def test_spec_published_numbers_are_well_formed_and_reach_the_report(name):
    spec = get_benchmark(name)
    if name in UNPUBLISHED:
        assert spec.published == ()
        return
    assert spec.published or [r for r in all_results() if r.benchmark == name], \
        f"{name}: no published number, DyTo's or a peer's (the report would say 'not published')"
    seen = set()
    for p in spec.published:
        assert p.benchmark == name and p.metric in METRICS and isinstance(p.value, float) and p.source
        assert re.fullmatch(r"\d+(\.\d+)?B|\?", p.size), p
        assert 0 < p.value <= (100 if p.metric == "accuracy" else 5), p
        assert (p.metric, p.size) not in seen, f"{name}: two {p.metric} numbers for {p.size}"
        seen.add((p.metric, p.size))
        assert p in paper.published(name, p.metric, p.size) and p in paper.PUBLISHED


def test_paper_reader_keeps_its_names():
    assert paper.canonical_benchmark("MSVD_QA") == "msvd_qa" and paper.canonical_benchmark("NExT-QA") == "nextqa"
    assert paper.canonical_benchmark("vcgbench_temporal") == "vcgbench" and paper.canonical_benchmark("Foo") == "foo"
    assert [p.value for p in paper.published("MSVD_QA", "score", "34B")] == [4.1]
    assert [p.value for p in paper.published("MVBench", "accuracy")] == [45.2, 52.9]  # from its spec
    assert paper.published("msvd_qa", "vcgbench_average") == []


def test_the_old_preparers_table_is_a_live_view_of_the_registry():
    from dyto.datamodules.preparers import PREPARERS

    assert set(PREPARERS) == set(BENCHMARKS) and PREPARERS["nextqa"] is get_benchmark("nextqa").prepare
    register_benchmark(spec := BenchmarkSpec(name="late_bench", tasks=("open_ended",), prepare=lambda path: None))
    try:
        assert PREPARERS["late_bench"] is spec.prepare and len(PREPARERS) == len(BENCHMARKS)
    finally:
        unregister_benchmark("late_bench")
    assert "late_bench" not in PREPARERS


def test_registry_refuses_bad_or_duplicate_specs():
    def prep(path):
        raise AssertionError("not called")

    good = BenchmarkSpec(name="tiny_bench", tasks=("open_ended",), prepare=prep)
    with pytest.raises(ValueError, match="already registered"):
        register_benchmark(BenchmarkSpec(name="nextqa", tasks=("open_ended",), prepare=prep))
    try:
        assert register_benchmark(good) is good and get_benchmark("tiny_bench") is good
        assert register_benchmark(good) is good  # the same spec twice is harmless
    finally:
        unregister_benchmark("tiny_bench")
    for bad, why in [(dict(name="Bad-Name"), "lower-case"), (dict(tasks=("essay",)), "subset"),
                     (dict(tasks=()), "subset"), (dict(num_frames=0), "num_frames"),
                     (dict(type_groups={"a": "b"}), "type_field"),
                     (dict(published=paper_rows("other", "accuracy", {"7B": 1.0}, "S2")), "must name this"),
                     (dict(published=(Published("tiny_bench", "f1", "7B", 1.0, "S2"),)), "must name this")]:
        with pytest.raises(ValueError, match=why):
            BenchmarkSpec(**{"name": "tiny_bench", "tasks": ("open_ended",), "prepare": prep, **bad})
    with pytest.raises(TypeError):
        register_benchmark({"name": "x"})
