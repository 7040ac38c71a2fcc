"""Prediction + judgment records -> the paper's numbers, both the reference way and ours.

Two denominators are reported side by side because they answer different questions:

* ``accuracy`` follows the reference code, so it is comparable with published numbers:
  open-ended yes / (yes + no) over judged items (a verdict counts only when the reply's score
  parsed, as in SF-LLaVA's aggregation loop); multiple choice correct / predicted items (the
  reference silently skips missing videos).
* ``accuracy_all`` divides by every item of the benchmark: failed predictions, unjudged and
  unparsable items all count as not correct. When the two differ, something was lost, and the
  counts (``status``, ``unjudged``, ``unparsable``) say what.

``score`` is always the reference mean of ``int(score)`` over judged replies, a reply without a
score counting 0. Counters are torchmetrics states, but they are never synced across processes:
metrics are computed once, on rank 0, from the merged predictions file, which already holds every
item exactly once.

Multiple-choice breakdowns come from the benchmark's spec (``dyto.datamodules.benchmarks``):
``by_type`` reads the type its preparer stored (``meta["report_type"]`` for NExT-QA/IntentQA,
``meta["category"]`` for STAR; hand-written records without it fall back to deriving it from
``question_type`` with the spec's own rule), ``by_group`` its type groups, ``by_<field>`` its
breakdown fields (VideoMME's duration, domain, sub-category, task type).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

import torch
from torchmetrics import Metric

from dyto.datamodules.benchmarks import breakdown_keys, find_benchmark, question_type  # noqa: F401 (question_type: public here too)
from dyto.evaluation.choice import parse_choice
from dyto.evaluation.protocol import input_hash, judge_identity, judge_inputs
from dyto.evaluation.judge_prompts import PROMPT_VERSION, TASK_DIMENSIONS, parse_reply

VCG_DIMENSIONS = ("correctness", "detailed_orientation", "context", "temporal", "consistency")


class Tally(Metric):
    """Named float64 counters; ``compute()`` returns them as a dict of Python numbers.

    Metrics are computed on rank 0 from the merged predictions file, which already holds every
    item exactly once, so there is nothing to sync (and other ranks may have exited).
    """

    full_state_update = False

    def __init__(self, names: Iterable[str]):
        super().__init__(sync_on_compute=False)
        self._names = tuple(names)
        for n in self._names:
            self.add_state(n, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, **counts: float) -> None:
        for k, v in counts.items():
            setattr(self, k, getattr(self, k) + v)

    def compute(self) -> dict[str, float]:
        return {n: getattr(self, n).item() for n in self._names}


def _pct(num: float, den: float) -> float | None:
    return 100.0 * num / den if den else None


# ---------------------------------------------------------------- multiple choice
_MC = ("items", "ok", "correct", "unparsed")


def _mc_entry(t: Tally) -> dict[str, Any]:
    c = {k: int(v) for k, v in t.compute().items()}
    return {**c, "accuracy": _pct(c["correct"], c["ok"]), "accuracy_all": _pct(c["correct"], c["items"])}


def choose(p: dict[str, Any], mode: str) -> int | None:
    """The option a multiple-choice prediction picks: under ``protocol: lmms_eval`` (the record says
    so) its benchmark's lmms-eval parser, else :func:`parse_choice` in ``mode``."""
    if p.get("protocol") == "lmms_eval":
        return lmms_eval_task(p).parse(p.get("prediction") or "", p)
    return parse_choice(p.get("prediction"), len(p.get("options") or []) or 5, mode)


def lmms_eval_task(p: dict[str, Any]):
    spec = find_benchmark(p.get("benchmark"))
    if spec is None or spec.lmms_eval is None or spec.lmms_eval.parse is None:
        raise ValueError(f"prediction {p.get('id')!r} was made under protocol lmms_eval, but benchmark "
                         f"{p.get('benchmark')!r} has no lmms-eval multiple-choice parser")
    return spec.lmms_eval


def parse_mode(preds: list[dict[str, Any]], mode: str) -> str:
    """What parsed ``preds``: ``mode``, or ``lmms_eval:<task>`` for lmms-eval records."""
    modes = sorted({f"lmms_eval:{lmms_eval_task(p).task}" if p.get("protocol") == "lmms_eval" else mode for p in preds})
    return " + ".join(modes) if modes else mode


def _multiple_choice(preds: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    groups: dict[tuple[str, str], Tally] = defaultdict(lambda: Tally(_MC))
    for p in preds:
        ok = p.get("status") == "ok"
        choice = choose(p, mode) if ok else None
        counts = {"items": 1, "ok": int(ok), "correct": int(ok and choice is not None and choice == p.get("answer_index")),
                  "unparsed": int(ok and choice is None)}
        for key in [("all", "all"), *breakdown_keys(p.get("benchmark"), p.get("meta"))]:
            groups[key].update(**counts)
    out = _mc_entry(groups.pop(("all", "all")))
    out["parse_mode"] = parse_mode(preds, mode)
    for (kind, name), t in sorted(groups.items()):
        out.setdefault(kind, {})[name] = _mc_entry(t)
    return out


def _with_macro(mc: dict[str, Any], benchmark: str) -> dict[str, Any]:
    """Adds the benchmark's official average where it is a mean over groups (the spec's
    ``macro_over``; MLVU's M-avg over its tasks): ``macro_accuracy`` (each group's reference
    accuracy, groups without an answered question left out) and ``macro_accuracy_all``."""
    spec = find_benchmark(benchmark)
    groups = mc.get(spec.macro_over) if spec is not None and spec.macro_over else None
    if groups:
        ref = [g["accuracy"] for g in groups.values() if g["accuracy"] is not None]
        mc["macro_over"] = spec.macro_over
        mc["macro_accuracy"] = sum(ref) / len(ref) if ref else None
        mc["macro_accuracy_all"] = sum(g["accuracy_all"] for g in groups.values()) / len(groups)
    return mc


# ---------------------------------------------------------------- judged dimensions
def _lenient(j: dict[str, Any], version: str) -> int:
    """1 when a GPT reply parsed only through the lenient fallbacks. The judge records ``strict``;
    older cached records without it are re-parsed. Other scorers (``match``) are never lenient."""
    if isinstance(j.get("strict"), bool):
        return int(not j["strict"])
    return int(version in PROMPT_VERSION.values() and not parse_reply(j.get("raw")).strict)


_JUDGED = ("items", "ok", "judged", "unparsable", "unjudged", "lenient", "yes", "no", "yes_all",
           "score_sum")


def _judged(preds: list[dict[str, Any]], dim: str, index: dict[str, dict[str, Any]],
            judge_model: str, version: str) -> dict[str, Any]:
    t = Tally(_JUDGED)
    for p in preds:
        c = dict.fromkeys(_JUDGED, 0)
        c["items"] = 1
        for d, fields in judge_inputs(p):
            if d != dim:
                continue
            c["ok"] = 1
            j = index.get(input_hash(judge_model, version, dim, fields))
            if j is None:
                c["unjudged"] = 1
            elif j["status"] == "unparsable":
                c["unparsable"] = 1
            else:
                c["judged"], score = 1, j.get("score")
                c["score_sum"] = score or 0
                c["yes_all"] = int(j.get("verdict") == "yes")
                if score is not None:  # the reference reads the verdict only after int(score) succeeded
                    c["yes"], c["no"] = int(j.get("verdict") == "yes"), int(j.get("verdict") == "no")
                c["lenient"] = _lenient(j, version)
        t.update(**c)
    c = {k: (v if k == "score_sum" else int(v)) for k, v in t.compute().items()}
    out = {k: c[k] for k in ("items", "ok", "judged", "unparsable", "unjudged", "lenient")}
    out["failed"] = c["items"] - c["ok"]
    out["score"] = c["score_sum"] / c["judged"] if c["judged"] else None
    if dim == "default":
        out.update(yes=c["yes"], no=c["no"], accuracy=_pct(c["yes"], c["yes"] + c["no"]),
                   accuracy_all=_pct(c["yes_all"], c["items"]))
    return out


def per_item(predictions: Iterable[dict[str, Any]], judgments: Iterable[dict[str, Any]], *,
             judge_model: str | None = None, prompt_versions: dict[str, str] | None = None,
             choice_mode: str = "reference") -> dict[str, dict[str, Any]]:
    """id -> {verdict, score} for per-sample views: MC ``correct``/``wrong``/``unparsed``; judged
    items the judge's ``yes``/``no`` (else ``unjudged``/``unparsable``) and the mean score over
    their dimensions; failed predictions their status."""
    judgments = list(judgments)
    judge_model = judge_model or _infer_judge_model(judgments)
    versions = prompt_versions or PROMPT_VERSION
    index = {j["input_hash"]: j for j in judgments if j.get("status") in ("ok", "unparsable")}
    out = {}
    for p in predictions:
        item: dict[str, Any] = {"verdict": p.get("status"), "score": None}
        if p.get("status") == "ok" and p.get("task") == "multiple_choice":
            choice = choose(p, choice_mode)
            item["verdict"] = "unparsed" if choice is None else "correct" if choice == p.get("answer_index") else "wrong"
        elif p.get("status") == "ok":
            found = [index.get(input_hash(judge_model, versions.get(d, ""), d, f)) for d, f in judge_inputs(p)]
            scores = [j["score"] for j in found if j and j.get("score") is not None]
            item["score"] = sum(scores) / len(scores) if scores else None
            first = found[0] if found else None
            item["verdict"] = ("unjudged" if first is None else "unparsable" if first["status"] == "unparsable"
                               else first.get("verdict") or "judged")
        out[str(p["id"])] = item
    return out


def _infer_judge_model(judgments: list[dict[str, Any]]) -> str | None:
    models = Counter(judge_identity(j.get("judge_model"), j.get("temperature"))
                     for j in judgments if j.get("status") in ("ok", "unparsable"))
    if len(models) > 1:
        raise ValueError(f"judgments from several judges {sorted(models)}: pass judge_model")
    return next(iter(models), None)


def compute_metrics(predictions: Iterable[dict[str, Any]], judgments: Iterable[dict[str, Any]] = (), *,
                    judge_model: str | None = None, prompt_versions: dict[str, str] | None = None,
                    choice_mode: str = "reference") -> dict[str, Any]:
    """Per-benchmark metrics. Judgments are matched to predictions by input hash, so a stale
    verdict (for an older prediction, judge model or prompt version) is never used."""
    predictions, judgments = list(predictions), list(judgments)
    judge_model = judge_model or _infer_judge_model(judgments)
    versions = prompt_versions or PROMPT_VERSION
    index = {j["input_hash"]: j for j in judgments if j.get("status") in ("ok", "unparsable")}
    by_bench: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in predictions:
        by_bench[str(p.get("benchmark"))].append(p)
    benchmarks = {}
    for bench, preds in by_bench.items():
        entry: dict[str, Any] = {"items": len(preds), "status": dict(Counter(p.get("status") for p in preds))}
        mc = [p for p in preds if p.get("task") == "multiple_choice"]
        if mc:
            entry["multiple_choice"] = _with_macro(_multiple_choice(mc, choice_mode), bench)
        for task, dims in TASK_DIMENSIONS.items():
            task_preds = [p for p in preds if p.get("task") == task]
            for dim in dims if task_preds else ():
                entry.setdefault("judged", {})[dim] = _judged(task_preds, dim, index, judge_model, versions[dim])
        scores = [entry.get("judged", {}).get(d, {}).get("score") for d in VCG_DIMENSIONS]
        if all(s is not None for s in scores):
            entry["vcgbench_average"] = sum(scores) / len(scores)
        benchmarks[bench] = entry
    # The preparers give all three VCGBench QA sets the benchmark name "vcgbench", so its five
    # dimensions and their average live in that one entry; there is no cross-benchmark average.
    return {"judge_model": judge_model, "prompt_versions": dict(versions), "choice_mode": choice_mode,
            "benchmarks": benchmarks}
