"""`dyto sweep` on the offline demo (tiny random-weight LLaVA-NeXT, 5 questions on 2 real clips):
a 5 reducers x 3 budgets grid (+ the unreduced concat cell) decodes and encodes each video once,
a rerun predicts and decodes nothing, every cell is a normal run folder, a cell answers exactly
as `dyto predict` with that reducer does, and a changed setting stops the sweep."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dyto.cli import main
from dyto.records import read_jsonl
from dyto.runs import RunFolder, fingerprint_digest

ROOT = Path(__file__).resolve().parents[1]
REDUCERS = ["dyto", "slowfast:fast_grid=1", "fastvid", "holitom", "concat"]  # slowfast: 4x4 grid = its fast 4x4
RETENTION = ["0.1", "0.25", "0.5"]  # of 16 frames x 16 tokens: 26, 64, 128 tokens
COMMON = ["--config", str(ROOT / "configs" / "demo_random.yaml"), "--model.max_new_tokens", "3",
          "--data.init_args.num_workers", "0"]  # in-process decoding, so the counter sees every call


def sweep(out: Path, *extra: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", *COMMON, "--reducers", *REDUCERS, "--retention", *RETENTION, "--num-frames", "16",
              "--out", str(out), "--resamples", "2000", "--no-pictures", *extra])  # pictures: a test below
    assert exit_.value.code == 0


class Counter:
    """Wraps a real function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    import dyto.datamodules.base as base
    from dyto.models.llava_next import LlavaNext

    out = tmp_path_factory.mktemp("sweep") / "demo"
    mp = pytest.MonkeyPatch()
    decodes, encodes = Counter(base.decode_video), Counter(LlavaNext.encode)
    mp.setattr(base, "decode_video", decodes)
    mp.setattr(LlavaNext, "encode", lambda self, *a, **k: encodes(self, *a, **k))
    try:
        sweep(out)
        first = (decodes.calls, encodes.calls)
        logs = {p: p.read_text() for p in out.glob("*/artifacts/predictions.rank0.jsonl")}
        sweep(out)  # the same command again: nothing left to predict
        second = (decodes.calls - first[0], encodes.calls - first[1])
    finally:
        mp.undo()
    return out, first, second, logs


def cells(out: Path) -> list[str]:
    return [f"{r.split(':')[0].replace('slowfast', 'slowfast_fast_grid1')}-retention{v}"
            for r in REDUCERS for v in RETENTION] + ["concat-unreduced"]


def test_each_video_is_decoded_and_encoded_once_for_the_whole_grid(swept):
    out, first, second, logs = swept
    assert first == (2, 2)      # 2 videos, 16 cells x 5 questions
    assert second == (0, 0)     # the rerun decodes nothing ...
    assert {p: p.read_text() for p in logs} == logs  # ... and predicts nothing
    assert len(logs) == 16


def test_every_cell_is_a_normal_evaluated_run(swept):
    out, *_ = swept
    for name in cells(out):
        run = RunFolder(out / name).load()
        assert [p["id"] for p in run.predictions] == json.loads((out / name / "artifacts" / "inputs.json").read_text())
        assert len(run.predictions) == 5 and all(p["status"] == "ok" for p in run.predictions)
        digest = fingerprint_digest(run.fingerprint)
        assert {p["fingerprint"] for p in run.predictions} == {digest} == {run.results["fingerprint"]}
        assert run.fingerprint["data"]["num_frames"] == 16
        assert run.fingerprint["model"]["reducer"]["num_frames"] == 16
        assert all(p["frames_sampled"] == 16 and p["visual_tokens_in"] == 16 * 16 for p in run.predictions)
        assert run.results["scorer"] == "match" and (out / name / "logs" / "report.md").exists()
        assert (out / name / "config.yaml").exists()
        assert {p.name for p in (out / name / "logs").glob("*.png")} == {"budget.png"}  # --no-pictures
    # the budgets each method promises exactly on this grid (docs/reducers.md)
    for name, tokens in [("dyto-retention0.1", 26), ("dyto-retention0.5", 128), ("slowfast_fast_grid1-retention0.1", 26),
                         ("holitom-retention0.25", 64), ("concat-retention0.25", 64), ("concat-unreduced", 256)]:
        assert {p["visual_tokens_out"] for p in RunFolder(out / name).load().predictions} == {tokens}, name


def test_the_table_json_and_picture(swept):
    out, *_ = swept
    table = (out / "sweep.md").read_text()
    data = json.loads((out / "sweep.json").read_text())
    assert [c["cell"] for c in data["cells"]] == cells(out)
    assert data["num_frames"] == 16 and data["baseline"] == "concat-unreduced"
    assert "same 16 frames per video" in table
    for c in data["cells"]:
        run = RunFolder(c["run_dir"]).load()
        tokens = [p["visual_tokens_out"] for p in run.predictions]
        assert c["visual_tokens"] == {"mean": sum(tokens) / 5, "min": min(tokens), "max": max(tokens)}
        acc = c["accuracy"]  # the run's own headline accuracy, with an interval around it
        assert acc["kind"] == "choice" and acc["items"] == 2
        assert acc["estimate"] == pytest.approx(c["headline_accuracy"])
        assert acc["low"] <= acc["estimate"] <= acc["high"]
        row = (f"| {c['cell']} | {c['label']} | retention = {c['value']:g} | " if c["knob"] else f"| {c['cell']} |")
        assert row in table
    assert "| concat-unreduced | concat | unreduced | 256.0 [256, 256] | 5 / 0 |" in table
    png = (out / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_a_cell_answers_as_dyto_predict_with_its_reducer(swept, tmp_path):
    out, *_ = swept
    main(["predict", *COMMON, "--model.reducer.init_args.budget", "3680", "--model.reducer.init_args.num_frames",
          "16", "--model.reducer.init_args.retention", "0.25", "--output.output_dir", str(tmp_path),
          "--output.run_name", "dyto_predict"])
    predicted = RunFolder(tmp_path / "dyto_predict").load()
    cell = RunFolder(out / "dyto-retention0.25").load()
    assert predicted.fingerprint == cell.fingerprint
    keys = ("id", "prediction", "prediction2", "frames_kept", "visual_tokens_out", "prompt_tokens", "fingerprint")
    assert [{k: p[k] for k in keys} for p in predicted.predictions] == [{k: p[k] for k in keys} for p in cell.predictions]


def test_a_rerun_with_a_changed_setting_stops(swept, tmp_path, capsys):
    out, *_ = swept
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = {p: p.read_text() for p in copy.glob("*/artifacts/predictions.rank0.jsonl")}
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", *COMMON[:-4], "--model.max_new_tokens", "4", "--data.init_args.num_workers", "0",
              "--reducers", *REDUCERS, "--retention", *RETENTION, "--num-frames", "16", "--out", str(copy)])
    [message] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dyto: ")]
    assert exit_.value.code == 2 and message.startswith("dyto: sweep cell dyto-retention0.1:")
    assert "max_new_tokens: 3 -> 4" in message and "another --out" in message
    assert {p: p.read_text() for p in copy.glob("*/artifacts/predictions.rank0.jsonl")} == before


def test_grid_parsing_and_bad_input():
    from dyto.evaluation.sweep import build_grid, parse_reducer

    assert parse_reducer("slowfast:fast_grid=1,slow_frames=4") == ("slowfast", {"fast_grid": 1, "slow_frames": 4})
    grid = build_grid(["uniform", "concat"], [0.5], [64], num_frames=8)
    assert [c.name for c in grid] == ["uniform-retention0.5", "uniform-target_tokens64", "concat-retention0.5",
                                      "concat-target_tokens64", "concat-unreduced"]
    assert all(c.reducer.num_frames == 8 for c in grid)
    assert grid[1].reducer.target_tokens == 64 and grid[-1].reducer.target_tokens is None
    assert [c.name for c in build_grid(["dyto"], [], [], 16)] == ["dyto-default"]
    with pytest.raises(ValueError, match="key=value"):
        parse_reducer("slowfast:fast_grid")
    with pytest.raises(ValueError, match="--reducers: 'nope' is not allowed; expected one of the known reducers"):
        build_grid(["nope"], [0.5], [], 8)
    with pytest.raises(ValueError, match="twice"):
        build_grid(["dyto", "dyto"], [0.5], [], 8)


def test_a_missing_video_fails_its_questions_in_every_cell_and_the_sweep_goes_on(tmp_path):
    demo = [json.loads(line) for line in (ROOT / "dyto" / "assets" / "demo" / "questions.jsonl").read_text().splitlines()]
    lost = dict(demo[1], id="lost-1", video="no_such_clip.mp4")
    records = tmp_path / "questions.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in [demo[1], lost]))
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", *COMMON, "--data.init_args.records", str(records), "--reducers", "uniform", "concat",
              "--retention", "0.5", "--num-frames", "8", "--out", str(out), "--resamples", "200", "--no-pictures"])
    assert exit_.value.code == 0
    for cell in ("uniform-retention0.5", "concat-retention0.5", "concat-unreduced"):
        preds = {p["id"]: p for p in read_jsonl(out / cell / "artifacts" / "predictions.jsonl")}
        assert preds["demo-bikes-2"]["status"] == "ok" and preds["demo-bikes-2"]["frames_sampled"] == 8
        assert preds["lost-1"]["status"] == "video_missing" and "no_such_clip" in preds["lost-1"]["error"]
    assert "| uniform-retention0.5 | uniform | retention = 0.5 | 64.0 [64, 64] | 1 / 1 |" in (out / "sweep.md").read_text()


def test_percent_of_the_unreduced_cell(tmp_path):
    from dyto.evaluation.report import evaluate_run
    from dyto.evaluation.sweep import build_grid
    from dyto.evaluation.sweep_report import sweep_rows
    from dyto.records import write_jsonl

    def mc(qid, right, tokens):
        return {"id": qid, "benchmark": "nextqa", "task": "multiple_choice", "question": "q?", "answer": "x",
                "options": ["x", "y"], "answer_index": 0, "status": "ok", "prediction": "A" if right else "B",
                "visual_tokens_out": tokens, "frames_kept": [0], "reducer": {"name": "r"}, "timings": {}}

    grid = build_grid(["concat"], [0.25], [], num_frames=8)   # concat-retention0.25, concat-unreduced
    for cell, right, tokens in ((grid[0], [1, 0, 0, 0], 32), (grid[1], [1, 1, 0, 0], 128)):
        write_jsonl(tmp_path / cell.name / "artifacts" / "predictions.jsonl",
                    [mc(f"q{i}", r, tokens) for i, r in enumerate(right)])
        evaluate_run(tmp_path / cell.name, scorer="match")
    reduced, unreduced = sweep_rows(grid, tmp_path, "concat-unreduced", resamples=500)
    assert reduced["accuracy"]["estimate"] == 25.0 and unreduced["accuracy"]["estimate"] == 50.0
    assert reduced["percent_of_baseline"] == 50.0 and unreduced["percent_of_baseline"] == 100.0
    # paired on the 4 questions: q0 right in both, q1 right in the unreduced cell only, q2 q3 in neither
    assert reduced["mcnemar"] == {"items": 4, "both": 1, "only_baseline": 1, "only_run": 0, "neither": 2,
                                  "p_value": 1.0} and unreduced["mcnemar"] is None
    assert reduced["visual_tokens"] == {"mean": 32, "min": 32, "max": 32}
    assert 0.0 <= reduced["accuracy"]["low"] <= 25.0 <= reduced["accuracy"]["high"] <= 100.0


def test_the_table_states_dycokes_floor():
    """TTM alone keeps frames 0, 4, ..., 28 and 30 of 32 whole: a 10% or 25% DyCoke cell cannot be met."""
    from dyto.evaluation.sweep_report import render_sweep

    row = {"cell": "dycoke-retention0.1", "reducer": "dycoke", "label": "dycoke", "knob": "retention", "value": 0.1,
           "visual_tokens": None, "accuracy": None, "ok": 0, "failed": 4, "percent_of_baseline": None}
    text = render_sweep([row], 32, None, {})
    assert "keeps 9 of the 32 frames whole" in text and "floor is 28% of T x N plus 23 tokens" in text
    assert "| dycoke-retention0.1 | dycoke | retention = 0.1 | – | 0 / 4 |" in text
    assert "DyCoke" not in render_sweep([{**row, "reducer": "fastvid", "label": "fastvid"}], 32, None, {})


def test_the_sweep_decodes_in_workers_with_dyto_predicts_default_loader_settings(tmp_path, monkeypatch):
    """No config sets data.num_workers / prefetch_factor: both stay "auto", as in `dyto predict`,
    and the sweep resolves them the same way (it once handed "auto" to the DataLoader)."""
    import dyto.datamodules.base as base

    monkeypatch.setattr(base, "available_cpus", lambda: 3)  # this machine's shape: 3 cores -> 2 workers
    decodes = Counter(base.decode_video)
    monkeypatch.setattr(base, "decode_video", decodes)  # counts calls in this process only
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--config", str(ROOT / "configs" / "trainer" / "cpu.yaml"),
              "--config", str(ROOT / "configs" / "models" / "tiny.yaml"), "--model.max_new_tokens", "2",
              "--data", "VideoQADataModule", "--data.records", str(ROOT / "dyto/assets/demo/questions.jsonl"),
              "--data.video_root", str(ROOT / "dyto/assets/demo"), "--data.only_found_videos", "true",
              "--reducers", "dyto", "uniform", "--retention", "0.25", "--num-frames", "8", "--out", str(out),
              "--resamples", "200"])
    assert exit_.value.code == 0
    for cell in ("dyto-retention0.25", "uniform-retention0.25"):
        preds = list(read_jsonl(out / cell / "artifacts" / "predictions.jsonl"))
        assert len(preds) == 5 and {p["status"] for p in preds} == {"ok"}
        # each cell has a run's pictures (from its first video), linked from its report
        pictures = {p.name for p in (out / cell / "logs").glob("*.png")}
        assert pictures == {"keyframes.png", "budget.png"} | ({"merge_map.png"} if cell.startswith("dyto") else set())
        assert "![keyframes](keyframes.png)" in (out / cell / "logs" / "report.md").read_text()
    assert decodes.calls == 0  # every video was decoded in a DataLoader worker process
