"""`track4gen sample`: image-to-video with a trained Track4Gen checkpoint through diffusers' SVD pipeline.

The base SVD model is the one the run was trained from (recorded in the checkpoint), the
trained UNet blocks and the head are loaded over it, and the head stays attached: its zero
conv feeds the refined features back into the decoder at every denoising step, as in training.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from track4gen import checkpoint as ckpt
from track4gen.conditioning import FPS, MOTION_BUCKET_ID
from track4gen.model import Track4GenUNet, check_layout, resolve_variant
from trackprep.io.datasets.base import open_image

NUM_STEPS = 30  # Track4Gen evaluation: 30-step EDM (Euler) sampling
VIDEO_SUFFIXES = (".mp4", ".gif")


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run folder (its newest checkpoint)."""
    p = Path(path)
    if (p / ckpt.STATE).is_file():
        return p
    found = ckpt.list_checkpoints(p)
    if not found:
        raise FileNotFoundError(f"--checkpoint {p}: neither a checkpoint folder (with {ckpt.STATE}) nor a run folder with checkpoints")
    return found[-1]


def load_pipeline(checkpoint: str | os.PathLike, *, pretrained: str | None = None, allow_hub: bool = False,
                  device: str = "cpu", dtype: torch.dtype = torch.float32):
    """StableVideoDiffusionPipeline with the checkpoint's weights and head attached."""
    from diffusers import StableVideoDiffusionPipeline

    where = find_checkpoint(checkpoint)
    config = ckpt.read_state(where)["config"]
    base = Path(pretrained or config["pretrained"])
    if base.is_dir():
        check_layout(base)
    elif not allow_hub:
        raise FileNotFoundError(f"base model {base} (from {where / ckpt.STATE}) not found; pass --pretrained DIR")
    pipe = StableVideoDiffusionPipeline.from_pretrained(
        str(base), local_files_only=not allow_hub, variant=resolve_variant(base, variant=config.get("variant")),
        torch_dtype=dtype,
    )
    model = Track4GenUNet(pipe.unet)  # attaches the head to pipe.unet
    ckpt.load_trainable_state(model, ckpt.load_weights(where))
    model.eval()  # BatchNorm uses its running statistics
    pipe.to(device)
    model.head.to(device=device, dtype=dtype)  # the UNet's hook holds the head; it is not a pipeline component
    return pipe


def write_video(frames: np.ndarray, out: Path, *, fps: int) -> None:
    """uint8 [F, H, W, 3] -> .mp4 (PyAV, H.264 when available) or .gif (Pillow)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(out, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return
    import av

    with av.open(str(out), mode="w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def sample_video(
    checkpoint: str | os.PathLike,
    image: str | os.PathLike,
    out: str | os.PathLike,
    *,
    num_frames: int | None = None,
    height: int = 320,
    width: int = 576,
    num_inference_steps: int = NUM_STEPS,
    motion_bucket_id: int = MOTION_BUCKET_ID,
    fps: int = FPS,
    noise_aug_strength: float = 0.02,
    seed: int = 0,
    pretrained: str | None = None,
    allow_hub: bool = False,
    device: str | None = None,
    decode_chunk_size: int = 8,
) -> Path:
    """Generate a `num_frames` video (default: the UNet's, 25 for SVD-xt) from `image`; write it to `out`.

    `out` ends in .mp4 or .gif. 320 x 576 is the resolution Track4Gen trains at (Sec. 4.1).
    """
    from PIL import Image

    out = Path(out)
    if out.suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"--out {out}: expected a file ending in {' or '.join(VIDEO_SUFFIXES)}, got {out.suffix!r}")
    if height % 8 or width % 8:
        raise ValueError(f"height and width must be multiples of 8 (the VAE's factor), got {height}x{width}")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not Path(image).is_file():
        raise FileNotFoundError(f"--image {image}: no such file")
    # Decode before loading the pipeline, so a corrupt image fails in a second, naming the file.
    picture = open_image(Path(image)).convert("RGB").resize((width, height), Image.BICUBIC)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = load_pipeline(checkpoint, pretrained=pretrained, allow_hub=allow_hub, device=device, dtype=dtype)
    num_frames = num_frames or int(pipe.unet.config.num_frames)
    result = pipe(
        picture, height=height, width=width, num_frames=num_frames, num_inference_steps=num_inference_steps,
        motion_bucket_id=motion_bucket_id, fps=fps, noise_aug_strength=noise_aug_strength,
        decode_chunk_size=decode_chunk_size, generator=torch.Generator(device="cpu").manual_seed(seed),
        output_type="np",
    )
    frames = (np.clip(np.asarray(result.frames[0]), 0.0, 1.0) * 255).round().astype(np.uint8)
    write_video(frames, out, fps=fps)
    return out
