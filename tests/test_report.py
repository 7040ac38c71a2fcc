"""evaluate_run on a hand-made run directory; the Lightning callbacks (W&B offline, no network)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dyto.callbacks import EvaluateCallback, WandbCallback, scrub, thumbnail_strip
from dyto.evaluation.judge import JudgeConfig, JudgeUnavailable
from dyto.evaluation.match import MATCH_MODEL
from dyto.evaluation.paper import canonical_benchmark, model_size, published
from dyto.evaluation.report import evaluate_run
from dyto.predict import PredictionWriter
from dyto.records import prediction_record, read_jsonl, write_jsonl
from judge_server import JudgeServer
from wandb_offline import read_offline_run

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


def test_a_multiple_choice_only_report_names_no_judge_and_keeps_the_two_unparsed_counts_apart(tmp_path):
    run = tmp_path / "run"
    preds = [prediction_record({"id": f"n{i}", "benchmark": "nextqa", "task": "multiple_choice", "question": "q",
                                "answer": "x", "options": list("abcde"), "answer_index": 0}, status="ok",
                               prediction=["A)", "no option named here"][i], **COMMON) for i in range(2)]
    write_jsonl(run / "artifacts" / "predictions.jsonl", preds)
    res = evaluate_run(run)
    assert res["metrics"]["benchmarks"]["nextqa"]["multiple_choice"]["unparsed"] == 1
    report = (run / "logs" / "report.md").read_text()
    assert "scorer: none needed (multiple choice only" in report
    assert "prompt versions" not in report and "offline string matching" not in report
    assert "| MC unparsed | judged | unjudged | judge unparsable |" in report
    assert "| nextqa | 2 | ok: 2 | 1 | – | – | – | – |" in report
    mixed = make_run(tmp_path / "mixed")  # open-ended too: the judge's columns and prompt version are back
    evaluate_run(mixed)
    report = (mixed / "logs" / "report.md").read_text()
    assert "prompt versions: default=" in report and "correctness" not in report  # no VCGBench item here
    assert "| MSVD_QA | 4 | ok: 3, video_missing: 1 | – | 3 | 0 | 0 | 0 |" in report


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


def finished_writer(run_dir: Path, trainer) -> PredictionWriter:
    """A real PredictionWriter after predict: its rank log holds make_run's predictions, and its
    own on_predict_epoch_end (every rank done) merges them as in a real run."""
    preds = list(read_jsonl(run_dir / "artifacts" / "predictions.jsonl"))
    write_jsonl(run_dir / "artifacts" / "predictions.rank0.jsonl", preds)
    (run_dir / "artifacts" / "inputs.json").write_text(json.dumps([p["id"] for p in preds]))
    writer = PredictionWriter(output_dir=str(run_dir.parent), run_name=run_dir.name)
    writer.resolve_run_dir(trainer)
    writer.on_predict_epoch_end(trainer, None)
    return writer


def test_evaluate_and_wandb_callbacks_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):  # keep W&B's staging inside tmp
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    run = make_run(tmp_path / "run")
    (run / "logs").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(run / "logs" / "keyframes.png")
    wb, ev = WandbCallback(project="dyto-test"), EvaluateCallback(scorer="match")
    module = SimpleNamespace(hparams={"model": "tiny", "openai_api_key": "sk-abcdefabcdefabcdef", "max_new_tokens": 12,
                                      "_instantiator": "jsonargparse's own"},
                             image_mean=None, image_std=None)
    trainer = SimpleNamespace(is_global_zero=True, callbacks=[wb, ev], datamodule=None, lightning_module=module,
                              strategy=SimpleNamespace(barrier=lambda name=None: None))
    writer = finished_writer(run, trainer)
    trainer.callbacks.insert(0, writer)
    for cb in (wb, ev):
        cb.on_predict_start(trainer, module)
    pixels = torch.randn(8, 3, 32, 32)
    wb.on_predict_batch_end(trainer, module, [{"id": "n0", "frames_kept": [0, 3, 7]}],
                            {"ids": ["n0"], "pixel_values": [pixels]}, 0)
    for cb in (wb, ev):  # W&B first: it triggers the evaluation itself, which then runs only once
        cb.on_predict_end(trainer, module)
    assert writer.finalize() == run / "artifacts" / "predictions.jsonl" and ev.results is not None
    assert json.loads((run / "artifacts" / "summary.json").read_text())["records"] == 8
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
    # offline, the metrics and config live in the run's .wandb record log; media go to the staged artifact
    logged = read_offline_run(runs[0])
    assert logged["logged"]["eval/nextqa/accuracy"] == 100.0 and logged["config"]["model"]["max_new_tokens"] == 12
    assert logged["config"]["model"]["openai_api_key"] == "***" and "_instantiator" not in logged["config"]["model"]
    assert logged["config"]["evaluation"]["scorer"] == "match"  # no config.yaml here: the callback's settings
    assert logged["config"]["evaluation"]["judge"]["model"] == "gpt-3.5-turbo-0125"
    staged = [p for p in (tmp_path / "wandb_data_dir").rglob("*") if p.is_file()]
    assert any(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in staged)  # the thumbnail strip
    everything = b"".join(p.read_bytes() for p in [*files.values(), *staged])
    assert b"sk-abcdefabcdefabcdef" not in everything


def test_scrub_and_thumbnails():
    cfg = {"judge": {"api_key": "x", "max_new_tokens": 3, "hf_token": "y", "url": "sk-0123456789abcdefgh"}}
    assert scrub(cfg) == {"judge": {"api_key": "***", "max_new_tokens": 3, "hf_token": "***", "url": "***"}}
    strip = thumbnail_strip(torch.zeros(20, 3, 64, 64), list(range(20)), size=16, max_frames=8)
    assert strip.shape == (16, 128, 3) and strip.dtype.name == "uint8"


def test_rerun_without_key_keeps_gpt_results(tmp_path):
    run = make_run(tmp_path / "run")
    with JudgeServer("good") as srv:
        first = evaluate_run(run, judge_config=JudgeConfig(base_url=srv.base_url, timeout=2))
    gpt_results = (run / "logs" / "results.json").read_text()
    again = evaluate_run(run)  # auto, no key, no base URL: the GPT cache decides, and no client is made
    assert again["scorer"] == "gpt" and again["metrics"] == first["metrics"]
    assert again["judge_run"]["requests"] == 0 and again["judge_run"]["cached"] == 3
    assert json.loads((run / "logs" / "results.json").read_text())["metrics"] == json.loads(gpt_results)["metrics"]
    assert "gpt-3.5-turbo-0125" in (run / "logs" / "report.md").read_text()
    # an explicit offline match run never overwrites the GPT-judged files
    match = evaluate_run(run, scorer="match")
    assert match["scorer"] == "match" and match["outputs"]["results"] == "logs/results.match.json"
    assert json.loads((run / "logs" / "results.match.json").read_text())["scorer"] == "match"
    assert "GPT-judged results stay" in (run / "logs" / "report.match.md").read_text()
    assert json.loads((run / "logs" / "results.json").read_text())["metrics"] == json.loads(gpt_results)["metrics"]
    assert MATCH_MODEL not in (run / "logs" / "report.md").read_text()


def test_cached_only_evaluation_needs_no_key(tmp_path):
    run = make_run(tmp_path / "run")
    with JudgeServer("good") as srv:
        judged = evaluate_run(run, "gpt", JudgeConfig(base_url=srv.base_url, timeout=2))
    res = evaluate_run(run, "gpt")  # explicit gpt, nothing left to judge: no key needed
    assert res["metrics"] == judged["metrics"] and res["judge_run"]["requests"] == 0
    # a partial cache without a key: what is missing is counted unjudged, never scored as wrong
    cache = run / "eval_save_dir" / "judgments.jsonl"
    lines = cache.read_text().splitlines(keepends=True)
    cache.write_text("".join(lines[:-1]))
    res = evaluate_run(run)
    oe = res["metrics"]["benchmarks"]["MSVD_QA"]["judged"]["default"]
    assert res["scorer"] == "gpt" and (oe["judged"], oe["unjudged"]) == (2, 1)
    assert res["judge_run"]["unjudged"] == 1 and "no judge configured" in res["judge_run"]["stopped"]
    report = (run / "logs" / "report.md").read_text()
    assert "1 unjudged" in report and "| MSVD_QA | 4 | ok: 3, video_missing: 1 | – | 2 | 1 | 0 | 0 |" in report
    with pytest.raises(JudgeUnavailable):  # explicitly asked to judge, with work left and no judge
        evaluate_run(run, "gpt")


def test_one_vcgbench_average_row_and_choice_mode(tmp_path):
    run = tmp_path / "run"
    preds = [prediction_record({"id": f"{task}{i}", "benchmark": "vcgbench", "task": f"vcg_{task}", "question": "q",
                                "answer": "a man surfs", "question2": "q2" if task == "consistency" else None},
                               status="ok", prediction="a man surfs", prediction2="a man surfs", **COMMON)
             for task in ("generic", "temporal", "consistency") for i in range(2)]
    preds.append(prediction_record({"id": "m0", "benchmark": "nextqa", "task": "multiple_choice", "question": "q",
                                    "answer": "a", "options": list("abcde"), "answer_index": 0},
                                   status="ok", prediction="a man walks", **COMMON))
    write_jsonl(run / "artifacts" / "predictions.jsonl", preds)
    res = evaluate_run(run)
    assert res["metrics"]["benchmarks"]["vcgbench"]["vcgbench_average"] == 5.0
    report = (run / "logs" / "report.md").read_text()
    assert report.count("VCGBench average") == 1
    assert res["metrics"]["benchmarks"]["nextqa"]["multiple_choice"]["accuracy"] == 100.0  # reference: "a" -> A
    strict = evaluate_run(run, choice_mode="strict")
    assert strict["choice_mode"] == "strict" and strict["metrics"]["choice_mode"] == "strict"
    assert strict["metrics"]["benchmarks"]["nextqa"]["multiple_choice"]["accuracy"] == 0.0
    assert "multiple-choice parsing: `strict`" in (run / "logs" / "report.md").read_text()
    ev = EvaluateCallback(scorer="match", choice_mode="strict")
    trainer = SimpleNamespace(is_global_zero=True, callbacks=[ev], datamodule=None,
                              strategy=SimpleNamespace(barrier=lambda name=None: None))
    trainer.callbacks.insert(0, finished_writer(run, trainer))
    assert ev.evaluate(trainer)["metrics"]["choice_mode"] == "strict"
    with pytest.raises(ValueError, match="parse mode"):
        evaluate_run(run, choice_mode="nope")


def test_wandb_config_without_a_saved_config_has_the_datamodule_arguments():
    from dyto.callbacks.wandb import run_config
    from dyto.datamodules import VideoQADataModule

    records = str(Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo" / "questions.jsonl")
    dm = VideoQADataModule(records, video_root="videos", limit=2, only_found_videos=False)
    cfg = run_config(SimpleNamespace(hparams={"_instantiator": "x"}), dm, None)  # as built from Python
    assert cfg["data"]["records"] == records and cfg["data"]["limit"] == 2 and cfg["data"]["num_workers"] == "auto"
    assert cfg["model"] == {} and cfg["benchmark"] == "demo"
