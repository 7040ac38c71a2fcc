"""Errors that are the user's to fix: one line, exit status 2, never a traceback.

Every ``dyto`` command ends a :class:`UserError` by printing ``dyto: <where>: <problem>`` and
exiting 2 (the handler lives in :mod:`dyto.cli`). Anything else is a bug and keeps its traceback.

    ConfigError("data.init_args.num_frames", 0, ">= 1")        # a setting
    RecordsError("data/q.jsonl", 4, "not valid JSON")           # a row of an input file
    UserError("outputs/run is in use by host:pid ...")          # anything else a user can act on

``ConfigError`` and ``RecordsError`` are also ``ValueError``s, so code that validated with
``ValueError`` before keeps catching them.

A constructor does not know where it sits in a config, so it raises ``ConfigError`` with its own
argument name (``budget``); :func:`config_error` finds the dotted key the user wrote
(``model.reducer.init_args.budget``) from the parsed config and the constructor that raised, and
unwraps jsonargparse's "Does not validate against any of the Union subtypes" around it.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any, Iterator

__all__ = ["UserError", "ConfigError", "RecordsError", "EXIT_USER_ERROR", "check", "config_error",
           "parser_error", "OneLineParser"]

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user can fix; ``str(error)`` is the one line printed after ``dyto: ``."""

    exit_code = EXIT_USER_ERROR

    def one_line(self) -> str:
        return " ".join(str(self).split())

    def lines(self) -> list[str]:
        """What the handler prints, each after ``dyto: ``: one line (a list of problems: one each)."""
        return [self.one_line()]


class ConfigError(UserError, ValueError):
    """A setting with a value it cannot take: ``<key>: <value!r> is not allowed; expected <allowed>``.

    ``key`` is the dotted key as the user writes it (``model.reducer.init_args.retention``); a
    constructor that does not know where it sits in the config passes its own argument name and
    the CLI's handler prefixes the path it was built under.
    """

    def __init__(self, key: str, value: Any, allowed: str, hint: str = ""):
        self.key, self.value, self.allowed, self.hint = key, value, allowed, hint
        super().__init__(f"{key}: {value!r} is not allowed; expected {allowed}" + (f" ({hint})" if hint else ""))

    def at(self, key: str) -> "ConfigError":
        """The same error under another key (the dotted key, or a command-line flag)."""
        return ConfigError(key, self.value, self.allowed, self.hint)


class RecordsError(UserError, ValueError):
    """A row of an input file that cannot be used: ``<path>:<line>: <problem>``."""

    def __init__(self, path: Any, line: int | None, problem: str, hint: str = ""):
        self.path, self.line, self.problem, self.hint = str(path), line, problem, hint
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}" + (f"; {hint}" if hint else ""))


# -- validation helpers for constructors ---------------------------------------------------------

_RULES = {  # rule -> (test, what is allowed)
    ">=1": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ">=0": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    ">0": (lambda v: _num(v) and v > 0, "a number > 0"),
    ">=0.0": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "(0,1]": (lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1]"),
    "[0,1]": (lambda v: _num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "[0,1)": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return (_int(v) or isinstance(v, float)) and not math.isnan(v)


def check(key: str, value: Any, rule: str | tuple | list, optional: bool = False, also: tuple = ()) -> None:
    """Raise ``ConfigError(key, value, ...)`` unless ``value`` keeps ``rule``: one of ``_RULES``
    (``">=1"``, ``">0"``, ``"(0,1]"``, ...) or the tuple of allowed values. ``optional``: None
    passes; ``also``: these values pass too (``("auto",)``)."""
    if (value is None and optional) or any(value == a and type(value) is type(a) for a in also):
        return
    if isinstance(rule, (tuple, list)):
        if value not in rule:
            raise ConfigError(key, value, "one of " + ", ".join(map(repr, rule)))
        return
    test, allowed = _RULES[rule]
    if not test(value):
        raise ConfigError(key, value, "".join(f"{a!r} or " for a in also) + allowed + (" or null" if optional else ""))


# -- the CLI's side: which setting a constructor's error is about --------------------------------

def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first (as Python prints them, in reverse)."""
    out: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in out):
        out.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return out


def _framework(filename: str) -> bool:
    return any(part in filename for part in ("/jsonargparse/", "/lightning/", "/torch/"))


def _constructors(exc: BaseException) -> list[Any]:
    """The objects whose ``__init__`` / ``__post_init__`` is on ``exc``'s traceback, outermost first."""
    owners, tb = [], exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if (frame.f_code.co_name in ("__init__", "__post_init__") and "self" in frame.f_locals
                and not _framework(frame.f_code.co_filename)):
            owners.append(frame.f_locals["self"])
        tb = tb.tb_next
    return owners


def _raised_by_constructor(exc: BaseException) -> bool:
    """Whether the ``raise`` itself is in a constructor's body (its own validation, not a library's)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name in ("__init__", "__post_init__")


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if path:
        yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))


def _same(a: Any, b: Any) -> bool:
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    try:
        return bool(norm(a) == norm(b))
    except Exception:  # values that cannot be compared are not the same
        return False


def _owner_paths(owner: Any, config: dict, groups: dict[str, type]) -> list[str]:
    """Where ``owner``'s own settings sit in ``config``: a group built from a class (``model``,
    ``evaluation.judge``), or a ``class_path`` node's ``init_args``."""
    paths = [path for path, cls in groups.items() if isinstance(owner, cls)]
    name = type(owner).__name__
    for path, node in _walk(config):
        if isinstance(node, dict) and str(node.get("class_path", "")).rsplit(".", 1)[-1] == name:
            paths.append(f"{path}.init_args")
    return paths


def _dotted(key: str, value: Any, owners: list[Any], config: dict, groups: dict[str, type]) -> str | None:
    """The one path of ``config`` that ``key`` (an argument name) of one of ``owners`` names."""
    found = dict(_walk(config))
    if key in found:
        return key
    leaf = key.rsplit(".", 1)[-1]
    candidates = [p for p in found if p.rsplit(".", 1)[-1] == leaf]
    for owner in reversed(owners):  # the innermost constructor first: it raised
        paths = _owner_paths(owner, config, groups)
        exact = [f"{p}.{key}" for p in paths if f"{p}.{key}" in found]
        if len(exact) == 1:
            return exact[0]
        own = [p for p in candidates if p.rpartition(".")[0] in paths]
        if len(own) == 1:
            return own[0]
        if own:
            candidates = own
            break
    same = [p for p in candidates if _same(found[p], value)]
    return same[0] if len(same) == 1 else None


def config_error(exc: BaseException, config: dict, groups: dict[str, type] | None = None) -> UserError | None:
    """The user's error in ``exc``, raised while the CLI built its classes from ``config``, or None
    (a bug: keep the traceback).

    jsonargparse wraps a constructor's error ("Does not validate against any of the Union
    subtypes ... Given value: Namespace(...)"); the constructor's own is found on the cause chain.
    A ``ConfigError`` gets the dotted key of ``config`` it is about; a plain ``ValueError`` raised
    in a constructor's own body (its validation) is named after where that object sits.
    ``groups`` maps the config groups built from a class to it (``{"model": VideoQA, ...}``).
    """
    groups = groups or {}
    chain = _chain(exc)
    for err in reversed(chain):  # the innermost first: the constructor's own words
        if isinstance(err, ConfigError):
            owners = _constructors(err)
            dotted = _dotted(err.key, err.value, owners, config, groups)
            return err.at(dotted) if dotted and dotted != err.key else err
        if isinstance(err, UserError):
            return err
    inner = chain[-1]
    if isinstance(inner, ValueError) and _raised_by_constructor(inner):
        owners = _constructors(inner)  # the innermost raised; an outer one may be where it sits
        paths = [p.removesuffix(".init_args") for o in reversed(owners) for p in _owner_paths(o, config, groups)]
        where = paths[0] if paths else type(owners[-1]).__name__ if owners else "config"
        return UserError(f"{where}: {inner}")
    return None


_NOISE = re.compile(r"^(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Given value type:|"
                    r"Given value:|- Expected a <class 'NoneType'>)")


def parser_error(message: str, command: str) -> UserError:
    """jsonargparse's parse error (``Parser key "model.max_new_tokens":\\n  Expected a <class
    'int'>. Got value: abc``, or a Union dump) as one line: the key and the reasons."""
    key = re.match(r'\s*Parser key "([^"]+)":', message)
    body = message[key.end():] if key else message
    reasons = [line.strip().removeprefix("- ") for line in body.splitlines()
               if line.strip() and not _NOISE.match(line.strip())]
    text = " ".join(" ".join(reasons).split()) or " ".join(message.split())
    return UserError(f"{key.group(1)}: {text}" if key else f"{text} (`{command} --help` lists the settings)")


class OneLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are a ``UserError`` (one line, exit 2)."""

    def error(self, message: str):
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        raise UserError(f"{message} (`{self.prog} --help` lists the options)")
