"""The `track4gen` command: train, sample, make-tiny-model. Thin wrappers over plain functions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from trackprep.cli_errors import user_errors

from track4gen.conditioning import FPS, MOTION_BUCKET_ID
from track4gen.data import FG_SHARE, NUM_PAIRS
from track4gen.losses import CORRESPONDENCE_WEIGHT, SOFTMAX_TEMPERATURE
from track4gen.model import TRAINABLE_CHOICES
from track4gen.tracking.cli import register as register_tracking

app = typer.Typer(
    name="track4gen",
    help="Track4Gen: fine-tune Stable Video Diffusion with a point-tracking refiner (CVPR 2025).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)




@app.command("train")
def train_cli(
    store: Path = typer.Option(..., "--store", help="Segment store written by `trackprep shard`."),
    pretrained: str = typer.Option(..., "--pretrained", help="Local stable-video-diffusion-img2vid-xt folder."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints/, logs/ (TensorBoard), config.json."),
    max_steps: int = typer.Option(20000, "--max-steps"),
    batch_size: int = typer.Option(1, "--batch-size", help="Segments per process per step."),
    gradient_accumulation_steps: int = typer.Option(1, "--gradient-accumulation-steps"),
    learning_rate: float = typer.Option(1e-5, "--learning-rate"),
    weight_decay: float = typer.Option(1e-2, "--weight-decay"),
    warmup_steps: int = typer.Option(0, "--warmup-steps"),
    trainable: str = typer.Option("temporal", "--trainable", help=f"One of {', '.join(TRAINABLE_CHOICES)}."),
    corr_weight: float = typer.Option(CORRESPONDENCE_WEIGHT, "--corr-weight", help="lambda in L_diff + lambda L_corr."),
    num_pairs: int = typer.Option(NUM_PAIRS, "--num-pairs", help="Correspondences per segment per step."),
    fg_share: float = typer.Option(FG_SHARE, "--fg-share"),
    temperature: float = typer.Option(SOFTMAX_TEMPERATURE, "--temperature", help="Soft-argmax softmax temperature."),
    conditioning_dropout: float = typer.Option(0.0, "--conditioning-dropout", help="Per-condition drop probability."),
    fps: int = typer.Option(FPS, "--fps", help="Frame rate the clips are conditioned on (SVD gets fps - 1)."),
    motion_bucket_id: int = typer.Option(MOTION_BUCKET_ID, "--motion-bucket-id"),
    mixed_precision: str = typer.Option("no", "--mixed-precision", help="no, fp16 or bf16."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing/--no-gradient-checkpointing"),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every"),
    checkpoints_total_limit: int = typer.Option(3, "--checkpoints-total-limit", help="Keep this many; 0 keeps all."),
    resume: Optional[str] = typer.Option(None, "--resume", help="'latest' or a checkpoint folder."),
    num_workers: int = typer.Option(2, "--num-workers", help="DataLoader workers per process."),
    seed: int = typer.Option(0, "--seed"),
    variant: Optional[str] = typer.Option(None, "--variant", help="Weight variant, e.g. fp16 (auto-detected)."),
    allow_hub: bool = typer.Option(False, "--allow-hub", help="Allow downloading --pretrained from the Hub."),
    cpu: bool = typer.Option(False, "--cpu", help="Train on CPU even when a GPU is present."),
) -> None:
    """Fine-tune SVD with the refiner and correspondence loss (runs under `accelerate launch` too)."""
    from track4gen.train import TrainConfig, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = TrainConfig(
        store=str(store), pretrained=pretrained, out=str(out), max_steps=max_steps, batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate,
        weight_decay=weight_decay, warmup_steps=warmup_steps, trainable=trainable, corr_weight=corr_weight,
        num_pairs=num_pairs, fg_share=fg_share, temperature=temperature, conditioning_dropout=conditioning_dropout,
        fps=fps, motion_bucket_id=motion_bucket_id,
        mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing,
        checkpoint_every=checkpoint_every, checkpoints_total_limit=checkpoints_total_limit, resume=resume,
        num_workers=num_workers, seed=seed, variant=variant, allow_hub=allow_hub, cpu=cpu,
    )
    with user_errors(FileNotFoundError, ValueError):
        result = train(cfg)
    typer.echo(f"trained steps {result.first_step}..{result.last_step}; last checkpoint "
               f"{result.checkpoints[-1] if result.checkpoints else '-'}")


@app.command("sample")
def sample_cli(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint folder, or a run folder (newest)."),
    image: Path = typer.Option(..., "--image", help="Conditioning image."),
    out: Path = typer.Option(..., "--out", help="Output video, .mp4 or .gif."),
    num_frames: Optional[int] = typer.Option(None, "--num-frames", help="Default: the model's (25 for SVD-xt)."),
    height: int = typer.Option(320, "--height"),
    width: int = typer.Option(576, "--width"),
    steps: int = typer.Option(30, "--steps"),
    motion_bucket_id: int = typer.Option(MOTION_BUCKET_ID, "--motion-bucket-id"),
    fps: int = typer.Option(FPS, "--fps"),
    seed: int = typer.Option(0, "--seed"),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Base model (default: the run's)."),
    allow_hub: bool = typer.Option(False, "--allow-hub"),
    device: Optional[str] = typer.Option(None, "--device"),
) -> None:
    """Image-to-video with a trained checkpoint (30-step EDM sampling, motion bucket 127, fps 7)."""
    from track4gen.sample import sample_video

    with user_errors(FileNotFoundError, ValueError):
        path = sample_video(checkpoint, image, out, num_frames=num_frames, height=height, width=width,
                            num_inference_steps=steps, motion_bucket_id=motion_bucket_id, fps=fps, seed=seed,
                            pretrained=pretrained, allow_hub=allow_hub, device=device)
    typer.echo(f"wrote {path}")


@app.command("make-tiny-model")
def make_tiny_model_cli(
    out: Path = typer.Argument(..., help="Folder to write the tiny SVD-shaped model to."),
    seed: int = typer.Option(0, "--seed"),
    num_frames: int = typer.Option(8, "--num-frames"),
) -> None:
    """Save a random, CPU-sized model with SVD's layout (for tests and trying the commands)."""
    from track4gen.tiny_model import make_tiny_model

    typer.echo(f"wrote {make_tiny_model(out, seed=seed, num_frames=num_frames)}")


register_tracking(app)  # track, eval-tracking (zero-shot tracking, Table 2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
