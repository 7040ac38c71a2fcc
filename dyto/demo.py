"""Single-video demos: `dyto demo` (one question through a model) and `dyto reduce-demo`.

    dyto demo                                  # a held-out synthetic clip, the tiny trained model
    dyto demo --video dyto/assets/synthetic_demo/videos/test_00004.mp4 --question "What shape is shown after the cut?"
    dyto demo --video dyto/assets/demo/bikes.mp4 --question "what are the people riding?" --model tiny
    dyto demo --video clip.mp4 --question "..." --model llava-hf/llava-v1.6-vicuna-7b-hf
    dyto demo --video clip.mp4 --question "..." --backbone internvl --model OpenGVLab/InternVL3-8B-hf
    dyto reduce-demo --video dyto/assets/demo/bigbuckbunny.mp4

`demo` is the reference's `run_demo.py`, working: it prints the answer, which frames DyTo kept
and how many visual tokens reached the LLM. The default model is the tiny TRAINED LLaVA-NeXT
shipped in the package (``tiny-trained``: it knows only the synthetic clips' five questions,
docs/testbed.md), and the default question the first clip of the shipped synthetic demo with
its open-ended question; ``--model tiny`` is the random-weight model (meaningless answers), a
real checkpoint gives real answers. `reduce-demo` needs no model at all: it runs DyTo on deterministic stand-in features
(pooled pixel patches projected to 256 dims, because no CLIP weights exist offline) at the real
24x24 patch grid and the real 3680-token budget.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dyto.errors import ConfigError, check

DEMO_DIR = Path(__file__).resolve().parent / "assets" / "demo"
SYNTHETIC_DEMO = Path(__file__).resolve().parent / "assets" / "synthetic_demo"


def _default_question() -> tuple[str, str, str]:
    """(video, question, expected answer) of the first shipped synthetic demo record."""
    with open(SYNTHETIC_DEMO / "records.jsonl", encoding="utf-8") as f:
        first = json.loads(f.readline())
    return str(SYNTHETIC_DEMO / "videos" / first["video"]), first["question"], first["answer"]


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has one (not for required options or empty lists)."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, [], argparse.SUPPRESS) else super()._get_help_string(action)


def _parse_reducer_args(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError("--reducer-arg", pair, "key=value, e.g. budget=96")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def demo_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="dyto demo", formatter_class=_Defaults,
                                description="Answer one question about one video; print the answer, the frames "
                                            "kept and the visual tokens that reached the LLM.",
                                epilog="e.g. dyto demo (a shipped synthetic clip and its question), or dyto demo "
                                       "--video dyto/assets/demo/bikes.mp4 --question 'what are the people riding?' "
                                       "--model tiny")
    p.add_argument("--video", help="video file, GIF or folder of frames (default: a shipped synthetic clip)")
    p.add_argument("--question", help="the question, as plain text (default: that clip's open-ended question)")
    p.add_argument("--options", nargs="+", help="answer options: makes it a multiple-choice question")
    p.add_argument("--model", default="auto",
                   help="'tiny-trained' (the shipped tiny LLaVA-NeXT trained on the synthetic benchmark), 'tiny' "
                        "(random weights: the answer is noise), a hub id or a local path; 'auto': tiny-trained for "
                        "llava_next, the only family it exists for, tiny for the others")
    p.add_argument("--backbone", default="llava_next",
                   help="registered backbone family: llava_next, llava_onevision, internvl, ... (see docs/backbones.md)")
    p.add_argument("--reducer", default="dyto", help="registered reducer name (dyto, slowfast, uniform, concat, "
                   "dycoke, fastvid, prunevid, holitom, vidcom2)")
    p.add_argument("--reducer-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="reducer parameter, e.g. budget=96 or retention=0.25 (repeatable; default: the reducer's "
                        "own defaults)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="answer length bound (the reference's "
                   "run_demo.py uses 256)")
    args = p.parse_args(argv)
    if args.model == "auto":
        args.model = "tiny-trained" if args.backbone == "llava_next" else "tiny"
    expected = None
    if args.video is None and args.question is None:
        args.video, args.question, expected = _default_question()
    elif args.video is None or args.question is None:
        p.error("--video and --question go together (neither: the shipped synthetic demo clip)")

    from dyto import api

    check("--max-new-tokens", args.max_new_tokens, ">=1")
    try:
        reducer = api.build_reducer(args.reducer, **_parse_reducer_args(args.reducer_arg))
    except ConfigError as e:  # a reducer's own argument name -> the flag it came from
        raise e.at("--reducer" if e.key == "reducer" else f"--reducer-arg {e.key}") from None
    module = api.load_model(args.model, reducer=reducer, backbone=args.backbone, max_new_tokens=args.max_new_tokens)
    out = api.ask(module, args.video, args.question, options=args.options)
    if out["status"] != "ok":
        print(f"{args.video}: {out['status']}: {out['error']}")
        return 1
    print(f"model:    {out['model']}")
    print(f"reducer:  {out['reducer']}")
    print(f"frames:   {out['frames_sampled']} sampled; kept {len(out['video_frames_kept'])}: "
          f"{out['video_frames_kept']} (video frame numbers)")
    print(f"tokens:   {out['visual_tokens_in']} visual in -> {out['visual_tokens_out']} out; "
          f"{out['prompt_tokens']} in the prompt")
    print("timings:  " + ", ".join(f"{k} {v:.0f} ms" for k, v in out["timings"].items()))
    print(f"question: {args.question}")
    print(f"answer:   {out['prediction']}" + (f"   (expected: {expected})" if expected is not None else ""))
    return 0


def reduce_demo_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="dyto reduce-demo", formatter_class=_Defaults,
                                description="Run DyTo's token path on a real clip with stand-in features (no model: "
                                            "pooled pixel patches at the real 24x24 grid) and print the TW-FINCH "
                                            "partitions, the kept frames and the merge schedule.")
    p.add_argument("--video", default=str(DEMO_DIR / "bigbuckbunny.mp4"), help="video file, GIF or folder of frames")
    p.add_argument("--variant", default="release", choices=["release", "pycv2"],
                   help="release: the second-finest TW-FINCH partition (released code); pycv2: the finest "
                        "(pre-release bytecode)")
    p.add_argument("--budget", type=int, default=3680, help="DyTo's token budget Z (the released 7B/34B configs)")
    p.add_argument("--num-frames", type=int, default=100, help="frames sampled from the video")
    args = p.parse_args(argv)

    from dyto import api
    from dyto.reduction import DyToReducer, SlowFastReducer

    check("--budget", args.budget, ">=1")
    check("--num-frames", args.num_frames, ">=1")
    clip = api.load_clip(args.video, args.num_frames)
    features = api.standin_features(clip)                                       # [T,576,256]
    print(f"{args.video}: {clip.total_frames} frames, sampled {len(clip.indices)}; "
          f"stand-in features {tuple(features.shape)} (pooled pixel patches, not CLIP)")
    t0 = time.perf_counter()
    red = api.reduce(features, DyToReducer(variant=args.variant, budget=args.budget, num_frames=args.num_frames))
    ms = (time.perf_counter() - t0) * 1e3
    sel = red.info["selection"]
    print(f"TW-FINCH partitions (clusters, finest first): {sel.num_clusters}; "
          f"{args.variant} uses partition {sel.partition} ({sel.num_clusters[sel.partition]} clusters)")
    print(f"kept {len(red.frames_kept)} frames (video frame numbers): {[clip.indices[i] for i in red.frames_kept]}")
    print(f"merge schedule r = {red.info['r_list']}: {red.tokens_per_frame[0]} tokens per frame, "
          f"{red.tokens.shape[0]} visual tokens in total (budget {args.budget}); {ms:.1f} ms")
    slowfast = SlowFastReducer()
    sf = api.reduce(api.standin_features(api.load_clip(args.video, slowfast.num_frames)), slowfast)
    print(f"for comparison, SlowFast-LLaVA: {slowfast.num_frames} frames -> {sf.tokens.shape[0]} tokens")
    return 0
