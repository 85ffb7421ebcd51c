"""One writer per video: lock files in the store, shared by processes and machines.

    A.zarr/.locks/<dataset>/<video>.lock     JSON: host, pid, process start time, run token, time taken

A lock is taken by creating its file with O_CREAT | O_EXCL, which is atomic on local file
systems and on NFS v3 and later: of two runs that try at once, exactly one succeeds. The run
that holds locks refreshes their modification time every `heartbeat_s` seconds from one
thread, so a lock whose owner died is recognised as stale:

- on the owner's own machine (host name and kernel boot id), when its process (pid and start
  time) no longer exists;
- from any host, when its heartbeat is older than `stale_after_s`. Ages are measured against
  the file system's own clock (the mtime of a file just touched there), not this machine's,
  so clock skew between machines does not matter.

A stale lock is broken under a second O_EXCL file (`<video>.lock.break`), and only if it is
still the very file judged stale (same inode and mtime): two runs breaking the same stale lock
cannot delete the lock the faster one has just taken.

Not `filelock`: its SoftFileLease runs one heartbeat thread per lock (a run holds hundreds) and
takes over a foreign host's lock only after watching it for a full lease, where a run that skips
busy videos must decide at once.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

LOCK_DIR = ".locks"  # a hidden folder: never a Zarr node, and video names may not start with "."
HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0  # eight missed heartbeats


class LockLostError(RuntimeError):
    """This run no longer holds the lock of a video it was writing (another run took it as stale)."""


def _this_machine() -> str:
    """Host name and kernel boot id: two containers on different machines may share a host name,
    and a pid means nothing across machines (or across a reboot)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}:{boot}" if boot else socket.gethostname()


_MACHINE = _this_machine()


@dataclass(frozen=True)
class LockOwner:
    host: str
    machine: str  # _this_machine() of the owner: its pid can be checked only on that machine
    pid: int
    process_start: float  # psutil create_time of the owner process: tells a reused pid apart
    run: str  # token of the run holding the lock
    since: float  # epoch seconds when the lock was taken

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host}, since {when}"


def lock_dir(store: str | Path) -> Path:
    """Where the video locks of a store live."""
    return Path(store) / LOCK_DIR


def lock_path(store: str | Path, key: str) -> Path:
    return lock_dir(store) / f"{key}.lock"


def _process_start(pid: int) -> float | None:
    """The start time of process `pid`, None when there is no such (live) process."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def _this_owner(run: str) -> LockOwner:
    pid = os.getpid()
    return LockOwner(host=socket.gethostname(), machine=_MACHINE, pid=pid, process_start=_process_start(pid) or 0.0,
                     run=run, since=time.time())


def read_owner(path: Path) -> LockOwner | None:
    """The owner recorded in a lock file; None when it is missing or not (yet) fully written."""
    try:
        data = json.loads(path.read_text())
        return LockOwner(**{k: data[k] for k in LockOwner.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _names_run(path: Path, run: str) -> bool:
    owner = read_owner(path)
    return owner is not None and owner.run == run


def _owner_alive_here(owner: LockOwner) -> bool:
    try:
        start = _process_start(owner.pid)
    except psutil.AccessDenied:  # another user's live process: its start time is not ours to read
        return True
    return start is not None and abs(start - owner.process_start) < 1.0


def fs_now(folder: Path) -> float:
    """The file system's current time at `folder`: the mtime of a file touched there just now."""
    probe = folder / f".clock-{socket.gethostname()}-{os.getpid()}"
    probe.touch()
    try:
        return probe.stat().st_mtime
    finally:
        probe.unlink(missing_ok=True)


class Locks:
    """The locks one run holds in one folder (`<folder>/<key>.lock`; a store's video locks are in
    `lock_dir(store)`), kept alive by a single heartbeat thread.

    Use as a context manager; `close` releases every lock still held.
    """

    def __init__(self, folder: str | Path, *, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S,
                 run: str | None = None) -> None:
        if not 0 < heartbeat_s < stale_after_s:
            raise ValueError(f"heartbeat_s {heartbeat_s!r}, stale_after_s {stale_after_s!r}: "
                             "expected 0 < heartbeat_s < stale_after_s")
        self.folder = Path(folder)
        self.run = run or uuid.uuid4().hex
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self._owner = _this_owner(self.run)
        self._held: dict[str, Path] = {}
        self._lost: set[str] = set()
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ taking and giving back

    def try_acquire(self, key: str) -> LockOwner | None:
        """Take the lock of video `key`: None on success, else the live run that holds it.
        A stale lock (its owner died) is broken and taken."""
        path = self.path(key)
        for attempt in range(100):  # create; or break a stale lock (or wait for its breaker) and create again
            if self._create(path):
                with self._mutex:
                    self._held[key] = path
                self._start_heartbeat()
                return None
            holder = self.live_holder(path)
            if holder is not None:
                return holder
            time.sleep(0.01 * min(attempt, 10))
        raise OSError(f"{path}: could not take this lock (it keeps being replaced); expected it to settle")

    def _create(self, path: Path) -> bool:
        for attempt in range(3):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                return False
            except FileNotFoundError:  # another run removed the empty folder just now (close)
                if attempt == 2:
                    raise
        try:
            os.write(fd, json.dumps(self._owner.__dict__).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def live_holder(self, path: Path) -> LockOwner | None:
        """The owner of the lock at `path` if it is alive; None once a stale lock has been broken
        (or the lock is gone)."""
        try:
            seen = path.stat()
        except FileNotFoundError:
            return None
        owner = read_owner(path)
        now = fs_now(path.parent)
        if owner is not None and owner.machine == _MACHINE:
            stale = not _owner_alive_here(owner)
        else:  # another machine's lock (or one still being written): its heartbeat decides
            stale = now - seen.st_mtime > self.stale_after_s
        if not stale:
            return owner or LockOwner(host="?", machine="?", pid=0, process_start=0.0, run="?", since=seen.st_mtime)
        self._break(path, seen, now)
        return None

    def _break(self, path: Path, seen: os.stat_result, now: float) -> None:
        guard = path.with_name(path.name + ".break")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:  # a breaker that died between its two steps leaves its guard: old guards go
                if now - guard.stat().st_mtime > self.stale_after_s:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return
        try:
            current = path.stat()
            if (current.st_ino, current.st_mtime_ns) == (seen.st_ino, seen.st_mtime_ns):
                path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
            guard.unlink(missing_ok=True)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.lock"

    def holds(self, key: str) -> bool:
        """True while the lock file of `key` still names this run (no other run took it over)."""
        return _names_run(self.path(key), self.run)

    def release(self, key: str) -> None:
        with self._mutex:
            path = self._held.pop(key, None)
        if path is not None and self.holds(key):
            path.unlink(missing_ok=True)

    def lost(self) -> set[str]:
        """Videos whose lock another run took over while this run held it."""
        with self._mutex:
            return set(self._lost)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for key in list(self._held):
            self.release(key)
        if self.folder.name == LOCK_DIR:
            # Leave no empty lock folders in a store: zarr warns about any folder that is not a Zarr node.
            for folder in [*self.folder.glob("*"), self.folder]:
                try:
                    folder.rmdir()
                except OSError:
                    pass  # not empty (another run's locks) or gone

    def __enter__(self) -> "Locks":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ heartbeat

    def _start_heartbeat(self) -> None:
        with self._mutex:
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="trackprep-lock-heartbeat", daemon=True)
                self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.refresh()

    def refresh(self) -> None:
        """Renew every held lock's heartbeat (the heartbeat thread calls this)."""
        with self._mutex:
            held = dict(self._held)
        for key, path in held.items():
            if not self.holds(key):
                with self._mutex:
                    self._held.pop(key, None)
                    self._lost.add(key)
                continue
            try:
                os.utime(path)
            except FileNotFoundError:
                pass


def holds_lock(store: str | Path, key: str, *, run: str) -> bool:
    """True when the lock of `key` in `store` is held by run `run` (checked by any process of that
    run, e.g. a Dask worker, before it writes the video)."""
    return _names_run(lock_path(store, key), run)


def check_lock(store: str | Path, key: str, *, run: str | None) -> None:
    """Raise LockLostError unless run `run` holds the lock of `key`; no check when `run` is None
    (a store written without locks, as tests and library users may do)."""
    if run is not None and not holds_lock(store, key, run=run):
        owner = read_owner(lock_path(store, key))
        other = f"now held by {owner.describe()}" if owner else "released"
        raise LockLostError(f"{Path(store) / key}: this run's lock on the video was taken over ({other}); "
                            "leaving the video to that run")


_RUN_LOCKS: dict[tuple[str, str], Locks] = {}
_RUN_LOCKS_MUTEX = threading.Lock()


def run_locks(store: str | Path, *, run: str) -> Locks:
    """The video locks run `run` holds on `store` in this process (a Dask worker, or the run's own
    process): one Locks, hence one heartbeat thread, shared by all of the run's tasks here."""
    key = (str(Path(store).resolve()), run)
    with _RUN_LOCKS_MUTEX:
        locks = _RUN_LOCKS.get(key)
        if locks is None:
            locks = _RUN_LOCKS[key] = Locks(lock_dir(key[0]), run=run)
        return locks


def end_run(store: str | Path, *, run: str) -> None:
    """Give back what run `run` still holds on `store` in this process and tidy the lock folder."""
    with _RUN_LOCKS_MUTEX:
        locks = _RUN_LOCKS.pop((str(Path(store).resolve()), run), None)
    (locks or Locks(lock_dir(store), run=run)).close()

