"""Progress reporting for `annotate`: rich bars on a terminal, plain log lines otherwise.

Executors call `stage_done(video, stage)` and `video_done(result)`; they do not know
how progress is shown. Bars: one overall (videos) and one per video in flight (stages).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Sequence, TextIO

from trackprep.pipeline.plan import STATUS_LEFT


class NullProgress:
    def start(self, *, total: int, keys: Sequence[str], stages: Sequence[str]) -> None:
        pass

    def stage_done(self, key: str, stage: str) -> None:
        pass

    def video_done(self, result: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _describe(result: Any) -> str:
    if not result.ok:
        return f"FAILED {result.error}"
    if result.status == STATUS_LEFT:
        return f"left to another run: {result.error}"
    seconds = sum(result.timings.values())
    fg = result.fg_tracks / result.num_tracks if result.num_tracks else 0.0
    return f"{result.num_frames} frames, {result.num_tracks} tracks ({fg:.0%} foreground), {seconds:.1f} s"


class LogProgress(NullProgress):
    """One line per finished stage and per finished video (for logs, CI and batch jobs)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.total = 0
        self.done = 0
        self.t0 = time.perf_counter()

    def start(self, *, total: int, keys: Sequence[str], stages: Sequence[str]) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()
        self.write(f"annotating {total} video(s): stages {' -> '.join(stages)}")

    def stage_done(self, key: str, stage: str) -> None:
        self.write(f"  {key}: {stage} done")

    def video_done(self, result: Any) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        self.write(f"[{self.done}/{self.total}] {result.key}: {_describe(result)} (elapsed {elapsed:.0f} s)")


class RichProgress(NullProgress):
    """An overall bar of videos and one bar of stages per video in flight."""

    def __init__(self, *, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=False,
        )
        self.overall = None
        self.per_video: dict[str, Any] = {}
        self.stages: Sequence[str] = ()

    def start(self, *, total: int, keys: Sequence[str], stages: Sequence[str]) -> None:
        self.stages = stages
        self.bars.start()
        self.overall = self.bars.add_task("videos", total=total)

    def _video_bar(self, key: str) -> Any:
        if key not in self.per_video:
            self.per_video[key] = self.bars.add_task(f"  {key}", total=len(self.stages))
        return self.per_video[key]

    def stage_done(self, key: str, stage: str) -> None:
        self.bars.update(self._video_bar(key), advance=1, description=f"  {key} ({stage} done)")

    def video_done(self, result: Any) -> None:
        bar = self.per_video.pop(result.key, None)
        if bar is not None:
            self.bars.remove_task(bar)
        self.bars.advance(self.overall)
        self.bars.refresh()  # the line printed below redraws the bars: show the current state, not the last frame
        from rich.markup import escape

        style = "green" if result.ok else "red"
        self.console.print(f"[{style}]{escape(result.key)}[/{style}]: {escape(_describe(result))}", highlight=False)

    def close(self) -> None:
        self.bars.stop()


def make_progress(*, stream: TextIO | None = None, quiet: bool = False) -> NullProgress | LogProgress | RichProgress:
    """Bars when `stream` is a terminal, log lines when it is not (a file, a pipe, a batch job)."""
    stream = stream or sys.stderr
    if quiet:
        return NullProgress()
    if stream.isatty():
        return RichProgress()
    return LogProgress(lambda line: print(line, file=stream, flush=True))
