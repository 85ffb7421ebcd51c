"""`annotate`: dataset videos -> annotation store, one streaming task per video.

Per video, as the frames arrive: decode and resize a few frames at a time and write them to
the store; estimate flow over windows of consecutive frame pairs (batched as the estimator
batches a whole clip); chain each window into the live tracks (trackprep.core.chaining.
TrackChainer, which also labels them from the masks); hand the tracks that have ended to the
store writer. Peak memory is one window of frames and flow plus the live tracks, whatever the
video's length, and the tracks are exactly those of chaining the whole video at once. With
`tracks.tracker: longrange` (trackprep.core.longrange) each window also holds the 7 frames
before it and the flow from frames 2, 4 and 8 back, batched with the consecutive pairs.

`plan_annotation` opens the datasets and the store and lists the videos still to do; an
executor (serial, or Dask: executors.py) runs the per-video task. A task that fails records
its video as failed in the store, so one bad video never stops the others (unless `strict`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from trackprep.core.chaining import TrackChainer
from trackprep.core.longrange import DEFAULT_GAPS, LongRangeChainer, gap_pairs
from trackprep.flow import FlowEstimator, FlowSetupError, make_estimator
from trackprep.io import annotation_store as store_io
from trackprep.io import locks as lock_io
from trackprep.io import schema
from trackprep.io.oserrors import os_error_line
from trackprep.io.datasets import DatasetError, canonical_name, iter_frame_batches, open_dataset
from trackprep.pipeline.plan import STATUS_LEFT, RunContext, Stage, VideoResult, VideoTask

# Frame pairs per flow window (rounded up to the estimator's window_multiple). 16 pairs at
# 320x576 are ~47 MB of forward and backward flow: enough to keep RAFT's batches full on a GPU,
# small next to the live tracks.
WINDOW_PAIRS = 16


class AnnotateError(RuntimeError):
    """The run cannot start: unknown dataset, unreadable root, store/config conflict, flow setup."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    # DatasetError and friends already name the file; other exceptions need their type to make sense.
    return text if isinstance(exc, (DatasetError, FlowSetupError, ValueError)) and text else f"{type(exc).__name__}: {text}"


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


@contextlib.contextmanager
def task_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` torch intra-op (OpenMP) threads in this thread.

    torch's OpenMP thread count is per calling thread, so each task of the local scheduler
    sets its own: concurrency x threads stays within the cores instead of every task's
    torch spawning one thread per core (which measured 3.4 to 36.5 s for the same chaining).
    OpenCV's pool (DIS) is process-wide: set to the same share."""
    if threads is None:
        yield
        return
    import cv2
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# The parts a video's task is timed in (VideoResult.timings, the video's `timings_s` attribute).
TIMED_PARTS = ("read", "flow", "track", "write")


class _Timer:
    """Seconds spent per part of a task, and the part running now (for error messages)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.part = "read"

    @contextlib.contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        self.part, t0 = part, time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - t0


def _timed(batches: Iterator[Any], timer: _Timer, part: str) -> Iterator[Any]:
    """The items of `batches`, the time taken to produce each counted as `part`."""
    while True:
        with timer(part):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


def _write_tracks(batches: Iterator[Any], writer: store_io.VideoWriter, timer: _Timer) -> None:
    """Write the chainer's batches as they come: gathering one (its collection) is track time."""
    for part in _timed(batches, timer, "track"):
        with timer("write"):
            writer.add_tracks(part)


def _stream_video(task: VideoTask, ctx: RunContext, root: Any, timer: _Timer) -> store_io.VideoWriter:
    """Annotate one video into the store as it is decoded; returns the finished writer.

    The tracks' history while chaining is spilled to a temporary folder (in $TMPDIR, removed
    when the video is done): about 2.5 bytes per point of the video's live tracks."""
    with tempfile.TemporaryDirectory(prefix="trackprep-history-") as spill:
        codec = store_io.HistoryCodec(spill_dir=spill)
        try:
            return _stream_into(task, ctx, root, timer, codec)
        finally:
            codec.close()


def _stream_into(task: VideoTask, ctx: RunContext, root: Any, timer: _Timer, codec: store_io.HistoryCodec) -> store_io.VideoWriter:
    size = tuple(ctx.config["size"])
    tracks_cfg = ctx.config["tracks"]
    with timer("read"):
        source = open_dataset(task.dataset, task.root).open_video(task.video)  # warns: frames lacking a mask
        total = source.num_frames
        if total < 2:
            raise ValueError(f"{source.describe_frame(0)}: video has {total} frame; expected at least 2")
        scene = source.extras.get("scene") if source.extras else None
        if scene is not None:
            # Synthetic videos carry their exact motion; the oracle flow backend reads it.
            from trackprep.core.synthetic import Scene

            scene = Scene.from_dict(scene) if isinstance(scene, dict) else scene
            if scene.num_frames != total:
                raise ValueError(f"{task.key}: {total} frames, but its scene has {scene.num_frames}; expected equal")
            scene = scene.rescaled(height=size[0], width=size[1])
    estimator = estimator_for(ctx.config["flow"])
    long_range = tracks_cfg["tracker"] == "longrange"
    # The long-range tracker estimates len(gaps) pairs per frame: windows of fewer frames keep
    # its flow in memory the size of the chain mode's.
    window = WINDOW_PAIRS // len(DEFAULT_GAPS) if long_range else WINDOW_PAIRS
    window = -(-window // estimator.window_multiple) * estimator.window_multiple
    back = DEFAULT_GAPS[-1] - 1 if long_range else 0  # frames before `first` a step still reads
    writer: store_io.VideoWriter | None = None
    chainer: TrackChainer | None = None
    # Frames decoded but not yet chained past, from frame `base` = max(0, first - back) on
    # (the last frame of a window is the first of the next).
    frames: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []
    first = base = 0

    def chain(pairs: int) -> None:
        nonlocal first, base
        i0 = first - base
        with timer("flow"):
            if long_range:
                wanted = [p for t in range(first + 1, first + pairs + 1) for p in gap_pairs(t, gaps=DEFAULT_GAPS)]
                flow = estimator.estimate_pairs(np.stack(frames[: i0 + pairs + 1]),
                                                [(a - base, b - base) for a, b in wanted], first=base, scene=scene)
                by_pair = {p: (flow.forward[k], flow.backward[k]) for k, p in enumerate(wanted)}
            else:
                flow = estimator.estimate_frames(np.stack(frames[: pairs + 1]), first=first, scene=scene)
        with timer("track"):
            for i in range(pairs):
                chainer.add_frame(mask=masks[i0 + i])
                if long_range:
                    chainer.advance_gaps(by_pair)
                else:
                    chainer.advance(flow.forward[i], flow.backward[i])
            done = chainer.finished()
        _write_tracks(done, writer, timer)
        first += pairs
        drop = max(0, first - back) - base
        del frames[:drop], masks[:drop]
        base += drop

    for batch in _timed(iter_frame_batches(source, size=size), timer, "read"):
        if writer is None:
            h, w = batch.frames.shape[1:3]
            with timer("write"):
                frames_cfg = ctx.config["frames"]
                writer = store_io.VideoWriter(root, task.key, num_frames=total, height=h, width=w,
                                              frames_codec=frames_cfg["codec"], jpeg_quality=frames_cfg["jpeg_quality"])
            chainer = (LongRangeChainer if long_range else TrackChainer)(
                height=h, width=w, cycle_threshold=tracks_cfg["cycle_threshold"],
                seed_stride=tracks_cfg["seed_stride"], min_length=tracks_cfg["min_track_length"],
                history_codec=codec,
            )
        with timer("write"):
            writer.write_frames(batch.first, batch.frames, batch.masks, batch.has_mask)
        frames.extend(batch.frames)
        masks.extend(m if flag else None for m, flag in zip(batch.masks, batch.has_mask))
        while len(frames) - (first - base) > window:
            chain(window)
    if len(frames) - (first - base) > 1:
        chain(len(frames) - (first - base) - 1)
    with timer("track"):
        chainer.add_frame(mask=masks[first - base])
        done = chainer.close()
    _write_tracks(done, writer, timer)
    return writer


def annotate_video(task: VideoTask, ctx: RunContext) -> VideoResult:
    """Annotate one video into the store (or record its failure there); never raises for a bad video."""
    root = store_io.open_store(ctx.store, mode="r+")
    timer = _Timer()
    # One writer per video across runs: take the video's lock first (trackprep.io.locks).
    locks = lock_io.run_locks(ctx.store, run=ctx.lock_run) if ctx.lock_run else None
    if locks is not None:
        try:
            holder = locks.try_acquire(task.key)
        except OSError as exc:  # e.g. a read-only store: nothing of this video is written
            return VideoResult(key=task.key, status=schema.STATUS_FAILED,
                               error=f"lock: {os_error_line(exc, writing=locks.path(task.key))}")
        if holder is not None:
            return VideoResult(key=task.key, status=STATUS_LEFT, error=f"another run is writing it ({holder.describe()})")
        if store_io.video_status(root, task.key) == schema.STATUS_COMPLETE and not store_io.damaged_videos(root, keys=[task.key]):
            locks.release(task.key)
            return VideoResult(key=task.key, status=STATUS_LEFT, error="another run finished it meanwhile")
    try:
        return _annotate_locked(task, ctx, root, timer)
    finally:
        if locks is not None:
            locks.release(task.key)


def _annotate_locked(task: VideoTask, ctx: RunContext, root: Any, timer: _Timer) -> VideoResult:
    try:
        with task_threads(ctx.threads):
            writer = _stream_video(task, ctx, root, timer)
            import torch

            with timer("write"):
                # Still ours? Another run takes a lock whose heartbeat stopped (trackprep.io.locks).
                lock_io.check_lock(ctx.store, task.key, run=ctx.lock_run)
                writer.finish({
                    "dataset": task.dataset, "video": task.video, "source_root": task.root,
                    "timings_s": {k: round(v, 3) for k, v in timer.seconds.items()},
                    "torch_threads": torch.get_num_threads(),  # what this task's chaining ran with
                })
    except lock_io.LockLostError as exc:  # the group is the other run's now: record nothing there
        return VideoResult(key=task.key, status=schema.STATUS_FAILED, error=str(exc), timings=dict(timer.seconds))
    except Exception as exc:  # isolate the failure to this video
        if isinstance(exc, OSError) and timer.part == "write":  # disk full: name the store, the bare error may not
            error = f"write: {os_error_line(exc, writing=f'{ctx.store}/{task.key}')}"
        else:
            error = f"{timer.part}: {_one_line(exc)}"
        store_io.record_failure(root, task.key, error)
        return VideoResult(key=task.key, status=schema.STATUS_FAILED, error=error, timings=dict(timer.seconds))
    return VideoResult(
        key=task.key, status=schema.STATUS_COMPLETE, num_frames=writer.num_frames, num_tracks=writer.num_tracks,
        fg_tracks=writer.fg_tracks, timings=dict(timer.seconds),
    )


STAGES: tuple[Stage, ...] = (Stage("annotate", annotate_video, gpu=True),)


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

    @property
    def failed(self) -> tuple[VideoResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def completed(self) -> tuple[VideoResult, ...]:
        return tuple(r for r in self.results if r.status == schema.STATUS_COMPLETE)

    @property
    def left(self) -> tuple[VideoResult, ...]:
        """Videos another run is writing, or finished first: left to it (not failures)."""
        return tuple(r for r in self.results if r.status == STATUS_LEFT)

    def lines(self) -> list[str]:
        out = [
            f"{self.store}: {len(self.completed)} video(s) annotated, {len(self.skipped)} already complete, "
            f"{len(self.failed)} failed" + (" (stopped at the first failure: --strict)" if self.stopped_early else "")
        ]
        if self.left:
            out.append(f"  {len(self.left)} video(s) left to another run (rerun later to pick up what it leaves): "
                       + "; ".join(f"{r.key}: {r.error}" for r in self.left))
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
    if not plan.tasks:
        return AnnotateSummary(store=plan.store, results=(), skipped=plan.skipped)
    # Each task locks its video when it starts (trackprep.io.locks), so runs started together on
    # one store share its videos; this token tells this run's tasks from another run's.
    run = uuid.uuid4().hex
    try:
        with make_executor(scheduler, workers=workers, config=config, num_tasks=len(plan.tasks), log=log) as executor:
            progress.start(total=len(plan.tasks), keys=[t.key for t in plan.tasks], stages=[s.name for s in STAGES])
            try:
                ctx = dataclasses.replace(plan.context, threads=executor.threads_per_task, lock_run=run)
                results, stopped = executor.run(plan.tasks, STAGES, ctx, progress=progress, strict=strict)
            finally:
                progress.close()
    finally:
        lock_io.end_run(plan.store, run=run)
    return AnnotateSummary(store=plan.store, results=tuple(results), skipped=plan.skipped, stopped_early=stopped)
