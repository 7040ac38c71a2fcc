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
* The protocol is the reference's (``protocol``): no temperature is sent unless one is set
  (it is then part of the cache key), and a reply that cannot be parsed is asked again up to
  the reference's bound, within the budgets; only then is it final as ``unparsable``. ``ok``
  is final; ``failed`` attempts are logged but retried by the next run. Each record says
  whether its reply parsed ``strict``-ly (as the reference's ``ast.literal_eval`` would) or
  only through the lenient fallbacks, and how many asks it took.
* Budgets (requests, USD from the response ``usage``) stop the run cleanly: what is left is
  *unjudged*, reported as such and never counted as a wrong answer. An error no retry can fix
  (401/403, 404 for the model, a 400 about the model) stops at its first occurrence: the first
  item is sent alone, so such a server gets one request, and ``stats.fatal`` holds the
  server's message in one line with the setting to change.
* A server that cannot be reached (connection refused, unknown host) on every attempt of one
  item stops the run: the rest is *unjudged*, ``stats.unreachable`` names the address, and when
  nothing got a verdict ``stats.fatal`` says so in one line (``dyto judge`` exits 2). After a
  partial outage ``stats.stopped`` gives the count, and a rerun judges only what is left.
* The API key is read from ``OPENAI_API_KEY`` straight into the client and stored nowhere else.
"""

from __future__ import annotations

import email.utils
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import openai
from tqdm import tqdm

from dyto.errors import UserError
from dyto.evaluation.judge_prompts import PROMPTS, parse_reply
from dyto.evaluation.protocol import (CACHE_FILE, DEFAULT_MODEL, JudgeConfig, asks_bound, input_hash,
                                      judge_configured, judge_inputs, load_cache, no_judge_message, plan_jobs)
from dyto.records import append_jsonl, open_append_log

FINAL_STATUSES = ("ok", "unparsable")
# Transient: worth another attempt. ValueError covers a response body that is not JSON.
_RETRYABLE = (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError,
              openai.InternalServerError, openai.APIResponseValidationError, ValueError)
# No retry can fix these: a bad key, no access, no such model, a request the model refuses.
_FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
_FIX = {openai.AuthenticationError: "check OPENAI_API_KEY",
        openai.PermissionDeniedError: "check OPENAI_API_KEY's access to the model",
        openai.NotFoundError: "set the judge model (dyto judge --model / --evaluation.judge.model) or the base URL",
        openai.BadRequestError: "set the judge model or the settings the server rejects"}


class JudgeUnavailable(UserError, RuntimeError):
    """Neither an API key nor a base URL is configured."""


class JudgeFatalError(UserError, RuntimeError):
    """The judge server refused in a way no retry can fix (the message is one line, with the fix)."""


class JudgeUnreachable(JudgeFatalError, UserError):
    """No item got a verdict: the judge server could not be reached (the message names its address)."""


def _unreachable(err: Exception) -> bool:
    """A connection that was never made (refused, unknown host), as opposed to a slow or broken reply."""
    cause = err.__cause__ or err.__context__
    return (isinstance(err, openai.APIConnectionError) and not isinstance(err, openai.APITimeoutError)
            and cause is not None and any(c.__name__ == "ConnectError" for c in type(cause).__mro__))


def _fatal(err: Exception) -> bool:
    """Errors that stop judging: auth, permission, not found, and a 400 about the model itself
    (a 400 about one item, e.g. its length, only fails that item)."""
    if isinstance(err, _FATAL):
        return True
    if isinstance(err, openai.BadRequestError):
        body = getattr(err, "body", None)
        param = body.get("param") if isinstance(body, dict) else None
        if param:  # the server says which parameter it rejects
            return param in ("model", "temperature")
        return "model" in _server_message(err).lower()
    return False


def _server_message(err: Exception) -> str:
    """The server's own message, on one line."""
    body = getattr(err, "body", None)
    msg = body.get("message") if isinstance(body, dict) else None
    msg = msg or getattr(err, "message", None) or str(err)
    return " ".join(str(msg).split())[:300]


@dataclass
class JudgeStats:
    requests: int = 0
    cached: int = 0
    judged: int = 0
    unparsable: int = 0
    reasked: int = 0  # asks after an unparsable reply
    retries: int = 0  # attempts after a transient error
    failed: int = 0
    unjudged: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    stopped: str | None = None  # why the run stopped early, if it did
    fatal: str | None = None  # the one-line error that stopped it, if no retry could fix it
    unreachable: str | None = None  # the judge server's address, when it could not be reached
    errors: dict[str, int] = field(default_factory=dict)  # error kind -> occurrences


class Judge:
    """Sends the judge prompts for every prediction not yet in the cache (see the module doc)."""

    def __init__(self, config: JudgeConfig | None = None, progress: bool = False):
        self.config = config = config or JudgeConfig()
        base_url = config.base_url or os.environ.get("OPENAI_BASE_URL") or None
        if not judge_configured(config):
            raise JudgeUnavailable(no_judge_message())
        if config.max_cost is not None and config.prices() is None:
            raise ValueError(f"max_cost needs token prices for {config.model!r}: set price_per_mtok")
        self.base_url, self.progress = base_url, progress
        # A local OpenAI-compatible server may need no key; the client insists on a string.
        self._client = openai.OpenAI(api_key=os.environ.get("OPENAI_API_KEY") or "no-key", base_url=base_url,
                                     max_retries=0, timeout=config.timeout)
        # Sent only when set: the reference sends none, so the API default applies.
        self._extra = {} if config.temperature is None else {"temperature": config.temperature}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar = None
        self._why_unreachable = ""

    def __repr__(self) -> str:
        return f"Judge(model={self.config.model!r}, base_url={self.base_url!r})"

    def run(self, predictions: Iterable[dict[str, Any]], cache_path: str | os.PathLike) -> JudgeStats:
        """Judge every (prediction, dimension) not yet in the cache; returns what happened.

        The first item is judged alone: a server that rejects the key or the model gets one
        request, not one per worker. A fatal error leaves ``stats.fatal`` set (the caller
        decides how to stop); what it left is counted ``unjudged``.
        """
        cache_path = Path(cache_path)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        self.stats, self._stop = JudgeStats(), threading.Event()
        jobs, self.stats.cached = plan_jobs(predictions, load_cache(cache_path, self.config), self.config.identity)
        work = [(h, *job) for h, job in jobs.items()]
        self._bar = _progress_bar(len(work), self.stats.cached) if self.progress and work else None
        try:
            with open_append_log(cache_path) as f:
                if work:
                    self._judge_one(f, *work[0])
                with ThreadPoolExecutor(max(1, self.config.concurrency), thread_name_prefix="judge") as pool:
                    futures = [pool.submit(self._judge_one, f, *job) for job in work[1:]]
                    for fut in futures:
                        fut.result()  # re-raise what the worker could not record (e.g. a full disk)
        finally:
            if self._bar is not None:
                self._bar.close()
        self._outage_summary()
        return self.stats

    def _judge_one(self, f, h: str, item_id: str, dim: str, fields: dict[str, Any]) -> None:
        prompt = PROMPTS[dim]
        rec = {"id": item_id, "dimension": dim, "judge_model": self.config.model,
               "temperature": self.config.temperature, "prompt_version": prompt.version, "input_hash": h,
               "verdict": None, "score": None, "raw": None, "status": "failed", "strict": None, "asks": 0,
               "error": None}
        bound = asks_bound(dim, self.config)
        try:
            while rec["asks"] < bound:  # ask again while the reply cannot be parsed
                raw = self._ask(prompt.messages(**fields))
                rec["asks"] += 1
                parsed = parse_reply(raw)
                rec.update(verdict=parsed.verdict, score=parsed.score, raw=raw, status=parsed.status,
                           strict=parsed.strict)
                if parsed.status == "ok":
                    break
                if rec["asks"] < bound:
                    with self._lock:
                        self.stats.reasked += 1
        except _Unjudged:
            if rec["asks"] == 0:  # nothing came back: nothing to record
                self._count("unjudged")
                return
            # a budget stopped the re-asks: recorded unparsable with the asks used, so a rerun goes on
        except Exception as e:  # noqa: BLE001 - every failure ends as a recorded 'failed' item
            key = os.environ.get("OPENAI_API_KEY")
            msg = f"{type(e).__name__}: {e}"
            rec.update(status="failed", error=(msg.replace(key, "***") if key else msg)[:500])  # servers may echo keys
        with self._lock:
            append_jsonl(f, [rec])
        self._count("judged" if rec["status"] == "ok" else rec["status"])

    def _count(self, status: str) -> None:
        with self._lock:
            setattr(self.stats, status, getattr(self.stats, status) + 1)
            if self._bar is not None:
                s = self.stats
                self._bar.set_postfix_str(f"${s.cost_usd:.4f}, retries {s.retries}, re-asks {s.reasked}, "
                                          f"unparsable {s.unparsable}, failed {s.failed}, unjudged {s.unjudged}",
                                          refresh=False)
                self._bar.update(1)

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

    def _halt_unreachable(self, err: Exception) -> None:
        with self._lock:
            if self.stats.unreachable is None:
                self.stats.unreachable = str(self._client.base_url).rstrip("/")
                self._why_unreachable = " ".join(str(err.__cause__ or err).split())[:200]
            self._halt(f"the judge server at {self.stats.unreachable} could not be reached")

    def _outage_summary(self) -> None:
        """After a run the server could not be reached in: an error if nothing got a verdict, else the count."""
        s = self.stats
        if s.unreachable is None or s.fatal is not None:
            return
        got = s.judged + s.unparsable
        if got == 0:
            s.fatal = (f"the judge server at {s.unreachable} could not be reached ({self._why_unreachable}), so "
                       f"nothing was judged: start the server, or fix the address (dyto judge --base-url, "
                       f"--evaluation.judge.base_url or OPENAI_BASE_URL)")
        else:
            s.stopped = (f"the judge server at {s.unreachable} stopped answering after {got} verdicts this run; "
                         f"{s.failed + s.unjudged} judgements are left: rerun the same command to judge them "
                         f"(the verdicts are cached)")

    def _error(self, err: Exception) -> None:
        name = type(err).__name__
        self.stats.errors[name] = self.stats.errors.get(name, 0) + 1

    def _ask(self, messages: list[dict[str, str]]) -> str:
        """One judge reply, retrying transient errors with exponential backoff."""
        c = self.config
        refused = 0  # attempts of this ask that never connected
        for attempt in range(c.max_attempts):
            if not self._take_request():
                raise _Unjudged
            try:
                resp = self._client.chat.completions.create(model=c.model, messages=messages, **self._extra)
            except Exception as e:
                with self._lock:
                    self._error(e)
                    if _fatal(e):
                        status = getattr(e, "status_code", "?")
                        fix = next((v for k, v in _FIX.items() if isinstance(e, k)), "check the judge settings")
                        if self.stats.fatal is None:
                            self.stats.fatal = (f"the judge server answered {status} for model {c.model!r}: "
                                                f"{_server_message(e)} ({fix})")
                        self._halt(f"{type(e).__name__} {status}")
                if _fatal(e):
                    raise _Unjudged from None
                refused += _unreachable(e)
                if refused == c.max_attempts:  # not one attempt of this ask reached the server
                    self._halt_unreachable(e)
                    raise _Unjudged from None
                if not isinstance(e, _RETRYABLE) or attempt + 1 == c.max_attempts:
                    raise
                delay = _retry_after(e)
                delay = min(c.max_backoff, delay if delay is not None else c.backoff * 2 ** attempt)
                with self._lock:
                    self.stats.retries += 1
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


def _progress_bar(total: int, cached: int):
    """done/total, rate and ETA on stderr (tqdm), with cost, retries and errors as its postfix."""
    return tqdm(total=total, desc=f"judging ({cached} cached)", unit="judgement", dynamic_ncols=True, file=sys.stderr)


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


__all__ = ["CACHE_FILE", "DEFAULT_MODEL", "Judge", "JudgeConfig", "JudgeFatalError", "JudgeStats",
           "JudgeUnavailable", "JudgeUnreachable", "input_hash", "judge_configured", "judge_inputs", "load_cache", "plan_jobs"]
