"""Decode benchmark: sampled decoding vs decoding every frame, decord vs PyAV, on long 720p videos.

    python benchmarks/bench_decode.py [--frames 100] [--cache ~/.cache/dyto/bench]

Generates (once, cached outside the repo) two 1280x720 25 fps H.264 videos of 2 and 4 minutes
(x264 veryfast with its B-frames, a keyframe every 250 frames, flat colour scenes with a moving
bar), then samples
`--frames` frames from each with four decoders. Every configuration runs in a fresh subprocess so
that its peak RSS (getrusage) is its own. "all" decodes and converts every frame to RGB in order and
keeps the sampled ones (the decode-everything loader; PyAV with its default slice threads, which
beat frame threads on this box); "sampled" is `dyto.datamodules.video.decode_video`.
Each configuration runs `--repeats` times; the best time is kept. Prints a table and ratios; exits 0.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS, GOP = 1280, 720, 25, 250
LENGTHS_S = (120, 240)
CONFIGS = ("decord-sampled", "pyav-sampled", "decord-all", "pyav-all")


def generate(path: Path, seconds: int) -> Path:
    """Cheap to encode: YUV planes written directly, flat scenes of 5 s, one moving white bar."""
    import av

    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        # veryfast keeps x264's B-frames, as real dataset encodes have them (ultrafast has none)
        stream.options = {"preset": "veryfast", "g": str(GOP), "keyint_min": str(GOP), "crf": "28"}
        planes = np.empty((HEIGHT * 3 // 2, WIDTH), np.uint8)
        for i in range(seconds * FPS):
            scene = i // (5 * FPS)
            planes[:HEIGHT] = 40 + (scene * 37) % 160
            planes[HEIGHT:] = 60 + (scene * 53) % 120
            x = (i * 7) % (WIDTH - 64)
            planes[200:260, x:x + 64] = 235
            out.mux(stream.encode(av.VideoFrame.from_ndarray(planes, format="yuv420p")))
        out.mux(stream.encode())
    tmp.rename(path)
    return path


def measure(config: str, path: str, n: int) -> dict:
    """Runs inside the fresh subprocess."""
    from dyto.datamodules.video import decode_video, sample_frame_indices

    backend, mode = config.split("-")
    t0 = time.perf_counter()
    if mode == "sampled":
        frames = decode_video(path, n, backend=backend, timeout_s=3600).frames
    elif backend == "decord":
        import decord

        vr = decord.VideoReader(path, ctx=decord.cpu(0))
        wanted = set(sample_frame_indices(len(vr), n))
        frames = [f for i, f in enumerate(vr[i].asnumpy() for i in range(len(vr))) if i in wanted]
    else:
        import av

        with av.open(path) as container:
            stream = container.streams.video[0]  # PyAV's default slice threads: the faster setting here
            wanted = set(sample_frame_indices(stream.frames, n))
            frames = [a for i, a in enumerate(f.to_ndarray(format="rgb24") for f in container.decode(stream))
                      if i in wanted]
    seconds = time.perf_counter() - t0
    assert len(frames) == n, (config, len(frames))
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(config: str, path: Path, n: int, repeats: int) -> dict:
    """Best time of `repeats` fresh processes (a shared 2-core box is noisy), and the largest peak RSS."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--measure", config, str(path), "--frames", str(n)],
                             check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"seconds": min(r["seconds"] for r in runs), "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per configuration")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "dyto" / "bench")
    parser.add_argument("--measure", nargs=2, metavar=("CONFIG", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args.frames)))
        return 0
    args.cache.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[int, str], dict] = {}
    for seconds in LENGTHS_S:
        t0 = time.perf_counter()
        path = generate(args.cache / f"flat_{WIDTH}x{HEIGHT}_{seconds}s_gop{GOP}_bframes.mp4", seconds)
        print(f"video {path} ({seconds * FPS} frames, {path.stat().st_size / 1e6:.1f} MB, ready in "
              f"{time.perf_counter() - t0:.1f}s)", flush=True)
        for config in CONFIGS:
            results[seconds, config] = r = run(config, path, args.frames, args.repeats)
            print(f"  {config:15s} {args.frames / r['seconds']:8.1f} frames/s  {r['seconds']:7.2f} s  "
                  f"peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)
    print(f"\nratios ({args.frames} sampled frames; speed-up = time(all) / time(sampled))")
    for seconds in LENGTHS_S:
        for backend in ("decord", "pyav"):
            s, a = results[seconds, f"{backend}-sampled"], results[seconds, f"{backend}-all"]
            print(f"  {seconds:4d}s {backend:6s} sampled is {a['seconds'] / s['seconds']:5.2f}x faster than all")
        d, p = results[seconds, "decord-sampled"], results[seconds, "pyav-sampled"]
        print(f"  {seconds:4d}s pyav-sampled / decord-sampled time: {p['seconds'] / d['seconds']:.2f}")
    for config in CONFIGS:
        short, long = results[LENGTHS_S[0], config], results[LENGTHS_S[1], config]
        print(f"  {config:15s} peak RSS {LENGTHS_S[1]}s / {LENGTHS_S[0]}s video: "
              f"{long['peak_rss_mb'] / short['peak_rss_mb']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
