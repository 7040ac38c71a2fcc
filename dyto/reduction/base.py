"""The reducer contract (docs/internals.md) and the registry of reducers by name.

A reducer turns per-frame patch features ``[T, N, D]`` (N = h*w, CLS already dropped) into the
visual tokens ``[L, D]`` the LLM reads. Reducers are plain classes with a typed ``__init__`` that
stores every parameter under its own name, so jsonargparse / LightningCLI can build them from
``class_path: dyto.reduction.DyToReducer`` and ``config()`` can report them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor

__all__ = ["Reduction", "TokenReducer", "REDUCERS", "register_reducer", "build_reducer",
           "list_reducers", "check_features"]


@dataclass
class Reduction:
    tokens: Tensor               # [L, D], the visual tokens in LLM order
    frames_kept: list[int]       # ascending indices into the T input frames whose tokens survive
    tokens_per_frame: list[int]  # one entry per output block, in output order; sum == L
    info: dict = field(default_factory=dict)  # reducer-specific introspection


class TokenReducer:
    """Base class: subclasses set ``num_frames`` in ``__init__`` and implement ``__call__``."""

    name: str = ""               # registry name, set by ``register_reducer``
    num_frames: int              # frames the data side samples (the one source of truth)
    needs_cls: bool = False      # True if ``__call__`` needs the ``cls`` argument

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """``{"name": ..., **init params}`` for prediction records."""
        params = inspect.signature(type(self).__init__).parameters
        return {"name": self.name, **{p: getattr(self, p) for p in params if p != "self"}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def check_features(features: Tensor, grid: tuple[int, int]) -> tuple[int, int, int]:
    """Validate ``features`` [T, N, D] against ``grid`` (h, w) -> (T, N, D); ValueError otherwise."""
    if features.ndim != 3:
        raise ValueError(f"features must be [T, N, D], got shape {tuple(features.shape)}")
    t, n, d = features.shape
    if t == 0 or n == 0 or d == 0:
        raise ValueError(f"features must be non-empty, got shape {tuple(features.shape)} "
                         "(zero frames, tokens or channels)")
    if not features.is_floating_point():
        raise ValueError(f"features must be floating point, got {features.dtype}")
    h, w = grid
    if h * w != n:
        raise ValueError(f"grid {tuple(grid)} has {h * w} cells but features have N={n} tokens")
    return t, n, d


REDUCERS: dict[str, type[TokenReducer]] = {}


def register_reducer(name: str) -> Callable[[type[TokenReducer]], type[TokenReducer]]:
    """Class decorator: register a ``TokenReducer`` subclass under ``name``."""
    def decorate(cls: type[TokenReducer]) -> type[TokenReducer]:
        if name in REDUCERS and REDUCERS[name] is not cls:
            raise ValueError(f"reducer name {name!r} is already registered to {REDUCERS[name]}")
        cls.name = name
        REDUCERS[name] = cls
        return cls
    return decorate


def build_reducer(name: str, **params: Any) -> TokenReducer:
    """Instantiate the reducer registered as ``name`` with ``params``."""
    if name not in REDUCERS:
        raise ValueError(f"unknown reducer {name!r}; known reducers: {', '.join(list_reducers())}")
    return REDUCERS[name](**params)


def list_reducers() -> list[str]:
    """Registered reducer names, sorted."""
    return sorted(REDUCERS)
