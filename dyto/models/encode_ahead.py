"""Encode-ahead: the next batch's visual features, computed while this batch's answers are generated.

Why it exists: in a predict step the vision encoder and the LLM's token-by-token decoding run
one after the other, and decoding leaves most of a GPU idle. With ``VideoQA(encode_ahead=True)``
a step queues the encoder for the frames of the *next* batch (``batch["upcoming"]``, attached by
the ``LookaheadDataLoader``) on a side CUDA stream before it generates, and runs its own work on
a higher-priority stream; the next step takes those features over, keyed by question id and
waiting on a CUDA event, instead of encoding them itself. Not in the reference.

Off by default, for repeatability: cuBLAS promises bitwise-equal results only while one stream
is active, so a second stream can flip a greedy answer after a near-tie (README, "encode-ahead").
Without CUDA the same bookkeeping runs with no streams and no overlap (what the CPU tests check).

The same hand-over, without a stream, is how ``dyto sweep`` gives ``predict_step`` features it
encoded once for a whole reducer grid (``VideoQA.use_features``), and how ``encode_batch: pool``
gives a step the features of its batch's videos encoded in one call (:func:`encode_pool`).

    module = VideoQA("llava_next", encode_ahead=True)   # module.lookahead is this module's EncodeAhead
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import Tensor

__all__ = ["EncodeAhead", "encode_pool"]

# (features [T',N,D], cls [T',D] | None, extras: the backbone's extra per-token tensors, each [T',N,E])
Encoded = tuple[Tensor, Tensor | None, tuple[Tensor, ...]]
# features, cls, extras, and the CUDA event that marks them done on the side stream (None: nothing to wait for)
Entry = tuple[Tensor, Tensor | None, tuple[Tensor, ...], torch.cuda.Event | None]


class EncodeAhead:
    """Features waiting for the next predict step, and the two CUDA streams that overlap them.

    ``VideoQA`` owns one (``module.lookahead``) and drives it: :meth:`start` at the start of a predict
    epoch, :meth:`run` around each step, :meth:`take` at the start of a step (entries are valid
    for that step only), :meth:`queue` before generating, :meth:`collect` per question.
    """

    def __init__(self):
        self.pending: dict[str, Entry] = {}  # question id -> entry, for the next step only
        self.streams: tuple[torch.cuda.Stream, torch.cuda.Stream] | None = None  # (generation, encode-ahead)

    def start(self, device: torch.device, enabled: bool) -> None:
        """A new predict epoch: forget what is pending; make the streams if ``enabled`` on CUDA."""
        self.pending.clear()
        if enabled and device.type == "cuda" and self.streams is None:
            # lower is more urgent; the default stream and the side stream have priority 0
            self.streams = (torch.cuda.Stream(device, priority=-1), torch.cuda.Stream(device))

    def clear(self) -> None:
        self.pending.clear()

    def run(self, step: Callable[[], list], device: torch.device) -> list:
        """``step()`` on the generation stream (ordered after the current stream's work, and the
        current stream after it) when there are streams; otherwise just ``step()``."""
        if self.streams is None:
            return step()
        main = self.streams[0]
        main.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(main):
            out = step()
        torch.cuda.current_stream(device).wait_stream(main)
        return out

    def take(self) -> dict[str, Entry]:
        """The entries for this step; nothing stays pending (only the previous step's look-ahead is valid)."""
        entries, self.pending = self.pending, {}
        return entries

    def hand_over(self, encoded: dict[str, tuple]) -> None:
        """Features already computed, ``id -> (features, cls[, extras])``, for the next step (no event to wait for)."""
        self.pending.update({k: (v[0], v[1], tuple(v[2]) if len(v) > 2 else (), None) for k, v in encoded.items()})

    def queue(self, upcoming, encode: Callable[[Tensor], Encoded], device: torch.device) -> None:
        """Queue ``encode`` for the readable videos of the next batch (an ``UpcomingBatch``).

        On CUDA with streams the work goes to the side stream and this returns at once; otherwise
        it runs here. A failure (say, out of memory) only means the video is encoded in its own
        step, where it is reported.
        """
        side = self.streams[1] if self.streams is not None else None
        if side is not None:
            side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            for sample_id, pixels in zip(upcoming.ids, upcoming.pixel_values):
                if pixels is None:
                    continue
                try:
                    features, cls, extras = encode(pixels)
                except Exception:  # encoded again in its own step, whose record reports the error
                    continue
                done = None
                if side is not None:
                    done = torch.cuda.Event()
                    done.record(side)
                self.pending[sample_id] = (features, cls, extras, done)

    @staticmethod
    def collect(entry: Entry | None, num_frames: int, frames_per_patch: int, device: torch.device) -> Encoded | None:
        """``entry``'s features for a question of ``num_frames`` frames, once ready on the current
        stream; None when there is no entry or it was made from another number of frames."""
        if entry is None or entry[0].shape[0] * frames_per_patch != num_frames:
            return None
        features, cls, extras, done = entry
        if done is not None:
            stream = torch.cuda.current_stream(device)
            stream.wait_event(done)
            for t in (features, cls, *extras):
                if t is not None:
                    t.record_stream(stream)  # side-stream memory: not reused before this stream is done with it
        return features, cls, extras


def encode_pool(lookahead: EncodeAhead, encode_many: Callable[[list[Tensor]], list[Encoded]], batch: dict,
                now: Callable[[], float]) -> dict[str, float]:
    """Encode a batch's readable videos that are not already waiting (encoded ahead, handed over) in
    one ``encode_many`` call and hand them over to this step; returns each one's share of the call's
    milliseconds, by frames. Fewer than two videos, or a failing call: nothing (each question then
    encodes on its own and reports its own error)."""
    todo = [i for i, status in enumerate(batch["status"])
            if status == "ok" and batch["pixel_values"][i] is not None and batch["ids"][i] not in lookahead.pending]
    if len(todo) < 2:
        return {}
    t0 = now()
    try:
        encoded = encode_many([batch["pixel_values"][i] for i in todo])
    except Exception:
        return {}
    elapsed = (now() - t0) * 1e3
    lookahead.hand_over({batch["ids"][i]: entry for i, entry in zip(todo, encoded)})
    frames = [batch["pixel_values"][i].shape[0] for i in todo]
    return {batch["ids"][i]: elapsed * n / sum(frames) for i, n in zip(todo, frames)}
