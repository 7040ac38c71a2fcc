"""Inner-LLM stages: token pruning and merging inside the language model (FastV, DyCoke's KV
pruning, PruneVid's question-guided pruning, HoliTom's inner merging), over any backbone.

``base`` holds the interface (:class:`InnerStage`, :class:`RowView`, :class:`Keep`) and the registry
(``INNER_STAGES``, ``register_inner_stage``, ``build_inner_stage``, ``list_inner_stages``);
``stages`` the four shipped stages; ``loop`` the greedy prefill + decoding loop that runs them
over a backbone's Hugging Face decoder layers; ``attention`` the per-layer attention probe and
key view. ``VideoQA(inner_stage=...)`` uses them; docs/reducers.md lists the stages and
docs/extending.md shows how to add one.
"""

from dyto.models.inner.base import (INNER_STAGES, InnerStage, Keep, RowView, build_inner_stage, list_inner_stages,
                                    register_inner_stage)
from dyto.models.inner.loop import InnerLoop, language_model
from dyto.models.inner.stages import DyCokeKVStage, FastVStage, HoliTomInnerStage, PruneVidLLMStage

__all__ = ["InnerStage", "RowView", "Keep", "INNER_STAGES", "register_inner_stage", "build_inner_stage",
           "list_inner_stages", "InnerLoop", "language_model", "FastVStage", "DyCokeKVStage", "PruneVidLLMStage",
           "HoliTomInnerStage"]
