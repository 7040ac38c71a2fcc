"""Published numbers of the reducers dyto implements, to set beside a run's: DyTo, DyCoke, FastVID,
PruneVid, HoliTom, VidCom², V-CAST (docs/paper-results.md has a section per paper).

The peers' rows live in ``dyto/assets/published/results.csv``, one published cell per line:

    method, variant, backbone, size, benchmark, metric, retention, tokens, frames, protocol, value,
    reported_by, source, note

``method`` is dyto's reducer name (``concat`` for a paper's unreduced, full-token row);
``retention`` the share of the unreduced visual tokens kept (empty: the method's own default, as
DyTo's 3680 of 100 x 576); ``reported_by`` the paper whose table holds the number (HoliTom's table
holds DyCoke, PruneVid and FastVID rows too), ``source`` where it was read (a repository file at a
commit, or a paper table). Only cells on the question sets dyto prepares are kept (no EgoSchema
full set, no NExT-QA test split, no VideoMME with subtitles). DyTo's own LLaVA-NeXT rows come from
the benchmark specs (``BenchmarkSpec.published``), so they are written down once.

A run's cell is (method, backbone, size, benchmark, retention) read off its predictions;
:func:`matching` finds the published cells with the same key, and the report, ``dyto compare``
and the sweep table print them beside the run's number, or say that none exists.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from dyto.datamodules.benchmarks import BENCHMARKS, METRICS
from dyto.errors import RecordsError
from dyto.evaluation.paper import model_size
from dyto.reduction import REDUCERS

__all__ = ["PublishedResult", "RunCell", "TABLE", "all_results", "backbone_of", "load_published", "matching",
           "measured", "published_cell", "published_entry", "render_published", "run_cell", "run_published"]

TABLE = Path(__file__).resolve().parents[1] / "assets" / "published" / "results.csv"
FIELDS = ("method", "variant", "backbone", "size", "benchmark", "metric", "retention", "tokens", "frames",
          "protocol", "value", "reported_by", "source", "note")
SIZE = re.compile(r"^(\d+(\.\d+)?B|\?)$")
# the tags of DyTo's rows in the specs (dyto/datamodules/benchmarks/spec.py)
DYTO_SOURCES = {"S2": "S2: arXiv 2411.14401 v2 (secondary transcription)",
                "S4": "S4: wizwand leaderboard page (secondary, arXiv version unknown)"}


@dataclass(frozen=True)
class PublishedResult:
    method: str
    variant: str
    backbone: str
    size: str
    benchmark: str
    metric: str
    retention: float | None  # None: the method's own default budget
    tokens: int | None
    frames: int | None
    protocol: str
    value: float
    reported_by: str
    source: str
    note: str = ""

    def label(self) -> str:
        """``56.5 (HoliTom; 32 frames, lmms_eval)``: the value and where it comes from, for a table cell."""
        what = "; ".join(x for x in (self.variant, f"{self.frames} frames" if self.frames else "", self.protocol) if x)
        return f"{self.value} ({self.reported_by}{'; ' + what if what else ''})"


def _number(text: str, kind: type, where: tuple[Path, int], name: str) -> Any:
    if text == "":
        return None
    try:
        return kind(text)
    except ValueError:
        raise RecordsError(*where, f"{name} {text!r} is not a {kind.__name__}") from None


def load_published(path: str | Path = TABLE) -> tuple[PublishedResult, ...]:
    """The rows of a published-results CSV, each checked; a bad row raises ``RecordsError`` naming
    the file, the line and the problem."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise RecordsError(path, 1, f"header must be {','.join(FIELDS)}")
        rows, seen = [], {}
        for row in reader:
            where = (path, reader.line_num)
            if None in row or any(v is None for v in row.values()):
                raise RecordsError(*where, f"expected {len(FIELDS)} cells")
            value = _number(row["value"], float, where, "value")
            result = PublishedResult(
                row["method"], row["variant"], row["backbone"], row["size"], row["benchmark"], row["metric"],
                _number(row["retention"], float, where, "retention"), _number(row["tokens"], int, where, "tokens"),
                _number(row["frames"], int, where, "frames"), row["protocol"], value, row["reported_by"],
                row["source"], row["note"])
            check(result, where)
            key = (result.method, result.variant, result.backbone, result.size, result.benchmark, result.metric,
                   result.retention, result.reported_by)
            if key in seen:
                raise RecordsError(*where, f"the same cell as line {seen[key]}")
            seen[key] = reader.line_num
            rows.append(result)
    return tuple(rows)


def check(r: PublishedResult, where: tuple[Path, int]) -> None:
    problems = []
    if r.method not in REDUCERS:
        problems.append(f"method {r.method!r} is not a reducer of dyto ({', '.join(sorted(REDUCERS))})")
    if r.benchmark not in BENCHMARKS:
        problems.append(f"benchmark {r.benchmark!r} is not registered")
    if r.metric not in METRICS:
        problems.append(f"metric {r.metric!r} is not one of {METRICS}")
    if not SIZE.match(r.size) or not r.backbone:
        problems.append(f"backbone {r.backbone!r} / size {r.size!r} (a size is like 7B, or ? when not stated)")
    if r.retention is not None and not 0 < r.retention <= 1:
        problems.append(f"retention {r.retention} is outside (0, 1]")
    if r.method == "concat" and r.retention != 1.0:
        problems.append("an unreduced (concat) row has retention 1.0")
    if any(x is not None and x < 1 for x in (r.tokens, r.frames)):
        problems.append("tokens and frames are counts >= 1")
    top = 100 if r.metric == "accuracy" else 5
    if not 0 <= r.value <= top:
        problems.append(f"value {r.value} is outside 0..{top} for {r.metric}")
    if not (r.protocol and r.reported_by and r.source):
        problems.append("protocol, reported_by and source must be given")
    if problems:
        raise RecordsError(*where, "; ".join(problems))


def dyto_spec_rows() -> tuple[PublishedResult, ...]:
    """DyTo's published rows kept in the benchmark specs, as table rows: LLaVA-NeXT, 100 frames, the
    released budget (3680), DyTo's own (reference) protocol."""
    return tuple(PublishedResult("dyto", "", "llava_next", p.size, p.benchmark, p.metric, None, 3680, 100,
                                 "reference", p.value, "DyTo", DYTO_SOURCES.get(p.source, p.source), p.note)
                 for _, spec in sorted(BENCHMARKS.items()) for p in spec.published)


@functools.lru_cache(maxsize=1)
def _table() -> tuple[PublishedResult, ...]:
    return load_published(TABLE)


def all_results() -> tuple[PublishedResult, ...]:
    """Every published row: the table's, then DyTo's from the specs."""
    return _table() + dyto_spec_rows()


# ---------------------------------------------------------------- a run's cell
BACKBONES = (("llava-video", "llava_video"), ("llava_video", "llava_video"), ("onevision", "llava_onevision"),
             ("llava-v1.6", "llava_next"), ("llava-next", "llava_next"), ("llava_next", "llava_next"),
             ("qwen2.5-vl", "qwen2_5_vl"), ("qwen2_5_vl", "qwen2_5_vl"), ("qwen3-vl", "qwen3_vl"),
             ("qwen3_vl", "qwen3_vl"), ("internvl3", "internvl3"),
             ("internvl2_5", "internvl2_5"), ("internvl2.5", "internvl2_5"), ("internvl2", "internvl2"),
             ("qwen-vl-chat", "qwen_vl_chat"))


def backbone_of(model: str | None) -> tuple[str | None, str | None]:
    """(backbone, size) a checkpoint name says: ``lmms-lab/LLaVA-Video-7B-Qwen2`` -> (llava_video, 7B),
    ``llava-hf/llava-onevision-qwen2-7b-ov-hf`` -> (llava_onevision, 7B); (None, None) for a tiny model."""
    name = str(model or "").lower()
    if name.startswith("tiny"):
        return None, None
    family = next((b for key, b in BACKBONES if key in name), None)
    return family, model_size(model) if family else None


@dataclass(frozen=True)
class RunCell:
    method: str | None
    backbone: str | None
    size: str | None
    retention: float | None  # the reducer's retention; 1.0 for concat without a target; None otherwise
    tokens: int | None  # target_tokens, or DyTo's budget
    frames: float | None  # mean frames sampled
    protocol: str

    def describe(self) -> str:
        budget = (f"retention {self.retention:g}" if self.retention is not None else
                  f"{self.tokens} tokens" if self.tokens else "its default budget")
        return (f"`{self.method}` ({budget}) on {self.backbone or 'an unknown backbone'} {self.size or ''}, "
                f"{self.protocol} protocol".replace("  ", " "))


def run_cell(predictions: Iterable[Mapping[str, Any]]) -> RunCell:
    """The cell a run's predictions belong to (their first answered record's reducer and model)."""
    preds = [p for p in predictions if p.get("status") == "ok"] or list(predictions)
    first = preds[0] if preds else {}
    reducer = first.get("reducer") if isinstance(first.get("reducer"), dict) else {}
    method = reducer.get("name")
    retention, tokens = reducer.get("retention"), reducer.get("target_tokens") or reducer.get("budget")
    if method == "concat" and retention is None and reducer.get("target_tokens") is None:
        retention = 1.0
    frames = [p["frames_sampled"] for p in preds if isinstance(p.get("frames_sampled"), (int, float))]
    backbone, size = backbone_of(first.get("model"))
    return RunCell(method, backbone, size, retention, tokens, sum(frames) / len(frames) if frames else None,
                   first.get("protocol") or "reference")


def matching(cell: RunCell, benchmark: str, metric: str = "accuracy") -> list[PublishedResult]:
    """Published rows of (method, backbone, size, benchmark, retention): a retention equal to the
    run's, or both the method's default (with DyTo's budget equal where the row names one)."""
    out = []
    for r in all_results():
        if (r.method, r.backbone, r.size, r.benchmark, r.metric) != (cell.method, cell.backbone, cell.size, benchmark,
                                                                     metric):
            continue
        if r.retention is not None:
            ok = cell.retention is not None and math.isclose(r.retention, cell.retention, abs_tol=1e-9)
        else:
            ok = cell.retention is None and (r.tokens is None or cell.tokens in (None, r.tokens))
        if ok:
            out.append(r)
    return out


def measured(results: Mapping[str, Any], benchmark: str, metric: str = "accuracy") -> float | None:
    """A run's number in a published cell's terms: multiple-choice accuracy (the benchmark's macro
    average where that is its official number, MLVU's M-avg), else the judged accuracy; the judge's
    score; VCGBench's average."""
    entry = results.get("metrics", {}).get("benchmarks", {}).get(benchmark, {})
    if metric == "accuracy":
        mc = entry.get("multiple_choice") or {}
        for value in (mc.get("macro_accuracy"), mc.get("accuracy"), entry.get("judged", {}).get("default", {}).get("accuracy")):
            if isinstance(value, (int, float)):
                return float(value)
        return None
    if metric == "score":
        return entry.get("judged", {}).get("default", {}).get("score")
    return entry.get(metric)


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def published_cell(cell: RunCell, benchmark: str, metric: str = "accuracy") -> str:
    """The published values of the run's cell, ``; ``-joined, or ``none published``."""
    return "; ".join(r.label() for r in matching(cell, benchmark, metric)) or "none published"


def run_published(predictions: list[Mapping[str, Any]], results: Mapping[str, Any]) -> str:
    """One table cell for ``dyto compare`` and the sweep: the published accuracy of the run's cell on
    its (first) benchmark, after the run's own number in that benchmark's official average when it
    is not the plain accuracy (MLVU's M-avg)."""
    benchmarks = list(results.get("metrics", {}).get("benchmarks", {})) or [p.get("benchmark") for p in predictions[:1]]
    if not benchmarks:
        return "–"
    bench = benchmarks[0]
    text = published_cell(run_cell(predictions), bench)
    mc = results.get("metrics", {}).get("benchmarks", {}).get(bench, {}).get("multiple_choice") or {}
    if mc.get("macro_accuracy") is not None:
        text = f"ours {_f(mc['macro_accuracy'])} (mean over {mc['macro_over'].replace('by_', '')}); published: {text}"
    return text


def published_entry(results: Mapping[str, Any], predictions: list[Mapping[str, Any]]) -> dict[str, Any]:
    """``results.json["published_cells"]``: the run's cell, and per benchmark and metric its number
    beside every published row with the same key (an empty list: none exists)."""
    cell = run_cell(predictions)
    out: dict[str, Any] = {"cell": asdict(cell), "benchmarks": {}}
    for bench in results.get("metrics", {}).get("benchmarks", {}):
        for metric in METRICS:
            ours = measured(results, bench, metric)
            if ours is not None:
                out["benchmarks"].setdefault(bench, {})[metric] = {
                    "ours": ours, "published": [asdict(r) for r in matching(cell, bench, metric)]}
    return out


def render_published(entry: Mapping[str, Any]) -> list[str]:
    """report.md's section for ``results.json["published_cells"]``."""
    cell = RunCell(**entry["cell"])
    lines = ["", "## Beside the published numbers of the same cell", "",
             f"This run: {cell.describe()}, {_f(cell.frames)} frames sampled on average. Published cells with the "
             "same (method, backbone, benchmark, retention) are listed with their frames and protocol; a number "
             "under another protocol or frame count is not strictly comparable (docs/paper-results.md).", "",
             "| benchmark | metric | ours | published | protocol | source |", "|---|---|---|---|---|---|"]
    for bench, metrics in entry["benchmarks"].items():
        for metric, e in metrics.items():
            if not e["published"]:
                lines.append(f"| {bench} | {metric} | {_f(e['ours'])} | none published for this cell | – | – |")
            for r in map(lambda d: PublishedResult(**d), e["published"]):
                lines.append(f"| {bench} | {metric} | {_f(e['ours'])} | {r.label()} | {r.protocol} | {r.source} |")
    return lines
