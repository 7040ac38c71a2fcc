"""Qwen3-VL's video layout: per-temporal-patch timestamps and M-RoPE ids, and a reduced sequence in it;
the clip's pixel budget, and the LLM input that carries the DeepStack rows.

Qwen3-VL's processor (``Qwen3VLProcessor.replace_video_token``) writes a video as, for every
temporal patch k (two sampled frames),

    <{t_k:.1f} seconds><|vision_start|><|video_pad|> x (h*w)<|vision_end|>

with ``t_k`` the mean time of the patch's first and last frame (``_calculate_timestamps``: frame
index / fps, an odd count padded by repeating the last index). The chat template's own
``<|vision_start|><|video_pad|><|vision_end|>`` is collapsed into that text. Positions come from
the model's ``get_rope_index``: text counts 1, 2, ...; each temporal patch is placed as an image
of grid (1, h, w) at the current position p (ids (p, p + row, p + col)), after which the count
goes on from p + max(h, w). Time is told by the timestamp text, not by the temporal axis.

:class:`VideoLayout` builds that FULL sequence (every temporal patch, every cell) for a prompt,
takes its ids from the model's own ``get_rope_index``, and then lays out a REDUCED one: each
run of consecutive output tokens from the same temporal patch gets its patch's timestamp and
markers, every token sits at the id its own cell (``Reduction.positions``; a merged token: its
destination's) has in the full sequence, and so does every text token (coordinate-preserving, as
V-CAST's Qwen3-VL code keeps the full sequence's ``position_ids`` of what it keeps). A temporal
patch with no token left loses its timestamp and markers. With every token kept (``concat``)
the reduced sequence IS the processor's.

Run its tests: ``pytest -q tests/test_backbone_qwen3_vl.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import Tensor

from dyto.models.backbone import LLMInput
from dyto.models.loading import _checkpoint_file

__all__ = ["VISION_START", "VISION_END", "VIDEO_PAD", "DEFAULT_FPS", "CLIP_PIXELS", "patch_timestamps",
           "timestamp_text", "clip_pixels", "Qwen3Input", "VideoLayout"]

VISION_START, VISION_END, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"
DEFAULT_FPS = 24.0  # what the processor assumes when a video's fps is unknown (it warns)
# Qwen3-VL-8B-Instruct's video_preprocessor_config.json "size": the clip's T*H*W in pixels
CLIP_PIXELS = (4096, 25165824)


def patch_timestamps(frame_times: list[float], frames_per_patch: int = 2) -> list[float]:
    """Seconds of each temporal patch from its sampled frames' seconds, as the processor's
    ``_calculate_timestamps``: an odd count repeats the last time; a patch is (first + last) / 2."""
    times = list(frame_times)
    if not times:
        raise ValueError("no frame times")
    if len(times) % frames_per_patch:
        times += [times[-1]] * (frames_per_patch - len(times) % frames_per_patch)
    return [(times[i] + times[i + frames_per_patch - 1]) / 2 for i in range(0, len(times), frames_per_patch)]


def timestamp_text(seconds: float) -> str:
    """The processor's ``f"<{t:.1f} seconds>"``."""
    return f"<{seconds:.1f} seconds>"


def clip_pixels(checkpoint: str) -> tuple[int, int]:
    """(min, max) pixels of a clip: the checkpoint's ``video_preprocessor_config.json`` ``size``
    (shortest / longest edge, which Qwen3VLVideoProcessor reads as T*H*W budgets), else the 8B's."""
    path = _checkpoint_file(checkpoint, "video_preprocessor_config.json")
    if path is None:
        return CLIP_PIXELS
    with open(path, encoding="utf-8") as f:
        size = json.load(f).get("size") or {}
    return int(size.get("shortest_edge", CLIP_PIXELS[0])), int(size.get("longest_edge", CLIP_PIXELS[1]))


@dataclass
class Qwen3Input(LLMInput):
    """An ``LLMInput`` with where its visual rows are and their DeepStack features.

    visual_rows [V] long: rows of ``embeds`` holding the reducer's tokens, in their order (the
    timestamps between patches make them non-contiguous); deepstack: one [V, E] per level.
    """

    visual_rows: Tensor | None = None
    deepstack: tuple[Tensor, ...] = ()

    def truncated(self, length: int) -> "Qwen3Input":
        keep = self.visual_rows < length
        cut = LLMInput.truncated(self, length)  # span and blocks cut as for any input
        return Qwen3Input(cut.embeds, cut.positions, int(keep.sum()), visual_rows=self.visual_rows[keep],
                          visual_span=cut.visual_span, blocks=cut.blocks,
                          deepstack=tuple(d[keep] for d in self.deepstack))


@dataclass
class VideoLayout:
    """The full sequence of one prompt around a video of ``len(times)`` temporal patches on ``grid``.

    ids [S] long (every cell a ``<|video_pad|>``), positions [3, S] (the model's get_rope_index),
    pad_start [T'] (row of cell 0 of each patch), text_rows[k] (rows of patch k's timestamp and
    ``<|vision_start|>``), end_rows [T'] (its ``<|vision_end|>``), head (rows before the video) and
    tail_start (first row after it).
    """

    ids: Tensor
    positions: Tensor
    pad_start: Tensor
    text_rows: list[Tensor]
    end_rows: Tensor
    head: int
    tail_start: int
    grid: tuple[int, int]

    @classmethod
    def build(cls, tokenizer, model, before: str, after: str, times: list[float], grid: tuple[int, int],
              device=None) -> "VideoLayout":
        """``before`` / ``after``: the prompt around the template's ``<|vision_start|><|video_pad|><|vision_end|>``
        (``before`` ends with ``<|vision_start|>``, ``after`` starts with ``<|vision_end|>``);
        ``model``: the ``Qwen3VLModel`` whose ``get_rope_index`` gives the ids."""
        if not (before.endswith(VISION_START) and after.startswith(VISION_END)):
            raise ValueError(f"the prompt must wrap the video as {VISION_START}{VIDEO_PAD}{VISION_END}")
        head_text = before[: -len(VISION_START)]
        video = "".join(timestamp_text(t) + VISION_START + VIDEO_PAD + VISION_END for t in times)
        text = head_text + video + after[len(VISION_END):]
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = torch.tensor(enc.input_ids, dtype=torch.long)
        ends = torch.tensor([end for _, end in enc.offset_mapping])
        starts = torch.tensor([start for start, _ in enc.offset_mapping])
        head = int((ends <= len(head_text)).sum())
        if head < len(ids) and starts[head] < len(head_text):
            raise ValueError("the prompt's text before the video and the first timestamp tokenise together")
        pad, start, end = (tokenizer.convert_tokens_to_ids(t) for t in (VIDEO_PAD, VISION_START, VISION_END))
        markers = (ids == pad).nonzero().flatten()
        if len(markers) != len(times) or bool((ids[:head] == pad).any()):
            raise ValueError(f"the prompt holds {int((ids == pad).sum()) - len(times)} {VIDEO_PAD} of its own "
                             "(does the question itself contain one?)")
        h, w = grid
        cells = h * w
        if not (bool((ids[markers - 1] == start).all()) and bool((markers + 1 < len(ids)).all())
                and bool((ids[(markers + 1).clamp(max=len(ids) - 1)] == end).all())):
            raise ValueError("every video pad must sit between its vision markers")
        # each marker becomes the patch's h*w pads
        counts = torch.ones(len(ids), dtype=torch.long)
        counts[markers] = cells
        full = ids.repeat_interleave(counts)
        row_of = torch.cumsum(counts, 0) - counts                        # full row of each marker-level token
        types = (full == pad).int() * 2                                  # 2 = video, as the processor marks it
        merge = model.config.vision_config.spatial_merge_size
        positions, _ = model.get_rope_index(full[None], types[None],
                                            video_grid_thw=torch.tensor([[len(times), h * merge, w * merge]]))
        text_rows, previous_end = [], head
        for k, m in enumerate(markers.tolist()):
            text_rows.append(row_of[previous_end:m])                     # timestamp tokens and <|vision_start|>
            previous_end = m + 1 + 1                                     # after the <|vision_end|>
        return cls(full.to(device), positions[:, 0].to(device), row_of[markers].to(device),
                   [r.to(device) for r in text_rows], row_of[markers + 1].to(device), head,
                   int(row_of[markers[-1] + 1]) + 1, grid)

    def reduced(self, cells: Tensor) -> tuple[Tensor, Tensor]:
        """Rows of the full sequence making the reduced one, and the mask of its visual rows.

        ``cells`` [L, 3] (temporal patch, row, col) of the output tokens in output order. Returns
        (rows [S'], visual [S'] bool); the visual rows hold the tokens in output order.
        """
        h, w = self.grid
        device = self.ids.device
        cells = cells.to(device)
        frames = cells[:, 0]
        token_rows = self.pad_start[frames] + cells[:, 1] * w + cells[:, 2]   # [L]
        starts = torch.ones(len(frames), dtype=torch.bool, device=device)
        starts[1:] = frames[1:] != frames[:-1]                               # a run begins
        flags = lambda n, value: torch.full((n,), value, dtype=torch.bool, device=device)  # noqa: E731
        pieces, kinds = [torch.arange(self.head, device=device)], [flags(self.head, False)]
        run_starts = starts.nonzero().flatten().tolist() + [len(frames)]
        for a, b in zip(run_starts[:-1], run_starts[1:]):
            k = int(frames[a])
            lead, end = self.text_rows[k], self.end_rows[k : k + 1]
            pieces += [lead, token_rows[a:b], end]
            kinds += [flags(len(lead), False), flags(b - a, True), flags(1, False)]
        tail = torch.arange(self.tail_start, len(self.ids), device=device)
        pieces.append(tail)
        kinds.append(flags(len(tail), False))
        return torch.cat(pieces), torch.cat(kinds)
