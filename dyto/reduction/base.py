"""The reducer contract (docs/internals.md) and the registry of reducers by name.

A reducer turns per-frame patch features ``[T, N, D]`` (N = h*w, CLS already dropped) into the
visual tokens ``[L, D]`` the LLM reads. Reducers are plain classes with a typed ``__init__`` that
stores every parameter under its own name, so jsonargparse / LightningCLI can build them from
``class_path: dyto.reduction.DyToReducer`` and ``config()`` can report them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dyto.errors import ConfigError, check
from dyto.registry import registering

from .assignment import Assignment

__all__ = ["Reduction", "Assignment", "TokenReducer", "REDUCERS", "register_reducer", "build_reducer",
           "list_reducers", "check_features", "check_budget", "cell_positions"]


@dataclass
class Reduction:
    """What a reducer returns.

    ``positions`` [L, 3] (LongTensor, same device as ``tokens``) is the (frame, row, col) of every
    output token in the input grid, in output order (docs/internals.md, "Seams"): a kept token
    keeps its own cell, a merged token takes its destination's cell, a pooled token the top-left
    cell of its window. Backbones with 3-D positions (M-RoPE) place the tokens with it.
    ``grid`` is the input grid those cells belong to; ``VideoQA`` fills it when the reducer does not,
    since under ``protocol: lmms_eval`` a Qwen2.5-VL or InternVL grid depends on the video.

    ``input_frames`` is the T of the ``[T, N, D]`` input (every registered reducer sets it), so a
    backbone knows where the unreduced video would have ended. ``keep_input_positions`` True asks
    the backbone to give every token the position it has in the unreduced sequence (its cell's)
    and the text after the video the positions it has there (FastVID's pruning inside the LLM);
    False (default): the tokens are a sequence of their own.
    """

    tokens: Tensor               # [L, D], the visual tokens in LLM order
    frames_kept: list[int]       # ascending indices into the T input frames whose tokens survive
    tokens_per_frame: list[int]  # one entry per output block, in output order; sum == L
    info: dict = field(default_factory=dict)  # reducer-specific introspection
    positions: Tensor | None = None  # [L, 3] long: (frame, row, col) in the input grid
    grid: tuple[int, int] | None = None  # (h, w) of the input grid; VideoQA sets it (frames of varying size)
    input_frames: int | None = None  # T of the input grid the positions refer to
    keep_input_positions: bool = False  # True: positions as in the unreduced sequence (needs positions)
    assignment: Assignment | None = None  # how each output token was made from the [T, N] inputs
    extras: tuple[Tensor, ...] = ()  # extra per-token tensors reduced the same way, each [L, E]
    frame_times: list[float] | None = None  # seconds of each sampled frame (set by VideoQA)

    def reduce_extras(self, extras) -> "Reduction":
        """Reduce each extra ``[T, N, E]`` tensor by this reduction's assignment into ``extras``
        (each ``[L, E]``, the same keep/merge as ``tokens``); returns self."""
        extras = tuple(extras or ())
        if extras and self.assignment is None:
            raise ValueError("this reduction reports no assignment, so extra per-token tensors (DeepStack "
                             "features) cannot follow its tokens; use a reducer that sets Reduction.assignment")
        self.extras = tuple(self.assignment.apply(e) for e in extras)
        return self


def cell_positions(frames: Tensor, cells: Tensor, width: int) -> Tensor:
    """(frame, raster cell) ids -> [L, 3] (frame, row, col); ``frames`` broadcasts to ``cells``.

    frames, cells: integer tensors of the same (or broadcastable) shape; flattened in C order.
    """
    cells = torch.as_tensor(cells).long()
    frames = torch.as_tensor(frames, device=cells.device).long().expand_as(cells)
    return torch.stack([frames.reshape(-1), cells.reshape(-1) // width,
                        cells.reshape(-1) % width], dim=1)


class TokenReducer:
    """Base class: subclasses set ``num_frames`` in ``__init__`` and implement ``__call__``.

    Matched budgets: every reducer takes the same two knobs, ``target_tokens`` (a visual-token
    count) and ``retention`` (a fraction of the T*N input tokens, ``round(retention*T*N)``, at
    least 1); at most one is set, and None for both keeps the method's own default. Each
    reducer's docstring says whether it meets the target exactly or at most/approximately.
    ``output_tokens(T, grid)`` says how many tokens a reducer will emit when that is known
    before the features are seen (None when it depends on the content).
    """

    name: str = ""               # registry name, set by ``register_reducer``
    num_frames: int              # frames the data side samples (the one source of truth)
    needs_cls: bool = False      # True if ``__call__`` needs the ``cls`` argument
    target_tokens: int | None = None  # matched-budget knob: a visual-token count
    retention: float | None = None    # matched-budget knob: a fraction of the T*N input tokens
    exact_budget: bool = False   # True: meets a target exactly (in its documented range); else <=
    assigns: bool = False        # True: every Reduction it returns carries its ``assignment``

    def target_for(self, num_frames: int, num_cells: int) -> int | None:
        """The token target for ``num_frames`` frames of ``num_cells`` cells, None if no knob is set."""
        if self.target_tokens is not None:
            return int(self.target_tokens)
        if self.retention is not None:
            return max(1, round(self.retention * num_frames * num_cells))
        return None

    def output_tokens(self, num_frames: int, grid: tuple[int, int]) -> int | None:
        """Tokens emitted for ``num_frames`` frames on ``grid`` if known in advance, else None."""
        return None

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


def check_budget(target_tokens: int | None, retention: float | None) -> None:
    """Validate the matched-budget knobs (``ConfigError`` naming the bad one)."""
    check("target_tokens", target_tokens, ">=1", optional=True)
    check("retention", retention, "(0,1]", optional=True)
    if target_tokens is not None and retention is not None:
        raise ConfigError("retention", retention, f"null while target_tokens ({target_tokens}) is set",
                          "one budget knob at a time: a token count or a share, not both")


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


register_reducer = registering(REDUCERS, "reducer")  # @register_reducer("dyto")


def build_reducer(name: str, **params: Any) -> TokenReducer:
    """Instantiate the reducer registered as ``name`` with ``params``."""
    if name not in REDUCERS:
        raise ConfigError("reducer", name, "one of the known reducers: " + ", ".join(list_reducers()))
    known = [p for p in inspect.signature(REDUCERS[name].__init__).parameters if p != "self"]
    for key in params:
        if key not in known:
            raise ConfigError(key, params[key], f"a parameter of {name}: " + ", ".join(known))
    return REDUCERS[name](**params)


def list_reducers() -> list[str]:
    """Registered reducer names, sorted."""
    return sorted(REDUCERS)
