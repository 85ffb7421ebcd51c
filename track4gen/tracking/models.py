"""What `--model M` may name, loaded into a FeatureModel.

- a base Stable Video Diffusion folder, or a Hub id (resolved as the trainer resolves
  `--pretrained`: through the Hugging Face cache): raw features, the SVD* row of Table 2;
- an exported Track4Gen folder (`track4gen export`): its UNet owns the tracking head;
- a training checkpoint folder, or a run folder (its newest checkpoint), loaded over the base
  model the run recorded (`track4gen.load_pipeline`).
"""

from __future__ import annotations

import json
from pathlib import Path

from track4gen import checkpoint as ckpt
from track4gen.losses import SOFTMAX_TEMPERATURE
from track4gen.model import SUBFOLDERS, load_components, tracking_head
from track4gen.tracking.features import FeatureModel


def _expected(path: str) -> str:
    return (f"--model {path}: expected a Stable Video Diffusion or exported Track4Gen folder "
            f"({', '.join(s + '/' for s in SUBFOLDERS)}), a training checkpoint (with {ckpt.STATE}), "
            f"a run folder with {ckpt.CHECKPOINTS}/, or a Hub id such as stabilityai/stable-video-diffusion-img2vid-xt")


def training_config(path: Path) -> dict:
    """The training configuration a checkpoint, run or exported folder records ({} for base SVD)."""
    from track4gen.export import MODEL_CARD, find_checkpoint

    if (path / MODEL_CARD).is_file():
        return json.loads((path / MODEL_CARD).read_text()).get("config", {})
    if (path / ckpt.STATE).is_file() or ckpt.list_checkpoints(path):
        return ckpt.read_state(find_checkpoint(path))["config"]
    return {}


def load_feature_model(spec: str, *, variant: str | None = None) -> FeatureModel:
    """The parts feature extraction needs, in float32 on the CPU (DiffusionFeatures moves them),
    and the soft-argmax the model was trained with (matching uses the same)."""
    from track4gen import load_pipeline

    path = Path(spec).expanduser()
    config = training_config(path) if path.is_dir() else {}
    if path.is_dir() and ((path / ckpt.STATE).is_file() or ckpt.list_checkpoints(path)):
        parts = load_pipeline(path)  # base model from the run, trained tensors and head over it
    elif path.is_dir() and not any((path / s).is_dir() for s in SUBFOLDERS):
        raise FileNotFoundError(_expected(spec))
    elif path.exists() and not path.is_dir():
        raise FileNotFoundError(_expected(spec))
    elif not path.exists() and (spec.count("/") != 1 or spec.startswith((".", "/", "~")) or path.suffix):
        raise FileNotFoundError(f"{_expected(spec)}; no such folder")
    else:
        try:
            parts = load_components(spec, variant=variant)  # base SVD or exported folder, or a Hub id
        except FileNotFoundError as exc:  # the trainer's message, about our option
            raise FileNotFoundError(str(exc).replace("--pretrained ", "--model ", 1)) from exc
    for part in (parts.unet, parts.vae, parts.image_encoder):
        part.requires_grad_(False)
    return FeatureModel(unet=parts.unet, vae=parts.vae, image_encoder=parts.image_encoder,
                        feature_extractor=parts.feature_extractor, head=tracking_head(parts.unet), source=str(spec),
                        soft_argmax={"weighting": config.get("soft_argmax", "cosine"),
                                     "temperature": config.get("temperature", SOFTMAX_TEMPERATURE)})
