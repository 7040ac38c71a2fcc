"""GPU check: Qwen2.5-VL's batched vision tower against the model's own, at the 7B's real vision config.

Builds only the vision tower (Qwen2.5-VL-7B's: 32 blocks, 1280 wide, 112-px windows, RANDOM
WEIGHTS, bf16 on CUDA) and feeds it seeded random frames: ``--videos`` questions of 100 frames at
448x448 (50 temporal patches of 32x32 patches: whole windows only) and one video of 32 frames at
252x588 (a per-video grid of lmms-eval's kind, 9x21 merged tokens: partial windows). It prints

1. whether the batched tower's features are bitwise the model's own forward (and the largest
   difference), per video and for the pool through one call;
2. ms per question of the model's own forward, of the batched tower one video at a time, and of
   the batched tower with the whole pool in one call (median of ``--repeats`` after a warm-up).

    python benchmarks/check_vision_tower.py                   # CUDA
    python benchmarks/check_vision_tower.py --depth 1 --frames 2 --videos 1 --side 112 --partial 56x140   # CPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

from dyto.models.qwen2_5_vl_inputs import patchify
from dyto.models.qwen2_5_vl_vision import batched_tower
from dyto.models.tiny import random_weight_model
from dyto.models.tiny_qwen2_5_vl import QWEN2_5_VL_7B


def clock(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call (CUDA synchronised)."""
    times = []
    for i in range(repeats + 1):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4, help="100-frame questions in the pool")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--depth", type=int, default=None, help="fewer blocks (a CPU dry run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", type=int, default=448, help="frame side of the pool's videos (a multiple of 28)")
    parser.add_argument("--partial", default="252x588", help="HxW of the partial-window video (multiples of 28)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    vision = dict(QWEN2_5_VL_7B["vision"])
    if args.depth:
        vision.update(depth=args.depth, fullatt_block_indexes=[args.depth - 1])
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=dict(QWEN2_5_VL_7B["text"], num_hidden_layers=1))
    torch.manual_seed(0)
    visual = random_weight_model(Qwen2_5_VisionTransformerPretrainedModel, config.vision_config, device, dtype)
    gen = torch.Generator().manual_seed(0)
    h, w = (int(x) for x in args.partial.split("x"))
    shapes = [(args.frames, args.side, args.side)] * args.videos + [(min(32, args.frames), h, w)]
    videos = [patchify(torch.randn(t, 3, h, w, generator=gen).to(device=device, dtype=dtype)) for t, h, w in shapes]
    print(f"{device} ({torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}), {dtype}, depth {vision['depth']}; "
          f"videos (temporal patches, patch rows, cols): {[g for _, g in videos]}", flush=True)
    cache: dict = {}

    def own(flat, grids):
        return visual(flat, grid_thw=torch.tensor(grids, device=device)).pooler_output

    with torch.no_grad():
        for k, (flat, grid) in enumerate(videos):
            a, b = own(flat, [grid]), batched_tower(visual, flat, [grid], cache)
            print(f"1. video {k} {grid}: batched == the model's own: {torch.equal(a, b)}; "
                  f"max abs diff {(a.float() - b.float()).abs().max().item():.3g}")
        flat, grids = torch.cat([f for f, _ in videos]), [g for _, g in videos]
        pooled = batched_tower(visual, flat, grids, cache)
        alone = torch.cat([batched_tower(visual, f, [g], cache) for f, g in videos])
        print(f"1. the pool in one call == each video alone: {torch.equal(pooled, alone)}; "
              f"max abs diff {(pooled.float() - alone.float()).abs().max().item():.3g}")
        n = len(videos)
        times = {
            "the model's own, one video a call": clock(lambda: [own(f, [g]) for f, g in videos], args.repeats),
            "batched, one video a call": clock(lambda: [batched_tower(visual, f, [g], cache) for f, g in videos],
                                               args.repeats),
            "batched, the pool in one call": clock(lambda: batched_tower(visual, flat, grids, cache), args.repeats),
        }
    base = next(iter(times.values()))
    for name, seconds in times.items():
        print(f"2. {name}: {seconds / n * 1e3:.1f} ms a question ({base / seconds:.1f}x)")
    if device == "cuda":
        print(f"   peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
