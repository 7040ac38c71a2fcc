"""Benchmarks: one spec each, in one registry.

A benchmark is one module in this package defining ``SPEC = BenchmarkSpec(...)`` (its preparer,
tasks, video naming rule, metric breakdowns and published numbers), plus its run config
``configs/benchmarks/<name>.yaml``. Every module here is imported and its ``SPEC`` registered
when this package is imported, so adding a file is all it takes; code outside the package (a
test, a notebook, another project) calls ``register_benchmark(spec)`` instead.
See docs/extending.md, "Adding a benchmark".

    from dyto.datamodules.benchmarks import BENCHMARKS, get_benchmark
    get_benchmark("nextqa").published      # DyTo's published NExT-QA numbers
"""

from __future__ import annotations

import importlib
import pkgutil

from dyto.datamodules.benchmarks.registry import (BENCHMARKS, breakdown_keys, find_benchmark, get_benchmark,
                                                  question_type, register_benchmark, unregister_benchmark)
from dyto.datamodules.benchmarks.spec import METRICS, BenchmarkSpec, LmmsEvalTask, Published, VideoRule, paper_rows

__all__ = ["BENCHMARKS", "METRICS", "BenchmarkSpec", "LmmsEvalTask", "Published", "VideoRule", "breakdown_keys", "find_benchmark",
           "get_benchmark", "paper_rows", "question_type", "register_benchmark", "unregister_benchmark"]

_MACHINERY = {"registry", "spec", "lmms_eval_tasks"}  # not benchmarks: their machinery


def _register_builtins() -> None:
    """Import every benchmark module of this package (sorted, so the order is stable) and
    register its ``SPEC``; a module without one is a mistake worth an ImportError."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in _MACHINERY or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if not isinstance(spec, BenchmarkSpec) or spec.name != info.name:
            raise ImportError(f"{module.__file__}: a benchmark module must define SPEC = BenchmarkSpec(name="
                              f"{info.name!r}, ...)")
        register_benchmark(spec)


_register_builtins()
