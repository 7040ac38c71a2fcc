"""DyTo's published numbers: a reader over the benchmark specs, which hold them.

Each benchmark's spec (``dyto/datamodules/benchmarks/<name>.py``) carries its published rows with
their source tags (explained in ``dyto/datamodules/benchmarks/spec.py``); the report puts every
measured number beside them. Only numbers for benchmarks dyto cannot run stay here.
"""

from __future__ import annotations

import re
from typing import Any

from dyto.datamodules.benchmarks import BENCHMARKS, Published

__all__ = ["PUBLISHED", "Published", "canonical_benchmark", "model_size", "published"]

# Rows for benchmarks dyto has no spec for (MVBench's moved to its spec when it got one).
UNREGISTERED: tuple[Published, ...] = ()


def _key(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def all_published() -> tuple[Published, ...]:
    """Every published row: the registered benchmarks' (in name order), then the unregistered ones."""
    return (*(p for _, spec in sorted(BENCHMARKS.items()) for p in spec.published), *UNREGISTERED)


def canonical_benchmark(name: str) -> str:
    """The registered name a spelling refers to, ignoring case and punctuation: 'NExT-QA' ->
    'nextqa', 'MSVD_QA' -> 'msvd_qa'. A name that extends a benchmark's ('vcgbench_temporal')
    is that benchmark. Unknown names come back lower-cased without punctuation."""
    key = _key(name)
    names = {_key(n): n for n in (*BENCHMARKS, *(p.benchmark for p in UNREGISTERED))}
    if key in names:
        return names[key]
    prefixes = [k for k in names if key.startswith(k)]
    return names[max(prefixes, key=len)] if prefixes else key


def model_size(model: str | None) -> str | None:
    """'llava-hf/llava-v1.6-vicuna-7b-hf' -> '7B' (None when the name carries no size)."""
    m = re.search(r"(?<![0-9.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", str(model or ""))
    return f"{m.group(1)}B" if m else None


def published(benchmark: str, metric: str, size: str | None = None) -> list[Published]:
    """Published DyTo numbers for a benchmark and metric; the given size first (or only, if present)."""
    name = canonical_benchmark(benchmark)
    rows = [p for p in all_published() if p.benchmark == name and p.metric == metric]
    same = [p for p in rows if p.size == size]
    return same or rows


def __getattr__(name: str) -> Any:
    if name == "PUBLISHED":  # the old constant, computed so that benchmarks registered later count
        return all_published()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
