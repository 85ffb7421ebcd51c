"""`trackprep selfcheck`: the trajectory core on a synthetic clip, scored against exact ground truth."""

from __future__ import annotations

import typer

from trackprep.config import ConfigError, parse_size


def selfcheck(
    frames: int = typer.Option(24, help="Clip length."),
    size: str = typer.Option("320x576", help="HxW of the synthetic clip."),
    seed: int = typer.Option(0, help="Scene seed."),
) -> None:
    """Chain exact flow of a synthetic clip and print track accuracy against ground truth."""
    from trackprep.selfcheck import run_selfcheck  # torch: imported only when the command runs

    try:
        height, width = parse_size(size)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--size") from None
    if frames < 2 or height < 2 or width < 2:
        raise typer.BadParameter(f"expected at least 2 frames of at least 2x2 pixels, got {frames} frames of {height}x{width}")
    r = run_selfcheck(seed=seed, num_frames=frames, height=height, width=width)
    typer.echo(f"synthetic clip: {r.num_frames} frames at {r.height}x{r.width}, {r.num_tracks} tracks "
               f"({100 * r.foreground_share:.1f}% foreground)")
    typer.echo(f"track error against ground truth: median {r.median_error_px:.2e} px, 99th percentile {r.p99_error_px:.3f} px")
    typer.echo(f"time: render {r.render_s:.2f} s, exact flow {r.flow_s:.2f} s, chain+cycle+seed {r.chain_s:.2f} s, "
               f"label {r.label_s:.2f} s")


def register(app: typer.Typer) -> None:
    app.command("selfcheck")(selfcheck)
