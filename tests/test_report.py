"""evaluate_run on a hand-made run directory; the Lightning callbacks (W&B offline, no network)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dyto.evaluation.callbacks import EvaluateCallback, WandbCallback, scrub, thumbnail_strip
from dyto.evaluation.judge import JudgeConfig
from dyto.evaluation.match import MATCH_MODEL
from dyto.evaluation.paper import canonical_benchmark, model_size, published
from dyto.evaluation.report import evaluate_run
from dyto.records import prediction_record, write_jsonl
from judge_server import JudgeServer

COMMON = {"model": "llava-hf/llava-v1.6-vicuna-7b-hf", "reducer": {"name": "dyto", "budget": 3680}}


def make_run(run_dir: Path) -> Path:
    preds = [prediction_record({"id": f"n{i}", "benchmark": "nextqa", "task": "multiple_choice", "question": "q",
                                "answer": "x", "options": list("abcde"), "answer_index": i % 5,
                                "meta": {"question_type": "CW"}}, status="ok", prediction="ABCDE"[i % 5] + ")",
                               frames_kept=[0, 3, 7], visual_tokens_out=3600 + i, frames_sampled=100,
                               timings={"decode": 10.0, "generate": 100.0 + i}, **COMMON) for i in range(4)]
    preds += [prediction_record({"id": f"o{i}", "benchmark": "MSVD_QA", "task": "open_ended", "question": "who?",
                                 "answer": "a man"}, status="ok", prediction=["a man", "the man is here", "a dog"][i],
                                frames_kept=[1, 2], visual_tokens_out=3000, timings={"decode": 5.0}, **COMMON)
              for i in range(3)]
    preds.append(prediction_record({"id": "o9", "benchmark": "MSVD_QA", "task": "open_ended", "question": "q",
                                    "answer": "a"}, status="video_missing", error="no file", **COMMON))
    write_jsonl(run_dir / "artifacts" / "predictions.jsonl", preds)
    return run_dir


@pytest.fixture(autouse=True)
def no_judge(monkeypatch):
    for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "WANDB_API_KEY"):
        monkeypatch.delenv(k, raising=False)


def test_match_report_has_paper_numbers_counts_and_budget(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "logs").mkdir()
    (run / "logs" / "tokens.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    res = evaluate_run(run)  # auto without key or base URL -> offline match
    assert res["scorer"] == "match" and res["metrics"]["judge_model"] == MATCH_MODEL
    oe = res["metrics"]["benchmarks"]["MSVD_QA"]["judged"]["default"]
    assert (oe["yes"], oe["no"], oe["accuracy"]) == (2, 1, pytest.approx(200 / 3))
    assert oe["accuracy_all"] == pytest.approx(50.0) and oe["score"] == pytest.approx((5 + 3 + 0) / 3)
    assert res["metrics"]["benchmarks"]["nextqa"]["multiple_choice"]["accuracy"] == 100.0
    eff = res["efficiency"]["dyto(budget=3680)"]
    mean = (3600 + 3601 + 3602 + 3603 + 3 * 3000) / 7  # ok items only
    assert eff["visual_tokens_out"] == {"mean": pytest.approx(mean), "min": 3000, "max": 3603}
    assert eff["frames_kept"]["max"] == 3 and eff["timings_ms"]["decode"] == pytest.approx((40 + 15) / 7)
    report = (run / "logs" / "report.md").read_text()
    assert "65.7 (7B, S2" in report and "77.6 (7B, S2" in report and "3.9 (7B, S2" in report
    assert "not comparable with the paper" in report and "![tokens](tokens.png)" in report
    assert "video_missing: 1" in report
    assert json.loads((run / "logs" / "results.json").read_text())["model_size"] == "7B"


def test_auto_uses_gpt_when_a_base_url_is_configured(tmp_path):
    run = make_run(tmp_path / "run")
    with JudgeServer("good") as srv:
        res = evaluate_run(run, judge_config=JudgeConfig(base_url=srv.base_url, timeout=2))
    assert res["scorer"] == "gpt" and len(srv.requests) == 3 and res["judge_run"]["judged"] == 3
    assert "gpt-3.5-turbo-0125" in (run / "logs" / "report.md").read_text()


def test_paper_table_lookup():
    assert canonical_benchmark("NExT-QA") == "nextqa" and canonical_benchmark("vcgbench_temporal") == "vcgbench"
    assert model_size("llava-v1.6-34b") == "34B" and model_size("tiny") is None
    assert [p.value for p in published("EgoSchema", "accuracy", "34B")] == [56.8]
    assert published("star", "accuracy", "7B")[0].source == "S4"


class FakeWriter:
    """Stands in for PredictionWriter (run_dir + idempotent finalize)."""

    def __init__(self, run_dir):
        self.run_dir, self.calls = run_dir, 0

    def finalize(self, trainer=None):
        self.calls += 1
        return self.run_dir / "artifacts" / "predictions.jsonl"


def test_evaluate_and_wandb_callbacks_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):  # keep W&B's staging inside tmp
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    run = make_run(tmp_path / "run")
    (run / "logs").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(run / "logs" / "keyframes.png")
    writer, wb, ev = FakeWriter(run), WandbCallback(project="dyto-test"), EvaluateCallback(scorer="match")
    trainer = SimpleNamespace(is_global_zero=True, callbacks=[writer, wb, ev], datamodule=None)
    module = SimpleNamespace(hparams={"model": "tiny", "openai_api_key": "sk-abcdefabcdefabcdef", "max_new_tokens": 12},
                             image_mean=None, image_std=None)
    for cb in (wb, ev):
        cb.on_predict_start(trainer, module)
    pixels = torch.randn(8, 3, 32, 32)
    wb.on_predict_batch_end(trainer, module, [{"id": "n0", "frames_kept": [0, 3, 7]}],
                            {"ids": ["n0"], "pixel_values": [pixels]}, 0)
    for cb in (wb, ev):  # W&B first: it triggers the evaluation itself, which then runs only once
        cb.on_predict_end(trainer, module)
    assert writer.calls == 1 and ev.results is not None
    import wandb

    wandb.teardown()  # the service flushes the offline record log on shutdown, not on finish()
    assert "results:" in capsys.readouterr().out
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = {p.relative_to(runs[0]).as_posix(): p for p in runs[0].rglob("*") if p.is_file()}
    assert any(k.endswith(".wandb") for k in files)
    assert any(k.startswith("files/media/images/figures/keyframes") for k in files)
    table = next(p for k, p in files.items() if "samples" in k and k.endswith(".table.json"))
    data = json.loads(table.read_text())
    assert "thumbnails" in data["columns"] and len(data["data"]) == 8
    assert data["data"][0][data["columns"].index("verdict")] == "correct"
    # offline, the summary and config live in the run's .wandb record log; media go to the staged artifact
    log = next(p for k, p in files.items() if k.endswith(".wandb")).read_bytes()
    assert b"metrics/benchmarks/nextqa/multiple_choice/accuracy" in log and b"max_new_tokens" in log
    staged = [p for p in (tmp_path / "wandb_data_dir").rglob("*") if p.is_file()]
    assert any(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in staged)  # the thumbnail strip
    everything = b"".join(p.read_bytes() for p in [*files.values(), *staged])
    assert b"sk-abcdefabcdefabcdef" not in everything


def test_scrub_and_thumbnails():
    cfg = {"judge": {"api_key": "x", "max_new_tokens": 3, "hf_token": "y", "url": "sk-0123456789abcdefgh"}}
    assert scrub(cfg) == {"judge": {"api_key": "***", "max_new_tokens": 3, "hf_token": "***", "url": "***"}}
    strip = thumbnail_strip(torch.zeros(20, 3, 64, 64), list(range(20)), size=16, max_frames=8)
    assert strip.shape == (16, 128, 3) and strip.dtype.name == "uint8"
