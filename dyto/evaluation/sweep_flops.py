"""`dyto sweep --match flops`: whole methods at equal prefill FLOPs.

An inner stage (dyto.models.inner) prunes inside the LLM, so at the same number of visual tokens
fed in, a whole method costs less prefill compute than its outer stage alone. With
``--match flops`` a budget (``--target-tokens N`` or ``--retention R``) means "the prefill FLOPs
of N visual tokens without an inner stage"; each whole method's outer reducer then gets the
largest ``target_tokens`` whose prefill, with its stage's per-layer token counts, costs at most
that (dyto.models.cost: same text length, same arithmetic). Cells without a stage keep N; a
decode-time stage (DyCoke's KV pruning) leaves the prefill alone, so it keeps N too. The text
length is nominal: the median prompt (text tokens around the visual ones) of the benchmark's
first 64 questions. The cell folders are named ``...-flops`` and ``sweep.json`` records each
cell's outer target (``visual_target``).
"""

from __future__ import annotations

import dataclasses

from dyto.models.cost import TextShape, prefill_flops, solve_visual_tokens
from dyto.reduction import build_reducer

__all__ = ["match_flops", "nominal_text_tokens", "method_flops"]


def method_flops(shape: TextShape, text: int, visual: int, stage=None) -> int:
    """Prefill FLOPs of ``text`` + ``visual`` tokens through ``stage`` (None: every layer on all of them)."""
    kept = visual if stage is None or stage.phase != "prefill" else stage.kept(visual)
    first = shape.layers if stage is None else stage.prune_layer
    return prefill_flops(shape, [text + (visual if i < first else kept) for i in range(shape.layers)])


def match_flops(cells: list, shape: TextShape, text_tokens: int, temporal: int, grid_cells: int) -> list:
    """``cells`` (sweep ``Cell``) with each budgeted whole method's outer target raised to equal FLOPs;
    ``temporal`` x ``grid_cells`` is what a reducer sees (temporal patches x grid cells)."""
    out = []
    for cell in cells:
        if not cell.knob:
            out.append(cell)
            continue
        tokens = int(cell.value) if cell.knob == "target_tokens" else max(1, round(cell.value * temporal * grid_cells))
        if cell.stage is None:
            out.append(dataclasses.replace(cell, match="flops", visual_target=tokens))
            continue
        target = method_flops(shape, text_tokens, tokens)
        visual = solve_visual_tokens(lambda v: method_flops(shape, text_tokens, v, cell.stage), target,
                                     temporal * grid_cells)
        params = {k: v for k, v in cell.reducer.config().items() if k not in ("name", "retention", "target_tokens")}
        reducer = build_reducer(cell.reducer.name, **params, target_tokens=visual)
        out.append(dataclasses.replace(cell, reducer=reducer, match="flops", visual_target=visual))
    return out


def nominal_text_tokens(module, records, limit: int = 64) -> int:
    """The median prompt text length (tokens around the visual ones) of the first ``limit`` records."""
    lengths = []
    for rec in records[:limit]:
        prompt = module.backbone.prompt(rec.task, rec.question, rec.options)
        lengths.append(len(module.backbone.tokenizer(prompt.before + prompt.after).input_ids))
    return sorted(lengths)[len(lengths) // 2] if lengths else 0
