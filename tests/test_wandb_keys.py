"""W&B dashboards compare runs: two real runs with different reducers log the same metric keys,
and what tells them apart (backbone, reducer and its parameters, benchmark, fingerprint) is run
config. Read back from the offline record logs the runs wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from dyto.cli import main
from wandb_offline import read_offline_run

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_runs_with_different_reducers_share_their_metric_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    for name, reducer in (("dyto", []), ("slowfast", ["--config", "configs/reducers/slowfast.yaml"])):
        main(["predict", "--config", "configs/demo_random.yaml", *reducer, "--config", "configs/logging/wandb.yaml",
              "--data.limit", "3", "--data.num_workers", "0", "--model.max_new_tokens", "3",
              "--output.output_dir", str(tmp_path / "out"), "--output.run_name", name,
              "--trainer.enable_progress_bar", "false"])
    import wandb

    wandb.teardown()  # flush the offline record logs
    runs = {name: read_offline_run(next((tmp_path / "out" / name / "wandb").glob("offline-run-*")))
            for name in ("dyto", "slowfast")}
    metric = ("eval/", "efficiency/", "timing/", "judge/")  # pictures differ: slowfast merges nothing to draw
    keys = {name: {k for k in r["logged"] if k.startswith(metric)} for name, r in runs.items()}
    assert keys["dyto"] == keys["slowfast"]
    for r in runs.values():  # the per-question table and the keyframe picture
        assert any(k.startswith("samples/") for k in r["logged"]) and any(k.startswith("figures/keyframes/") for k in r["logged"])
    for key in ("eval/demo/accuracy", "eval/demo/items", "efficiency/visual_tokens_out_mean",
                "efficiency/frames_kept_mean", "efficiency/prefill_tflops_mean", "efficiency/kv_cache_mb_mean",
                "timing/encode_ms", "timing/reduce_ms", "timing/generate_ms"):
        assert key in keys["dyto"], key
    assert not [k for k in keys["dyto"] if "budget" in k or "(" in k]  # no setting inside a key
    dyto, slowfast = runs["dyto"], runs["slowfast"]
    assert dyto["group"] == slowfast["group"] == "demo"
    assert (dyto["config"]["reducer"], slowfast["config"]["reducer"]) == ("dyto", "slowfast")
    assert dyto["config"]["reducer_params"]["budget"] == 96 and slowfast["config"]["reducer_params"]["slow_frames"] == 10
    assert dyto["config"]["benchmark"] == "demo" and dyto["config"]["backbone"]
    assert dyto["config"]["fingerprint"] != slowfast["config"]["fingerprint"]
    assert dyto["logged"]["efficiency/visual_tokens_out_mean"] != slowfast["logged"]["efficiency/visual_tokens_out_mean"]
    # the config as the run saved it (config.yaml), with the data and the judge settings, nothing internal
    config = dyto["config"]
    assert config["data"]["init_args"]["records"] == "dyto/assets/demo/questions.jsonl"
    assert config["data"]["init_args"]["limit"] == 3 and config["model"]["max_new_tokens"] == 3
    assert config["evaluation"]["scorer"] == "match" and config["evaluation"]["judge"]["model"] == "gpt-3.5-turbo-0125"
    assert "_instantiator" not in str(config)
    # the demo mixes multiple choice (bikes-2) and judged questions (bikes-1, bunny-1): both accuracies
    logged = dyto["logged"]
    assert {"eval/demo/multiple_choice_accuracy", "eval/demo/judged_accuracy"} <= set(logged)
    assert logged["eval/demo/accuracy"] == logged["eval/demo/multiple_choice_accuracy"]
    # the table W&B shows is the artifact copy: there the thumbnails are image files, not "Image"
    import json

    tables = [json.loads(p.read_text()) for p in (tmp_path / "wandb_data_dir").rglob("*") if p.is_file()
              and p.read_bytes()[:1] == b"{" and b'"thumbnails"' in p.read_bytes()]
    assert tables
    for table in tables:
        cells = [row[table["columns"].index("thumbnails")] for row in table["data"]]
        assert cells and all(c["_type"] == "image-file" and c["path"].endswith(".png") for c in cells)
    assert dyto["logged"]["efficiency/prefill_tflops_mean"] != slowfast["logged"]["efficiency/prefill_tflops_mean"]
    assert dyto["config"]["inner_stage"] is None
