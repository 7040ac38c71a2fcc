"""Synthetic video-QA clips whose questions need temporal detail, generated from a seed.

Every clip is one *scene kind*, drawn as flat shapes on a dark background (100 frames, 10 fps,
``size`` x ``size`` pixels), and asked one question in two forms, open-ended (a one-word answer,
exact-match scorable) and multiple choice:

========== ============================================ ====================================
kind       what happens                                 question (answer)
========== ============================================ ====================================
flash      the whole frame flashes one colour for 2-3   What colour was the flash? (red)
           frames; a static shape of another colour
           stays on screen the rest of the time
order      two squares, one after the other             Which came first, the red or the
                                                        blue square? (red)
count      a circle blinks on 1-4 times, 6 frames each  How many times did the circle
                                                        appear? (3)
direction  a square moves from the centre to an edge     Which way did the square move? (left)
cut        one shape, then a cut to another shape on    What shape is shown after the cut?
           another background                           (triangle)
========== ============================================ ====================================

A clip depends only on ``(seed, split, index)`` (NumPy's ``default_rng``), so the ``train``
split (the tiny trained model's data, ``scripts/train_tiny.py``) and the ``test`` split (the
benchmark) never share a clip. ``generate`` writes the clips as H.264 MP4s (PyAV, lossless
``qp 0`` in yuv444p, so colours survive) and the QA sheet ``questions.jsonl`` that
``dyto prepare synthetic`` reads; each row keeps the scene's events, so every answer can be
checked against the frames.

    dyto synthetic --out data/synthetic/test     # 150 clips, 300 questions -> data/prepared/synthetic.jsonl
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["COLOURS", "FORMS", "KINDS", "SHAPES", "DIRECTIONS", "FRAMES", "scene", "render", "questions", "write_mp4",
           "clip_name", "generate", "main"]

FRAMES, FPS = 100, 10
KINDS = ("flash", "order", "count", "direction", "cut")
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 70), "blue": (50, 90, 235), "yellow": (235, 215, 40),
           "purple": (170, 60, 215)}
BACKGROUNDS = ((20, 20, 20), (45, 45, 55), (50, 35, 25), (20, 45, 45), (65, 65, 65))
SHAPES = ("circle", "square", "triangle", "cross")
DIRECTIONS = ("left", "right", "up", "down")
COUNTS = ("1", "2", "3", "4")
BLINK = 6  # frames a counted circle stays on
FORMS = ("open_ended", "multiple_choice")
_OPTION_ORDER = (*COLOURS, *SHAPES, *DIRECTIONS, *COUNTS)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _pick(rng: np.random.Generator, items, k: int = 1, exclude=()) -> list:
    pool = [x for x in items if x not in exclude]
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


def scene(seed: int, split: str, index: int, frames: int = FRAMES) -> dict[str, Any]:
    """The events of clip ``index`` as plain data (positions in units of the frame side, frames
    as 0-based indices of a ``frames``-frame clip). The kind cycles through ``KINDS``; everything
    else is drawn. Event lengths and times scale with ``frames`` (the training script also
    draws shorter clips); the flash lasts 2-3 frames at 24 frames and more, 1 below."""
    if frames < 8:
        raise ValueError(f"a synthetic clip needs at least 8 frames, got {frames}")
    rng, kind, t = _rng(seed, split, index), KINDS[index % len(KINDS)], frames
    margin = t // 25  # frames kept free at both ends
    bg = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    s: dict[str, Any] = {"kind": kind, "frames": t, "background": list(bg)}
    if kind == "flash":
        colour, other = _pick(rng, COLOURS, 2)
        length = int(rng.integers(2, 4)) if t >= 24 else 1
        start = int(rng.integers(t // 12, t - t // 12 - length + 1))
        s.update(colour=colour, flash=list(range(start, start + length)),
                 still={"shape": _pick(rng, SHAPES)[0], "colour": other, "x": float(rng.uniform(0.3, 0.7)),
                        "y": float(rng.uniform(0.3, 0.7))})
    elif kind == "order":
        first, second = _pick(rng, COLOURS, 2)
        len1, len2 = (int(v) for v in rng.integers(max(1, t // 10), max(1, t // 5) + 1, size=2))
        start1 = int(rng.integers(margin, max(margin + 1, 2 * t // 5)))
        start2 = int(rng.integers(start1 + len1 + max(1, margin), t - margin - len2 + 1))
        s["squares"] = [{"colour": c, "span": [a, a + n], "x": float(rng.uniform(0.25, 0.75)),
                         "y": float(rng.uniform(0.25, 0.75))} for c, a, n in ((first, start1, len1),
                                                                              (second, start2, len2))]
    elif kind == "count":
        times, blink = int(rng.integers(1, len(COUNTS) + 1)), max(1, round(t * BLINK / FRAMES))
        slot = 2 * blink  # each blink starts in its own slot and leaves at least one dark frame after it
        slots = np.sort(rng.choice(np.arange(margin, t - margin - blink + 1, slot), size=times, replace=False))
        s.update(colour=_pick(rng, COLOURS)[0], times=times, blink=blink,
                 blinks=[{"start": int(a) + int(rng.integers(0, slot - blink)), "x": float(rng.uniform(0.25, 0.75)),
                          "y": float(rng.uniform(0.25, 0.75))} for a in slots])
    elif kind == "direction":  # from near the centre to near an edge
        s.update(colour=_pick(rng, COLOURS)[0], direction=_pick(rng, DIRECTIONS)[0],
                 start=float(rng.uniform(0.4, 0.6)), across=float(rng.uniform(0.25, 0.75)))
    else:  # cut
        before, after = _pick(rng, SHAPES, 2)
        c1, c2 = (_pick(rng, COLOURS)[0] for _ in range(2))
        bg2 = BACKGROUNDS[int(rng.choice([i for i, b in enumerate(BACKGROUNDS) if b != bg]))]
        s.update(cut=int(rng.integers(t // 4, 3 * t // 4 + 1)), before={"shape": before, "colour": c1},
                 after={"shape": after, "colour": c2, "background": list(bg2)})
    s["seed"] = int(rng.integers(2**31))  # the option order of the multiple-choice form
    return s


@functools.lru_cache(maxsize=64)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    return xx, yy


def _mask(shape: str, size: int, x: float, y: float, r: float) -> np.ndarray:
    """bool [size, size]: ``shape`` centred at (x, y) with half-width r (all in frame sides)."""
    xx, yy = _grid(size)
    dx, dy = xx - x, yy - y
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (abs(dx) <= 0.85 * r) & (abs(dy) <= 0.85 * r)
    if shape == "triangle":  # pointing up
        return (dy <= r) & (dy >= -r) & (abs(dx) <= (dy + r) / 2)
    if shape == "cross":
        return ((abs(dx) <= r / 3) & (abs(dy) <= r)) | ((abs(dy) <= r / 3) & (abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render(s: dict[str, Any], size: int = 112) -> np.ndarray:
    """uint8 [frames, size, size, 3], the frames of scene ``s``."""
    t, kind = s["frames"], s["kind"]
    video = np.empty((t, size, size, 3), np.uint8)
    video[:] = s["background"]
    if kind == "flash":
        video[:, _mask(s["still"]["shape"], size, s["still"]["x"], s["still"]["y"], 0.2)] = COLOURS[s["still"]["colour"]]
        video[s["flash"]] = COLOURS[s["colour"]]
    elif kind == "order":
        for sq in s["squares"]:
            video[sq["span"][0]:sq["span"][1], _mask("square", size, sq["x"], sq["y"], 0.2)] = COLOURS[sq["colour"]]
    elif kind == "count":
        for b in s["blinks"]:
            video[b["start"]:b["start"] + s["blink"], _mask("circle", size, b["x"], b["y"], 0.2)] = COLOURS[s["colour"]]
    elif kind == "direction":
        end = 0.85 if s["direction"] in ("right", "down") else 0.15
        for i in range(t):
            along = s["start"] + (end - s["start"]) * i / (t - 1)
            x, y = (along, s["across"]) if s["direction"] in ("left", "right") else (s["across"], along)
            video[i, _mask("square", size, x, y, 0.15)] = COLOURS[s["colour"]]
    else:
        cut, before, after = s["cut"], s["before"], s["after"]
        video[:cut, _mask(before["shape"], size, 0.5, 0.5, 0.3)] = COLOURS[before["colour"]]
        video[cut:] = after["background"]
        video[cut:, _mask(after["shape"], size, 0.5, 0.5, 0.3)] = COLOURS[after["colour"]]
    return video


def questions(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The clip's question in its two forms: open-ended (options None) and multiple choice.

    Multiple-choice options are listed in one fixed order (colours as in ``COLOURS``, then
    ``SHAPES``, ``DIRECTIONS``, ``COUNTS``), so a letter means the same answer in every clip of a
    kind: the flash offers four colours (the flash's, the still shape's and two others), the
    order question its two colours, the others every value."""
    kind, rng = s["kind"], np.random.default_rng(s["seed"])
    if kind == "flash":
        q, answer = "What colour was the flash?", s["colour"]
        options = [answer, s["still"]["colour"], *_pick(rng, COLOURS, 2, exclude=(answer, s["still"]["colour"]))]
    elif kind == "order":
        first, second = (sq["colour"] for sq in s["squares"])
        a, b = (first, second) if rng.random() < 0.5 else (second, first)
        q, answer, options = f"Which came first, the {a} or the {b} square?", first, [first, second]
    elif kind == "count":
        q, answer, options = "How many times did the circle appear?", str(s["times"]), list(COUNTS)
    elif kind == "direction":
        q, answer, options = "Which way did the square move?", s["direction"], list(DIRECTIONS)
    else:
        q, answer, options = "What shape is shown after the cut?", s["after"]["shape"], list(SHAPES)
    options.sort(key=_OPTION_ORDER.index)
    return [{"form": "open_ended", "question": q, "answer": answer, "options": None},
            {"form": "multiple_choice", "question": q, "answer": answer, "options": options}]


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = FPS) -> Path:
    """uint8 [T,H,W,3] -> a lossless H.264 MP4 (yuv444p, qp 0; one thread, so byte-stable)."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        stream.options = {"qp": "0", "preset": "ultrafast", "threads": "1"}
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        out.mux(stream.encode())
    return path


def clip_name(split: str, index: int, frames: int = FRAMES) -> str:
    return f"{split}_{index:05d}" if frames == FRAMES else f"{split}_t{frames}_{index:05d}"


def generate(out: str | Path, split: str = "test", seed: int = 0, clips: int = 150, size: int = 112,
             start: int = 0, frames: int = FRAMES) -> Path:
    """Write clips ``start .. start+clips-1`` of ``split`` to ``out/videos/`` and their questions to
    ``out/questions.jsonl`` (the sheet of ``dyto prepare synthetic``); returns the sheet's path.
    Every clip is written anew (atomically), so a folder never mixes generator versions."""
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(start, start + clips):
        s, name = scene(seed, split, index, frames), clip_name(split, index, frames)
        video = out / "videos" / f"{name}.mp4"
        tmp = video.with_suffix(".tmp.mp4")
        write_mp4(tmp, render(s, size))
        tmp.replace(video)
        for q in questions(s):
            rows.append({"qid": f"{name}_{'mc' if q['options'] else 'oe'}", "video": f"{name}.mp4", "split": split, "seed": seed,
                         "index": index, "kind": s["kind"], **q, "scene": s})
    sheet = out / "questions.jsonl"
    tmp = sheet.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(sheet)
    return sheet


def main(argv: list[str] | None = None) -> int:
    """`dyto synthetic`: generate a split (clips + sheet) and prepare its records."""
    p = argparse.ArgumentParser(prog="dyto synthetic", description="Generate the synthetic video-QA benchmark: "
                                "OUT/videos/*.mp4, the sheet OUT/questions.jsonl, and prepare its records.")
    p.add_argument("--out", default="data/synthetic/test", help="the split's folder")
    p.add_argument("--split", default="test", help="test (the benchmark) or train (scripts/train_tiny.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=int, default=150, help="clips (two questions each), the kinds in turn")
    p.add_argument("--start", type=int, default=0, help="index of the first clip")
    p.add_argument("--size", type=int, default=112, help="frame side in pixels")
    p.add_argument("--records", default="data/prepared/synthetic.jsonl",
                   help="the prepared records (configs/benchmarks/synthetic.yaml reads the default)")
    args = p.parse_args(argv)
    from dyto.datamodules.prepare import prepare

    sheet = generate(args.out, args.split, args.seed, args.clips, args.size, args.start)
    print(prepare("synthetic", sheet, args.records, Path(args.out) / "videos").summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
