"""The judge protocol without the client: settings, what each prediction asks, cache keys.

The prompts and the reply parser are in ``judge_prompts``; the HTTP client that sends them is
``judge``. This module imports neither ``openai`` nor anything that does, so scoring and
metrics can key and read judgments without the client.

Defaults follow the reference protocol (SF-LLaVA / DyTo running Video-ChatGPT's scripts):

* no ``temperature`` is sent, so the API default (1.0) applies; ``temperature`` (e.g. 0 for
  repeatable judging) is an option, and it is part of every cache key and of the results;
* a reply that cannot be parsed is asked again: up to 100 asks for video QA, 2 (one retry)
  for the VCGBench dimensions; it is recorded ``unparsable`` only once the bound is reached.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from dyto.errors import ConfigError, check
from dyto.evaluation.judge_prompts import PROMPTS, TASK_DIMENSIONS
from dyto.records import read_jsonl, stable_hash

__all__ = ["DEFAULT_MODEL", "CACHE_FILE", "PRICES_PER_MTOK", "REFERENCE_ASKS", "JudgeConfig", "judge_identity",
           "judge_inputs", "input_hash", "asks_bound", "load_cache", "plan_jobs", "judge_configured", "no_judge_message"]

DEFAULT_MODEL = "gpt-3.5-turbo-0125"
CACHE_FILE = "judgments.jsonl"
# USD per million (prompt, completion) tokens, for the cost budget.
PRICES_PER_MTOK = {"gpt-3.5-turbo-0125": (0.50, 1.50), "gpt-3.5-turbo": (0.50, 1.50)}
# Asks per item while the reply cannot be parsed, as the reference's scripts bound them:
# video QA retries up to 100 rounds, VCGBench's dimensions retry once.
REFERENCE_ASKS = {"default": 100}
REFERENCE_ASKS_VCG = 2


def _help(text: str, default: Any = None) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class JudgeConfig:
    """Every judge setting except the API key (read from ``OPENAI_API_KEY`` only, stored nowhere).

    One dataclass for ``dyto judge`` (each field is a ``--flag``), ``dyto predict``
    (``--evaluation.judge.<field>``) and the Python API; defaults live here and nowhere else.
    """

    model: str = _help("judge model", DEFAULT_MODEL)
    base_url: str | None = _help("OpenAI-compatible endpoint (default: $OPENAI_BASE_URL, else api.openai.com)")
    temperature: float | None = _help("sampling temperature sent to the judge; unset = not sent, the API "
                                      "default (the reference); 0 for repeatable judging")
    max_asks: int | None = _help("asks per item while its reply cannot be parsed; unset = the reference's "
                                 "bound (100 for video QA, 2 for VCGBench)")
    concurrency: int = _help("requests in flight", 16)
    timeout: float = _help("seconds per request", 60.0)
    max_attempts: int = _help("attempts per ask on transient errors (429, 5xx, timeouts), the first included", 6)
    backoff: float = _help("first retry delay in seconds, doubled per retry (a server's Retry-After wins)", 1.0)
    max_backoff: float = _help("longest retry delay in seconds", 60.0)
    max_requests: int | None = _help("HTTP requests this run may send (retries and re-asks count)")
    max_cost: float | None = _help("USD this run may spend (from the responses' token usage)")
    price_per_mtok: tuple[float, float] | None = _help("USD per million (prompt, completion) tokens; unset = "
                                                       "the built-in price of known models")

    def __post_init__(self):
        """``ConfigError`` under the field's name (``dyto judge`` shows it as ``--<flag>``)."""
        for name in ("concurrency", "max_attempts", "max_asks", "max_requests"):
            check(name, getattr(self, name), ">=1", optional=name in ("max_asks", "max_requests"))
        for name in ("timeout", "max_cost"):
            check(name, getattr(self, name), ">0", optional=name == "max_cost")
        for name in ("backoff", "max_backoff", "temperature"):
            check(name, getattr(self, name), ">=0.0", optional=name == "temperature")
        if self.price_per_mtok is not None:
            if len(self.price_per_mtok) != 2 or not all(isinstance(p, (int, float)) and p >= 0
                                                        for p in self.price_per_mtok):
                raise ConfigError("price_per_mtok", self.price_per_mtok, "two prices >= 0: prompt, completion")
            self.price_per_mtok = tuple(float(p) for p in self.price_per_mtok)
        if self.max_cost is not None and self.prices() is None:
            raise ValueError(f"judge max_cost needs token prices for {self.model!r}: set price_per_mtok")

    def prices(self) -> tuple[float, float] | None:
        return tuple(self.price_per_mtok) if self.price_per_mtok else PRICES_PER_MTOK.get(self.model)

    @property
    def identity(self) -> str:
        return judge_identity(self.model, self.temperature)

    @classmethod
    def options(cls) -> list[tuple[str, Any, str]]:
        """(field name, default, help) of every setting, for command-line parsers."""
        return [(f.name, f.default, f.metadata.get("help", "")) for f in fields(cls)]


def judge_identity(model: str, temperature: float | None) -> str:
    """The judge as cache keys and metrics see it: the model, plus the temperature when one is sent."""
    return model if temperature is None else f"{model}@temperature={float(temperature):g}"


def judge_configured(config: JudgeConfig) -> bool:
    """Whether a judge endpoint is configured: an API key, or a base URL (a local server may need no key)."""
    return bool(os.environ.get("OPENAI_API_KEY") or config.base_url or os.environ.get("OPENAI_BASE_URL"))


def no_judge_message(base_url_flag: str = "--base-url", model_flag: str = "--model") -> str:
    """What to set when no judge endpoint is configured (one line, the flags of the asking command)."""
    return (f"no judge endpoint is configured: set OPENAI_API_KEY for api.openai.com (or a gateway, with "
            f"OPENAI_BASE_URL), or for a local OpenAI-compatible server (vLLM, ...) a base URL alone "
            f"({base_url_flag} http://127.0.0.1:8000/v1 or OPENAI_BASE_URL; no key needed) with "
            f"{model_flag} set to the model name that server serves")


def asks_bound(dimension: str, config: JudgeConfig) -> int:
    """How often an item of ``dimension`` is asked while its reply cannot be parsed."""
    if config.max_asks is not None:
        return config.max_asks
    return REFERENCE_ASKS.get(dimension, REFERENCE_ASKS_VCG)


def judge_inputs(pred: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(dimension, prompt fields) for each judgement a prediction needs; none unless status ok."""
    if pred.get("status") != "ok":
        return []
    base = {"question": pred.get("question") or "", "answer": pred.get("answer") or "",
            "prediction": pred.get("prediction") or ""}
    out = []
    for dim in TASK_DIMENSIONS.get(pred.get("task"), ()):
        f = dict(base)
        if dim == "consistency":
            f.update(question2=pred.get("question2") or "", prediction2=pred.get("prediction2") or "")
        out.append((dim, f))
    return out


def input_hash(judge: str, prompt_version: str, dimension: str, fields: dict[str, Any]) -> str:
    """The cache key: what the judge sees. ``judge`` is :func:`judge_identity` (model + temperature)."""
    return stable_hash([judge, prompt_version, dimension, fields.get("question"), fields.get("question2"),
                        fields.get("answer"), fields.get("prediction"), fields.get("prediction2")])


def load_cache(path: str | os.PathLike, config: JudgeConfig | None = None) -> dict[str, dict[str, Any]]:
    """input_hash -> the last final judgment in the append-only log.

    Final: ``ok``, or ``unparsable`` after the asks bound of ``config`` (any bound without a
    config). A torn last line, left by a killed run, is skipped: its item counts as not judged
    yet. Records without a ``temperature`` field predate the temperature option (they were
    judged at temperature 0 under a key without it) and are ignored, so they are judged again.
    """
    path = Path(path)
    cache: dict[str, dict[str, Any]] = {}
    if path.exists():
        for rec in read_jsonl(path, allow_torn_tail=True):
            if "temperature" not in rec:
                continue
            final = rec.get("status") == "ok" or (
                rec.get("status") == "unparsable"
                and (config is None or rec.get("asks", 1) >= asks_bound(rec.get("dimension", ""), config)))
            if final:
                cache[rec["input_hash"]] = rec
    return cache


def plan_jobs(predictions: Iterable[dict[str, Any]], cache: dict[str, dict[str, Any]], judge: str
              ) -> tuple[dict[str, tuple[str, str, dict[str, Any]]], int]:
    """(input_hash -> (item id, dimension, prompt fields) still to judge, judgements already cached).
    ``judge`` is :func:`judge_identity`."""
    jobs: dict[str, tuple[str, str, dict[str, Any]]] = {}
    cached = 0
    for pred in predictions:
        for dim, f in judge_inputs(pred):
            h = input_hash(judge, PROMPTS[dim].version, dim, f)
            if h in cache:
                cached += 1
            else:
                jobs.setdefault(h, (str(pred["id"]), dim, f))
    return jobs, cached
