"""The run folder: where a run's files live, what settings made them, and what a run holds.

One class spells out the layout that the prediction writer, the evaluation, the callbacks, the
pictures and the notebook API all use::

    <run>/config.yaml                          effective config (no secrets)
    <run>/artifacts/fingerprint.json           every setting that can change an answer
    <run>/artifacts/predictions.rank<R>.jsonl  per-rank append logs
    <run>/artifacts/predictions.jsonl          merged, one record per input id
    <run>/artifacts/inputs.json, summary.json  the input ids; counts by status
    <run>/eval_save_dir/judgments.jsonl        judge cache (append-only)
    <run>/logs/results.json, report.md, *.png  metrics, report, pictures
    <run>/run.lock                             who holds the folder (dyto.runlock)

The fingerprint is what keeps a resume honest: predictions made with one budget, checkpoint,
dtype or prompt are never finished, merged or scored together with predictions made with
another. Every prediction record carries the fingerprint's digest. ``RunFolder.lock`` keeps a
folder to one writer at a time (``dyto predict``, ``dyto judge``, a sweep cell).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dyto import __version__
from dyto.errors import UserError
from dyto.records import read_jsonl, write_text_atomic
from dyto.runlock import DEFAULT_HINT, LOCK_FILE, RunLocked, hold

__all__ = ["RunFolder", "Run", "SettingsChanged", "MixedSettingsError", "RunLocked", "run_fingerprint",
           "fingerprint_digest", "fingerprint_changes", "check_one_fingerprint"]

DIGEST_CHARS = 10


def run_fingerprint(model: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The run fingerprint: the model side's and the data side's settings plus the dyto version."""
    return json.loads(json.dumps({"dyto_version": __version__, "model": model, "data": data}, default=str))


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    """A short, stable digest of a fingerprint (canonical JSON, sorted keys)."""
    text = json.dumps(fingerprint, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


_ABSENT = object()


def fingerprint_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every setting that differs; absent values are ``None``."""
    a, b = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if va != vb:
            changes.append((key, None if va is _ABSENT else va, None if vb is _ABSENT else vb))
    return changes


class SettingsChanged(UserError, RuntimeError):
    """A rerun into a run folder whose predictions were made with other settings."""

    def __init__(self, run_dir: Path, changes: list[tuple[str, Any, Any]], legacy: bool = False):
        self.run_dir, self.changes = run_dir, changes
        if legacy:
            what = (f"{run_dir} holds predictions without a fingerprint (made by an older dyto), so their "
                    "settings are unknown")
        else:
            listed = "; ".join(f"{k}: {json.dumps(o, default=str)} -> {json.dumps(n, default=str)}"
                               for k, o, n in changes[:12])
            more = f" (and {len(changes) - 12} more)" if len(changes) > 12 else ""
            what = f"{run_dir} was predicted with other settings: {listed}{more}"
        super().__init__(f"{what}. Resuming would mix them. Either pick a new folder "
                         "(--output.run_name NAME, or leave run_name unset: the default name carries the "
                         "settings' digest) or start this folder over with --output.resume false "
                         "(old logs are moved aside, never deleted).")


class MixedSettingsError(UserError, ValueError):
    """Predictions made with different settings were asked to be scored as one result."""


def check_one_fingerprint(predictions: list[dict[str, Any]], source: str | os.PathLike) -> str | None:
    """The one fingerprint digest shared by ``predictions`` (None: records carry none); raises
    ``MixedSettingsError`` when they were made with different settings."""
    counts: dict[Any, int] = {}
    for p in predictions:
        counts[p.get("fingerprint")] = counts.get(p.get("fingerprint"), 0) + 1
    if len(counts) > 1:
        listed = ", ".join(f"{k or 'none'}: {v} records" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        raise MixedSettingsError(f"{source}: predictions come from runs with different settings ({listed}); "
                                 "score each run folder on its own, or rerun with one configuration")
    return next(iter(counts), None)


class RunFolder:
    """Paths of one run directory (nothing is created until asked)."""

    RANK_GLOB = "predictions.rank*.jsonl"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    # -- layout --------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval_save_dir"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def predictions(self) -> Path:
        return self.artifacts / "predictions.jsonl"

    @property
    def inputs(self) -> Path:
        return self.artifacts / "inputs.json"

    @property
    def summary(self) -> Path:
        return self.artifacts / "summary.json"

    @property
    def fingerprint_file(self) -> Path:
        return self.artifacts / "fingerprint.json"

    @property
    def judge_cache(self) -> Path:
        return self.eval_dir / "judgments.jsonl"

    def rank_log(self, rank: int) -> Path:
        return self.artifacts / f"predictions.rank{rank}.jsonl"

    def rank_logs(self) -> list[Path]:
        return sorted(self.artifacts.glob(self.RANK_GLOB))

    def results(self, suffix: str = "") -> Path:
        return self.logs / f"results{suffix}.json"

    def report(self, suffix: str = "") -> Path:
        return self.logs / f"report{suffix}.md"

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

    def lock(self, purpose: str, hint: str = DEFAULT_HINT):
        """Context manager: hold this folder exclusively (``purpose``, e.g. "dyto predict", is what a
        refused process is told, with ``hint``, the way out besides waiting). Raises ``RunLocked``
        naming the holder when another live process holds it; nests in a process that holds it."""
        return hold(self.root, purpose, hint)

    def make(self) -> "RunFolder":
        for d in (self.artifacts, self.eval_dir, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        return self

    @classmethod
    def locate(cls, path: str | os.PathLike) -> tuple["RunFolder", Path]:
        """(run folder, predictions file) from a run directory or a predictions file inside (or
        outside) one; a bare file's folder is the one that holds it."""
        path = Path(path)
        if path.is_dir():
            folder = cls(path)
            return folder, folder.predictions
        root = path.parent.parent if path.parent.name == "artifacts" else path.parent
        return cls(root), path

    # -- fingerprint ---------------------------------------------------------------------------
    def read_fingerprint(self) -> dict[str, Any] | None:
        f = self.fingerprint_file
        return json.loads(f.read_text(encoding="utf-8")) if f.exists() else None

    def claim(self, fingerprint: dict[str, Any], resume: bool, write: bool = True) -> str:
        """Record ``fingerprint`` as this folder's settings before anything is predicted; returns its
        digest. With ``resume``, a folder whose predictions were made with other settings (or with
        no recorded settings) raises ``SettingsChanged``; without it the caller has moved the old
        logs aside, and the new fingerprint replaces the old one. ``write=False`` only checks (the
        other DDP ranks: they stop exactly when rank 0 does, which writes only when all is well)."""
        old = self.read_fingerprint()
        if resume and old is not None and old != fingerprint:
            raise SettingsChanged(self.root, fingerprint_changes(old, fingerprint))
        if resume and old is None and self.rank_logs():
            raise SettingsChanged(self.root, [], legacy=True)
        if not write:
            return fingerprint_digest(fingerprint)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.fingerprint_file, json.dumps(fingerprint, indent=1, sort_keys=True) + "\n")
        return fingerprint_digest(fingerprint)

    # -- contents ------------------------------------------------------------------------------
    def load(self) -> "Run":
        """The run's merged predictions, results.json and summary.json (those that exist)."""
        if not self.predictions.exists():
            raise FileNotFoundError(f"{self.predictions} not found: is {self.root} a dyto run directory that "
                                    "finished predict?")
        read = lambda p: json.loads(p.read_text()) if p.exists() else {}  # noqa: E731
        return Run(self.root, list(read_jsonl(self.predictions)), read(self.results()), read(self.summary),
                   self.read_fingerprint() or {})


@dataclass
class Run:
    """A finished (or partial) run as plain data."""

    run_dir: Path
    predictions: list[dict[str, Any]]
    results: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def reducer(self) -> str:
        names = {json.dumps(p["reducer"], sort_keys=True) for p in self.predictions if p.get("reducer")}
        return ", ".join(sorted(json.loads(n)["name"] for n in names)) or "?"
