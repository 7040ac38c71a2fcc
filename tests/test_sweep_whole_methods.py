"""`dyto sweep` with whole methods (outer reducer + inner-LLM stage) and `--match flops`, on the
offline demo (tiny random-weight LLaVA-NeXT, 2 layers, 5 questions on 2 real clips)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dyto.cli import main
from dyto.evaluation.sweep import build_grid, parse_method
from dyto.evaluation.sweep_flops import match_flops, method_flops
from dyto.models.cost import TextShape, prefill_flops
from dyto.runs import RunFolder

ROOT = Path(__file__).resolve().parents[1]


def test_grid_of_whole_methods_and_flops_matching_arithmetic():
    assert parse_method("dycoke:prune_ratio=0.5+dycoke_kv:layer=1") == ("dycoke", {"prune_ratio": 0.5}, "dycoke_kv",
                                                                         {"layer": 1})
    grid = build_grid(["concat+fastv:layer=1", "concat", "dycoke+dycoke_kv"], [], [64], num_frames=8)
    assert [c.name for c in grid] == ["concat+fastv_layer1-target_tokens64", "concat-target_tokens64",
                                      "concat-unreduced", "dycoke+dycoke_kv-target_tokens64"]
    assert grid[0].stage.config() == {"name": "fastv", "layer": 1, "ratio": 0.5} and grid[1].stage is None
    # a 28-layer model, FastV at K = 2 keeping half: 2 layers on 100 + v tokens, 26 on 100 + v / 2
    shape = TextShape(layers=28, hidden=3584, heads=28, kv_heads=4, head_dim=128, intermediate=18944, vocab=152064)
    matched = match_flops(grid, shape, text_tokens=100, temporal=8, grid_cells=196)
    fastv = matched[0]
    assert fastv.match == "flops" and fastv.name.endswith("-flops")
    target = prefill_flops(shape, [164] * 28)
    v = fastv.visual_target
    assert method_flops(shape, 100, v, fastv.stage) <= target < method_flops(shape, 100, v + 1, fastv.stage)
    assert fastv.reducer.target_tokens == v and 64 < v < 2 * 64
    assert matched[1].visual_target == 64 and matched[1].reducer is grid[1].reducer     # no stage: unchanged
    assert matched[3].visual_target == 64                                              # decode stage: prefill as is
    assert matched[2] is grid[2]                                                       # no budget


@pytest.mark.slow
def test_sweep_compares_whole_methods_at_matched_prefill_flops(tmp_path):
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--config", str(ROOT / "configs" / "demo.yaml"), "--model.max_new_tokens", "3",
              "--data.init_args.num_workers", "0", "--reducers", "concat+fastv:layer=1", "concat",
              "--target-tokens", "64", "--num-frames", "8", "--match", "flops", "--out", str(out),
              "--resamples", "500"])
    assert exit_.value.code == 0
    data = json.loads((out / "sweep.json").read_text())
    cells = {c["cell"]: c for c in data["cells"]}
    assert data["match"] == "flops"
    fastv, plain = cells["concat+fastv_layer1-target_tokens64-flops"], cells["concat-target_tokens64-flops"]
    assert fastv["inner_stage"] == {"name": "fastv", "layer": 1, "ratio": 0.5} and plain["inner_stage"] is None
    # concat keeps whole frames of 16 tokens: FastV's raised target buys more frames at about the same prefill
    assert fastv["visual_tokens"]["mean"] > plain["visual_tokens"]["mean"] == 64
    assert fastv["prefill_tflops"]["mean"] == pytest.approx(plain["prefill_tflops"]["mean"], rel=0.15)
    table = (out / "sweep.md").read_text()
    assert "prefill TFLOPs mean [min, max]" in table and f"equal FLOPs (outer {fastv['visual_target']})" in table
    config = yaml.safe_load((out / fastv["cell"] / "config.yaml").read_text())
    assert config["model"]["inner_stage"] == {"class_path": "dyto.models.inner.stages.FastVStage",
                                              "init_args": {"layer": 1, "ratio": 0.5}}
    assert "inner_stage" not in yaml.safe_load((out / plain["cell"] / "config.yaml").read_text())["model"]
    run = RunFolder(out / fastv["cell"]).load()
    assert run.fingerprint["model"]["inner_stage"]["name"] == "fastv"
    assert all(p["visual_tokens_per_layer"][1][0] < p["visual_tokens_per_layer"][0][0] for p in run.predictions)
