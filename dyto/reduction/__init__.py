"""Token reduction: pure tensor code (no I/O, no model) from patch features to LLM visual tokens.

``twfinch`` (TW-FINCH clustering) -> ``selection`` (keyframes) -> ``merge`` (bipartite merging)
make up DyTo (``dyto``); ``baselines`` holds SlowFast, uniform and concat; ``dycoke``,
``fastvid``, ``prunevid``, ``holitom`` and ``vidcom2`` are 2025 training-free reducers (their
pre-LLM stages, sharing ``density``), ``vcast`` and ``tango`` 2026 ones; ``assignment`` records how
each output token was made (so extra per-token tensors follow it); ``features`` gives
stand-in features without CLIP. Reducers follow the contract in ``base`` and are registered by
name: ``build_reducer("dyto", budget=3680)`` or ``class_path: dyto.reduction.DyToReducer``.
"""

from .base import (REDUCERS, Assignment, Reduction, TokenReducer, build_reducer, list_reducers,
                   register_reducer)
from .baselines import ConcatReducer, SlowFastReducer, UniformReducer
from .dycoke import DyCokeReducer
from .dyto import DyToReducer, merge_schedule
from .fastvid import FastVIDReducer
from .holitom import HoliTomReducer
from .prunevid import PruneVidReducer
from .vidcom2 import VidCom2Reducer
from .vcast import VCastReducer
from .tango import TangoReducer
from .features import pixel_patch_features
from .merge import bipartite_merge, merge_frames, merge_with_assignment
from .selection import KeyframeSelection, select_keyframes, select_keyframes_detailed
from .twfinch import tw_finch

__all__ = [
    "Reduction", "TokenReducer", "REDUCERS", "register_reducer", "build_reducer", "list_reducers",
    "DyToReducer", "SlowFastReducer", "UniformReducer", "ConcatReducer", "merge_schedule",
    "DyCokeReducer", "FastVIDReducer", "PruneVidReducer", "HoliTomReducer", "VidCom2Reducer",
    "VCastReducer", "TangoReducer", "Assignment",
    "tw_finch", "select_keyframes", "select_keyframes_detailed", "KeyframeSelection",
    "bipartite_merge", "merge_frames", "merge_with_assignment", "pixel_patch_features",
]
