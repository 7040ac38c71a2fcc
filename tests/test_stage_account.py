"""The per-stage account of benchmarks/bench_throughput.py (benchmarks/stage_account.py): its FLOPs
from the model's config against torch's own FlopCounterMode running the real tiny models (eager
attention, so attention is counted as the matrix products it is), and the decoding bytes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dyto.models.backbone import build_backbone
from dyto.models.qwen2_5_vl_inputs import patchify

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from stage_account import account, decode_bytes, kv_bytes_per_token, prefill_flops, vision_flops  # noqa: E402


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.fixture(scope="module", params=["llava_next", "qwen2_5_vl"])
def eager(request, one_thread):
    backbone = build_backbone(request.param)
    backbone.model.set_attn_implementation("eager")  # Qwen2.5-VL: the model's own tower then (batched needs SDPA)
    return backbone


def test_vision_flops_equal_the_counted_ones(eager):
    frames, (h, w) = 4, eager.preprocessing.size
    if eager.name == "qwen2_5_vl":
        h, w = 140, 196  # 5x7 merged tokens: partial windows
    pixels = torch.randn(frames, 3, h, w, generator=torch.Generator().manual_seed(0))
    grid = patchify(pixels)[1] if eager.name == "qwen2_5_vl" else None
    with torch.no_grad():
        assert vision_flops(eager, frames, grid) == counted(lambda: eager.encode(pixels))
        if eager.name == "llava_next":
            assert vision_flops(eager, frames, with_cls=True) == counted(lambda: eager.encode(pixels, with_cls=True))
    assert vision_flops(build_backbone("internvl"), frames) is None


def test_prefill_flops_equal_the_counted_ones(eager):
    embeds = torch.randn(1, 37, eager.model.config.get_text_config().hidden_size)
    with torch.no_grad():
        assert prefill_flops(eager.model.config, 37) == counted(lambda: eager.model(inputs_embeds=embeds, logits_to_keep=1))


def test_decode_bytes_and_the_account_lines():
    # two groups: [10, 12] and [20]; 3 new tokens -> steps 1 and 2 after the prefill's token
    weights, kv = 1000, 7
    expected = 2 * weights + (11 + 13 + 12 + 14) * kv + 2 * weights + (21 + 22) * kv
    assert decode_bytes(weights, kv, [[10, 12], [20]], 3) == expected
    config = build_backbone("qwen2_5_vl").model.config  # 2 layers, 2 KV heads of 16
    assert kv_bytes_per_token(config, torch.bfloat16) == 2 * 2 * 2 * 16 * 2
    lines = account({"host": (2.0, None, "CPU"), "prefill": (0.5, 2e12, "flop"), "decoding": (1.5, 3e9, "byte")},
                    2.0, peak_flops=1e13, hbm_bytes=3e9)
    assert lines[-1] == "  pool: 2.000 s against the stage bounds' sum 1.200 s = 1.67x"
    assert lines[1] == "  prefill                 0.500 s      2.00 TFLOP  bound    0.200 s   40.0% of the bound's speed"
    assert lines[2].startswith("  decoding                1.500 s      3.00 GB") and "no bound: CPU" in lines[0]
