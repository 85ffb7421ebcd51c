"""`track4gen train`: fine-tune Stable Video Diffusion with Track4Gen's refiner and correspondence loss.

One linear script in numbered steps (the shape of diffusers' train_text_to_image.py):
1. Accelerate, logging, seeds; 2. streaming data (the store's metadata) and the base model
found (a folder, or the Hub id through the Hugging Face cache) before any segment is read; 3. load SVD, choose the
trainable parameters and attach the variant's head; 4. optimiser, LR schedule, EMA;
5. resume; 6. the loop (L = L_diff + lambda * L_corr, Sec. 3.3), with rotated checkpoints and
TensorBoard scalars; 7. export the last checkpoint as a model folder (RUN/model).
Run data-parallel on many GPUs/machines with `accelerate launch -m track4gen.cli train ...`.

Precision follows the full-size recipe of SVD fine-tuning (Stability's generative-models SVD
configs and SVD_Xtend's train_svd.py): on CUDA, bf16 autocast with fp32 master weights and
gradient checkpointing unless switched off; the VAE always encodes in fp32. On CPU both are
off (fp32), so tests and small runs are exact.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from track4gen import checkpoint as ckpt
from track4gen import conditioning as cond
from track4gen.data import FG_SHARE, NUM_PAIRS, SegmentStream, model_frames
from track4gen.export import EMA_WEIGHTS, export_model
from track4gen.losses import (
    CORRESPONDENCE_WEIGHT,
    SOFT_ARGMAX_CHOICES,
    SOFTMAX_TEMPERATURE,
    correspondence_loss,
    diffusion_loss,
    edm_scalings,
    sample_sigmas,
)
from track4gen.model import (
    DEFAULT_PRETRAINED,
    TRAINABLE_CHOICES,
    VARIANTS,
    SVDComponents,
    Track4GenModel,
    load_components,
    make_head,
    resolve_pretrained,
    select_trainable,
)

logger = logging.getLogger("track4gen.train")


PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")
EMA_DECAY = 0.9999  # diffusers' EMAModel default, which SVD_Xtend's --use_ema uses
EXPORT_DIR = "model"  # RUN/model: the last checkpoint as a shareable model folder


def default_out(store: str, variant: str) -> str:
    """runs/<store name>-<variant>: the same command resumes the same run."""
    return str(Path("runs") / f"{Path(store).stem}-{variant}")


@dataclass
class TrainConfig:
    store: str
    pretrained: str = DEFAULT_PRETRAINED
    out: str | None = None  # default: default_out(store, variant)
    variant: str = "track4gen"  # Table 1: track4gen, no-refiner, finetune
    max_steps: int = 20000
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5  # Sec. 4.1 / App.: AdamW, lr 1e-5
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    trainable: str = "temporal"
    corr_weight: float = CORRESPONDENCE_WEIGHT
    num_pairs: int = NUM_PAIRS
    fg_share: float = FG_SHARE
    soft_argmax: str = "cosine"  # Eq. 3 (raw cosine weights) or "softmax"
    temperature: float = SOFTMAX_TEMPERATURE  # for soft_argmax="softmax" only
    fps: int = cond.FPS
    motion_bucket_id: int = cond.MOTION_BUCKET_ID
    conditioning_dropout: float = 0.0
    mixed_precision: str = "auto"  # "auto" (bf16 on CUDA, else no), "no", "fp16", "bf16"
    gradient_checkpointing: bool | None = None  # None: on for CUDA, off on CPU
    use_ema: bool = False
    ema_decay: float = EMA_DECAY
    export: bool = True  # write RUN/model after the last step
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 3
    resume: str | None = None  # "latest" or a checkpoint folder
    num_workers: int = 2
    seed: int = 0
    weights_variant: str | None = None  # e.g. "fp16": which weight files of the base model to read
    log_every: int = 1
    cpu: bool = False  # force CPU (with torchrun: data-parallel over CPU processes, gloo)

    def __post_init__(self) -> None:
        if self.out is None:
            self.out = default_out(self.store, self.variant)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def uses_cuda(self) -> bool:
        return not self.cpu and torch.cuda.is_available()

    @property
    def resolved_mixed_precision(self) -> str:
        if self.mixed_precision == "auto":
            return "bf16" if self.uses_cuda else "no"
        return self.mixed_precision

    @property
    def resolved_gradient_checkpointing(self) -> bool:
        return self.uses_cuda if self.gradient_checkpointing is None else self.gradient_checkpointing

    @property
    def effective_corr_weight(self) -> float:
        return 0.0 if self.variant == "finetune" else self.corr_weight


@dataclass
class TrainResult:
    first_step: int  # the step number the run started at (1, or last checkpoint + 1)
    last_step: int
    losses: list[dict[str, float]]  # per optimiser step: step, total, diffusion, correspondence
    checkpoints: list[Path]


def validate(cfg: TrainConfig) -> None:
    if cfg.max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {cfg.max_steps}")
    if cfg.batch_size < 1 or cfg.gradient_accumulation_steps < 1:
        raise ValueError(f"batch_size and gradient_accumulation_steps must be >= 1, got "
                         f"{cfg.batch_size}, {cfg.gradient_accumulation_steps}")
    if cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}")
    if cfg.mixed_precision not in PRECISION_CHOICES:
        raise ValueError(f"mixed_precision: expected one of {PRECISION_CHOICES}, got {cfg.mixed_precision!r}")
    if cfg.variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {cfg.variant!r}")
    if cfg.soft_argmax not in SOFT_ARGMAX_CHOICES:
        raise ValueError(f"soft_argmax: expected one of {SOFT_ARGMAX_CHOICES}, got {cfg.soft_argmax!r}")
    if not 0.0 < cfg.ema_decay < 1.0:
        raise ValueError(f"ema_decay: expected a value in (0, 1), got {cfg.ema_decay}")
    # Checked here rather than where they are used, so a bad option fails before SVD loads.
    if cfg.trainable not in TRAINABLE_CHOICES:
        raise ValueError(f"trainable: expected one of {TRAINABLE_CHOICES}, got {cfg.trainable!r}")
    if not 0.0 <= cfg.conditioning_dropout <= 1.0 / 3.0:
        raise ValueError(f"conditioning_dropout: expected a probability in [0, 1/3], got {cfg.conditioning_dropout}")
    if cfg.num_pairs < 1 or not 0.0 <= cfg.fg_share <= 1.0:
        raise ValueError(f"num_pairs must be >= 1 and fg_share in [0, 1], got {cfg.num_pairs}, {cfg.fg_share}")
    if cfg.checkpoints_total_limit < 0:
        raise ValueError(f"checkpoints_total_limit must be >= 0 (0 keeps all), got {cfg.checkpoints_total_limit}")
    if not Path(cfg.store).exists():
        raise FileNotFoundError(f"--store {cfg.store}: no such segment store")


LOSS_KEYS = ("total", "diffusion", "correspondence")


def compute_losses(
    model: torch.nn.Module,
    parts: SVDComponents,
    batch: dict[str, torch.Tensor],
    *,
    cfg: TrainConfig,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """One forward pass: {'total', 'diffusion', 'correspondence'} for a batch from SegmentStream."""
    frames = batch["frames"]
    if frames.dtype == torch.uint8:  # scale_frames=False: scale on the device
        frames = model_frames(frames)
    # frames: [B, F, 3, H, W] in [-1, 1]
    b, f, _, height, width = frames.shape
    device = frames.device
    fe = parts.feature_extractor
    with torch.no_grad():
        latents = cond.encode_video(parts.vae, frames, generator=generator).float()
        aug = cond.sample_cond_aug(b, generator=generator).to(device)
        first = frames[:, 0]
        noise0 = torch.randn(first.shape, generator=generator).to(device)
        cond_latents = cond.encode_condition(parts.vae, first + aug.view(b, 1, 1, 1) * noise0).float()
        embeddings = cond.clip_image_embeddings(parts.image_encoder, first, mean=fe.image_mean, std=fe.image_std).float()
    if cfg.conditioning_dropout > 0:
        keep_emb, keep_img = cond.conditioning_dropout_masks(b, prob=cfg.conditioning_dropout, generator=generator)
        embeddings = embeddings * keep_emb.to(device).view(b, 1, 1)
        cond_latents = cond_latents * keep_img.to(device).view(b, 1, 1, 1)
    time_ids = cond.added_time_ids(fps=cfg.fps, motion_bucket_id=cfg.motion_bucket_id, noise_aug_strength=aug)

    sigma = sample_sigmas(b, generator=generator, device=device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    noisy = latents + sigma.view(b, 1, 1, 1, 1) * noise
    sc = edm_scalings(sigma)
    unet_in = torch.cat([sc.c_in.view(b, 1, 1, 1, 1) * noisy, cond_latents.unsqueeze(1).expand(-1, f, -1, -1, -1)], dim=2)
    out, features = model(unet_in, sc.c_noise, embeddings, time_ids)
    l_diff = diffusion_loss(out, noisy, latents, sigma)
    if features is None:  # "finetune": no head, no correspondence loss
        return {"total": l_diff, "diffusion": l_diff, "correspondence": torch.zeros_like(l_diff)}
    l_corr = correspondence_loss(
        features,
        query_frame=batch["query_frame"], query_xy=batch["query_xy"],
        target_frame=batch["target_frame"], target_xy=batch["target_xy"],
        valid=batch["valid"], image_size=(height, width), weighting=cfg.soft_argmax, temperature=cfg.temperature,
    )
    return {"total": l_diff + cfg.effective_corr_weight * l_corr, "diffusion": l_diff, "correspondence": l_corr}


def build_model(parts: SVDComponents, *, cfg: TrainConfig) -> tuple[Track4GenModel, list[str]]:
    """The variant's model; returns it and the names of the trainable UNet parameters (head excluded)."""
    parts.vae.requires_grad_(False).eval()
    parts.image_encoder.requires_grad_(False).eval()
    names = select_trainable(parts.unet, which=cfg.trainable)
    model = Track4GenModel(parts.unet, make_head(parts.unet, variant=cfg.variant))
    if cfg.resolved_gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
    return model, names


def trainable_named(model: Track4GenModel) -> list[tuple[str, torch.nn.Parameter]]:
    """(checkpoint key, parameter) of everything that trains, keyed as checkpoint.trainable_state keys it."""
    named = [(f"unet.{n}", p) for n, p in model.unet.named_parameters()
             if p.requires_grad and not n.startswith("tracking_head.")]
    if model.head is not None:
        named += [(f"head.{n}", p) for n, p in model.head.named_parameters() if p.requires_grad]
    return named


def make_optimizer(model: Track4GenModel, *, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for _, p in trainable_named(model)]
    return torch.optim.AdamW(params, lr=cfg.learning_rate, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)


class TrainedEMA:
    """EMA of the trained parameters (diffusers' EMAModel, as SVD_Xtend's --use_ema), saved by key."""

    def __init__(self, model: Track4GenModel, *, decay: float) -> None:
        from diffusers.training_utils import EMAModel

        self.named = trainable_named(model)
        self.model = model
        self.ema = EMAModel([p for _, p in self.named], decay=decay)

    def step(self) -> None:
        self.ema.step([p for _, p in self.named])

    def state(self) -> dict[str, torch.Tensor]:
        """Checkpoint-keyed EMA weights; the head's BatchNorm statistics are the live ones."""
        out = {k: s.detach().contiguous().cpu() for (k, _), s in zip(self.named, self.ema.shadow_params)}
        if self.model.head is not None:
            out.update({f"head.{n}": b.detach().contiguous().cpu() for n, b in self.model.head.named_buffers()})
        return out

    def load(self, state: dict[str, torch.Tensor], *, step: int) -> None:
        with torch.no_grad():
            for (k, _), s in zip(self.named, self.ema.shadow_params):
                s.copy_(state[k])
        self.ema.optimization_step = step


def make_scheduler(optimizer: torch.optim.Optimizer, *, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(cfg.warmup_steps, 0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train(cfg: TrainConfig) -> TrainResult:
    """Run training to `cfg.max_steps`; see the module docstring for the steps."""
    from accelerate.state import AcceleratorState

    validate(cfg)
    try:
        return _train(cfg)
    finally:
        # Accelerate keeps one process-wide state; clear it so another run in this process
        # (tests, notebooks) may choose a different precision or device.
        AcceleratorState._reset_state(reset_partial_state=True)


def _train(cfg: TrainConfig) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    out = Path(cfg.out)
    # 1. Accelerate: device placement, DDP, mixed precision, gradient accumulation, TensorBoard.
    accelerator = Accelerator(
        cpu=cfg.cpu,
        mixed_precision=cfg.resolved_mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + rank)  # per-process noise stream
    torch.manual_seed(cfg.seed + rank)

    # 2. Data, opened before SVD loads so that a wrong store fails fast. The dataset splits by
    # rank itself, so the DataLoader is not handed to Accelerate.
    dataset = SegmentStream(cfg.store, num_pairs=cfg.num_pairs, fg_share=cfg.fg_share, seed=cfg.seed,
                            scale_frames=False, rank=rank, world_size=world)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers, drop_last=True,
                        pin_memory=accelerator.device.type == "cuda")
    # The base model (a Hub id resolves through the HF cache): found, or a one-line error, before
    # any segment is read (only the store's metadata has been).
    base = resolve_pretrained(cfg.pretrained, variant=cfg.weights_variant)

    # 3. SVD components. The UNet keeps fp32 master weights (autocast computes in the
    # mixed-precision dtype); the CLIP encoder is frozen and cast; the VAE stays fp32, as in
    # SVD_Xtend (its latents are the regression target, and fp16 VAEs overflow).
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    parts = load_components(base, variant=cfg.weights_variant)  # resolved above: no second Hub lookup
    model, trainable_names = build_model(parts, cfg=cfg)
    parts.vae.to(accelerator.device)
    parts.image_encoder.to(accelerator.device, dtype=weight_dtype)

    # 4. Optimiser over the temporal blocks (by default) and the variant's head; optional EMA.
    optimizer = make_optimizer(model, cfg=cfg)
    scheduler = make_scheduler(optimizer, cfg=cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    ema = TrainedEMA(unwrapped, decay=cfg.ema_decay) if cfg.use_ema else None

    # 5. Resume: weights, optimiser, schedule, RNG streams and the position in the data.
    step, epoch, batches_done = 0, 0, 0
    if cfg.resume:
        where = ckpt.resolve_checkpoint(out, cfg.resume)  # verified; "latest" skips damaged ones (logged)
        state = ckpt.read_state(where)
        ckpt.load_trainable_state(unwrapped, ckpt.load_weights(where))
        optimizer.load_state_dict(ckpt.load_optimizer_state(where / ckpt.OPTIMIZER))
        scheduler.load_state_dict(state["scheduler"])
        rng_file = where / ckpt.rng_name(rank)
        if rng_file.is_file():
            ckpt.restore_rng(rng_file, generator)
        step, epoch, batches_done = state["step"], state["epoch"], state["batches_done"]
        if ema is not None and (where / EMA_WEIGHTS).is_file():
            from safetensors.torch import load_file

            ema.load(load_file(str(where / EMA_WEIGHTS)), step=state.get("ema_step", step))
        if state.get("num_processes", world) != world:
            # The data position counts batches per process: it does not carry over to another layout.
            logger.warning("checkpoint was written by %s processes, resuming with %d: the epoch restarts",
                           state.get("num_processes"), world)
            batches_done = 0
        logger.info("resumed from %s at step %d", where, step)
    first_step = step + 1
    if step >= cfg.max_steps:
        raise ValueError(f"checkpoint is at step {step}, already >= --max-steps {cfg.max_steps}")

    accelerator.init_trackers("track4gen", config={k: str(v) for k, v in cfg.to_dict().items()})
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        logger.info("variant %s: training %d UNet tensors%s; lambda %g; %s precision%s; %d processes; from step %d",
                    cfg.variant, len(trainable_names), " + head" if unwrapped.head is not None and cfg.variant == "track4gen" else "",
                    cfg.effective_corr_weight, accelerator.mixed_precision,
                    ", gradient checkpointing" if cfg.resolved_gradient_checkpointing else "", world, first_step)

    # 6. The loop: epochs of the streaming dataset until max_steps optimiser steps.
    losses: list[dict[str, float]] = []
    saved: list[Path] = []
    model.train()
    t0 = time.perf_counter()
    for epoch in itertools.count(epoch):
        dataset.set_epoch(epoch, skip_batches=batches_done, batch_size=cfg.batch_size)
        seen_any = False
        for batch in loader:
            seen_any = True
            batches_done += 1
            with accelerator.accumulate(model):
                terms = compute_losses(model, parts, _to_device(batch, accelerator.device), cfg=cfg, generator=generator)
                accelerator.backward(terms["total"])
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step()
            scheduler.step()
            step += 1
            # Mean over processes (a collective: every rank takes part), for logs and the result.
            means = accelerator.reduce(torch.stack([terms[k].detach().float() for k in LOSS_KEYS]), reduction="mean")
            record = {"step": step, **dict(zip(LOSS_KEYS, means.tolist()))}
            losses.append(record)
            if step % cfg.log_every == 0 and accelerator.is_main_process:
                accelerator.log({"loss/total": record["total"], "loss/diffusion": record["diffusion"],
                                 "loss/correspondence": record["correspondence"],
                                 "lr": scheduler.get_last_lr()[0]}, step=step)
                logger.info("step %d  L=%.4f  L_diff=%.4f  L_corr=%.4f  (%.2fs/step)", step, record["total"],
                            record["diffusion"], record["correspondence"], (time.perf_counter() - t0) / len(losses))
            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
                saved.append(_save(accelerator, out, step, unwrapped, optimizer, scheduler, generator,
                                   epoch=epoch, batches_done=batches_done, cfg=cfg, ema=ema))
            if step >= cfg.max_steps:
                if cfg.export and accelerator.is_main_process:  # 7. the shareable model folder
                    logger.info("exported %s", export_model(saved[-1], out / EXPORT_DIR, overwrite=True))
                accelerator.wait_for_everyone()
                accelerator.end_training()  # (this also ends the process group)
                return TrainResult(first_step=first_step, last_step=step, losses=losses, checkpoints=saved)
        if not seen_any and batches_done == 0:
            raise ValueError(
                f"{cfg.store}: an epoch gave no batch ({len(dataset.reader)} segments over {world} processes, "
                f"batch size {cfg.batch_size}); use a smaller batch or more segments"
            )
        batches_done = 0
    raise AssertionError("unreachable")


def _save(accelerator, out: Path, step: int, model, optimizer, scheduler, generator, *, epoch: int,
          batches_done: int, cfg: TrainConfig, ema: TrainedEMA | None = None) -> Path:
    ckpt.write_process_rng(out, step, accelerator.process_index, generator)
    accelerator.wait_for_everyone()
    final = ckpt.checkpoint_dir(out, step)
    if accelerator.is_main_process:
        state = {"step": step, "epoch": epoch, "batches_done": batches_done, "scheduler": scheduler.state_dict(),
                 "num_processes": accelerator.num_processes, "config": cfg.to_dict()}
        if ema is not None:
            from safetensors.torch import save_file

            state["ema_step"] = ema.ema.optimization_step
            save_file(ema.state(), str(ckpt.staging_dir(out, step) / EMA_WEIGHTS))
        ckpt.write_main(out, step, model=model, optimizer=optimizer, state=state)
        final = ckpt.publish(out, step, keep=cfg.checkpoints_total_limit)
        logger.info("saved %s", final)
    accelerator.wait_for_everyone()
    return final
