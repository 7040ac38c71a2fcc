"""One class-registry decorator for the registries of reducers, backbones and inner-LLM stages.

    REDUCERS: dict[str, type[TokenReducer]] = {}
    register_reducer = registering(REDUCERS, "reducer")      # @register_reducer("dyto")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)

__all__ = ["registering"]


def registering(registry: dict[str, type], kind: str) -> Callable[[str], Callable[[T], T]]:
    """``register(name)``: a class decorator that sets ``cls.name = name`` and files the class in
    ``registry``; a second class under a taken name is a ``ValueError`` naming ``kind``."""

    def register(name: str) -> Callable[[T], T]:
        def wrap(cls: T) -> T:
            if name in registry and registry[name] is not cls:
                raise ValueError(f"{kind} {name!r} is already registered to {registry[name].__name__}")
            cls.name = name
            registry[name] = cls
            return cls

        return wrap

    register.__doc__ = f"Class decorator: make a {kind} class buildable by ``name``."
    return register
