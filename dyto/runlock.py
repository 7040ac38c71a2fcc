"""One writer per run folder: an exclusive lock that never outlives its holder.

    with RunFolder(run_dir).lock("dyto predict"):   # RunLocked (a UserError) when another process holds it
        ...

The lock is ``<run>/run.lock``, a JSON record of its holder (host, pid, start time, purpose,
command line, heartbeat): what a refused process prints. Two mechanisms (``lock_mode``):

* ``flock``: ``fcntl.flock(LOCK_EX | LOCK_NB)`` on that file. The kernel drops it when the holder
  exits, ``kill -9`` included, so a dead holder never blocks a rerun. The file stays; its record
  is marked released on a clean exit, and an unreleased record found under a free flock is
  reported as taken over.
* ``file``: for file systems whose flock is not shared between the machines that mount them. The
  lock is the file itself, created with ``O_EXCL`` and removed on release; the holder rewrites
  its heartbeat every ``HEARTBEAT_S`` seconds. A holder on this host whose process is gone, or
  one elsewhere whose heartbeat is older than ``STALE_S``, is taken over with a one-line notice.

``DYTO_RUN_LOCK=auto|flock|file`` picks the mechanism; ``auto`` (the default) reads the folder's
file system type and mount options from /proc/self/mountinfo (docs/internals.md, "Run lock").
A process that takes a lock it already holds nests (the evaluation inside ``dyto predict``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from dyto.errors import ConfigError, UserError

try:
    import fcntl
except ImportError:  # no flock on this platform (Windows): the lock file it is
    fcntl = None

__all__ = ["RunLocked", "hold", "lock_mode", "flock_shared", "parse_mountinfo", "LOCK_FILE", "HEARTBEAT_S",
           "STALE_S"]

LOCK_FILE = "run.lock"
HEARTBEAT_S = 15.0   # the holder rewrites its record this often (both mechanisms)
STALE_S = 120.0      # file mechanism: a holder on another host silent this long is gone
DEFAULT_HINT = "pick another --output.run_name"
# local disks (one host, flock shared by construction) and cluster file systems whose flock is
# cluster-wide unless a mount option makes it local
LOCAL_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "zfs", "f2fs", "overlay", "jfs", "reiserfs",
            "bcachefs", "nilfs2", "vfat", "exfat", "ntfs3", "apfs", "hfsplus"}
LOCAL_ONLY = {"nfs": {"local_lock=flock", "local_lock=all", "nolock"}, "nfs4": {"local_lock=flock", "local_lock=all"},
              "ceph": {"localflocks"}, "gfs2": {"localflocks"}, "ocfs2": {"localflocks"}}


class RunLocked(UserError):
    """The run folder is held by another process: names the holder and the way out."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None):
        self.holder = holder
        super().__init__(message)


def describe(rec: dict[str, Any]) -> str:
    return (f"{rec.get('purpose', '?')} on host {rec.get('host', '?')} (pid {rec.get('pid', '?')}, "
            f"started {rec.get('started', '?')})")


def _locked(folder: Path, holder: dict[str, Any] | None, hint: str) -> RunLocked:
    who = describe(holder) if holder else f"a process whose lock record {folder / LOCK_FILE} cannot be read yet"
    return RunLocked(f"{folder} is in use by {who}; wait for it to finish, or {hint}", holder)


def _notice(text: str) -> None:
    print(f"[dyto] {text}", file=sys.stderr, flush=True)


# -- which mechanism -------------------------------------------------------------------------------
def parse_mountinfo(text: str) -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, mount + super options) per line of /proc/self/mountinfo."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        options = set(fields[5].split(",")) | set(fields[sep + 3].split(",") if len(fields) > sep + 3 else ())
        mounts.append((point, fields[sep + 1], options))
    return mounts


def flock_shared(fstype: str, options: set[str]) -> bool:
    """Whether flock on this file system excludes every process that can reach the file."""
    if fstype in LOCAL_FS:
        return True
    if fstype in LOCAL_ONLY:
        return not LOCAL_ONLY[fstype] & options
    return fstype == "lustre" and "flock" in options  # lustre: only with -o flock (not localflock / noflock)


def lock_mode(folder: str | os.PathLike) -> tuple[str, str]:
    """(``flock`` | ``file``, why) for a folder: ``DYTO_RUN_LOCK``, else its file system."""
    chosen = os.environ.get("DYTO_RUN_LOCK", "auto") or "auto"
    if chosen not in ("auto", "flock", "file"):
        raise ConfigError("DYTO_RUN_LOCK", chosen, "auto, flock or file")
    if chosen != "auto":
        return chosen, "DYTO_RUN_LOCK"
    if fcntl is None:
        return "file", "no flock on this platform"
    try:
        mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return "flock", "mount table unreadable: local disk assumed"
    path = os.path.realpath(folder)
    inside = [m for m in mounts if path == m[0] or path.startswith(m[0].rstrip("/") + "/")]
    if not inside:
        return "flock", "mount unknown: local disk assumed"
    point, fstype, options = max(inside, key=lambda m: len(m[0]))
    return ("flock" if flock_shared(fstype, options) else "file"), f"{fstype} at {point}"


# -- the holder's record ---------------------------------------------------------------------------
def _proc(name: str) -> str:
    """/proc/<name> stripped, or "" where there is none."""
    try:
        return Path("/proc", name).read_text().strip()
    except OSError:
        return ""


def _proc_stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, ..., starttime at index 19]."""
    return _proc(f"{pid}/stat").rpartition(")")[2].split()


def _identity() -> dict[str, Any]:
    """Who this process is, where pids mean the same (host, boot, pid namespace)."""
    return {"host": socket.gethostname(), "boot": _proc("sys/kernel/random/boot_id"),
            "pidns": os.readlink("/proc/self/ns/pid") if os.path.exists("/proc/self/ns/pid") else ""}


def _new_record(purpose: str) -> dict[str, Any]:
    stat = _proc_stat(os.getpid())
    return {"purpose": purpose, **_identity(), "pid": os.getpid(), "pid_start": stat[19] if len(stat) > 19 else "",
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "heartbeat": time.time(),
            "command": " ".join(sys.argv)[:400], "token": secrets.token_hex(8), "released": False}


def _pid_alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    stat = _proc_stat(pid)
    if stat and stat[0] in ("Z", "X"):
        return False  # killed, not yet reaped
    return not (start and len(stat) > 19 and stat[19] != start)  # a new process with a reused pid


def _alive(rec: dict[str, Any], heartbeat: bool) -> tuple[bool, str]:
    """(holder alive?, why it is not). ``heartbeat``: trust heartbeats of other hosts' holders."""
    me = _identity()
    if all(rec.get(k) == me[k] for k in ("host", "boot", "pidns")):
        if rec.get("pid") == os.getpid():
            return False, "it was this process"
        pid = rec.get("pid")
        alive = isinstance(pid, int) and pid > 0 and _pid_alive(pid, str(rec.get("pid_start", "")))
        return alive, "its process is gone"
    if not heartbeat:
        return False, "the file system released its flock (its process is gone)"
    age = time.time() - float(rec.get("heartbeat", 0))
    return age < STALE_S, f"its last heartbeat is {age:.0f} s old (limit {STALE_S:.0f} s)"


def _load(text: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(text)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path`` ({} when the file is gone or empty); None when it stays unparsable."""
    for _ in range(5):
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return {}
        if not text.strip():
            return {}
        if (rec := _load(text)) is not None:
            return rec
        time.sleep(0.02)  # caught mid-rewrite
    return None


def _write(fd: int, rec: dict[str, Any]) -> None:
    data = (json.dumps(rec) + "\n").encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    os.fsync(fd)


class _Held:
    """A lock this process holds: its fd, its record, its heartbeat thread, how often it is nested."""

    def __init__(self, path: Path, fd: int, mode: str, record: dict[str, Any]):
        self.path, self.fd, self.mode, self.record, self.count = path, fd, mode, record, 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"dyto-lock-{path.parent.name}", daemon=True)
        self._thread.start()

    def _ours(self) -> bool:
        with contextlib.suppress(OSError):
            return os.fstat(self.fd).st_ino == os.stat(self.path).st_ino
        return False

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.record["heartbeat"] = time.time()
            with contextlib.suppress(OSError):
                _write(self.fd, self.record)
            if self.mode == "file" and not self._ours():
                _notice(f"WARNING: another process took the lock of {self.path.parent} over (no heartbeat for "
                        f"{STALE_S:.0f} s?); this run no longer holds it")
                return

    def release(self) -> None:
        self._stop.set()
        self._thread.join()  # no heartbeat may write to the fd number once it is closed
        try:
            if self.mode == "file":
                if self._ours():
                    self.path.unlink()
            else:
                _write(self.fd, {**self.record, "released": True})
        except OSError:
            pass
        finally:
            os.close(self.fd)  # drops the flock


# -- taking it -------------------------------------------------------------------------------------
def _acquire_flock(path: Path, rec: dict[str, Any], hint: str) -> _Held | None:
    """The flock on ``path``; None when the file system refuses flock altogether."""
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _locked(path.parent, _read_record(path), hint) from None
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return None
            raise
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:  # replaced while we opened it
                os.close(fd)
                continue
        except FileNotFoundError:
            os.close(fd)
            continue
        prev = _load(os.pread(fd, 1 << 16, 0)) or {}
        if prev and not prev.get("released"):
            alive, why = _alive(prev, heartbeat=False)  # a same-host holder on the lock file mechanism
            if alive:
                os.close(fd)
                raise _locked(path.parent, prev, hint)
            _notice(f"took over the lock of {path.parent} from {describe(prev)}: {why}")
        record = {**rec, "mode": "flock"}
        _write(fd, record)
        return _Held(path, fd, "flock", record)
    raise _locked(path.parent, _read_record(path), hint)


def _acquire_file(path: Path, rec: dict[str, Any], hint: str) -> _Held:
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            prev = _read_record(path)
            if prev is None or (not prev and _mtime_age(path) < STALE_S):
                raise _locked(path.parent, None, hint) from None  # being written, or unreadable and fresh
            if prev and not prev.get("released"):
                alive, why = _alive(prev, heartbeat=True)
                if alive:
                    raise _locked(path.parent, prev, hint) from None
                _notice(f"took over the lock of {path.parent} from {describe(prev)}: {why}")
            _move_aside(path, prev, hint)
            continue
        record = {**rec, "mode": "file"}
        _write(fd, record)
        return _Held(path, fd, "file", record)
    raise _locked(path.parent, _read_record(path), hint)


def _mtime_age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _move_aside(path: Path, judged: dict[str, Any], hint: str) -> None:
    """Remove the stale lock ``judged`` was read from; if a live one replaced it meanwhile, put it back."""
    aside = path.with_name(f"{path.name}.stale-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process removed it first: try to create again
    moved = _read_record(aside)
    if moved and judged and moved.get("token") != judged.get("token"):
        with contextlib.suppress(OSError):
            os.link(aside, path)  # fails when yet another process has created one: that one holds it
        os.unlink(aside)
        raise _locked(path.parent, moved, hint)
    os.unlink(aside)


_HELD: dict[str, _Held] = {}
_GUARD = threading.Lock()


@contextlib.contextmanager
def hold(folder: str | os.PathLike, purpose: str, hint: str = DEFAULT_HINT) -> Iterator[dict[str, Any]]:
    """Hold ``folder``'s lock for the ``with`` block (nested when this process holds it already);
    yields the holder's record. Raises ``RunLocked`` when another live process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    key = os.path.realpath(path)
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            held.count += 1
        else:
            mode, why = lock_mode(folder)
            rec = _new_record(purpose)
            held = _acquire_flock(path, rec, hint) if mode == "flock" else None
            if held is None:
                if mode == "flock":
                    _notice(f"{why}: flock is not supported there; locking {folder} with a lock file and heartbeat")
                held = _acquire_file(path, rec, hint)
            _HELD[key] = held
    try:
        yield held.record
    finally:
        with _GUARD:
            held.count -= 1
            last = held.count == 0
            if last:
                del _HELD[key]
                held.release()
