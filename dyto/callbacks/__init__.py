"""Lightning glue: callbacks that evaluate a finished predict run, draw its pictures and log it to W&B.

* ``EvaluateCallback`` (``evaluate``): merge, score, write ``logs/results.json`` and ``report.md``.
* ``PicturesCallback`` (``pictures``): keyframes and merge map of the run's first readable video.
* ``WandbCallback`` (``wandb``): run config, stable metric keys, per-question table.
"""

from dyto.callbacks.evaluate import EvaluateCallback, find_evaluator
from dyto.callbacks.pictures import PicturesCallback
from dyto.callbacks.wandb import WandbCallback, run_config, run_metrics, scrub, thumbnail_strip

__all__ = ["EvaluateCallback", "PicturesCallback", "WandbCallback", "find_evaluator", "run_config", "run_metrics",
           "scrub", "thumbnail_strip"]
