"""`trackprep shard` (annotation store -> 24-frame segment store) and `trackprep viz` (pictures of tracks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from trackprep.cli_errors import fail

# Option defaults, spelled out so that `--help` imports no store or drawing code (zarr, dask);
# tests/test_startup.py checks them against trackprep.io.segment_store and trackprep.viz.
DEFAULT_SEGMENTS_PER_SHARD = 8
DEFAULT_MAX_TRACKS = 400


def segment_info_lines(summary: dict) -> list[str]:
    """Human-readable description of a segment store (from segment_store_summary)."""
    s = summary
    n = s["tracks_per_segment"]
    status = "complete" if s["complete"] else f"INCOMPLETE: {s['segments_written']} of {s['segments']} written"
    if s["damaged"]:
        status = f"DAMAGED ({len(s['damaged'])} file(s) missing: `trackprep validate` lists them; shard --overwrite rebuilds)"
    lines = [
        f"{s['store']}: {s['format']} v{s['format_version']} (trackprep {s['package_version']}), {status}",
        f"segments: {s['segments']} of {s['length']} frames at {s['height']}x{s['width']}, from {len(s['videos'])} videos",
        f"tracks per segment: min {n['min']}, mean {n['mean']:.0f}, max {n['max']} (rows: {s['max_tracks']}, "
        f"{s['tracks_dtype']}); foreground share {100 * s['foreground_share']:.1f}%",
    ]
    if s["bytes"] is not None:
        per = s["bytes_per_segment"]
        lines.append(f"on disk: {s['bytes'] / 1e6:.1f} MB" + (f", {per / 1e6:.2f} MB per segment" if per else ""))
    for video, count in s["videos"].items():
        lines.append(f"  {video}: {count} segments")
    for video, frames in (s["config"] or {}).get("skipped_videos", []):
        lines.append(f"  {video}: skipped ({frames} frames < {s['length']})")
    lines += [f"  DAMAGED {problem}" for problem in s["damaged"]]
    lines.append("config: " + json.dumps(s["config"], sort_keys=True))
    return lines


def segment_info(store: Path, *, as_json: bool) -> list[str]:
    """`trackprep info` output for a segment store."""
    from trackprep.io.segment_store import open_segment_store, segment_store_summary

    summary = segment_store_summary(open_segment_store(store))
    return [json.dumps(summary, indent=2, sort_keys=True)] if as_json else segment_info_lines(summary)


def register(app: typer.Typer) -> None:
    @app.command("shard")
    def shard_cli(
        store: Path = typer.Option(..., "--store", help="Annotation store (A.zarr) written by `trackprep annotate`."),
        out: Optional[Path] = typer.Option(None, "--out", help="Segment store to write (S.zarr); rerun to resume it. "
                                           "Default: segments/<name of --store>.zarr here."),
        config: Optional[Path] = typer.Option(None, "--config", help="Pipeline YAML (its shard: section), e.g. "
                                              "pipelines/track4gen.yaml; flags override it."),
        length: Optional[int] = typer.Option(None, "--length", help="Frames per segment (default 24, Track4Gen)."),
        stride: int = typer.Option(None, "--stride", help="Frames between segment starts (default: --length)."),
        tracks: Optional[int] = typer.Option(None, "--tracks", help="Tracks kept per segment, rows padded (default 8192)."),
        fg_share: Optional[float] = typer.Option(None, "--fg-share", help="Share of foreground tracks when both classes suffice (default 0.5)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the per-segment track draw (default 0)."),
        tracks_dtype: str = typer.Option("float32", "--tracks-dtype", help="float32, or float16 to halve track bytes."),
        segments_per_shard: int = typer.Option(DEFAULT_SEGMENTS_PER_SHARD, "--segments-per-shard",
                                               help="Segments per shard file (and per parallel task)."),
        frames_codec: Optional[str] = typer.Option(None, "--frames-codec", help="lossless (default) or jpeg."),
        jpeg_quality: Optional[int] = typer.Option(None, "--jpeg-quality", help="JPEG quality 1..100 (default 95)."),
        scheduler: str = typer.Option("local", "--scheduler",
                                      help="local (threads in this process), processes (a LocalCluster of worker "
                                           "processes), serial, or the ADDRESS of a running Dask scheduler (as for annotate)."),
        workers: int = typer.Option(None, "--workers", help="Threads (or worker processes); default one per core."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing segment store."),
    ) -> None:
        """Cut every complete video into L-frame segments with a balanced, fixed number of tracks each."""
        from trackprep.config import resolve_config
        from trackprep.io.annotation_store import StoreError
        from trackprep.io.segment_store import SegmentStoreError
        from trackprep.pipeline.shard import shard

        if out is None:
            name = store.resolve().name
            out = Path("segments") / (name if name.endswith(".zarr") else f"{name}.zarr")
            if out.resolve() == store.resolve():
                fail(f"--store {store} is where the default --out would go; expected --out S.zarr naming another path")
            typer.echo(f"output: {out} (no --out given)", err=True)
        try:
            # The defaults, and a --config file, come from trackprep.config like annotate's; flags override them.
            resolved = resolve_config(path=config, overrides={"shard": {
                "segment_length": length, "tracks_per_segment": tracks, "fg_share": fg_share, "seed": seed},
                "frames": {"codec": frames_codec, "jpeg_quality": jpeg_quality}})
            cfg, frames_cfg = resolved["shard"], resolved["frames"]
            length = cfg["segment_length"]
            result = shard(store, out, length=length, stride=stride, tracks=cfg["tracks_per_segment"],
                           fg_share=cfg["fg_share"], seed=cfg["seed"], frames_codec=frames_cfg["codec"],
                           jpeg_quality=frames_cfg["jpeg_quality"],
                           tracks_dtype=tracks_dtype, segments_per_shard=segments_per_shard, scheduler=scheduler,
                           workers=workers, overwrite=overwrite, log=lambda line: typer.echo(line, err=True))
        except (StoreError, SegmentStoreError, OSError, ValueError) as exc:
            fail(exc)
        n = result.tracks_per_segment
        typer.echo(f"{result.out}: {result.num_segments} segments of {length} frames "
                   f"({result.written} written now); tracks per segment min {n.min() if n.size else 0}, "
                   f"max {n.max() if n.size else 0}")
        for video, frames in result.skipped_videos:
            typer.echo(f"skipped {video}: {frames} frames < --length {length}")
        for video, status in result.incomplete_videos:
            typer.echo(f"left out {video}: {status} in {store} (not complete; rerun annotate, then shard with --overwrite)")

    @app.command("viz")
    def viz_cli(
        store: Path = typer.Argument(..., help="Annotation store (with --video) or segment store (with --segment)."),
        out: Path = typer.Option(..., "--out", help="FILE.gif, FILE.mp4 or FILE.png."),
        video: str = typer.Option(None, "--video", help="DATASET/VIDEO of an annotation store."),
        segment: int = typer.Option(None, "--segment", help="Segment index of a segment store."),
        color_by: str = typer.Option("rainbow", "--color-by", help="rainbow (by start position) or label (fg/bg)."),
        masks: bool = typer.Option(False, "--masks", help="Tint the segmentation masks."),
        max_tracks: int = typer.Option(DEFAULT_MAX_TRACKS, "--max-tracks", help="Tracks drawn, spread over the frame."),
        tail: int = typer.Option(6, "--tail", help="Frames of trail behind each point."),
        radius: int = typer.Option(2, "--radius", help="Dot radius in pixels."),
        fps: float = typer.Option(10.0, "--fps", help="Frame rate of a gif or mp4."),
        frame: int = typer.Option(None, "--frame", help="For .png: this frame alone (default: a grid of 8 frames)."),
    ) -> None:
        """Draw tracks over the frames of one video or segment."""
        from trackprep.io.annotation_store import StoreError
        from trackprep.io.segment_store import SegmentStoreError
        from trackprep.viz import VizError, viz

        try:
            path = viz(store, out, video=video, segment=segment, color_by=color_by, show_masks=masks,
                       max_tracks=max_tracks, tail=tail, radius=radius, fps=fps, frame=frame)
        except (StoreError, SegmentStoreError, VizError, FileNotFoundError, IndexError, ValueError) as exc:
            fail(exc)
        typer.echo(f"wrote {path}")
