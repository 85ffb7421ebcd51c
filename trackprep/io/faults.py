"""Marked points where a writer can be made to crash, to test that a rerun recovers.

`fault_point("shard:index-written")` does nothing unless that point is armed:

- `TRACKPREP_CRASH_AT=shard:index-written` in the environment: the process kills itself there
  with SIGKILL (nothing is flushed or cleaned up, as when a machine dies);
- `crash_at("shard:index-written")` in a test: SimulatedCrash (a BaseException, so no
  `except Exception` of the code under test catches it) is raised there, in this process.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

ENV = "TRACKPREP_CRASH_AT"
_armed: str | None = None


class SimulatedCrash(BaseException):
    """Raised at an armed fault point (see `crash_at`)."""


def fault_point(name: str) -> None:
    if _armed == name:
        raise SimulatedCrash(name)
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def crash_at(name: str) -> Iterator[None]:
    """Arm fault point `name` for the duration of the block (one point at a time)."""
    global _armed
    previous, _armed = _armed, name
    try:
        yield
    finally:
        _armed = previous
