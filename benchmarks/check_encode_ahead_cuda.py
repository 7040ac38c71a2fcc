"""GPU check: does encode-ahead on a side stream change anything but the timing?

Builds LLaVA-NeXT-7B at its real size with RANDOM WEIGHTS (see bench_e2e.py) and checks, on CUDA:
1. the features encoded ahead on the side stream, while the previous question is generated on
   the priority stream, are bitwise equal to encoding the same frames on the default stream;
2. whether greedy generation of the same question is bitwise repeatable at all (random weights
   give near-flat logits, so any nondeterminism flips tokens);
3. the answer with encode-ahead against the answer without it.

    python benchmarks/check_encode_ahead_cuda.py [--new-tokens 128]
"""

from __future__ import annotations

import argparse

import torch
from bench_e2e import full_size_random, sample
from transformers import logging as hf_logging

from dyto.datamodules.base import UpcomingBatch
from dyto.models.llava_next import DyToVideoQA
from dyto.reduction import DyToReducer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=None, help="fewer layers: a CPU dry run of this script")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.num_layers:
        raise SystemExit("needs CUDA (or --num-layers N for a CPU dry run, which has no side stream)")
    backbone = full_size_random("7b", device, torch.float16 if device == "cuda" else torch.float32, args.num_layers)
    modules = {}
    for ahead in (False, True):
        module = DyToVideoQA(model="tiny", reducer=DyToReducer(), encode_ahead=ahead, max_new_tokens=args.new_tokens)
        module.attach_backbone(*backbone)
        module.generation_config.update(min_new_tokens=args.new_tokens)
        modules[ahead] = module.to(device)
        module.on_predict_epoch_start()
    plain, ahead = modules[False], modules[True]
    first, second = sample(ahead, 0), sample(ahead, 1)

    reference = plain.encode_frames(second["pixel_values"][0])[0]
    ahead.predict_step(dict(first, upcoming=UpcomingBatch(second)), 0)
    features = ahead.lookahead.pending["q1"][0]
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"1. side-stream features bitwise equal: {torch.equal(features, reference)}; "
          f"max abs diff {(features.float() - reference.float()).abs().max().item():.3g}")

    answers = [plain.predict_step(sample(plain, 1), 1)[0]["prediction"] for _ in range(3)]
    print(f"2. greedy generation repeatable: {len(set(answers))} distinct answer(s) in 3 runs without encode-ahead")
    with_ahead = ahead.predict_step(second, 1)[0]["prediction"]
    print(f"3. answer with encode-ahead equals one without: {with_ahead in answers}")


if __name__ == "__main__":
    main()
