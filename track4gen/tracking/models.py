"""What `--model M` may name, loaded into a FeatureModel.

- a base Stable Video Diffusion folder (or a Hub id with --allow-hub): raw features, the
  paper's SVD* row of Table 2;
- a training checkpoint folder, or a run folder (its newest checkpoint): the base model the
  run recorded, its trained UNet blocks and the Track4Gen head.
"""

from __future__ import annotations

from pathlib import Path

from track4gen import checkpoint as ckpt
from track4gen.model import SUBFOLDERS, Track4GenUNet, load_components
from track4gen.tracking.features import FeatureModel


def _describe(path: Path) -> str:
    return (f"--model {path}: expected a Stable Video Diffusion folder ({', '.join(s + '/' for s in SUBFOLDERS)}), "
            f"a training checkpoint (with {ckpt.STATE}) or a run folder with {ckpt.CHECKPOINTS}/")


def load_feature_model(spec: str, *, allow_hub: bool = False, variant: str | None = None,
                       pretrained: str | None = None) -> FeatureModel:
    """The parts feature extraction needs, in float32 on the CPU (DiffusionFeatures moves them).

    `pretrained` overrides the base model a checkpoint recorded (e.g. the run was trained elsewhere).
    """
    path = Path(spec)
    if path.is_dir() and ((path / ckpt.STATE).is_file() or ckpt.list_checkpoints(path)):
        where = path if (path / ckpt.STATE).is_file() else ckpt.list_checkpoints(path)[-1]
        config = ckpt.read_state(where)["config"]
        base = pretrained or config["pretrained"]
        parts = load_components(base, variant=variant or config.get("variant"), allow_hub=allow_hub)
        model = Track4GenUNet(parts.unet)  # attaches the head where it was trained
        ckpt.load_trainable_state(model, ckpt.load_weights(where))
        head = model.head
        source = str(where)
    elif path.is_dir() and any((path / s).is_dir() for s in SUBFOLDERS):
        parts = load_components(path, variant=variant, allow_hub=allow_hub)  # names any missing part
        head, source = None, str(path)
    elif path.exists():
        raise FileNotFoundError(_describe(path))
    elif allow_hub and "/" in spec and not spec.startswith((".", "/")):
        parts = load_components(spec, variant=variant, allow_hub=True)
        head, source = None, spec
    else:
        raise FileNotFoundError(f"{_describe(path)}; no such folder (a Hub id needs --allow-hub)")
    for part in (parts.unet, parts.vae, parts.image_encoder, head):
        if part is not None:
            part.requires_grad_(False)
    return FeatureModel(unet=parts.unet, vae=parts.vae, image_encoder=parts.image_encoder,
                        feature_extractor=parts.feature_extractor, head=head, source=source)
