"""Executors: run a plan's per-video stages serially or on a Dask cluster.

Schedulers: "serial" (this process, one video at a time), "local" (default: Dask threads in
this process), "processes" (a Dask LocalCluster of worker processes) or the address of an
existing dask.distributed scheduler.

Both take the same (tasks, stages, context) and return the same VideoResults, so the
Dask path can be tested against the serial one (as rechunker tests its executors).

The Dask executor submits every stage of every video as a future that depends on the
previous stage of the same video. Videos therefore run concurrently, a video's
intermediates (frames, flow, tracks) are released as soon as its next stage has
consumed them, and a worker lost mid-task has its tasks recomputed elsewhere by the
scheduler. Flow tasks ask for the "GPU" resource only when some worker offers it: a
resource no worker has would leave the task waiting forever.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Callable, Sequence

from distributed.diagnostics.plugin import WorkerPlugin

from trackprep.io import annotation_store as store_io
from trackprep.io import locks as lock_io
from trackprep.io import schema
from trackprep.pipeline.plan import RunContext, Stage, VideoResult, VideoTask

# Memory to allow per video in flight. Annotation streams each video (frames, flow and tracks
# a window at a time), so a task's memory does not grow with the video's length:
# benchmarks/bench_long_video.py measures the peak RSS of a whole process at 320x576 (DIS),
# imported libraries included; see the README's performance table. 2 GiB leaves headroom.
_MEMORY_PER_WORKER = 2 << 30


def _failed(key: str, error: str, ctx: RunContext) -> VideoResult:
    """Record a failure the stages could not record themselves (a lost worker, a store error)."""
    try:
        lock_io.check_lock(ctx.store, key, run=ctx.lock_run)  # never replace a group another run now writes
        store_io.record_failure(store_io.open_store(ctx.store, mode="r+"), key, error)
    except Exception as exc:  # the store itself is unusable; still report the video's own error
        error = f"{error} (and recording it failed: {exc})"
    return VideoResult(key=key, status=schema.STATUS_FAILED, error=error)


class SerialExecutor:
    """One video after another, in this process: no scheduler, easiest to debug."""

    description = "serial (this process)"
    threads_per_task: int | None = None  # one task at a time: torch's own default (all cores)

    def __enter__(self) -> "SerialExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def run(
        self, tasks: Sequence[VideoTask], stages: Sequence[Stage], ctx: RunContext, *, progress: Any, strict: bool
    ) -> tuple[list[VideoResult], bool]:
        results = []
        for task in tasks:
            value: Any = task
            try:
                for stage in stages:
                    value = stage.fn(value, ctx)
                    if stage is not stages[-1]:
                        progress.stage_done(task.key, stage.name)
                result = value
            except Exception as exc:
                result = _failed(task.key, f"{type(exc).__name__}: {' '.join(str(exc).split())}", ctx)
            progress.video_done(result)
            results.append(result)
            if strict and not result.ok:
                return results, True
        return results, False


class TorchThreads(WorkerPlugin):
    """Worker plugin: give each worker's torch its share of the machine's cores.

    The nanny starts workers with OMP_NUM_THREADS=1; with one video per worker thread, torch
    may use cores / (workers x threads) threads without oversubscribing. A plugin (not a
    one-off client.run) so that workers restarted after a crash get the setting too; each
    task also sets it in its own thread (RunContext.threads)."""

    name = "trackprep-torch-threads"

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def setup(self, worker: Any) -> None:
        import torch

        torch.set_num_threads(self.threads)


def default_workers(*, num_tasks: int, cpu_count: int | None = None, memory_bytes: int | None = None) -> int:
    """Worker processes for a local CPU run: one per core, at most one per video, within memory."""
    cpu_count = cpu_count or os.cpu_count() or 1
    if memory_bytes is None:
        from distributed.system import MEMORY_LIMIT

        memory_bytes = int(MEMORY_LIMIT)
    return max(1, min(cpu_count, num_tasks, memory_bytes // _MEMORY_PER_WORKER))


class DaskExecutor:
    """Runs the stages as dask.distributed futures on a LocalCluster or an existing cluster."""

    def __init__(
        self, client: Any, *, gpu_resource: bool, description: str, cluster: Any = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.cluster = cluster
        self.on_close = on_close
        self.gpu_resource = gpu_resource
        self.description = description
        self.threads_per_task: int | None = None  # set by make_executor where it knows the concurrency

    def __enter__(self) -> "DaskExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        if self.on_close is not None:
            self.on_close()

    def run(
        self, tasks: Sequence[VideoTask], stages: Sequence[Stage], ctx: RunContext, *, progress: Any, strict: bool
    ) -> tuple[list[VideoResult], bool]:
        from distributed import as_completed

        run_id = uuid.uuid4().hex[:8]
        meta: dict[str, tuple[str, str]] = {}  # future key -> (video key, stage name)
        finals: dict[str, Any] = {}  # video key -> its write future (kept to cancel under --strict)
        futures = []
        for i, task in enumerate(tasks):
            prev: Any = task
            for stage in stages:
                fut = self.client.submit(
                    stage.fn, prev, ctx,
                    key=f"{stage.name}-{task.key}-{run_id}",
                    # Earlier videos first, so a video finishes (and frees its memory)
                    # before later videos start piling up intermediates.
                    priority=-i,
                    pure=False,
                    resources={"GPU": 1} if stage.gpu and self.gpu_resource else None,
                )
                meta[fut.key] = (task.key, stage.name)
                futures.append(fut)
                prev = fut
            finals[task.key] = prev
        final_stage = stages[-1].name
        pending = as_completed(futures)
        del futures, prev, fut  # hold no intermediate futures: the scheduler frees them when consumed
        results: list[VideoResult] = []
        for fut in pending:
            video, stage = meta[fut.key]
            if stage != final_stage:
                if fut.status == "finished":
                    progress.stage_done(video, stage)
                continue  # a lost-worker error reaches the final future too; handled there
            if fut.status == "finished":
                result = fut.result()
            else:
                exc = fut.exception()
                result = _failed(video, f"{type(exc).__name__}: {' '.join(str(exc).split())}", ctx)
            finals.pop(video, None)
            progress.video_done(result)
            results.append(result)
            if strict and not result.ok:
                pending.clear()
                self.client.cancel(list(finals.values()))
                return results, True
        return results, False


# Names accepted by `make_executor`; anything else is taken as a scheduler address.
SCHEDULERS = ("serial", "local", "processes")


def check_scheduler(scheduler: str) -> None:
    """Refuse a misspelt scheduler name before anything is computed (an address contains ':')."""
    if scheduler not in SCHEDULERS and ":" not in scheduler:
        raise ValueError(
            f"--scheduler {scheduler!r}: expected one of {', '.join(SCHEDULERS)} or a Dask scheduler address "
            "such as tcp://host:8786"
        )


def _quiet() -> int:
    # Worker restarts and lost connections are logged by distributed at WARNING; the run
    # reports its own failures per video, so show only errors.
    return logging.ERROR


def make_executor(
    scheduler: str,
    *,
    workers: int | None = None,
    config: dict[str, Any],
    num_tasks: int,
    log: Callable[[str], None] | None = None,
) -> SerialExecutor | DaskExecutor:
    """The executor named by `scheduler` (see SCHEDULERS), or a client of the Dask scheduler at that address."""
    log = log or (lambda _msg: None)
    check_scheduler(scheduler)
    if scheduler == "serial":
        return SerialExecutor()
    from distributed import Client, LocalCluster

    cpus = os.cpu_count() or 1
    if scheduler == "local":
        # Threads in this process, one video per thread. Measured faster than worker processes
        # (benchmarks/bench_annotate.py): no worker start-up (each process imports torch, ~0.7 GB
        # and seconds), no copies of frames and flow between processes, and the heavy parts
        # (JPEG decoding, DIS/RAFT, chaining, Blosc) release the GIL. On a GPU, RAFT's estimator
        # runs one window at a time while the other threads chain other videos.
        import cv2

        n = workers or default_workers(num_tasks=num_tasks)
        cluster = LocalCluster(
            n_workers=1, threads_per_worker=n, processes=False, dashboard_address=":0", silence_logs=_quiet(),
        )
        previous = cv2.getNumThreads()
        executor = DaskExecutor(
            Client(cluster), gpu_resource=False, cluster=cluster,
            description=f"Dask LocalCluster, {n} thread(s) in this process",
            on_close=lambda: cv2.setNumThreads(previous),
        )
        # The n videos share the cores: each task gives its torch (OpenMP threads are per
        # calling thread) its share (oversubscribed OpenMP threads spin and slow everything
        # several-fold on a busy machine).
        executor.threads_per_task = max(1, cpus // n)
    elif scheduler == "processes":
        from trackprep.flow import select_device

        uses_gpu = config["flow"]["name"] == "raft" and select_device(config["flow"]["device"]).type == "cuda"
        if uses_gpu:
            # One worker owns the GPU (the GPU resource lets one flow task run at a time on it);
            # its threads run the CPU stages of other videos meanwhile.
            n_threads = workers or max(1, min(cpus, num_tasks + 1))
            cluster = LocalCluster(
                n_workers=1, threads_per_worker=n_threads, processes=True, resources={"GPU": 1},
                dashboard_address=":0", silence_logs=_quiet(),
            )
            plugin_threads = max(1, cpus // n_threads)
        else:
            n = workers or default_workers(num_tasks=num_tasks)
            cluster = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=_quiet(),
            )
            plugin_threads = max(1, cpus // n)
        client = Client(cluster)
        client.register_plugin(TorchThreads(plugin_threads))
        n_workers = len(client.scheduler_info()["workers"])
        description = f"Dask LocalCluster, {n_workers} worker process(es)" + (" with the GPU" if uses_gpu else "")
        executor = DaskExecutor(client, gpu_resource=uses_gpu, description=description, cluster=cluster)
        executor.threads_per_task = plugin_threads
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise OSError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler there ({exc})") from None
        info = client.scheduler_info()["workers"]
        gpu_workers = [w for w in info.values() if w.get("resources", {}).get("GPU", 0) >= 1]
        if not gpu_workers and config["flow"]["name"] == "raft" and config["flow"]["device"] not in ("cpu",):
            log("no worker offers a 'GPU' resource (start GPU workers with `dask worker ... --resources GPU=1`); "
                "flow tasks run on any worker")
        description = f"Dask cluster at {scheduler}, {len(info)} worker(s), {len(gpu_workers)} with a GPU"
        executor = DaskExecutor(client, gpu_resource=bool(gpu_workers), description=description)
    log(f"scheduler: {executor.description}; dashboard: {executor.client.dashboard_link}")
    return executor
