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


# Status of a video another live run is writing (it holds the video's lock, trackprep.io.locks),
# or that another run finished after this one planned it: left to that run, not a failure.
STATUS_LEFT = "left"


@dataclass(frozen=True)
class VideoResult:
    key: str
    status: str  # schema.STATUS_COMPLETE, schema.STATUS_FAILED or STATUS_LEFT
    error: str | None = None
    num_frames: int = 0
    num_tracks: int = 0
    fg_tracks: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Not failed: complete, or left to another run."""
        return self.status != schema.STATUS_FAILED


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[Any, RunContext], Any]
    gpu: bool = False  # runs the flow estimator: scheduled on GPU workers when a cluster has them
