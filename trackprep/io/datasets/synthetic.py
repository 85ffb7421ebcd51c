"""Synthetic videos on disk: PNG frames and masks plus the scene that made them.

    <root>/<video>/frames/00000.png ...   RGB
    <root>/<video>/masks/00000.png ...    mode L, 0 background, k object k
    <root>/<video>/scene.json             trackprep.core.synthetic.Scene.to_dict()

The scene gives exact flow and tracks (the "oracle" flow backend reads it from the
source's `extras["scene"]`), so the whole pipeline, files included, can be checked
against ground truth. `write_synthetic_dataset` makes such a folder (used by
`trackprep demo` and the tests); `SyntheticDataset` reads it like any other dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from trackprep.core.synthetic import Scene, make_scene
from trackprep.io.datasets.base import Dataset, DatasetError, ListedVideo, list_images, numbered_frames, open_image, subdirs

SCENE_FILE = "scene.json"


def decode_mask(paths: Sequence[Path], size: tuple[int, int]) -> np.ndarray:
    """A single-channel PNG of object ids (mode L or P), returned as uint8 [H, W]."""
    im = open_image(paths[0])
    if im.mode not in ("L", "P"):
        raise DatasetError(f"{paths[0]}: mask has image mode {im.mode}; expected a single-channel (L or P) PNG of object ids")
    return np.asarray(im, dtype=np.uint8)


class SyntheticDataset(Dataset):
    name = "synthetic"

    def __init__(self, root: str | Path, *, split: str | None = None, manifest: Any = None) -> None:
        super().__init__(root, split=split, manifest=manifest)

    def video_names(self) -> list[str]:
        return [p.name for p in subdirs(self.root) if (p / SCENE_FILE).is_file()]

    def video(self, name: str) -> ListedVideo:
        folder = self.root / name
        scene_path = folder / SCENE_FILE
        if not scene_path.is_file():
            raise DatasetError(f"{scene_path}: file not found; expected the scene description of synthetic video {name!r}")
        try:
            scene = json.loads(scene_path.read_text())
            Scene.from_dict(scene)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{scene_path}: not a valid scene description ({exc}); expected Scene.to_dict() as JSON") from exc
        frames_dir, masks_dir = folder / "frames", folder / "masks"
        for d in (frames_dir, masks_dir):
            if not d.is_dir():
                raise DatasetError(f"{d}: folder not found; expected the PNG {d.name} of synthetic video {name!r}")
        frames = numbered_frames(frames_dir, list_images(frames_dir), start=0)
        masks = list_images(masks_dir)
        if len(masks) > len(frames):
            raise DatasetError(
                f"{masks_dir}: {len(masks)} masks for {len(frames)} frames in {frames_dir}; expected at most one mask per frame"
            )
        mask_paths = numbered_frames(masks_dir, masks, start=0) if masks else []
        by_stem = {p.stem: p for p in mask_paths}
        return ListedVideo(
            dataset=self.name,
            name=name,
            frame_paths=frames,
            mask_paths=[(by_stem[f.stem],) if f.stem in by_stem else None for f in frames],
            decode_mask=decode_mask,
            extras={"scene": scene},
        )


def write_synthetic_video(folder: str | Path, scene: Scene) -> Path:
    """Render `scene` into `folder` in the layout above; returns the folder."""
    folder = Path(folder)
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    frames, masks = scene.render()
    for t in range(scene.num_frames):
        Image.fromarray(frames[t]).save(folder / "frames" / f"{t:05d}.png")
        Image.fromarray(masks[t]).save(folder / "masks" / f"{t:05d}.png")
    (folder / SCENE_FILE).write_text(json.dumps(scene.to_dict()))
    return folder


def write_synthetic_dataset(
    root: str | Path,
    *,
    num_videos: int,
    seed: int,
    num_frames: int = 24,
    height: int = 320,
    width: int = 576,
    num_objects: int = 3,
    max_speed: float = 4.0,
) -> list[str]:
    """Write `num_videos` random scenes (seeds seed, seed+1, ...) under `root`; returns their names."""
    names = []
    for i in range(num_videos):
        scene = make_scene(
            seed=seed + i, num_frames=num_frames, height=height, width=width, num_objects=num_objects, max_speed=max_speed
        )
        name = f"scene{seed + i:03d}"
        write_synthetic_video(Path(root) / name, scene)
        names.append(name)
    return names
