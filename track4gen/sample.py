"""`track4gen sample`: image-to-video with a Track4Gen model through diffusers' SVD pipeline.

The model is an exported folder (`track4gen export`) or a training run / checkpoint (its base
SVD model is the one the run was trained from). Either way the UNet owns the head, whose zero
conv feeds the refined features back into the decoder at every denoising step, as in training.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from track4gen.conditioning import FPS, MOTION_BUCKET_ID
from track4gen.export import load_pipeline
from trackprep.io.datasets.base import open_image

NUM_STEPS = 30  # Track4Gen evaluation: 30-step EDM (Euler) sampling
VIDEO_SUFFIXES = (".mp4", ".gif")


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
    model: str | os.PathLike,
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
    device: str | None = None,
    decode_chunk_size: int = 8,
) -> Path:
    """Generate a `num_frames` video (default: the UNet's, 25 for SVD-xt) from `image`; write it to `out`.

    `model` is an exported model folder, or a run / checkpoint folder (see `track4gen.export.load_pipeline`).
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
    pipe = load_pipeline(model, pretrained=pretrained, device=device, dtype=dtype)
    frames = generate(pipe, picture, num_frames=num_frames, num_inference_steps=num_inference_steps,
                      motion_bucket_id=motion_bucket_id, fps=fps, noise_aug_strength=noise_aug_strength, seed=seed,
                      decode_chunk_size=decode_chunk_size)
    write_video((np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8), out, fps=fps)
    return out


def generate(pipe, picture, *, num_frames: int | None = None, num_inference_steps: int = NUM_STEPS,
             motion_bucket_id: int = MOTION_BUCKET_ID, fps: int = FPS, noise_aug_strength: float = 0.02,
             seed: int = 0, decode_chunk_size: int = 8) -> np.ndarray:
    """float32 [F, H, W, 3] in [0, 1] from the pipeline for a PIL image (its size is the video's)."""
    num_frames = num_frames or int(pipe.unet.config.num_frames)
    result = pipe(
        picture, height=picture.height, width=picture.width, num_frames=num_frames,
        num_inference_steps=num_inference_steps, motion_bucket_id=motion_bucket_id, fps=fps,
        noise_aug_strength=noise_aug_strength, decode_chunk_size=decode_chunk_size,
        generator=torch.Generator(device="cpu").manual_seed(seed), output_type="np",
    )
    return np.asarray(result.frames[0], dtype=np.float32)
