"""DyTo's published numbers, transcribed from shared/spec/dyto-results.md with their source tags.

The report puts every measured number beside these. Source tags (see the spec for details):
S2 = third-party transcription of arXiv 2411.14401 v2 tables (secondary, not checked against
the PDF); S4 = wizwand leaderboard page (secondary, arXiv version and model size unknown).
Only DyTo rows are kept: the baseline rows belong to other methods and other judge runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    benchmark: str  # canonical name (see canonical_benchmark)
    metric: str  # accuracy (%) | score (0-5) | vcgbench_average (0-5)
    size: str  # LLM size, e.g. "7B"; "?" when the source does not say
    value: float
    source: str
    note: str = ""


_MC = {"nextqa": (65.7, 72.9), "egoschema": (48.6, 56.8), "intentqa": (61.6, 67.5),
       "videomme": (41.2, 53.4), "mvbench": (45.2, 52.9)}
_OE = {"msvd": ((77.6, 3.9), (79.6, 4.1)), "msrvtt": ((64.1, 3.4), (66.2, 3.6)),
       "tgif": ((78.0, 4.0), (80.7, 4.2)), "activitynet": ((54.3, 3.2), (59.0, 3.5))}
_NOTES = {("egoschema", "accuracy"): "500-question public subset",
          ("videomme", "accuracy"): "w/o subtitles; the ablation table gives 42.7 (7B)",
          ("intentqa", "accuracy"): "34B: 67.3 in the ablation table, 66.4 on S4"}

PUBLISHED: tuple[Published, ...] = (
    *(Published(b, "accuracy", size, v, "S2", _NOTES.get((b, "accuracy"), ""))
      for b, vals in _MC.items() for size, v in zip(("7B", "34B"), vals)),
    *(Published(b, m, size, v, "S2", "judge GPT-3.5-Turbo-0125")
      for b, vals in _OE.items() for size, pair in zip(("7B", "34B"), vals)
      for m, v in zip(("accuracy", "score"), pair)),
    Published("vcgbench", "vcgbench_average", "7B", 3.16, "S2", "per-dimension numbers not found"),
    Published("vcgbench", "vcgbench_average", "34B", 3.32, "S2", "per-dimension numbers not found"),
    Published("star", "accuracy", "?", 51.1, "S4", "model size not stated (probably 34B, arXiv v1)"),
)

_ALIASES = {"msvdqa": "msvd", "msrvttqa": "msrvtt", "tgifqa": "tgif", "tgifframeqa": "tgif",
            "activitynetqa": "activitynet", "anet": "activitynet", "anetqa": "activitynet",
            "videochatgpt": "vcgbench", "vcg": "vcgbench"}


def canonical_benchmark(name: str) -> str:
    """'NExT-QA' / 'next_qa' -> 'nextqa'; 'MSVD_QA' -> 'msvd'; 'vcgbench_generic' -> 'vcgbench'."""
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    key = _ALIASES.get(key, key)
    return "vcgbench" if key.startswith("vcgbench") else key


def model_size(model: str | None) -> str | None:
    """'llava-hf/llava-v1.6-vicuna-7b-hf' -> '7B' (None when the name carries no size)."""
    m = re.search(r"(?<![0-9.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", str(model or ""))
    return f"{m.group(1)}B" if m else None


def published(benchmark: str, metric: str, size: str | None = None) -> list[Published]:
    """Published DyTo numbers for a benchmark and metric; the given size first (or only, if present)."""
    rows = [p for p in PUBLISHED if p.benchmark == canonical_benchmark(benchmark) and p.metric == metric]
    same = [p for p in rows if p.size == size]
    return same or rows
