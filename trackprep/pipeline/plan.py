"""The types an annotation plan is made of: what the planner (pipeline/annotate.py) builds and
the executors (pipeline/executors.py) run. Their own module, so that neither of those two
imports the other at module level."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from trackprep.io import annotation_store as store_io
from trackprep.io import schema


@dataclass(frozen=True)
class VideoTask:
    """One video to annotate; small and picklable, so it travels to Dask workers."""

    dataset: str
    root: str
    video: str

    @property
    def key(self) -> str:
        return store_io.video_key(self.dataset, self.video)


@dataclass(frozen=True)
class RunContext:
    """What every stage needs besides its input: the store, the resolved configuration and
    the torch intra-op threads each task may use (None: leave torch's setting alone)."""

    store: str
    config: dict[str, Any]
    threads: int | None = None
    lock_run: str | None = None  # the run whose video locks (trackprep.io.locks) allow writing


@dataclass(frozen=True)
class VideoResult:
    key: str
    status: str  # schema.STATUS_COMPLETE or schema.STATUS_FAILED
    error: str | None = None
    num_frames: int = 0
    num_tracks: int = 0
    fg_tracks: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == schema.STATUS_COMPLETE


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[Any, RunContext], Any]
    gpu: bool = False  # runs the flow estimator: scheduled on GPU workers when a cluster has them
