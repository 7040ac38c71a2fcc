"""PicturesCallback: draw what the reducer did to the run's first video into `<run>/logs/`.

For the first question with a readable video (rank 0 only) it re-encodes that sample's frames
with the module's own vision tower and reducer, the exact computation `predict_step` just ran,
and writes `keyframes.png` (the TW-FINCH clusters and the kept frames) and `merge_map.png` (which
patches of a kept frame were merged into which). Prediction records stay small: no features or
cluster labels are stored in them. The report links every PNG it finds in `logs/`, and the W&B
callback logs them as images.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from dyto import viz
from dyto.predict.writer import find_writer
from dyto.runs import RunFolder


def to_uint8_frames(pixels: torch.Tensor, mean, std) -> np.ndarray:
    """CLIP-normalised [T, 3, S, S] -> uint8 [T, S, S, 3] for display."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    img = (pixels.detach().float().cpu() * s + m).clamp(0, 1) * 255
    return img.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


class PicturesCallback(pl.Callback):
    """Writes keyframes.png and merge_map.png for the first readable video of the run."""

    def __init__(self) -> None:
        self.done = False

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        writer = find_writer(trainer)
        if self.done or not trainer.is_global_zero or writer is None:
            return
        for pixels, status in zip(batch["pixel_values"], batch["status"]):
            if status == "ok" and pixels is not None:
                self.done = True
                logs = RunFolder(writer.resolve_run_dir(trainer)).logs
                try:
                    self.draw(pl_module, pixels, logs)
                except Exception as e:  # a picture is never worth a multi-hour run
                    warnings.warn(f"dyto: could not draw the run's pictures into {logs}: {type(e).__name__}: {e}")
                return

    @torch.no_grad()
    def draw(self, module, pixels: torch.Tensor, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        features, cls = module.encode_frames(pixels, with_cls=module.reducer.needs_cls)
        backbone = getattr(module, "backbone", None)  # the grid of these pixels (protocol lmms_eval: per video)
        grid = backbone.grid_for(pixels) if backbone is not None else module.grid
        red = module.reducer(features, grid, cls)
        frames = to_uint8_frames(pixels, module.image_mean, module.image_std)
        # a reducer's frame is a temporal patch of `frames_per_patch` sampled frames (2 for
        # Qwen2.5-VL): show the first frame of each patch, so frame k of the strip is patch k
        per_patch = getattr(getattr(module, "preprocessing", None), "frames_per_patch", 1)
        frames = frames[::per_patch][: features.shape[0]]
        unit = "sampled frames" if per_patch == 1 else f"temporal patches of {per_patch} frames"
        selection = red.info.get("selection")
        labels = selection.labels.tolist() if selection is not None else [0] * len(frames)
        name = module.reducer.name
        viz.save_figure(viz.keyframe_strip(frames, labels, red.frames_kept,
                                           title=f"{name}: {len(frames)} {unit}, {len(red.frames_kept)} kept"),
                        logs / "keyframes.png")
        if "r_list" in red.info and red.frames_kept:
            k = red.frames_kept[len(red.frames_kept) // 2]
            viz.save_figure(viz.merge_map(frames[k], features[k].float().cpu(), grid, red.info["r_list"],
                                          getattr(module.reducer, "reduce", "amax")), logs / "merge_map.png")
