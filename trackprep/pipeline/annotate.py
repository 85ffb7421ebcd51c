"""`annotate`: dataset videos -> annotation store, as a plan of per-video stages.

Per video: read (decode and resize frame by frame) -> flow -> track (chaining, cycle
test, seeding) -> label -> write. `plan_annotation` opens the datasets and the store
and lists the videos still to do; an executor (serial, or Dask: executors.py) runs
the stages. Each stage is a plain function of (previous result, context), so both
executors run the very same code, and a test can assert they write equal stores.

Failure isolation: a stage that raises marks its video failed and later stages pass
the failure through; the write stage records it in the store, so one bad video never
stops the others (unless `strict`).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from trackprep.core.chaining import chain_tracks
from trackprep.core.labels import is_foreground, label_tracks
from trackprep.core.types import Clip, FlowPair, TrackSet
from trackprep.flow import FlowEstimator, FlowSetupError, make_estimator
from trackprep.io import annotation_store as store_io
from trackprep.io import locks as lock_io
from trackprep.io.oserrors import os_error_line
from trackprep.io import schema
from trackprep.io.datasets import DatasetError, canonical_name, open_dataset, read_clip


class AnnotateError(RuntimeError):
    """The run cannot start: unknown dataset, unreadable root, store/config conflict, flow setup."""


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
    """What every stage needs besides its input: the store and the resolved configuration."""

    store: str
    config: dict[str, Any]
    lock_run: str | None = None  # the run whose video locks (trackprep.io.locks) allow writing


@dataclass
class Work:
    """A video between stages. `error` set means an earlier stage failed."""

    task: VideoTask
    clip: Clip | None = None
    flow: FlowPair | None = None
    tracks: TrackSet | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    # DatasetError and friends already name the file; other exceptions need their type to make sense.
    return text if isinstance(exc, (DatasetError, FlowSetupError, ValueError)) and text else f"{type(exc).__name__}: {text}"


def _guard(name: str, work: Work, fn: Callable[[Work], None]) -> Work:
    """Run stage `fn` on a shallow copy of `work`: the input stays as it was, so a scheduler
    that reruns a stage (or hands the same object to two tasks in one process) sees no change."""
    if work.error is not None:
        return work
    work = dataclasses.replace(work, timings=dict(work.timings))
    t0 = time.perf_counter()
    try:
        fn(work)
    except Exception as exc:  # isolate the failure to this video; recorded by the write stage
        work.error = f"{name}: {_one_line(exc)}"
        work.clip = work.flow = work.tracks = None
    work.timings[name] = time.perf_counter() - t0
    return work


# ---------------------------------------------------------------- stages


def read_stage(task: VideoTask, ctx: RunContext) -> Work:
    """Decode the video and resize it to the working size, one frame at a time."""

    def run(work: Work) -> None:
        dataset = open_dataset(task.dataset, task.root)
        source = dataset.open_video(task.video)  # warns about frames lacking an expected mask
        size = tuple(ctx.config["size"])
        clip = read_clip(source, size=size)
        scene = source.extras.get("scene") if source.extras else None
        if scene is not None:
            # Synthetic videos carry their exact motion; the oracle flow backend reads it.
            from trackprep.core.synthetic import Scene

            scene = Scene.from_dict(scene) if isinstance(scene, dict) else scene
            scene = scene.rescaled(height=size[0], width=size[1])
            clip = dataclasses.replace(clip, scene=scene)
        if clip.num_frames < 2:
            raise ValueError(f"{source.describe_frame(0)}: video has {clip.num_frames} frame; expected at least 2")
        work.clip = clip

    return _guard("read", Work(task=task), run)


_ESTIMATORS: dict[str, FlowEstimator] = {}
_ESTIMATORS_LOCK = threading.Lock()


def estimator_for(flow_config: dict[str, Any]) -> FlowEstimator:
    """One estimator per configuration per process: RAFT weights load once per worker, not per video."""
    key = json.dumps(flow_config, sort_keys=True, default=str)
    with _ESTIMATORS_LOCK:
        est = _ESTIMATORS.get(key)
        if est is None:
            est = make_estimator(**flow_config)
            est.check_ready()
            _ESTIMATORS[key] = est
    return est


def flow_stage(work: Work, ctx: RunContext) -> Work:
    def run(w: Work) -> None:
        w.flow = estimator_for(ctx.config["flow"]).estimate(w.clip)

    return _guard("flow", work, run)


def track_stage(work: Work, ctx: RunContext) -> Work:
    def run(w: Work) -> None:
        w.tracks = chain_tracks(
            w.flow,
            cycle_threshold=ctx.config["tracks"]["cycle_threshold"],
            seed_stride=ctx.config["tracks"]["seed_stride"],
        )
        w.flow = None  # the largest intermediate; not needed any more

    return _guard("track", work, run)


def label_stage(work: Work, ctx: RunContext) -> Work:
    def run(w: Work) -> None:
        w.tracks = label_tracks(w.tracks, w.clip.masks, w.clip.has_mask)

    return _guard("label", work, run)


def write_stage(work: Work, ctx: RunContext) -> VideoResult:
    """Write the video (or its failure) to the store; the only stage that touches the store."""
    root = store_io.open_store(ctx.store, mode="r+")
    key, error, timings = work.task.key, work.error, dict(work.timings)
    try:  # another run took this video's lock as stale: its group is that run's now
        lock_io.check_lock(ctx.store, key, run=ctx.lock_run)
    except lock_io.LockLostError as exc:
        return VideoResult(key=key, status=schema.STATUS_FAILED, error=f"write: {exc}", timings=timings)
    if error is None:
        t0 = time.perf_counter()
        try:
            store_io.write_video(
                root, key, work.clip, work.tracks,
                attrs={"dataset": work.task.dataset, "video": work.task.video, "source_root": work.task.root,
                       "timings_s": {k: round(v, 3) for k, v in timings.items()}},
            )
        except OSError as exc:  # disk full and friends: name the store, which the bare error does not
            error = f"write: {os_error_line(exc, writing=f'{ctx.store}/{key}')}"
        except Exception as exc:
            error = f"write: {_one_line(exc)}"
        timings["write"] = time.perf_counter() - t0
    if error is not None:
        store_io.record_failure(root, key, error)
        return VideoResult(key=key, status=schema.STATUS_FAILED, error=error, timings=timings)
    return VideoResult(
        key=key,
        status=schema.STATUS_COMPLETE,
        num_frames=work.clip.num_frames,
        num_tracks=len(work.tracks),
        fg_tracks=int(np.count_nonzero(is_foreground(work.tracks.labels))),
        timings=timings,
    )


STAGES: tuple[Stage, ...] = (
    Stage("read", read_stage),
    Stage("flow", flow_stage, gpu=True),
    Stage("track", track_stage),
    Stage("label", label_stage),
    Stage("write", write_stage),
)


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class AnnotatePlan:
    store: str
    config: dict[str, Any]
    tasks: tuple[VideoTask, ...]  # still to do, in dataset order
    skipped: tuple[str, ...]  # complete in the store already

    @property
    def context(self) -> RunContext:
        # Absolute: workers of a cluster may run in another directory (or on another machine
        # that mounts the same file system).
        return RunContext(store=str(Path(self.store).resolve()), config=self.config)


def _select(names: list[str], dataset: str, wanted: Sequence[str] | None) -> list[str]:
    """The dataset's videos named in `wanted` ("video" or "dataset/video"), in dataset order."""
    if not wanted:
        return names
    picked = set()
    for w in wanted:
        ds, _, video = w.rpartition("/")
        if not ds or ds == dataset:
            picked.add(video)
    return [n for n in names if n in picked]


def plan_annotation(
    *,
    datasets: Sequence[tuple[str, str | Path]],
    out: str | Path,
    config: dict[str, Any],
    videos: Sequence[str] | None = None,
    overwrite: bool = False,
) -> AnnotatePlan:
    """Open the datasets and the store, check the flow backend can run, list the videos to do.

    Every problem that would fail the whole run (unknown dataset, missing or empty root,
    unknown --videos name, store built with another configuration, missing RAFT weights)
    raises AnnotateError here, before any video is decoded.
    """
    from trackprep.config import annotation_fingerprint

    if not datasets:
        raise AnnotateError("no dataset given; expected at least one --dataset NAME --root DIR")
    try:
        estimator = estimator_for(config["flow"])
    except FlowSetupError as exc:
        # Kept multi-line: it stops the whole run and lists the file, its URL and both remedies.
        raise AnnotateError(f"flow backend {config['flow']['name']!r}: {exc}") from None
    fingerprint = annotation_fingerprint(config)
    weights = getattr(estimator, "weights_path", None)
    if "flow.raft_weights" in fingerprint and weights is not None:
        # The file's content, not how it was named: --raft-weights, $TRACKPREP_RAFT_WEIGHTS and
        # the torchvision cache may name the same weights, or (the same setting) different ones.
        from trackprep.io.fetch import file_digest

        fingerprint["flow.raft_weights"] = "sha256:" + file_digest(Path(weights), "sha256")

    listed: list[tuple[str, str, list[str]]] = []
    for name, root in datasets:
        try:
            name = canonical_name(name)  # "davis" and "davis2017" must land in the same store group
            ds = open_dataset(name, root)
            names = list(ds.video_names())
        except DatasetError as exc:
            raise AnnotateError(_one_line(exc)) from None
        if not names:
            raise AnnotateError(f"{root}: dataset {name!r} has no videos; expected its video folders here")
        listed.append((name, str(Path(root).resolve()), names))

    if videos:
        known = {v for _, _, names in listed for v in names} | {f"{d}/{v}" for d, _, names in listed for v in names}
        unknown = [v for v in videos if v not in known]
        if unknown:
            roots = ", ".join(r for _, r, _ in listed)
            raise AnnotateError(f"--videos {', '.join(unknown)}: not found in {roots}; expected video names of the given datasets")

    try:
        root = store_io.create_store(out, config=config, overwrite=overwrite, fingerprint=fingerprint)
    except store_io.StoreError as exc:
        raise AnnotateError(str(exc)) from None

    # A complete video with a chunk file missing is damaged: redo it (trackprep.io.integrity).
    done = set(store_io.complete_videos(root)) - set(store_io.damaged_videos(root))
    tasks, skipped = [], []
    for name, ds_root, names in listed:
        store_io.require_dataset_group(root, name)  # here, not concurrently in the workers
        for video in _select(names, name, videos):
            task = VideoTask(dataset=name, root=ds_root, video=video)
            if task.key in done:
                skipped.append(task.key)  # resume: complete groups are trusted (status is written last)
            else:
                tasks.append(task)  # new, failed or interrupted: (re)done from scratch
    return AnnotatePlan(store=str(Path(out)), config=config, tasks=tuple(tasks), skipped=tuple(skipped))


@dataclass(frozen=True)
class AnnotateSummary:
    store: str
    results: tuple[VideoResult, ...]
    skipped: tuple[str, ...]
    stopped_early: bool = False  # --strict stopped the run at its first failure
    busy: tuple[tuple[str, str], ...] = ()  # (video, owner) another live run is writing: left to it

    @property
    def failed(self) -> tuple[VideoResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def completed(self) -> tuple[VideoResult, ...]:
        return tuple(r for r in self.results if r.ok)

    def lines(self) -> list[str]:
        out = [
            f"{self.store}: {len(self.completed)} video(s) annotated, {len(self.skipped)} already complete, "
            f"{len(self.failed)} failed" + (" (stopped at the first failure: --strict)" if self.stopped_early else "")
        ]
        if self.busy:
            out.append(f"  {len(self.busy)} video(s) left to another run writing them now (rerun later to check): "
                       + ", ".join(f"{k} ({owner})" for k, owner in self.busy))
        out += [f"  FAILED {r.key}: {r.error}" for r in self.failed]
        return out


def annotate(
    *,
    datasets: Sequence[tuple[str, str | Path]],
    out: str | Path,
    config: dict[str, Any],
    videos: Sequence[str] | None = None,
    overwrite: bool = False,
    strict: bool = False,
    scheduler: str = "local",
    workers: int | None = None,
    progress: Any = None,
    log: Callable[[str], None] | None = None,
) -> AnnotateSummary:
    """Annotate every selected video not yet complete in `out`.

    scheduler: "serial" (in this process, one video at a time), "local" (Dask threads in this
    process, one per core), "processes" (a Dask LocalCluster of worker processes) or the
    address of a running dask.distributed scheduler (tcp://host:8786).
    """
    from trackprep.pipeline.executors import check_scheduler, make_executor
    from trackprep.pipeline.progress import NullProgress

    check_scheduler(scheduler)
    plan = plan_annotation(datasets=datasets, out=out, config=config, videos=videos, overwrite=overwrite)
    progress = progress or NullProgress()
    if log and plan.skipped:
        log(f"skipping {len(plan.skipped)} video(s) already complete in {plan.store}")
    # One writer per video across runs: lock each video before computing it (trackprep.io.locks).
    with lock_io.VideoLocks(plan.store) as locks:
        root = store_io.open_store(plan.store, mode="r+")
        claim = lock_io.claim_videos(locks, [t.key for t in plan.tasks],
                                     is_done=lambda key: store_io.video_status(root, key) == schema.STATUS_COMPLETE
                                     and not store_io.damaged_videos(root, keys=[key]))
        tasks = tuple(t for t in plan.tasks if t.key in set(claim.mine))
        skipped, busy = plan.skipped + claim.done, tuple((k, o.describe()) for k, o in claim.busy)
        if log and busy:
            log(f"leaving {len(busy)} video(s) to another run that is writing them")
        if not tasks:
            return AnnotateSummary(store=plan.store, results=(), skipped=skipped, busy=busy)
        ctx = dataclasses.replace(plan.context, lock_run=locks.run)
        with make_executor(scheduler, workers=workers, config=config, num_tasks=len(tasks), log=log) as executor:
            progress.start(total=len(tasks), keys=[t.key for t in tasks], stages=[s.name for s in STAGES])
            try:
                results, stopped = executor.run(tasks, STAGES, ctx, progress=progress, strict=strict)
            finally:
                progress.close()
    return AnnotateSummary(store=plan.store, results=tuple(results), skipped=skipped, stopped_early=stopped, busy=busy)
