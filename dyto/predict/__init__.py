"""The predict side's infrastructure: the prediction writer (per-rank logs, resume, merge).

``PredictionWriter`` is a Lightning ``BasePredictionWriter``; it keeps the run folder
(``dyto.runs.RunFolder``) and its fingerprint, so a resumed run never mixes settings.
"""

from dyto.predict.writer import IncompleteRunError, PredictionWriter, find_writer

__all__ = ["PredictionWriter", "IncompleteRunError", "find_writer"]
