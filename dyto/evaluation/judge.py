"""GPT judge for open-ended and VCGBench predictions: cached, resumable, bounded.

Why it is built this way:

* Every verdict is appended to ``eval_save_dir/judgments.jsonl`` (flush + fsync) the moment it
  returns, so a killed run loses at most the requests in flight, and a rerun sends no request
  for anything already judged. A record the kill left half written (a torn last line) is
  skipped when the cache is read and cut off before the next run appends, so only that one
  item is judged again.
* The cache key is the sha256 of what the judge sees (model, prompt version, dimension,
  question(s), answer, prediction(s)): a changed prediction is judged again, an unchanged one
  never is, and two items with identical inputs share one request.
* ``ok`` and ``unparsable`` replies are final (the judge runs at temperature 0, so asking again
  returns the same text); ``failed`` attempts are logged but retried by the next run. Each
  record says whether its reply parsed ``strict``-ly (as the reference's ``ast.literal_eval``
  would) or only through the lenient fallbacks.
* Budgets (requests, USD from the response ``usage``) and auth errors stop the run cleanly:
  what is left is *unjudged*, reported as such and never counted as a wrong answer.
* The API key is read from ``OPENAI_API_KEY`` straight into the client and stored nowhere else.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import openai

from dyto.evaluation.judge_prompts import PROMPTS, TASK_DIMENSIONS, parse_reply
from dyto.records import append_jsonl, open_append_log, read_jsonl

DEFAULT_MODEL = "gpt-3.5-turbo-0125"
CACHE_FILE = "judgments.jsonl"
# USD per million (prompt, completion) tokens, for the cost budget.
PRICES_PER_MTOK = {"gpt-3.5-turbo-0125": (0.50, 1.50), "gpt-3.5-turbo": (0.50, 1.50)}
FINAL_STATUSES = ("ok", "unparsable")
# Transient: worth another attempt. ValueError covers a response body that is not JSON.
_RETRYABLE = (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError,
              openai.InternalServerError, openai.APIResponseValidationError, ValueError)
_FATAL = (openai.AuthenticationError, openai.PermissionDeniedError)


class JudgeUnavailable(RuntimeError):
    """Neither an API key nor a base URL is configured."""


def judge_inputs(pred: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(dimension, prompt fields) for each judgement a prediction needs; none unless status ok."""
    if pred.get("status") != "ok":
        return []
    fields = {"question": pred.get("question") or "", "answer": pred.get("answer") or "",
              "prediction": pred.get("prediction") or ""}
    out = []
    for dim in TASK_DIMENSIONS.get(pred.get("task"), ()):
        f = dict(fields)
        if dim == "consistency":
            f.update(question2=pred.get("question2") or "", prediction2=pred.get("prediction2") or "")
        out.append((dim, f))
    return out


def input_hash(judge_model: str, prompt_version: str, dimension: str, fields: dict[str, Any]) -> str:
    payload = [judge_model, prompt_version, dimension, fields.get("question"), fields.get("question2"),
               fields.get("answer"), fields.get("prediction"), fields.get("prediction2")]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def load_cache(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """input_hash -> the last final (ok / unparsable) judgment in the append-only log (a torn
    last line, left by a killed run, is skipped: its item counts as not judged yet)."""
    path = Path(path)
    cache: dict[str, dict[str, Any]] = {}
    if path.exists():
        for rec in read_jsonl(path, allow_torn_tail=True):
            if rec.get("status") in FINAL_STATUSES:
                cache[rec["input_hash"]] = rec
    return cache


def plan_jobs(predictions: Iterable[dict[str, Any]], cache: dict[str, dict[str, Any]], model: str
              ) -> tuple[dict[str, tuple[str, str, dict[str, Any]]], int]:
    """(input_hash -> (item id, dimension, prompt fields) still to judge, judgements already cached)."""
    jobs: dict[str, tuple[str, str, dict[str, Any]]] = {}
    cached = 0
    for pred in predictions:
        for dim, fields in judge_inputs(pred):
            h = input_hash(model, PROMPTS[dim].version, dim, fields)
            if h in cache:
                cached += 1
            else:
                jobs.setdefault(h, (str(pred["id"]), dim, fields))
    return jobs, cached


def judge_configured(config: "JudgeConfig") -> bool:
    """Whether a judge endpoint is configured: an API key, or a base URL (a local server may need no key)."""
    return bool(os.environ.get("OPENAI_API_KEY") or config.base_url or os.environ.get("OPENAI_BASE_URL"))


@dataclass
class JudgeConfig:
    """Everything about the judge except the key (which never leaves the environment)."""

    model: str = DEFAULT_MODEL
    base_url: str | None = None  # None: $OPENAI_BASE_URL, else api.openai.com
    concurrency: int = 16
    timeout: float = 60.0  # seconds per request
    max_attempts: int = 6  # per item, including the first
    backoff: float = 1.0  # first retry delay (s), doubled per retry
    max_backoff: float = 60.0
    max_requests: int | None = None  # HTTP requests this run may send (retries count)
    max_cost: float | None = None  # USD this run may spend
    price_per_mtok: tuple[float, float] | None = None  # (prompt, completion); None: PRICES_PER_MTOK
    temperature: float = 0.0

    def prices(self) -> tuple[float, float] | None:
        return tuple(self.price_per_mtok) if self.price_per_mtok else PRICES_PER_MTOK.get(self.model)


@dataclass
class JudgeStats:
    requests: int = 0
    cached: int = 0
    judged: int = 0
    unparsable: int = 0
    failed: int = 0
    unjudged: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    stopped: str | None = None  # why the run stopped early, if it did
    errors: dict[str, int] = field(default_factory=dict)


class Judge:
    def __init__(self, config: JudgeConfig | None = None):
        self.config = config = config or JudgeConfig()
        base_url = config.base_url or os.environ.get("OPENAI_BASE_URL") or None
        if not judge_configured(config):
            raise JudgeUnavailable("no judge configured: set OPENAI_API_KEY (and optionally OPENAI_BASE_URL)")
        if config.max_cost is not None and config.prices() is None:
            raise ValueError(f"max_cost needs token prices for {config.model!r}: set price_per_mtok")
        self.base_url = base_url
        # A local OpenAI-compatible server may need no key; the client insists on a string.
        self._client = openai.OpenAI(api_key=os.environ.get("OPENAI_API_KEY") or "no-key", base_url=base_url,
                                     max_retries=0, timeout=config.timeout)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"Judge(model={self.config.model!r}, base_url={self.base_url!r})"

    def run(self, predictions: Iterable[dict[str, Any]], cache_path: str | os.PathLike) -> JudgeStats:
        """Judge every (prediction, dimension) not yet in the cache; returns what happened."""
        cache_path = Path(cache_path)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        self.stats, self._stop = JudgeStats(), threading.Event()
        jobs, self.stats.cached = plan_jobs(predictions, load_cache(cache_path), self.config.model)
        with open_append_log(cache_path) as f, \
                ThreadPoolExecutor(max(1, self.config.concurrency), thread_name_prefix="judge") as pool:
            futures = [pool.submit(self._judge_one, f, h, item_id, dim, fields)
                       for h, (item_id, dim, fields) in jobs.items()]
            for fut in futures:
                fut.result()  # re-raise what the worker could not record (e.g. a full disk)
        return self.stats

    def _judge_one(self, f, h: str, item_id: str, dim: str, fields: dict[str, Any]) -> None:
        prompt = PROMPTS[dim]
        rec = {"id": item_id, "dimension": dim, "judge_model": self.config.model,
               "prompt_version": prompt.version, "input_hash": h, "verdict": None, "score": None,
               "raw": None, "status": "failed", "strict": None, "error": None}
        try:
            raw = self._ask(prompt.messages(**fields))
        except _Unjudged:
            with self._lock:
                self.stats.unjudged += 1
            return
        except Exception as e:  # noqa: BLE001 - every failure ends as a recorded 'failed' item
            key = os.environ.get("OPENAI_API_KEY")
            msg = f"{type(e).__name__}: {e}"
            rec["error"] = (msg.replace(key, "***") if key else msg)[:500]  # servers may echo the key
        else:
            parsed = parse_reply(raw)
            rec.update(verdict=parsed.verdict, score=parsed.score, raw=raw, status=parsed.status, strict=parsed.strict)
        with self._lock:
            append_jsonl(f, [rec])
            if rec["status"] == "ok":
                self.stats.judged += 1
            else:
                setattr(self.stats, rec["status"], getattr(self.stats, rec["status"]) + 1)

    def _take_request(self) -> bool:
        """Reserve one request under the budgets; False (and stop) once a budget is spent."""
        c = self.config
        with self._lock:
            if self._stop.is_set():
                return False
            if c.max_requests is not None and self.stats.requests >= c.max_requests:
                self._halt(f"request budget reached ({c.max_requests})")
                return False
            if c.max_cost is not None and self.stats.cost_usd >= c.max_cost:
                self._halt(f"cost budget reached (${c.max_cost:.4f})")
                return False
            self.stats.requests += 1
            return True

    def _halt(self, reason: str) -> None:
        if not self._stop.is_set():
            self.stats.stopped = reason
            self._stop.set()

    def _ask(self, messages: list[dict[str, str]]) -> str:
        """One judge reply, retrying transient errors with exponential backoff."""
        c = self.config
        for attempt in range(c.max_attempts):
            if not self._take_request():
                raise _Unjudged
            try:
                resp = self._client.chat.completions.create(model=c.model, messages=messages,
                                                            temperature=c.temperature)
            except _FATAL as e:
                with self._lock:
                    self._halt(f"{type(e).__name__} (check OPENAI_API_KEY)")
                raise
            except _RETRYABLE as e:
                with self._lock:
                    name = type(e).__name__
                    self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
                if attempt + 1 == c.max_attempts:
                    raise
                delay = _retry_after(e)
                delay = min(c.max_backoff, delay if delay is not None else c.backoff * 2 ** attempt)
                if self._stop.wait(delay):
                    raise _Unjudged from None
                continue
            self._account(resp.usage)
            return (resp.choices[0].message.content or "") if resp.choices else ""
        raise AssertionError("unreachable")

    def _account(self, usage: Any) -> None:
        if usage is None:
            return
        prices = self.config.prices() or (0.0, 0.0)
        p, q = usage.prompt_tokens or 0, usage.completion_tokens or 0
        with self._lock:
            self.stats.prompt_tokens += p
            self.stats.completion_tokens += q
            self.stats.cost_usd += (p * prices[0] + q * prices[1]) / 1e6


class _Unjudged(Exception):
    """Raised inside a worker when a budget or a fatal error stopped the run."""


def _retry_after(err: Exception) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` / ``Retry-After``), if any."""
    response = getattr(err, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def judge_main(argv: list[str] | None = None) -> int:
    """``dyto judge``: judge saved predictions, then write metrics and the report."""
    ap = argparse.ArgumentParser(prog="dyto judge", description=judge_main.__doc__)
    ap.add_argument("--predictions", required=True, help="predictions.jsonl or a run directory")
    ap.add_argument("--out", help="output directory (default: the run directory)")
    ap.add_argument("--base-url", help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-requests", type=int)
    ap.add_argument("--max-cost", type=float, help="USD")
    ap.add_argument("--price-per-mtok", type=float, nargs=2, metavar=("PROMPT", "COMPLETION"))
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    ap.add_argument("--choice-mode", default="reference",
                    help="multiple-choice parsing: reference (default), strict or videomme")
    args = ap.parse_args(argv)
    from dyto.evaluation.choice import parse_choice
    from dyto.evaluation.report import evaluate, locate_predictions  # report imports this module

    try:
        parse_choice("A", 1, args.choice_mode)  # an unknown mode fails here, before any request
    except ValueError as e:
        ap.error(str(e))
    predictions, out = locate_predictions(args.predictions, args.out)
    config = JudgeConfig(model=args.model, base_url=args.base_url, concurrency=args.concurrency,
                         timeout=args.timeout, max_requests=args.max_requests, max_cost=args.max_cost,
                         price_per_mtok=tuple(args.price_per_mtok) if args.price_per_mtok else None)
    try:
        results = evaluate(predictions, out, scorer="gpt", judge_config=config, choice_mode=args.choice_mode)
    except JudgeUnavailable as e:
        ap.error(str(e))
    print(json.dumps(results.get("judge_run", {}), indent=1))
    print(f"results: {out / 'logs' / 'results.json'}\nreport:  {out / 'logs' / 'report.md'}")
    return 0


__all__ = ["CACHE_FILE", "DEFAULT_MODEL", "Judge", "JudgeConfig", "JudgeStats", "JudgeUnavailable",
           "input_hash", "judge_configured", "judge_inputs", "judge_main", "load_cache", "plan_jobs"]

if __name__ == "__main__":
    raise SystemExit(judge_main())
