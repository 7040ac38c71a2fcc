"""The benchmark registry: ``BENCHMARKS`` (name -> spec), ``register_benchmark``, ``get_benchmark``.

Everything that depends on the benchmark reads it from here: ``dyto prepare NAME``, the
DataModule (``VideoQADataModule(benchmark=NAME)``), video path resolution, the metric breakdowns
and the published numbers. The built-in specs (one module each in this package) are registered
when ``dyto.datamodules.benchmarks`` is imported.
"""

from __future__ import annotations

from typing import Any, Mapping

from dyto.datamodules.benchmarks.spec import BenchmarkSpec

__all__ = ["BENCHMARKS", "find_benchmark", "get_benchmark", "register_benchmark", "unregister_benchmark"]

BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register_benchmark(spec: BenchmarkSpec, *, replace: bool = False) -> BenchmarkSpec:
    """Add ``spec`` under ``spec.name``; a second spec of the same name is an error unless ``replace``."""
    if not isinstance(spec, BenchmarkSpec):
        raise TypeError(f"register_benchmark expects a BenchmarkSpec, got {type(spec).__name__}")
    if spec.name in BENCHMARKS and BENCHMARKS[spec.name] is not spec and not replace:
        raise ValueError(f"benchmark {spec.name!r} is already registered; pass replace=True to redefine it")
    BENCHMARKS[spec.name] = spec
    return spec


def unregister_benchmark(name: str) -> None:
    """Remove a benchmark (tests that register a toy one clean up with this)."""
    BENCHMARKS.pop(name, None)


def get_benchmark(name: str) -> BenchmarkSpec:
    """The spec named ``name``; an unknown name raises ValueError listing the known ones."""
    spec = BENCHMARKS.get(name)
    if spec is None:
        raise ValueError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(sorted(BENCHMARKS))} "
                         "(a new one is registered with dyto.datamodules.benchmarks.register_benchmark)")
    return spec


def find_benchmark(name: Any) -> BenchmarkSpec | None:
    """The spec named ``name``, or None (records of ad-hoc benchmarks such as the demo's)."""
    return BENCHMARKS.get(name) if isinstance(name, str) else None


def breakdown_keys(benchmark: Any, meta: Mapping | None) -> list[tuple[str, str]]:
    """(kind, value) pairs a multiple-choice record of ``benchmark`` is counted under, besides
    ("all", "all"). A benchmark without a spec gets ``by_type`` from ``question_type(meta)``."""
    spec = find_benchmark(benchmark)
    if spec is not None:
        return spec.breakdown_keys(meta)
    qt = question_type(meta)
    return [] if qt is None else [("by_type", qt)]


def question_type(meta: Mapping | None) -> str | None:
    """The reporting type of a record whose benchmark is not known: the first registered
    ``type_field`` stored in ``meta``, else the raw ``question_type`` through the first spec whose
    ``derive_type`` maps it into that spec's groups, else through the first ``derive_type`` of a
    spec without groups (NExT-QA's ``TP`` -> ``TN``, STAR's ``Interaction_T1`` -> ``Interaction``)."""
    meta = meta or {}
    specs = sorted((s for s in BENCHMARKS.values() if s.type_field), key=lambda s: s.name)
    for spec in specs:
        if meta.get(spec.type_field) is not None:
            return str(meta[spec.type_field])
    raw = meta.get("question_type", meta.get("type"))
    if raw is None:
        return None
    raw = str(raw)
    for spec in specs:
        if spec.derive_type and spec.type_groups and spec.derive_type(raw) in spec.type_groups:
            return spec.derive_type(raw)
    for spec in specs:
        if spec.derive_type and not spec.type_groups:
            return spec.derive_type(raw)
    return raw
