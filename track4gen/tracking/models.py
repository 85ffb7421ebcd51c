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
from track4gen.model import SUBFOLDERS, load_components, looks_like_repo_id, tracking_head
from track4gen.tracking.features import FeatureModel


def _expected(path: str) -> str:
    return (f"--model {path}: expected a Stable Video Diffusion or exported Track4Gen folder "
            f"({', '.join(s + '/' for s in SUBFOLDERS)}), a training checkpoint (with {ckpt.STATE}), "
            f"a run folder with {ckpt.CHECKPOINTS}/, or a Hub id such as stabilityai/stable-video-diffusion-img2vid-xt")


def exported_config(path: Path) -> dict:
    """The training configuration an exported folder records ({} for base SVD)."""
    from track4gen.export import MODEL_CARD

    if (path / MODEL_CARD).is_file():
        return json.loads((path / MODEL_CARD).read_text()).get("config", {})
    return {}


def load_feature_model(spec: str, *, variant: str | None = None) -> FeatureModel:
    """The parts feature extraction needs, in float32 on the CPU (DiffusionFeatures moves them),
    and the soft-argmax the model was trained with (matching uses the same)."""
    from track4gen import load_pipeline
    from track4gen.export import find_checkpoint, is_checkpoint_or_run

    path = Path(spec).expanduser()
    config = exported_config(path) if path.is_dir() else {}
    if path.is_dir() and is_checkpoint_or_run(path):
        where = find_checkpoint(path)  # found (and, for a run, verified) once
        config = ckpt.read_state(where)["config"]
        parts = load_pipeline(where)  # base model from the run, trained tensors and head over it
    elif path.is_dir() and not any((path / s).is_dir() for s in SUBFOLDERS):
        raise FileNotFoundError(_expected(spec))
    elif path.exists() and not path.is_dir():
        raise FileNotFoundError(_expected(spec))
    elif not path.exists() and not looks_like_repo_id(spec):
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
