"""MVBench, MLVU and LongVideoBench end to end on real files written here: windowed MP4s, a folder
of TVQA-style numbered frames at 3 fps, an MLVU video in another folder layout.

``dyto predict`` runs each benchmark through its own config (``configs/benchmarks/<name>.yaml``,
official choice rule included) on a tiny backbone; the same records then go through the
DataModule and ``VideoQA.predict_step`` on every tiny backbone (the CLI's pipeline without the
Trainer, which keeps the four-by-three grid within the test budget)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dyto.datamodules import VideoQADataModule
from dyto.datamodules.prepare import prepare
from dyto.models.backbone import list_backbones
from dyto.models.videoqa import VideoQA
from dyto.records import read_jsonl, read_qa_records, write_jsonl
from dyto.reduction import UniformReducer
from qa_sheets import FORMAT_SAMPLES, QA
from videos_util import write_video

REPO = Path(__file__).resolve().parents[1]
# a windowed MP4 and a windowed frame folder; an MLVU video in the scorer's layout; a 3-option question
KEEP = {"mvbench": ["action_sequence_1", "episodic_reasoning_2"], "mlvu": ["needle_1", "count_2"],
        "longvideobench": ["Qq1Ww2Ee3Rr_1"]}
FAMILIES = list_backbones()  # loads every family module (BACKBONES alone holds only those imported so far)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """benchmark -> (records file, video root) with real files at the paths the records name."""
    tmp = tmp_path_factory.mktemp("long_e2e")
    clips = [write_video(tmp / "a.mp4", 90), write_video(tmp / "b.mp4", 60, fps=20)]  # 3 s each, small
    out = {}
    for name, sample in FORMAT_SAMPLES.items():
        prepare(name, QA / sample, tmp / f"{name}_all.jsonl")
        records = [r for r in read_qa_records(tmp / f"{name}_all.jsonl") if r.id in KEEP[name]]
        write_jsonl(tmp / f"{name}.jsonl", (r.to_dict() for r in records))
        root = tmp / f"{name}_videos"
        for r in records:
            path = root / r.video
            if r.meta.get("frame_fps"):  # TVQA frames: 00001.jpg .. at 3 fps; the window 0.34-1.66 s holds 2-4
                path.mkdir(parents=True)
                for k in range(1, 13):
                    Image.fromarray(np.full((40, 56, 3), 20 * k, np.uint8)).save(path / f"{k:05d}.jpg")
            else:
                if name == "mlvu" and r.meta["task"] == "needle":  # choice_bench's layout: video/needle/<file>
                    path = root / "needle" / Path(r.video).name
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(clips[len(r.id) % 2], path)
        out[name] = (tmp / f"{name}.jsonl", root)
    return out


@pytest.mark.parametrize("benchmark,model", [("mvbench", "tiny"), ("mlvu", "tiny_llava_onevision"),
                                             ("longvideobench", "tiny_qwen2_5_vl")])
def test_dyto_predict_with_the_benchmark_config(data, tmp_path, monkeypatch, benchmark, model):
    from dyto.cli import main

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO)
    records, root = data[benchmark]
    main(["predict", "--config", "configs/trainer/cpu.yaml", "--config", f"configs/models/{model}.yaml",
          "--config", "configs/reducers/uniform.yaml", "--config", f"configs/benchmarks/{benchmark}.yaml",
          "--data.init_args.records", str(records), "--data.init_args.video_root", str(root),
          "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "3", "--model.max_new_tokens", "3",
          "--output.output_dir", str(tmp_path), "--output.run_name", "run", "--trainer.enable_progress_bar", "false"])
    run = tmp_path / "run"
    preds = list(read_jsonl(run / "artifacts" / "predictions.jsonl"))
    assert sorted(p["id"] for p in preds) == sorted(KEEP[benchmark]) and all(p["status"] == "ok" for p in preds), preds
    results = json.loads((run / "logs" / "results.json").read_text())
    mc = results["metrics"]["benchmarks"][benchmark]["multiple_choice"]
    assert mc["parse_mode"] == benchmark == results["choice_mode"]  # the config's official rule
    assert ("macro_accuracy" in mc) == (benchmark == "mlvu")
    assert set(results["published_cells"]["benchmarks"][benchmark]) == {"accuracy"}
    report = (run / "logs" / "report.md").read_text()
    assert "## Beside the published numbers of the same cell" in report
    assert f"| {benchmark} | accuracy |" in report and "none published for this cell" in report  # a tiny model
    if benchmark == "mvbench":
        tvqa = next(p for p in preds if p["id"] == "episodic_reasoning_2")
        assert tvqa["frames_sampled"] == 3  # frames 00002-00004 of the window, never the folder's others


@pytest.mark.parametrize("family", FAMILIES)
def test_every_tiny_backbone_answers_all_three(data, family):
    torch.manual_seed(0)
    module = VideoQA(family, reducer=UniformReducer(num_frames=4), max_new_tokens=2)
    for benchmark, (records, root) in data.items():
        dm = VideoQADataModule(str(records), benchmark=benchmark, video_root=str(root), batch_size=8, num_workers=0,
                               num_frames=module.num_frames, preprocessing=module.preprocessing)
        dm.setup("predict")
        out = [r for batch in dm.predict_dataloader() for r in module.predict_step(batch)]
        assert sorted(r["id"] for r in out) == sorted(KEEP[benchmark])
        assert all(r["status"] == "ok" and r["prediction"] is not None for r in out), [r["error"] for r in out]
        windowed = {r["id"]: r for r in out}
        if benchmark == "mvbench":
            assert windowed["episodic_reasoning_2"]["frames_sampled"] <= 4


def test_mlvu_under_the_lmms_eval_protocol_through_dyto_predict(data, tmp_path, monkeypatch):
    """The issue's command shape: tiny LLaVA-OneVision, FastVID, MLVU, ``--model.protocol lmms_eval``."""
    from dyto.cli import main

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO)
    records, root = data["mlvu"]
    main(["predict", "--config", "configs/trainer/cpu.yaml", "--config", "configs/models/tiny_llava_onevision.yaml",
          "--config", "configs/reducers/fastvid.yaml", "--config", "configs/benchmarks/mlvu.yaml",
          "--model.protocol", "lmms_eval", "--data.init_args.records", str(records),
          "--data.init_args.video_root", str(root), "--data.init_args.num_workers", "0",
          "--model.max_new_tokens", "3", "--output.output_dir", str(tmp_path), "--output.run_name", "run",
          "--trainer.enable_progress_bar", "false"])
    preds = list(read_jsonl(tmp_path / "run" / "artifacts" / "predictions.jsonl"))
    assert sorted(p["id"] for p in preds) == sorted(KEEP["mlvu"]) and all(p["status"] == "ok" for p in preds), preds
    assert {p["protocol"] for p in preds} == {"lmms_eval"}
    assert all(p["conv_mode"].startswith("lmms_eval:") for p in preds)
    results = json.loads((tmp_path / "run" / "logs" / "results.json").read_text())
    assert "macro_accuracy" in results["metrics"]["benchmarks"]["mlvu"]["multiple_choice"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_tiny_backbone_answers_all_three_under_lmms_eval(data, family):
    torch.manual_seed(0)
    module = VideoQA(family, reducer=UniformReducer(num_frames=4), max_new_tokens=2, protocol="lmms_eval")
    for benchmark, (records, root) in data.items():
        dm = VideoQADataModule(str(records), benchmark=benchmark, video_root=str(root), batch_size=8, num_workers=0,
                               num_frames=module.num_frames, preprocessing=module.preprocessing,
                               sampling=module.sampling)
        dm.setup("predict")
        out = [r for batch in dm.predict_dataloader() for r in module.predict_step(batch)]
        assert sorted(r["id"] for r in out) == sorted(KEEP[benchmark])
        assert all(r["status"] == "ok" and r["protocol"] == "lmms_eval" for r in out), [r["error"] for r in out]
        assert all(r["conv_mode"].startswith("lmms_eval:") for r in out)
