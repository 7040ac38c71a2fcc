"""Prefill time an inner-LLM stage saves, on random-weight models of every family (CPU by default).

For each backbone and each registered inner stage: the median wall time of the prefill (a greedy
``generate`` of ONE new token: the prefill plus one argmax) of the same LLM input, without a stage
(Hugging Face's ``generate``) and with the stage (dyto's inner loop), printed as a ratio next to
the ratio the FLOPs arithmetic predicts (``dyto.models.cost``: the record's ``prefill_tflops``),
and the same for a stage that keeps every token (``keep_all``: the loop's own overhead). DyCoke's
stage prunes while decoding, not in the prefill: its row times ``--decode-tokens`` decoding steps
instead (``min_new_tokens`` set, so EOS cannot stop them early), timed from the first logits on.

The input: ``--frames`` frames of seeded random pixels through the backbone's own vision tower,
``concat`` (every token), one open-ended question. The models are the families' tiny builders with
``--layers`` layers and ``--hidden`` text width (the tiny defaults, 2 x 64, leave nothing to
save: every row says so); a stage at ``--prune-layer`` (the first layer without the dropped
tokens; the papers' K = 2 of 28-32 layers is at the same depth share as 1 of 16).

    python benchmarks/bench_inner.py                                  # 4 families, 8 layers x 512
    python benchmarks/bench_inner.py --backbones qwen2_5_vl --layers 16 --hidden 1024 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers import logging as hf_logging

from dyto.models.backbone import BACKBONES, list_backbones
from dyto.models.cost import LayerCounts, prefill_flops, text_shape
from dyto.models.inner import INNER_STAGES, InnerLoop, list_inner_stages
from dyto.models.videoqa import VideoQA
from dyto.reduction import ConcatReducer


def build(family: str, layers: int, hidden: int):
    """A random-weight backbone of ``family`` with a ``layers`` x ``hidden`` language model."""
    if family == "llava_next":
        from dyto.models.tiny import build_tiny_llava_next as builder
    elif family == "qwen2_5_vl":
        from dyto.models.tiny_qwen2_5_vl import build_tiny_qwen2_5_vl as builder
    else:
        from dyto.models import tiny_families
        builder = getattr(tiny_families, f"build_tiny_{family}")
    extra = {"text_heads": hidden // 16} if family == "qwen2_5_vl" else {}  # its M-RoPE sections fit heads of 16
    model, tokenizer = builder(text_hidden_size=hidden, num_layers=layers, **extra)
    options = {"image_size": 84} if family == "qwen2_5_vl" else {}
    return BACKBONES[family].from_parts(model.eval(), tokenizer, f"{family} {layers}x{hidden} (random weights)",
                                        **options)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class _FirstLogits(LogitsProcessor):
    def __call__(self, input_ids, scores):
        if self.first is None:
            self.first = time.perf_counter()
        return scores


def decode_ms(b, inp, config, stage, repeats: int) -> float:
    """Median ms from the first logits to the end of a generation (the decoding steps)."""
    times = []
    for _ in range(repeats + 1):
        timer = _FirstLogits()
        timer.first = None
        processors = LogitsProcessorList([timer])
        if stage is None:
            b.generate([inp], config, processors)
        else:
            InnerLoop(b, stage).generate_ids([inp], config, processors)
        times.append((time.perf_counter() - timer.first) * 1e3)
    return statistics.median(times[1:])


def stage_at(name: str, prune_layer: int, **params):
    cls = INNER_STAGES[name]
    probe = cls(layer=prune_layer, **params)
    return cls(layer=prune_layer - (probe.prune_layer - probe.layer), **params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", choices=list_backbones(), default=list_backbones())
    parser.add_argument("--stages", nargs="+", choices=list_inner_stages(), default=list_inner_stages())
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--prune-layer", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()  # min_new_tokens is set on purpose
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU, {torch.get_num_threads()} threads; {args.layers} layers x {args.hidden}; {args.frames} frames, "
          f"concat; stage pruning from layer {args.prune_layer}; median of {args.repeats} (ms)")
    print(f"{'backbone':>16} | {'stage':>13} | {'tokens':>6} | {'what':>7} | {'no stage':>9} | {'stage':>9} | "
          f"{'time ratio':>10} | {'FLOPs ratio':>11} | {'keep-all ratio':>14}")
    for family in args.backbones:
        b = build(family, args.layers, args.hidden)
        frames = args.frames - args.frames % b.preprocessing.frames_per_patch
        pixels = torch.randn(frames, 3, *b.preprocessing.size, generator=torch.Generator().manual_seed(0))
        reduction = ConcatReducer(num_frames=frames)(b.encode(pixels).features, b.grid)
        inp = b.build_input(b.prompt("open_ended", "what happens in the video, and who is in it?"), reduction)
        module = VideoQA(b, reducer=ConcatReducer(num_frames=frames), max_new_tokens=1)
        one = module.generation_config
        many = type(one).from_dict(one.to_dict())
        many.update(max_new_tokens=args.decode_tokens + 1, min_new_tokens=args.decode_tokens + 1)
        shape = text_shape(b.model.config)
        visual = reduction.tokens.shape[0]
        for name in args.stages:
            stage = stage_at(name, args.prune_layer)
            keep_all = stage_at(name, args.prune_layer, **INNER_STAGES[name].keep_all)
            decode = stage.phase == "decode"
            config = many if decode else one

            def plain():
                b.generate([inp], config)

            def with_stage(s=stage):
                InnerLoop(b, s).generate_ids([inp], config)

            if decode:  # ms per decoding step: from the first logits (the prefill's end) to the end
                base, ours, overhead = (decode_ms(b, inp, many, s, args.repeats) / args.decode_tokens
                                        for s in (None, stage, keep_all))
                flops_ratio = "-"
            else:
                base, ours, overhead = timed(plain, args.repeats), timed(with_stage, args.repeats), \
                    timed(lambda: with_stage(keep_all), args.repeats)
                InnerLoop(b, stage).generate_ids([inp], one)
                full = prefill_flops(shape, LayerCounts.uniform(shape.layers, inp.length, visual).tokens)
                flops_ratio = f"{prefill_flops(shape, inp.counts.tokens) / full:.3f}"
            print(f"{family:>16} | {name:>13} | {inp.length:>6} | {'decode' if decode else 'prefill':>7} | "
                  f"{base:9.2f} | {ours:9.2f} | {ours / base:10.3f} | {flops_ratio:>11} | "
                  f"{overhead / base:14.3f}", flush=True)


if __name__ == "__main__":
    main()
