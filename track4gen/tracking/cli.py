"""`track4gen track` and `track4gen eval-tracking`: thin wrappers over track4gen.tracking.evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from trackprep.cli_errors import user_errors

from track4gen.tracking.features import DEFAULT_BLOCK, DEFAULT_SIGMA
from trackprep.core.segments import SEGMENT_LENGTH

MODEL_HELP = ("Base SVD folder or Hub id, exported Track4Gen folder, "
              "training checkpoint or run folder (newest checkpoint).")


def register(app: typer.Typer) -> None:
    @app.command("track")
    def track_cli(
        model: str = typer.Option(..., "--model", help=MODEL_HELP),
        video: Path = typer.Option(..., "--video", help="Folder of numbered frames, or a video file (.mp4, .gif, ...)."),
        queries: Path = typer.Option(..., "--queries", help="(t, x, y) rows in the video's pixels: .npy, .txt or .csv."),
        out: Path = typer.Option(..., "--out", help="Tracks .npz (the ground-truth npz format: tracks, visible, queries)."),
        picture: Optional[Path] = typer.Option(None, "--picture", help="Also draw the matches: .png grid or .gif."),
        block: str = typer.Option(DEFAULT_BLOCK, "--block", help="UNet block to read (e.g. up_blocks[1].upsamplers[0])."),
        sigma: float = typer.Option(DEFAULT_SIGMA, "--sigma", help="EDM noise level of the one UNet pass."),
        size: str = typer.Option("320x576", "--size", help="Working resolution HxW."),
        segment_length: int = typer.Option(SEGMENT_LENGTH, "--segment-length", help="Frames per UNet pass (App. A.4)."),
        device: Optional[str] = typer.Option(None, "--device", help="Default: cuda when available."),
        soft_argmax: Optional[str] = typer.Option(None, "--soft-argmax", help="cosine or softmax (default: as the model was trained)."),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Track query points through a video with a video diffusion UNet's features (Sec. 3.2, 4.3.1)."""
        from track4gen.tracking.evaluate import track_file
        from trackprep.config import parse_size

        with user_errors(FileNotFoundError, ValueError):
            path, visible = track_file(model, video, queries, out, picture=picture, block=block, sigma=sigma,
                                       size=tuple(parse_size(size)), segment_length=segment_length, device=device,
                                       seed=seed, weighting=soft_argmax)
        typer.echo(f"wrote {path}: {visible.shape[0]} queries x {visible.shape[1]} frames, "
                   f"{100.0 * visible.mean():.1f}% visible" + (f"; picture {picture}" if picture else ""))

    @app.command("eval-tracking")
    def eval_tracking_cli(
        model: List[str] = typer.Option(..., "--model", help=MODEL_HELP + " Repeat for one row each."),
        gt: Path = typer.Option(..., "--gt", help="TAP-Vid pickle (tapvid_davis.pkl) or npz with '<video>/frames'."),
        format: Optional[str] = typer.Option(None, "--format", help="tapvid or npz (default: from the suffix)."),
        mode: str = typer.Option("first", "--mode", help="TAP-Vid query mode: first or strided."),
        frames: str = typer.Option("24", "--frames", help="24: first 24 frames (Table 2); all: whole videos."),
        block: Optional[List[str]] = typer.Option(None, "--block", help=f"Block(s) to read; default {DEFAULT_BLOCK}."),
        sigma: float = typer.Option(DEFAULT_SIGMA, "--sigma", help="EDM noise level of the one UNet pass."),
        size: str = typer.Option("320x576", "--size", help="Working resolution HxW."),
        segment_length: int = typer.Option(SEGMENT_LENGTH, "--segment-length"),
        device: Optional[str] = typer.Option(None, "--device"),
        pictures: Optional[Path] = typer.Option(None, "--pictures", help="Folder for one picture per video and row."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write every metric, per video, here."),
        soft_argmax: Optional[str] = typer.Option(None, "--soft-argmax", help="cosine or softmax (default: as the model was trained)."),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Zero-shot tracking scores in Table 2's layout: a row per model (and block)."""
        from track4gen.tracking.evaluate import evaluate_tracking, format_tracking_table
        from trackprep.config import parse_size

        with user_errors(FileNotFoundError, ValueError):
            rows = evaluate_tracking(model, gt, format=format, mode=mode, protocol=frames, blocks=block, sigma=sigma,
                                     size=tuple(parse_size(size)), segment_length=segment_length, device=device,
                                     pictures=pictures, seed=seed, weighting=soft_argmax)
        typer.echo(format_tracking_table(rows, protocol=frames, mode=mode))
        if json_out is not None:
            data = [{"model": r.model, "features": r.features, **r.report.to_dict()} for r in rows]
            json_out.write_text(json.dumps(data, indent=2) + "\n")
