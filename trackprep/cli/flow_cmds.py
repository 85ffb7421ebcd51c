"""`trackprep eval-flow`: optical-flow accuracy of a backend on an image pair with ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from trackprep.cli_errors import user_errors

if TYPE_CHECKING:  # the flow backends (torch, OpenCV) are imported when the command runs
    from trackprep.core.flow_metrics import FlowErrors


def eval_flow(
    frame1: str | Path,
    frame2: str | Path,
    *,
    gt: str | Path,
    flow: str = "raft",
    raft_model: str = "large",
    raft_weights: str | Path | None = None,
    iters: int = 24,
    device: str = "auto",
    dis_preset: str = "medium",
) -> FlowErrors:
    from trackprep.flow import FlowSetupError, make_estimator
    from trackprep.flow.evaluate import evaluate_pair

    if flow not in ("raft", "dis"):
        raise FlowSetupError(f"--flow: expected raft or dis (the oracle needs a synthetic clip), got {flow!r}")
    estimator = make_estimator(
        flow, raft_model=raft_model, raft_weights=raft_weights, iters=iters, device=device, dis_preset=dis_preset
    )
    return evaluate_pair(frame1, frame2, gt=gt, estimator=estimator)


def register(app: typer.Typer) -> None:
    @app.command("eval-flow")
    def eval_flow_cli(
        frame1: Path = typer.Argument(..., help="First frame (colour or greyscale image)."),
        frame2: Path = typer.Argument(..., help="Second frame, same size."),
        gt: Path = typer.Option(..., "--gt", help="Ground-truth flow frame1 -> frame2, Middlebury .flo."),
        flow: str = typer.Option("raft", "--flow", help="Backend: raft or dis."),
        raft_model: str = typer.Option("large", "--raft-model", help="RAFT variant: large or small."),
        raft_weights: Path = typer.Option(
            None, "--raft-weights", help="Local RAFT .pth (else $TRACKPREP_RAFT_WEIGHTS, torchvision's cache, download)."
        ),
        iters: int = typer.Option(24, "--iters", help="RAFT refinement iterations."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
        dis_preset: str = typer.Option("medium", "--dis-preset", help="DIS preset: ultrafast, fast or medium."),
    ) -> None:
        """Average end-point error and share of pixels over 1 px and 3 px, of FRAME1 -> FRAME2 flow."""
        from trackprep.flow import FlowSetupError

        with user_errors(FlowSetupError, ValueError, FileNotFoundError):
            errors = eval_flow(
                frame1, frame2, gt=gt, flow=flow, raft_model=raft_model, raft_weights=raft_weights,
                iters=iters, device=device, dis_preset=dis_preset,
            )
        typer.echo(f"flow: {flow}")
        typer.echo(f"AEPE: {errors.aepe:.4f} px")
        typer.echo(f"> 1 px: {100 * errors.over_1px:.2f} %")
        typer.echo(f"> 3 px: {100 * errors.over_3px:.2f} %")
