"""Errors that are the user's to fix: one line, exit status 2, never a traceback.

Every ``dyto`` command ends a :class:`UserError` by printing ``dyto: <where>: <problem>`` and
exiting 2 (the handler lives in :mod:`dyto.cli`). Anything else is a bug and keeps its traceback.

    ConfigError("data.init_args.num_frames", 0, ">= 1")        # a setting
    RecordsError("data/q.jsonl", 4, "not valid JSON")           # a row of an input file
    UserError("outputs/run is in use by host:pid ...")          # anything else a user can act on

``ConfigError`` and ``RecordsError`` are also ``ValueError``s, so code that validated with
``ValueError`` before keeps catching them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["UserError", "ConfigError", "RecordsError", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user can fix; ``str(error)`` is the one line printed after ``dyto: ``."""

    exit_code = EXIT_USER_ERROR

    def one_line(self) -> str:
        return " ".join(str(self).split())


class ConfigError(UserError, ValueError):
    """A setting with a value it cannot take: ``<key>: <value!r> is not allowed; expected <allowed>``.

    ``key`` is the dotted key as the user writes it (``model.reducer.init_args.retention``); a
    constructor that does not know where it sits in the config passes its own argument name and
    the CLI's handler prefixes the path it was built under.
    """

    def __init__(self, key: str, value: Any, allowed: str, hint: str = ""):
        self.key, self.value, self.allowed, self.hint = key, value, allowed, hint
        super().__init__(f"{key}: {value!r} is not allowed; expected {allowed}" + (f" ({hint})" if hint else ""))


class RecordsError(UserError, ValueError):
    """A row of an input file that cannot be used: ``<path>:<line>: <problem>``."""

    def __init__(self, path: Any, line: int | None, problem: str, hint: str = ""):
        self.path, self.line, self.problem, self.hint = str(path), line, problem, hint
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}" + (f"; {hint}" if hint else ""))
