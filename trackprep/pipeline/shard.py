"""`trackprep shard`: annotation store -> segment store of L-frame training segments.

The plan (every segment's video and start, trackprep.core.segments) is built from the
annotation store's complete videos, recorded in the new store's `video` / `start`
arrays, then cut into tasks of one shard each (`segments_per_shard` consecutive
segments). A task reads what its segments need, selects each segment's tracks and
writes the whole shard at once, then flags its segments done. Tasks share no file,
so they run in any order, serially or on Dask, and a rerun skips finished shards.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trackprep.config import DEFAULTS, config_differences
from trackprep.core.segments import (
    MIN_VISIBLE, SEGMENT_LENGTH, SegmentPlan, plan_segments, segment_seed, select_segment_tracks, shard_ranges,
)
from trackprep.io import annotation_store as astore
from trackprep.io.annotation_reader import VideoAnnotations, open_annotations
from trackprep.io.frame_codecs import DEFAULT_JPEG_QUALITY, frame_codecs
from trackprep.io import schema
from trackprep.io import locks as lock_io
from trackprep.io import segment_store as sstore
from trackprep.io.faults import fault_point
from trackprep.io.oserrors import os_error_line

# Tracks per segment; DINO-Tracker / Track4Gen draw 256 fg + 256 bg per step from these.
DEFAULT_TRACKS = DEFAULTS["shard"]["tracks_per_segment"]


@dataclass(frozen=True)
class ShardConfig:
    """Everything that decides the content of a segment store (recorded in its root attributes)."""

    store: str  # annotation store path
    length: int = SEGMENT_LENGTH
    stride: int | None = None  # None: = length (non-overlapping segments)
    tracks: int = DEFAULT_TRACKS
    fg_share: float = 0.5
    seed: int = 0
    min_visible: int = MIN_VISIBLE
    tracks_dtype: str = "float32"
    segments_per_shard: int = sstore.DEFAULT_SEGMENTS_PER_SHARD
    frames_codec: str = "lossless"
    jpeg_quality: int = DEFAULT_JPEG_QUALITY

    def __post_init__(self) -> None:
        for name in ("length", "tracks", "segments_per_shard", "min_visible"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if self.stride is not None and (not isinstance(self.stride, int) or self.stride < 1):
            raise ValueError(f"stride: expected a positive integer (or None for = length), got {self.stride!r}")
        if not 0.0 <= self.fg_share <= 1.0:
            raise ValueError(f"fg_share: expected a number in [0, 1], got {self.fg_share!r}")
        if self.tracks_dtype not in sstore.TRACKS_DTYPES:
            raise ValueError(f"tracks_dtype: expected one of {sstore.TRACKS_DTYPES}, got {self.tracks_dtype!r}")
        frame_codecs(self.frames_codec, quality=self.jpeg_quality)  # a clear error for a bad codec or quality

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["stride"] = self.length if self.stride is None else self.stride
        return d


@dataclass(frozen=True)
class ShardTask:
    """Write segments first .. first + len(videos) - 1 (exactly one shard) of the segment store at `out`."""

    out: str
    config: ShardConfig
    first: int
    videos: tuple[str, ...]
    starts: tuple[int, ...]


@dataclass
class ShardResult:
    out: Path
    num_segments: int
    written: int  # segments written by this run (0 when the store was already complete)
    skipped_videos: list[tuple[str, int]] = field(default_factory=list)  # (video, frames) shorter than L
    # (video, status) of the annotation store's videos not complete (failed, or still being written): left out
    incomplete_videos: list[tuple[str, str]] = field(default_factory=list)
    tracks_per_segment: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))


def _segment_rows(video: VideoAnnotations, s: int, cfg: ShardConfig) -> np.ndarray:
    """Rows of the tracks segment s .. s + L - 1 keeps. Only tracks defined in the window can be
    kept; they are passed in row order, so the draw equals that over all N rows."""
    window = (s, s + cfg.length)
    near = video.overlapping(frames=window)
    picked = select_segment_tracks(
        video.visible(near, frames=window), video.labels[near], n=cfg.tracks, fg_share=cfg.fg_share,
        seed=segment_seed(cfg.seed, video.key, s), min_visible=cfg.min_visible,
    )
    return near[picked]


def _video_segments(video: VideoAnnotations, starts: Sequence[int], cfg: ShardConfig) -> list[dict[str, Any]]:
    """The segments of one video that start at `starts`, as write_segments mappings.

    Each segment's tracks are chosen from start/length/labels alone; points are read only for
    the rows and frames some segment keeps, in one read, so each chunk is decoded once per task.
    """
    L = cfg.length
    labels = video.labels
    rows_per = [_segment_rows(video, s, cfg) for s in starts]
    t0, t1 = min(starts), max(starts) + L
    union = np.unique(np.concatenate(rows_per)) if rows_per else np.zeros(0, np.int64)
    tracks, visible = video.dense(union, frames=(t0, t1))
    frames = np.asarray(video.frames[t0:t1])
    masks = np.asarray(video.masks[t0:t1])
    has_mask = np.asarray(video.has_mask[t0:t1], dtype=bool)
    out = []
    for s, rows in zip(starts, rows_per):
        a = s - t0
        pos = np.searchsorted(union, rows)
        out.append(dict(
            frames=frames[a : a + L], masks=masks[a : a + L], has_mask=has_mask[a : a + L],
            tracks=tracks[pos, a : a + L], visible=visible[pos, a : a + L], labels=labels[rows],
            video=video.key, start=s, track_ids=rows,
        ))
    return out


def run_shard_task(task: ShardTask) -> int:
    """Build and write one shard; returns the number of segments written."""
    source = open_annotations(task.config.store)
    segments: list[dict[str, Any]] = []
    pairs = list(zip(task.videos, task.starts))
    for key, group in groupby(pairs, key=lambda p: p[0]):
        starts = [s for _, s in group]
        try:
            segments.extend(_video_segments(source[key], starts, task.config))
        except Exception as exc:
            raise sstore.SegmentStoreError(f"shard: segments {starts} of {task.config.store}/{key}: {exc}") from exc
    try:
        sstore.write_segments(task.out, task.first, segments)
    except OSError as exc:  # disk full and friends: say which store (the bare error may not)
        raise OSError(os_error_line(exc, writing=task.out)) from exc
    fault_point("shard:shard-done")
    return len(segments)


def build_plan(source_root, *, length: int, stride: int | None) -> SegmentPlan:
    keys = astore.complete_videos(source_root)
    frames = [(k, int(source_root[k][schema.FRAMES.name].shape[0])) for k in keys]
    return plan_segments(frames, length=length, stride=stride)


def _video_size(source_root, plan: SegmentPlan) -> tuple[int, int]:
    # The videos that give segments; when none does, the (skipped) rest, so an empty store still has the size.
    keys = list(dict.fromkeys(plan.videos)) or [k for k, _ in plan.skipped]
    sizes = {tuple(source_root[k][schema.FRAMES.name].shape[1:3]) for k in keys}
    if len(sizes) > 1:
        raise ValueError(f"{astore.store_location(source_root)}: videos of different sizes {sorted(sizes)}; "
                         "a segment store holds one (H, W)")
    return sizes.pop() if sizes else (0, 0)


def _scheduler_name(scheduler: str) -> str:
    """The scheduler names of `annotate`; "threads" (this command's first name for "local") still works."""
    from trackprep.pipeline.executors import check_scheduler

    scheduler = "local" if scheduler == "threads" else scheduler
    check_scheduler(scheduler)
    return scheduler


def run_tasks(
    tasks: Sequence[ShardTask], *, scheduler: str, workers: int | None, log: Callable[[str], None] | None = None
) -> list[int]:
    """Run shard tasks; returns the segments each wrote. Schedulers as for `annotate`
    (trackprep.pipeline.executors.SCHEDULERS): "serial", "local" (Dask threads in this
    process), "processes" (a LocalCluster of worker processes) or the address of a running
    Dask scheduler (its workers must see both stores)."""
    scheduler = _scheduler_name(scheduler)
    log = log or (lambda _msg: None)
    if not tasks:
        return []
    if scheduler == "serial":
        return [run_shard_task(t) for t in tasks]
    if scheduler == "local":
        import dask

        # Threads suffice: the heavy work (Blosc/zstd codecs, numpy gathers, file I/O) releases the GIL.
        jobs = [dask.delayed(run_shard_task, pure=False)(t) for t in tasks]
        return list(dask.compute(*jobs, scheduler="threads", num_workers=workers))
    from distributed import Client, LocalCluster

    if scheduler == "processes":
        n = workers or max(1, min(os.cpu_count() or 1, len(tasks)))
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            log(f"scheduler: Dask LocalCluster, {n} worker process(es); dashboard: {client.dashboard_link}")
            return client.gather(client.map(run_shard_task, tasks, pure=False))
    try:
        client = Client(scheduler, timeout="20s")
    except OSError as exc:
        raise OSError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler there ({exc})") from None
    with client:
        log(f"scheduler: Dask cluster at {scheduler}; dashboard: {client.dashboard_link}")
        return client.gather(client.map(run_shard_task, tasks, pure=False))


def _open_or_create(out: Path, *, store: Any, source: Any, plan: SegmentPlan, config: dict[str, Any], overwrite: bool,
                    create: dict[str, Any]) -> Any:
    """The segment store at `out` to resume (refused when made otherwise), or a new one."""
    if out.exists() and not overwrite:
        root = sstore.open_segment_store(out, mode="r+")
        sstore.remove_leftovers(out)  # of an --overwrite killed after the new store was in place
        found = root.attrs.get(schema.ATTR_CONFIG)
        if found != config:
            raise ValueError(
                f"{out}: existing segment store was made with another configuration or from other videos ("
                + "; ".join(config_differences(found, config)) + "). Use --overwrite to rebuild it, or choose another --out"
            )
        videos, starts = sstore.read_index(root)
        if videos != list(plan.videos) or starts.tolist() != list(plan.starts):
            raise ValueError(
                f"{out}: its segments were planned from other videos than {store} holds now "
                f"({len(videos)} segments recorded, {len(plan)} planned). Use --overwrite to rebuild it"
            )
        return root
    h, w = _video_size(source, plan)
    # Built aside with its index and renamed into place: a kill leaves no half-made store at `out`.
    return sstore.create_segment_store(out, videos=plan.videos, starts=plan.starts, height=max(h, 1), width=max(w, 1),
                                       config=config, overwrite=overwrite, **create)


def shard(
    store: str | os.PathLike,
    out: str | os.PathLike,
    *,
    length: int = SEGMENT_LENGTH,
    stride: int | None = None,
    tracks: int = DEFAULT_TRACKS,
    fg_share: float = 0.5,
    seed: int = 0,
    tracks_dtype: str = "float32",
    segments_per_shard: int = sstore.DEFAULT_SEGMENTS_PER_SHARD,
    frames_codec: str = "lossless",
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    scheduler: str = "local",
    workers: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> ShardResult:
    """Cut every complete video of the annotation store `store` into segments written to `out`.

    Resumable: rerunning with the same arguments finishes an interrupted store (and does
    nothing to a complete one); different arguments are refused unless `overwrite`.
    """
    scheduler = _scheduler_name(scheduler)  # a misspelt name fails before any work
    out = Path(out)
    cfg = ShardConfig(store=str(Path(store).resolve()), length=length, stride=stride, tracks=tracks,
                      fg_share=float(fg_share), seed=seed, tracks_dtype=tracks_dtype,
                      segments_per_shard=segments_per_shard, frames_codec=frames_codec, jpeg_quality=jpeg_quality)
    source = astore.open_store(store, mode="r")
    plan = build_plan(source, length=length, stride=stride)
    # Zarr reads a missing chunk as fill values: a damaged video would become black frames or
    # track-less segments. Refuse before writing anything (trackprep.io.integrity).
    damaged = astore.damaged_videos(source, checksums=True, keys=sorted(set(plan.videos)))
    if damaged:
        raise sstore.SegmentStoreError(
            f"{store}: {len(damaged)} damaged video(s), not sharded: "
            + "; ".join(damaged.values()) + ". Rerun `trackprep annotate` with the same arguments to redo them, then shard"
        )
    planned = set(plan.videos) | {k for k, _ in plan.skipped}
    incomplete = [(k, astore.video_status(source, k) or "") for k in astore.video_keys(source) if k not in planned]
    skipped = [(k, t) for k, t in plan.skipped]
    config = {"command": "shard", **cfg.to_dict(), "skipped_videos": [list(s) for s in skipped],
              "source_config": source.attrs.get(schema.ATTR_CONFIG)}
    config = json.loads(json.dumps(config, default=str))

    # One shard run per segment store at a time (a lock file beside it, trackprep.io.locks): its
    # tasks own whole shards, and only it may clear what a killed run left beside the store.
    with lock_io.Locks(out.parent) as locks:
        holder = locks.try_acquire(f".{out.name}")
        if holder is not None:
            raise sstore.SegmentStoreError(f"{out}: another `trackprep shard` is writing it ({holder.describe()}); "
                                           "let it finish (one that was killed is noticed, and a rerun continues it)")
        root = _open_or_create(out, store=store, source=source, plan=plan, config=config, overwrite=overwrite,
                               create=dict(length=length, max_tracks=tracks, tracks_dtype=tracks_dtype,
                                           segments_per_shard=segments_per_shard, frames_codec=frames_codec,
                                           jpeg_quality=jpeg_quality))
        done = sstore.done_flags(root)
        damaged = sstore.damaged_shards(root)  # a file lost since it was written: redo its shard
        if damaged and log:
            log(f"{out}: redoing {len(damaged)} damaged shard(s): " + "; ".join(v[0] for v in damaged.values()))
        for k in damaged:
            done[k * segments_per_shard : (k + 1) * segments_per_shard] = False
        tasks = [
            ShardTask(out=str(out), config=cfg, first=r.start, videos=plan.videos[r.start : r.stop],
                      starts=plan.starts[r.start : r.stop])
            for r in shard_ranges(len(plan), segments_per_shard=segments_per_shard)
            if not done[r.start : r.stop].all()
        ]
        written = sum(run_tasks(tasks, scheduler=scheduler, workers=workers, log=log))
        fault_point("shard:before-complete")
        sstore.mark_complete(root)
    num_tracks = np.asarray(root[schema.SEGMENTS_GROUP][schema.SEG_NUM_TRACKS.name][:], np.int32)
    return ShardResult(out=out, num_segments=len(plan), written=written, skipped_videos=skipped,
                       incomplete_videos=incomplete,
                       tracks_per_segment=num_tracks)
