"""`trackprep eval-tracks`: score an annotation store against ground-truth point tracks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from trackprep.cli_errors import user_errors

if TYPE_CHECKING:  # the evaluation (torch, scipy, zarr) is imported when the command runs
    from trackprep.eval.evaluate import EvalReport


def eval_tracks(
    store: str | Path,
    gt: str | Path,
    *,
    format: str | None = None,
    mode: str = "first",
    max_frames: int | None = None,
    json_out: str | Path | None = None,
) -> EvalReport:
    """Evaluate `store` against the ground truth in `gt`; optionally write the full report as JSON."""
    from trackprep.eval.evaluate import evaluate_store

    report = evaluate_store(store, gt, format=format, mode=mode, max_frames=max_frames)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def register(app: typer.Typer) -> None:
    @app.command("eval-tracks")
    def eval_tracks_cli(
        store: Path = typer.Option(..., "--store", help="Annotation store (A.zarr) written by `trackprep annotate`."),
        gt: Path = typer.Option(..., "--gt", help="Ground truth: a TAP-Vid pickle or a trackprep npz."),
        format: str = typer.Option(None, "--format", help="tapvid or npz (default: from the file suffix)."),
        mode: str = typer.Option("first", "--mode", help="TAP-Vid query mode: first or strided."),
        max_frames: int = typer.Option(None, "--max-frames", help="Score only each video's first N frames (e.g. 24)."),
        json_out: Path = typer.Option(None, "--json", help="Also write every metric, per video and mean, here."),
    ) -> None:
        """Per-video TAP-Vid metrics (position accuracy, occlusion accuracy, AJ) and PCK, and their mean."""
        from trackprep.eval.evaluate import EvaluationError, format_table
        from trackprep.eval.groundtruth import GroundTruthError
        from trackprep.io.annotation_store import StoreError

        with user_errors(StoreError, GroundTruthError, EvaluationError, ValueError):
            report = eval_tracks(store, gt, format=format, mode=mode, max_frames=max_frames, json_out=json_out)
        clip = f"; first {max_frames} frames of each video" if max_frames else ""
        typer.echo(f"query mode: {report.mode}{clip}; values x100")
        typer.echo(format_table(report))
        if report.unmatched:
            typer.echo(f"warning: {len(report.unmatched)} ground-truth video(s) not in the store: "
                       f"{', '.join(report.unmatched)}", err=True)
