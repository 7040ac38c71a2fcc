"""PicturesCallback: draw what the reducer did to the run's first video into `<run>/logs/`.

For the first question with a readable video (rank 0 only) it re-encodes that sample's frames
with the module's own vision tower and reducer, the exact computation `predict_step` just ran,
and writes `keyframes.png` (the TW-FINCH clusters and the kept frames, with a legend) and
`merge_map.png` (which patches of a kept frame were merged into which), both titled with the
video's name (``viz.save_reduction_pictures``, which `dyto sweep` also draws each cell with). Prediction records stay small: no features or
cluster labels are stored in them. The report links every PNG it finds in `logs/`, and the W&B
callback logs them as images.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch

from dyto import viz
from dyto.predict.writer import find_writer
from dyto.runs import RunFolder


class PicturesCallback(pl.Callback):
    """Writes keyframes.png and merge_map.png for the first readable video of the run."""

    def __init__(self) -> None:
        self.done = False

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        writer = find_writer(trainer)
        if self.done or not trainer.is_global_zero or writer is None:
            return
        records = batch.get("records") or [None] * len(batch["status"])
        for pixels, status, rec in zip(batch["pixel_values"], batch["status"], records):
            if status == "ok" and pixels is not None:
                self.done = True
                logs = RunFolder(writer.resolve_run_dir(trainer)).logs
                try:
                    self.draw(pl_module, pixels, logs, video=(rec or {}).get("video"))
                except Exception as e:  # a picture is never worth a multi-hour run
                    warnings.warn(f"dyto: could not draw the run's pictures into {logs}: {type(e).__name__}: {e}")
                return

    @torch.no_grad()
    def draw(self, module, pixels: torch.Tensor, logs: Path, video: str | None = None) -> None:
        features, cls = module.encode_frames(pixels, with_cls=module.reducer.needs_cls)
        viz.save_run_pictures(logs, module, pixels, features, cls, module.reducer, module.reducer.name, video)
