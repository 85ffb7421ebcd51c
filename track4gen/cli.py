"""The `track4gen` command: train, export, sample, make-tiny-model. Thin wrappers over plain functions."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer

from trackprep.cli_errors import user_errors

from track4gen.tracking.cli import register as register_tracking

# Option defaults, spelled out so that `--help` does not import torch (the modules named hold the
# same values and use them; tests/test_startup.py checks that they agree).
FPS, MOTION_BUCKET_ID = 7, 127  # track4gen.conditioning
FG_SHARE, NUM_PAIRS = 0.5, 512  # track4gen.data
CORRESPONDENCE_WEIGHT, SOFTMAX_TEMPERATURE = 8.0, 0.1  # track4gen.losses
DEFAULT_PRETRAINED = "stabilityai/stable-video-diffusion-img2vid-xt"  # track4gen.model
TRAINABLE_CHOICES = ("temporal", "spatial-temporal", "all")  # track4gen.model
VARIANTS = ("track4gen", "no-refiner", "finetune")  # track4gen.model
EMA_DECAY, EXPORT_DIR = 0.9999, "model"  # track4gen.train

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
    pretrained: str = typer.Option(DEFAULT_PRETRAINED, "--pretrained",
                                   help="Base SVD: a local diffusers folder or a Hub repo id (via the HF cache)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder: checkpoints/, logs/, config.json, model/. "
                                       "Default: runs/<store name>-<variant>."),
    variant: str = typer.Option("track4gen", "--variant", help=f"Table 1 model: {', '.join(VARIANTS)}."),
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
    soft_argmax: str = typer.Option("cosine", "--soft-argmax", help="cosine (Eq. 3) or softmax weights."),
    temperature: float = typer.Option(SOFTMAX_TEMPERATURE, "--temperature", help="For --soft-argmax softmax."),
    conditioning_dropout: float = typer.Option(0.0, "--conditioning-dropout", help="Per-condition drop probability."),
    fps: int = typer.Option(FPS, "--fps", help="Frame rate the clips are conditioned on (SVD gets fps - 1)."),
    motion_bucket_id: int = typer.Option(MOTION_BUCKET_ID, "--motion-bucket-id"),
    mixed_precision: str = typer.Option("auto", "--mixed-precision", help="auto (bf16 on CUDA), no, fp16 or bf16."),
    gradient_checkpointing: Optional[bool] = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Default: on with CUDA, off on CPU."),
    use_ema: bool = typer.Option(False, "--use-ema", help="Keep an EMA of the trained weights (exported when kept)."),
    ema_decay: float = typer.Option(EMA_DECAY, "--ema-decay"),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every"),
    checkpoints_total_limit: int = typer.Option(3, "--checkpoints-total-limit", help="Keep this many; 0 keeps all."),
    resume: Optional[str] = typer.Option(None, "--resume", help="'latest' or a checkpoint folder."),
    export: bool = typer.Option(True, "--export/--no-export", help="Write RUN/model after the last step."),
    num_workers: int = typer.Option(2, "--num-workers", help="DataLoader workers per process."),
    seed: int = typer.Option(0, "--seed"),
    weights_variant: Optional[str] = typer.Option(None, "--weights-variant",
                                                  help="Base model weight files, e.g. fp16 (auto-detected)."),
    cpu: bool = typer.Option(False, "--cpu", help="Train on CPU even when a GPU is present."),
) -> None:
    """Fine-tune SVD with the refiner and correspondence loss (runs under `accelerate launch` too)."""
    from track4gen.train import TrainConfig, train

    cfg = TrainConfig(
        store=str(store), pretrained=pretrained, out=str(out) if out is not None else None, variant=variant,
        max_steps=max_steps, batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate,
        weight_decay=weight_decay, warmup_steps=warmup_steps, trainable=trainable, corr_weight=corr_weight,
        num_pairs=num_pairs, fg_share=fg_share, soft_argmax=soft_argmax, temperature=temperature,
        conditioning_dropout=conditioning_dropout, fps=fps, motion_bucket_id=motion_bucket_id,
        mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing, use_ema=use_ema,
        ema_decay=ema_decay, checkpoint_every=checkpoint_every, checkpoints_total_limit=checkpoints_total_limit,
        resume=resume, export=export, num_workers=num_workers, seed=seed, weights_variant=weights_variant, cpu=cpu,
    )
    with user_errors(FileNotFoundError, ValueError), _progress_log():
        result = train(cfg)
    typer.echo(f"trained steps {result.first_step}..{result.last_step}; last checkpoint "
               f"{result.checkpoints[-1] if result.checkpoints else '-'}"
               + (f"; model {Path(cfg.out) / EXPORT_DIR}" if cfg.export else ""))


@contextlib.contextmanager
def _progress_log() -> Iterator[None]:
    """track4gen's INFO log lines on this command's stderr, for the command only: a handler left
    on the root logger (logging.basicConfig) would keep writing to the first caller's stream,
    closed by then when the CLI is invoked in-process (tests, notebooks)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    log = logging.getLogger("track4gen")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


@app.command("export")
def export_cli(
    run: Path = typer.Argument(..., help="Run folder (its newest checkpoint) or a checkpoint folder."),
    out: Path = typer.Option(..., "--out", help="Model folder to write (diffusers layout)."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Base model (default: the run's)."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Export the EMA weights when the run kept them."),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Write a trained model as a folder that loads alone (`track4gen.load_pipeline`, diffusers)."""
    from track4gen.export import export_model

    with user_errors(FileNotFoundError, FileExistsError, ValueError):
        path = export_model(run, out, pretrained=pretrained, ema=ema, overwrite=overwrite)
    typer.echo(f"wrote {path}")


@app.command("sample")
def sample_cli(
    model: Path = typer.Option(..., "--model", "--checkpoint",
                               help="Exported model folder, or a run / checkpoint folder."),
    image: Path = typer.Option(..., "--image", help="Conditioning image."),
    out: Path = typer.Option(..., "--out", help="Output video, .mp4 or .gif."),
    num_frames: Optional[int] = typer.Option(None, "--num-frames", help="Default: the model's (25 for SVD-xt)."),
    height: int = typer.Option(320, "--height"),
    width: int = typer.Option(576, "--width"),
    steps: int = typer.Option(30, "--steps"),
    motion_bucket_id: int = typer.Option(MOTION_BUCKET_ID, "--motion-bucket-id"),
    fps: int = typer.Option(FPS, "--fps"),
    seed: int = typer.Option(0, "--seed"),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Base model of a run (default: the run's)."),
    device: Optional[str] = typer.Option(None, "--device"),
) -> None:
    """Image-to-video with a Track4Gen model (30-step EDM sampling, motion bucket 127, fps 7)."""
    from track4gen.sample import sample_video

    with user_errors(FileNotFoundError, ValueError):
        path = sample_video(model, image, out, num_frames=num_frames, height=height, width=width,
                            num_inference_steps=steps, motion_bucket_id=motion_bucket_id, fps=fps, seed=seed,
                            pretrained=pretrained, device=device)
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
