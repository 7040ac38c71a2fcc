"""Where a pool's time goes against what the hardware allows: a per-stage account for bench_throughput.

Each stage of the pooled path gets its measured time, the work it had to do (FLOPs or bytes) and
the time that work takes at the stated hardware peaks (its bound):

| stage | work | bound |
|---|---|---|
| host: decode + preprocess | frames decoded (bytes) | none: CPU work, overlapped by DataLoader workers |
| vision encoder | FLOPs of the tower and projector | FLOPs / peak FLOP/s |
| reducer | bytes of the features it reads | bytes / HBM bandwidth |
| prefill | FLOPs of every decoder layer on each prompt, plus the LM head on its last position | FLOPs / peak |
| decoding | per step: the decoding weights once per group, plus every row's KV cache | bytes / HBM bandwidth |

All work is computed from the model's config and the actual shapes (frames, grids, prompt
lengths, group sizes); the peaks are arguments (``--peak-tflops``, ``--hbm-gbps``). FLOPs count 2
per multiply-add of matrix products and attention (dense, as torch's FlopCounterMode counts them);
norms, activations and RoPE are left out. tests/test_stage_account.py checks the vision and
prefill arithmetic against torch's FlopCounterMode on the tiny models. The prefill and KV-cache
arithmetic is ``dyto/models/cost.py``'s, which the prediction records use.

    from stage_account import vision_flops, prefill_flops, decode_bytes
"""

from __future__ import annotations

import torch

from dyto.models.cost import prefill_flops as cost_prefill_flops
from dyto.models.cost import text_shape
from dyto.models.qwen2_5_vl_vision import window_lengths

__all__ = ["vision_flops", "prefill_flops", "decode_bytes", "decode_weight_bytes", "kv_bytes_per_token", "account"]


def vision_flops(backbone, frames: int, grid_thw: tuple[int, int, int] | None = None, with_cls: bool = False) -> int | None:
    """FLOPs of ``backbone.encode`` on ``frames`` frames: LLaVA-NeXT (CLIP up to the feature layer +
    projector) and Qwen2.5-VL (``grid_thw`` in patches: windowed and full blocks + merger); None for
    a family without the arithmetic here."""
    if backbone.name == "llava_next":
        return _clip_flops(backbone.model.config, frames, with_cls)
    if backbone.name == "qwen2_5_vl":
        return _qwen_vision_flops(backbone.model.config.vision_config, grid_thw)
    return None


def _clip_flops(config, frames: int, with_cls: bool) -> int:
    vision = config.vision_config
    c, inner, patch = vision.hidden_size, vision.intermediate_size, vision.patch_size
    n_patches = (vision.image_size // patch) ** 2
    n = n_patches + 1                                                   # CLS
    layers = config.vision_feature_layer % (vision.num_hidden_layers + 1)
    per_layer = 4 * 2 * n * c * c + 2 * 2 * n * c * inner + 4 * n * n * c
    embed = 2 * n_patches * vision.num_channels * patch * patch * c
    d = config.text_config.hidden_size
    projector = 2 * (n_patches + int(with_cls)) * (c * d + d * d)
    return frames * (embed + layers * per_layer + projector)


def _qwen_vision_flops(vision, grid_thw) -> int:
    t, gh, gw = grid_thw
    rows, d, inner = t * gh * gw, vision.hidden_size, vision.intermediate_size
    unit = vision.spatial_merge_size ** 2
    windows = sum(n * n for n in window_lengths(vision, grid_thw))
    frames = t * (gh * gw) ** 2
    full = set(vision.fullatt_block_indexes)
    attention = sum(4 * d * (frames if b in full else windows) for b in range(vision.depth))
    per_block = 2 * rows * d * 3 * d + 2 * rows * d * d + 6 * rows * d * inner
    embed = 2 * rows * vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2 * d
    merger = 2 * (rows // unit) * (unit * d) ** 2 + 2 * (rows // unit) * unit * d * vision.out_hidden_size
    return embed + vision.depth * per_block + attention + merger


def prefill_flops(config, length: int) -> int:
    """FLOPs of one sequence's prefill of ``length`` tokens, every layer on the whole sequence
    (:func:`dyto.models.cost.prefill_flops`: grouped-query aware projections, dense attention, gated
    MLP, and the LM head on the last position)."""
    shape = text_shape(config)
    return cost_prefill_flops(shape, [length] * shape.layers)


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Key and value bytes one token keeps in every layer's cache."""
    shape = text_shape(config)
    return shape.layers * shape.kv_values_per_token * torch.finfo(dtype).bits // 8


def decode_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes a decoding step reads: the language model's weights and the LM head, without the input
    embedding table (a step gathers one row of it)."""
    inner = getattr(model, "model", model)
    llm = getattr(inner, "language_model", None) or model.get_decoder()
    seen = {id(p) for p in llm.parameters()}
    total = sum(p.numel() * p.element_size() for p in llm.parameters())
    head = model.get_output_embeddings()
    if head is not None and id(head.weight) not in seen:
        total += head.weight.numel() * head.weight.element_size()
    embed = model.get_input_embeddings().weight
    return total - embed.numel() * embed.element_size() * (id(embed) in seen)


def decode_bytes(weights: int, kv_per_token: int, groups: list[list[int]], new_tokens: int) -> int:
    """Bytes the decoding steps of ``groups`` (each a list of prompt lengths) read: every step after
    the first token (which the prefill gives) reads the weights once for its group and each row's
    cache so far (prompt + tokens generated)."""
    total = 0
    for lengths in groups:
        for step in range(1, new_tokens):
            total += weights + sum(n + step for n in lengths) * kv_per_token
    return total


def _amount(value: float, unit: str) -> str:
    scale, prefix = next(((10.0**e, p) for e, p in ((15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k"))
                          if value >= 10.0**e), (1.0, ""))
    return f"{value / scale:8.2f} {prefix}{unit:<4}"


def account(stages: dict[str, tuple[float, float | None, str]], wall_s: float, peak_flops: float,
            hbm_bytes: float) -> list[str]:
    """Lines of the account. ``stages``: name -> (seconds measured, work, unit "flop" | "byte" | ""),
    work None where there is no bound (host). The last line: the pool's time against the sum of the bounds."""
    lines, bounds = [], 0.0
    for name, (seconds, work, unit) in stages.items():
        if work is None:
            lines.append(f"  {name:<20} {seconds:8.3f} s   (no bound: {unit})")
            continue
        bound = work / (peak_flops if unit == "flop" else hbm_bytes)
        bounds += bound
        size = _amount(work, "FLOP" if unit == "flop" else "B")
        share = f"{bound / seconds:6.1%} of the bound's speed" if seconds > 0 else "n/a"
        lines.append(f"  {name:<20} {seconds:8.3f} s  {size}  bound {bound:8.3f} s  {share}")
    ratio = f"{wall_s / bounds:.2f}x" if bounds else "n/a"
    lines.append(f"  pool: {wall_s:.3f} s against the stage bounds' sum {bounds:.3f} s = {ratio}")
    return lines
