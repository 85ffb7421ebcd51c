"""`trackprep annotate`, `info`, `validate` and `demo`: thin Typer wrappers over plain functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

# Exit codes: 0 all good, 1 some video failed / the store has violations, 2 the run could not
# start, 130 interrupted (Ctrl-C).
from trackprep.cli_errors import EXIT_FAILED, fail

EXIT_INTERRUPTED = 130


def _split_list(values: Optional[List[str]]) -> list[str]:
    """Repeatable options also accept comma-separated lists: --videos bear,cows."""
    out: list[str] = []
    for v in values or []:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return out


def pair_datasets(datasets: list[str], roots: list[Path]) -> list[tuple[str, Path]]:
    """--dataset and --root given in pairs, in order; with no --root at all, every dataset is
    looked for in the data home (trackprep.io.datahome), and a missing one stops the run."""
    from trackprep.io.datahome import locate_dataset

    if not datasets:
        raise ValueError("no --dataset given; expected --dataset NAME (repeatable), each with its --root DIR "
                         "unless it is in the data home (`trackprep datasets` lists what is there)")
    if roots and len(datasets) != len(roots):
        raise ValueError(f"{len(datasets)} --dataset but {len(roots)} --root; expected one --root per --dataset, "
                         "in order, or none to use the data home")
    return [(name, locate_dataset(name, root)) for name, root in zip(datasets, roots or [None] * len(datasets))]


def default_out(datasets: list[str]) -> Path:
    """annotations/<dataset>[+<dataset>...].zarr under the working directory (canonical names)."""
    from trackprep.io.datasets import canonical_name

    return Path("annotations") / ("+".join(dict.fromkeys(canonical_name(d) for d in datasets)) + ".zarr")


def run_annotate(
    *,
    datasets: list[str],
    roots: list[Path],
    out: Optional[Path] = None,
    config_path: Optional[Path] = None,
    overrides: dict[str, Any] | None = None,
    videos: list[str] | None = None,
    scheduler: str = "local",
    workers: Optional[int] = None,
    overwrite: bool = False,
    strict: bool = False,
    quiet: bool = False,
) -> int:
    """Resolve the datasets' folders, the output and the configuration, annotate, print the
    summary; returns the exit code. Nothing is created before every input is found."""
    from trackprep.config import ConfigError, resolve_config

    def log(line: str) -> None:
        if not quiet:
            typer.echo(line, err=True)

    try:
        pairs = pair_datasets(datasets, roots)
        config = resolve_config(path=config_path, overrides=overrides)
        if out is None:
            out = default_out(datasets)
            log(f"output: {out} (no --out given)")
    except (ValueError, OSError) as exc:  # DataHomeError, DatasetError and ConfigError are ValueErrors
        fail(str(exc))
    # Imported once the inputs are known to be there: a missing dataset is reported at once.
    from trackprep.pipeline.annotate import AnnotateError, annotate
    from trackprep.pipeline.malloc import return_large_frees_to_os
    from trackprep.pipeline.progress import make_progress

    return_large_frees_to_os()  # this process's RSS follows its live memory on long videos

    if not roots:
        for name, root in pairs:
            log(f"{name}: {root} (data home)")
    try:
        summary = annotate(
            datasets=pairs, out=out, config=config, videos=videos or None, overwrite=overwrite, strict=strict,
            scheduler=scheduler, workers=workers, progress=make_progress(quiet=quiet), log=log,
        )
    except (AnnotateError, ConfigError, ValueError, OSError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        # 128 + SIGINT, as shells report it. Each finished video was written and marked complete
        # on its own, so the store is resumable as it stands.
        typer.echo(f"\ninterrupted: videos finished so far are kept in {out}; run the same command again to "
                   "continue (complete videos are skipped, the interrupted ones redone)", err=True)
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    for line in summary.lines():
        typer.echo(line)
    return EXIT_FAILED if summary.failed else 0


def store_info_lines(path: Path) -> list[str]:
    """Human-readable description of an annotation store."""
    from trackprep.io.annotation_reader import open_annotations

    s = open_annotations(path).summary()
    lines = [
        f"{s['store']}: {s['format']} v{s['format_version']} (trackprep {s['package_version']})",
        f"videos: {s['videos_complete']} complete, {s['videos_failed']} failed, {len(s['videos_incomplete'])} incomplete",
        f"frames: {s['frames']}, tracks: {s['tracks']}, points: {s['points']}, "
        f"foreground share: {100 * s['foreground_share']:.1f}%",
    ]
    for v in s["per_video"]:
        fg = v["foreground_tracks"] / v["tracks"] if v["tracks"] else 0.0
        lines.append(f"  {v['video']}: {v['frames']} frames, {v['tracks']} tracks, {100 * fg:.1f}% foreground, "
                     f"tracks {v['track_bytes'] / v['frames'] / 1e6:.2f} MB per frame")
    for key in s["videos_incomplete"]:
        lines.append(f"  {key}: INCOMPLETE (interrupted; rerun annotate to redo it)")
    for key, err in s["failures"].items():
        lines.append(f"  {key}: FAILED {err}")
    for key, problem in s["damaged"].items():
        lines.append(f"  {key}: DAMAGED {problem} (rerun annotate to redo it)")
    lines.append("config: " + json.dumps(s["config"], sort_keys=True))
    return lines


# Spelled out so that `--help` reads no reader module; tests/test_startup.py checks it names every reader.
DATASET_NAMES_HELP = "davis2016, davis2017 (alias davis), segtrackv2, fbms59, jumpcut, imagefolder, synthetic"


def register(app: typer.Typer) -> None:
    dataset_help = f"Dataset name (repeatable): {DATASET_NAMES_HELP}."

    @app.command("annotate")
    def annotate_cli(
        dataset: List[str] = typer.Option([], "--dataset", help=dataset_help),
        root: List[Path] = typer.Option([], "--root", help="Folder of each --dataset, in the same order; "
                                        "default: the dataset's folder in the data home ($TRACKPREP_DATA)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Annotation store to create or resume (.zarr); "
                                           "default: annotations/<dataset>.zarr here."),
        videos: Optional[List[str]] = typer.Option(None, "--videos", help="Only these videos (NAME or DATASET/NAME; repeatable or comma-separated)."),
        config: Optional[Path] = typer.Option(None, "--config", help="Pipeline YAML, e.g. pipelines/track4gen.yaml; flags override it."),
        flow: Optional[str] = typer.Option(None, "--flow", help="Flow backend: raft (default), dis or oracle."),
        raft_model: Optional[str] = typer.Option(None, "--raft-model", help="RAFT variant: large (default) or small."),
        raft_weights: Optional[str] = typer.Option(None, "--raft-weights", help="Local RAFT .pth file."),
        iters: Optional[int] = typer.Option(None, "--iters", help="RAFT refinement iterations (default 24)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Frame pairs per RAFT call."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
        dis_preset: Optional[str] = typer.Option(None, "--dis-preset", help="DIS preset: ultrafast, fast, medium."),
        size: Optional[str] = typer.Option(None, "--size", help="Working size HxW (default 320x576)."),
        seed_stride: Optional[int] = typer.Option(None, "--seed-stride", help="Seed a track every N pixels (default 1)."),
        min_track_length: Optional[int] = typer.Option(
            None, "--min-track-length", help="Store only tracks of at least N frames (default 2)."),
        frames_codec: Optional[str] = typer.Option(None, "--frames-codec", help="lossless (default) or jpeg."),
        jpeg_quality: Optional[int] = typer.Option(None, "--jpeg-quality", help="JPEG quality 1..100 (default 95)."),
        cycle_threshold: Optional[float] = typer.Option(None, "--cycle-threshold", help="Forward-backward error limit in px (default 1.5)."),
        tracker: Optional[str] = typer.Option(None, "--tracker", help="chain (default, the paper's) or longrange (best of flow chains through gaps 1, 2, 4, 8; ~3.5x the flow)."),
        scheduler: str = typer.Option("local", "--scheduler", help="local (threads in this process, one video per core), processes (a LocalCluster of worker processes), serial, or the ADDRESS of a running Dask scheduler (prints its dashboard link)."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Videos at a time for local/processes (default: one per core, within memory)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing store built with another configuration."),
        strict: bool = typer.Option(False, "--strict", help="Stop at the first video that fails."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress output, only the summary."),
    ) -> None:
        """Annotate dataset videos with dense point tracks into a resumable Zarr store."""
        overrides = {
            "size": size,
            "flow": {"name": flow, "raft_model": raft_model, "raft_weights": raft_weights, "iters": iters,
                     "batch_size": batch_size, "device": device, "dis_preset": dis_preset},
            "tracks": {"seed_stride": seed_stride, "cycle_threshold": cycle_threshold,
                       "min_track_length": min_track_length, "tracker": tracker},
            "frames": {"codec": frames_codec, "jpeg_quality": jpeg_quality},
        }
        code = run_annotate(
            datasets=dataset, roots=root, out=out, config_path=config, overrides=overrides,
            videos=_split_list(videos), scheduler=scheduler, workers=workers, overwrite=overwrite,
            strict=strict, quiet=quiet,
        )
        raise typer.Exit(code=code)

    @app.command("info")
    def info_cli(
        store: Path = typer.Argument(..., help="An annotation store or a segment store."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Videos, frames, tracks, foreground share, failures and configuration of a store."""
        from trackprep.io import annotation_store as store_io
        from trackprep.io import schema

        if not (store / "zarr.json").is_file():  # info reads both kinds of store: say so, not "annotation store"
            what = "does not exist" if not store.exists() else "has no zarr.json (not a Zarr v3 group)"
            fail(f"{store}: {what}; expected a trackprep store: an annotation store (`trackprep annotate --out`) "
                 "or a segment store (`trackprep shard --out`)")
        if schema.store_format(store) == schema.SEGMENT_FORMAT:  # segment stores: trackprep/cli/shard_cmds.py
            from trackprep.cli.shard_cmds import segment_info
            from trackprep.io.segment_store import SegmentStoreError

            try:
                lines = segment_info(store, as_json=as_json)
            except (SegmentStoreError, KeyError) as exc:  # KeyError: an array of the contract is missing
                fail(f"{store}: unreadable segment store ({exc}); `trackprep validate {store}` lists what is wrong")
            for line in lines:
                typer.echo(line)
            return
        try:
            if as_json:
                from trackprep.io.annotation_reader import open_annotations

                typer.echo(json.dumps(open_annotations(store).summary(), indent=2, sort_keys=True))
            else:
                for line in store_info_lines(store):
                    typer.echo(line)
        except store_io.StoreError as exc:
            fail(str(exc))

    @app.command("validate")
    def validate_cli(
        store: Path = typer.Argument(..., help="A trackprep store."),
        quick: bool = typer.Option(False, "--quick", help="Only check that every file is there and unchanged "
                                   "(recorded CRC-32), without decoding the data or the contract rules."),
    ) -> None:
        """Check every contract rule of a store, reading every chunk; exit 1 on any violation."""
        from trackprep.io.validate import validate_store

        problems = validate_store(store, quick=quick)
        for p in problems:
            typer.echo(p)
        if problems:
            typer.echo(f"{store}: {len(problems)} violation(s)", err=True)
            raise typer.Exit(code=EXIT_FAILED)
        typer.echo(f"{store}: valid")

    @app.command("demo")
    def demo_cli(
        out: Path = typer.Option(Path("trackprep-demo"), "--out", help="Folder for the demo dataset, stores and pictures."),
        videos: int = typer.Option(2, "--videos", help="Number of synthetic videos."),
        flow: str = typer.Option("oracle", "--flow", help="oracle (exact motion) or dis (OpenCV, estimated)."),
        scheduler: str = typer.Option("local", "--scheduler", help="local, serial, processes or a Dask scheduler address."),
    ) -> None:
        """Synthetic videos -> annotation store -> training segments -> picture, offline, in under a minute."""
        from trackprep.demo import run_demo
        from trackprep.pipeline.annotate import AnnotateError
        from trackprep.pipeline.progress import make_progress

        if flow not in ("oracle", "dis"):
            fail(f"--flow {flow!r}: expected oracle or dis (the demo runs offline, without RAFT weights)")
        try:
            r = run_demo(out, num_videos=videos, flow=flow, scheduler=scheduler, progress=make_progress(),
                         log=lambda line: typer.echo(line, err=True))
        except (AnnotateError, ValueError, OSError) as exc:
            fail(str(exc))
        for line in r.summary.lines():
            typer.echo(line)
        for key, acc in r.accuracy.items():
            typer.echo(f"{key}: tracks vs exact ground truth: median {acc.median_px:.3f} px, "
                       f"95th percentile {acc.p95_px:.3f} px ({acc.points} points)")
        if r.segments is not None:
            typer.echo(f"segments: {r.num_segments} in {r.segments}")
        if r.picture is not None:
            typer.echo(f"picture: {r.picture} (and {r.picture.with_suffix('.gif')})")
        typer.echo("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items()))
        if r.summary.failed:
            raise typer.Exit(code=EXIT_FAILED)
