"""What every dataset reader yields, and the shared file-level helpers.

A reader turns one dataset's on-disk layout into `VideoSource`s: lazy videos whose
frame count comes from the file listing and whose frames are decoded one at a time
by `iter_frames`. Readers only build file listings; `ListedVideo` does the decoding,
so every dataset reports a corrupt file, a size mismatch or a gap the same way.
Layout in the manner of tapnet's `tapvid/evaluation_datasets.py`: one module per
dataset, each a generator of one record type.
"""

from __future__ import annotations

import abc
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from trackprep.core.resize import resize_frames, resize_masks
from trackprep.core.types import Clip
from trackprep.io.manifests import Manifest, has_manifest, load_manifest

# Extensions of the image files the readers accept; anything else in a sequence folder
# (SegTrack v2's stray `*.label` files, FBMS's `.bmf`, thumbnails) is ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm")


class DatasetError(ValueError):
    """A dataset on disk is not what its reader expects. The message always names the
    file or folder concerned and what was expected there."""


class UnknownSequenceError(DatasetError):
    """`Dataset.video(name)` found no sequence of that name (`check` reports it as missing)."""


@dataclass(frozen=True)
class FrameRecord:
    """One decoded frame of a video, at the dataset's own resolution."""

    index: int  # 0-based position of the frame in its video
    image: np.ndarray  # uint8 [H, W, 3] RGB
    mask: np.ndarray  # uint8 [H, W]; 0 background, k object k, 255 void; zeros where has_mask is False
    has_mask: bool  # True where the frame carries a ground-truth mask

    def __post_init__(self) -> None:
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(
                f"FrameRecord {self.index}: image must be uint8 [H, W, 3], got {self.image.dtype} {self.image.shape}"
            )
        if self.mask.dtype != np.uint8 or self.mask.shape != self.image.shape[:2]:
            raise ValueError(
                f"FrameRecord {self.index}: mask must be uint8 {list(self.image.shape[:2])}, "
                f"got {self.mask.dtype} {self.mask.shape}"
            )


class VideoSource(abc.ABC):
    """One video of a dataset, read lazily."""

    dataset: str
    name: str
    num_frames: int  # from the file listing, without decoding images
    extras: dict  # optional per-video metadata (e.g. the synthetic reader's scene dict)

    @abc.abstractmethod
    def iter_frames(self) -> Iterator[FrameRecord]:
        """Decode the frames one at a time, in order."""

    def describe_frame(self, index: int) -> str:
        """Where frame `index` comes from, for error messages."""
        return f"{self.dataset}/{self.name} frame {index}"

    def files(self) -> list[Path]:
        """Every file `iter_frames` reads (empty for sources not backed by files)."""
        return []

    def mask_flags(self) -> np.ndarray:
        """bool [num_frames]: which frames carry ground truth, from the listing alone.
        The default decodes every frame; file-backed sources override it."""
        return np.array([r.has_mask for r in self.iter_frames()], dtype=bool)


RESIZE_BATCH = 16  # frames resized together: ~2.5x faster than one at a time, memory stays bounded

# A mask decoder takes the mask file(s) of one frame and the frame's (H, W) and returns
# uint8 [H, W] object ids. Several files when a dataset stores one file per object.
MaskDecoder = Callable[[Sequence[Path], tuple[int, int]], np.ndarray]


@dataclass
class ListedVideo(VideoSource):
    """A video backed by a list of frame files and, per frame, its mask file(s)."""

    dataset: str
    name: str
    frame_paths: list[Path]
    mask_paths: list[tuple[Path, ...] | None]  # None where the frame has no ground truth
    decode_mask: MaskDecoder
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.mask_paths) != len(self.frame_paths):
            raise ValueError(
                f"{self.dataset}/{self.name}: {len(self.frame_paths)} frames but {len(self.mask_paths)} mask entries"
            )

    @property
    def num_frames(self) -> int:  # type: ignore[override]
        return len(self.frame_paths)

    def describe_frame(self, index: int) -> str:
        return str(self.frame_paths[index])

    def files(self) -> list[Path]:
        out = list(self.frame_paths)
        for paths in self.mask_paths:
            if paths:
                out.extend(paths)
        return out

    def mask_flags(self) -> np.ndarray:
        return np.array([bool(p) for p in self.mask_paths], dtype=bool)

    def iter_frames(self) -> Iterator[FrameRecord]:
        for index, (frame_path, paths) in enumerate(zip(self.frame_paths, self.mask_paths)):
            image = load_rgb(frame_path)
            size = image.shape[:2]
            if paths:
                mask = self.decode_mask(paths, size)
                if mask.shape != size:
                    raise DatasetError(
                        f"{paths[0]}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its frame {frame_path} is "
                        f"{size[1]}x{size[0]}; expected the same size"
                    )
            else:
                mask = np.zeros(size, dtype=np.uint8)
            yield FrameRecord(index=index, image=image, mask=mask, has_mask=bool(paths))


@dataclass(frozen=True)
class FrameBatch:
    """Consecutive frames first .. first + len - 1 of a video, at the working resolution."""

    first: int
    frames: np.ndarray  # uint8 [n, H, W, 3]
    masks: np.ndarray  # uint8 [n, H, W]
    has_mask: np.ndarray  # bool [n]


def iter_frame_batches(source: VideoSource, *, size: tuple[int, int] | None) -> Iterator[FrameBatch]:
    """Decode `source` frame by frame and yield it in small batches resized to size=(H, W)
    (frames antialiased, masks nearest, by trackprep.core.resize) unless size is None.
    Memory follows one batch, whatever the video's length or source resolution."""
    total = source.num_frames
    if total < 1:
        raise DatasetError(f"{source.dataset}/{source.name}: the video has no frames; expected at least one")
    pending: list[FrameRecord] = []
    first_shape: tuple[int, int] | None = None
    done = 0

    def batch() -> FrameBatch:
        nonlocal done
        image = np.stack([r.image for r in pending])
        mask = np.stack([r.mask for r in pending])
        if size is not None:
            image, mask = resize_frames(image, size=size), resize_masks(mask, size=size)
        out = FrameBatch(first=done, frames=image, masks=mask, has_mask=np.array([r.has_mask for r in pending], bool))
        done += len(pending)
        pending.clear()
        return out

    for record in source.iter_frames():
        shape = record.image.shape[:2]
        where = source.describe_frame(record.index)
        if record.index != done + len(pending):
            raise DatasetError(f"{where}: frame {record.index} read in place of frame {done + len(pending)}; "
                f"expected the {total} frames in order")
        if record.index >= total:
            raise DatasetError(f"{where}: frame {record.index} beyond the {total} frames the listing found; "
                f"expected {total}")
        if record.mask.shape != shape:
            raise DatasetError(f"{where}: mask {record.mask.shape} and frame {shape} differ in size; expected equal")
        if first_shape is None:
            first_shape = shape
        elif shape != first_shape:
            raise DatasetError(
                f"{where}: frame is {shape[1]}x{shape[0]} (WxH) but the video's first frame "
                f"is {first_shape[1]}x{first_shape[0]}; expected every frame of a video to have one size"
            )
        pending.append(record)
        if len(pending) == RESIZE_BATCH:
            yield batch()
    if pending:
        yield batch()
    if done != total:
        raise DatasetError(f"{source.dataset}/{source.name}: read {done} frames, the listing found {total}; expected equal")


def read_clip(source: VideoSource, *, size: tuple[int, int] | None) -> Clip:
    """Read every frame of `source` into a Clip, resized to size=(H, W) unless size is None
    (see iter_frame_batches), into preallocated output arrays."""
    frames: np.ndarray | None = None
    masks: np.ndarray | None = None
    flags = np.zeros(source.num_frames, dtype=bool)
    for b in iter_frame_batches(source, size=size):
        if frames is None or masks is None:
            frames = np.empty((source.num_frames, *b.frames.shape[1:]), dtype=np.uint8)
            masks = np.empty((source.num_frames, *b.masks.shape[1:]), dtype=np.uint8)
        n = b.frames.shape[0]
        frames[b.first : b.first + n], masks[b.first : b.first + n], flags[b.first : b.first + n] = b.frames, b.masks, b.has_mask
    assert frames is not None and masks is not None  # iter_frame_batches yields >= 1 batch or raises
    return Clip(name=source.name, frames=frames, masks=masks, has_mask=flags)


class Dataset(abc.ABC):
    """A dataset on disk: a list of videos, each opened lazily.

    Readers are registered in `trackprep.io.datasets.READERS` under their `name` and are
    constructed as `cls(root, split=..., manifest=..., **options)`; `manifest` is the
    parsed data_manifests/<name>.yaml (or None for readers without one).
    """

    name: str = ""
    # Every frame of a sequence has a mask (DAVIS, SegTrack v2), unless the manifest lists the
    # annotated frames. Readers of sparsely annotated data (FBMS-59) set False.
    dense_masks: bool = True

    def __init__(self, root: str | Path, *, split: str | None = None, manifest: Manifest | None = None) -> None:
        self.root = Path(root)
        if self.root.is_file():
            raise DatasetError(f"{self.root}: is a file; expected the folder holding the {self.name} files")
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset folder not found; expected the folder holding the {self.name} files")
        self.split = split
        if manifest is None and self.name and has_manifest(self.name):
            manifest = load_manifest(self.name)
        self.manifest = manifest
        if split is not None and manifest is not None and split not in manifest.splits:
            raise DatasetError(
                f"{manifest.path}: dataset {self.name!r} has no split {split!r}; expected one of {sorted(manifest.splits)}"
            )

    @abc.abstractmethod
    def video_names(self) -> list[str]:
        """The videos of the selected split, in a stable order, without decoding anything."""

    @abc.abstractmethod
    def video(self, name: str) -> VideoSource:
        """One video; an unknown name raises DatasetError naming the folder searched."""

    def __iter__(self) -> Iterator[VideoSource]:
        for name in self.video_names():
            yield self.video(name)

    def expected_masks(self, name: str, num_frames: int) -> np.ndarray | None:
        """bool [num_frames]: the frames of `name` that should carry ground truth: for a sequence
        the manifest lists, its `annotated` frames (every frame when it lists none: manifests list
        them only for sparse datasets); for another, every frame where masks are dense. None when
        that is unknown (a sparse dataset's unlisted sequence)."""
        info = self.manifest.sequence(name) if self.manifest is not None else None
        if info is None and not self.dense_masks:
            return None
        if info is None or info.annotated is None:
            return np.ones(num_frames, dtype=bool)
        out = np.zeros(num_frames, dtype=bool)
        out[[i for i in info.annotated if i < num_frames]] = True
        return out

    def open_video(self, name: str) -> VideoSource:
        """`video(name)`, warning when frames that should have a mask have none: such a frame reads
        as unannotated (`has_mask` False), which silently moves labels to a later frame."""
        video = self.video(name)
        expected = self.expected_masks(name, video.num_frames)
        if expected is not None:
            lacking = np.flatnonzero(expected & ~video.mask_flags())
            if lacking.size:
                shown = ", ".join(video.describe_frame(int(i)) for i in lacking[:3])
                warnings.warn(
                    f"{self.name}/{name}: {lacking.size} frame(s) without a mask file where ground truth is expected "
                    f"(first: {shown}{' ...' if lacking.size > 3 else ''}); they are treated as unannotated",
                    stacklevel=2,
                )
        return video

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r})"


# ---------------------------------------------------------------- file helpers


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image with Pillow; any failure becomes a DatasetError naming the file."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; expected an image file here")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone switched Pillow into "pad truncated images with grey" mode; a truncated
        # frame would then read as valid, so refuse rather than return corrupt pixels.
        raise DatasetError(f"{path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; "
            "expected False so corrupt files are detected")
    try:
        im = Image.open(path)
        im.load()
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc}); expected a complete, readable image file") from exc
    return im


def load_rgb(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of an image file."""
    im = open_image(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8)  # a writable copy: Pillow's buffer is read-only


def verify_image(path: Path) -> str | None:
    """Cheap integrity check without a full decode; returns the problem or None.

    JPEGs are decoded in Pillow's draft mode (DCT-domain 1/8 scale, several times faster than
    a full decode) which still reads the whole entropy-coded stream, so truncation shows up;
    PNGs have every chunk's CRC checked by `verify()`; other formats are small and fully decoded.
    """
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
            elif im.format == "PNG":
                im.verify()
            else:
                im.load()
    except FileNotFoundError:
        return "file not found"
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        return f"cannot decode image ({exc})"
    return None


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header only."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path}: cannot read image header ({exc}); expected a readable image file") from exc


def list_images(folder: Path, *, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly inside `folder` (case-insensitive extension match), sorted by name."""
    exts = {e.lower() for e in extensions}
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts), key=lambda p: p.name)


def subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


_TRAILING_NUMBER = re.compile(r"(\d+)$")


def trailing_number(stem: str) -> int | None:
    """The number at the end of a file stem ('bear01_0007' -> 7, '00012' -> 12), or None."""
    m = _TRAILING_NUMBER.search(stem)
    return int(m.group(1)) if m else None


def numbered_frames(folder: Path, files: Sequence[Path], *, start: int | None = None) -> list[Path]:
    """Sort frame files by the number ending their stem and insist the numbers have no gap.

    A gap (a missing frame) raises DatasetError naming the first missing file, because a
    silently dropped frame would make the flow between its neighbours a two-frame jump.
    `start` additionally fixes the first number (DAVIS counts from 00000).
    """
    if not files:
        raise DatasetError(f"{folder}: no image files found; expected the frames of a video ({', '.join(IMAGE_EXTENSIONS)})")
    numbered = []
    for p in files:
        n = trailing_number(p.stem)
        if n is None:
            raise DatasetError(f"{p}: frame file name has no frame number; expected a name ending in digits")
        numbered.append((n, p))
    numbered.sort()
    numbers = [n for n, _ in numbered]
    dupes = sorted({n for n in numbers if numbers.count(n) > 1}) if len(set(numbers)) != len(numbers) else []
    if dupes:
        same = [p.name for n, p in numbered if n == dupes[0]]
        raise DatasetError(f"{folder}: several files share frame number {dupes[0]} ({', '.join(same)}); "
            "expected one file per frame")
    first = numbers[0] if start is None else start
    for expected, (n, p) in zip(range(first, first + len(numbered)), numbered):
        if n != expected:
            missing = _renumber(p, expected)
            raise DatasetError(
                f"{missing}: frame missing (frames run from {_renumber(p, first).name} to {numbered[-1][1].name}); "
                f"expected consecutive frame numbers with no gap"
            )
    return [p for _, p in numbered]


def _renumber(path: Path, number: int) -> Path:
    """`path` with the number ending its stem replaced by `number`, same zero padding."""
    m = _TRAILING_NUMBER.search(path.stem)
    assert m is not None
    digits = m.group(1)
    return path.with_name(f"{path.stem[: m.start()]}{number:0{len(digits)}d}{path.suffix}")


def find_child(folder: Path, name: str) -> Path | None:
    """The entry of `folder` called `name`, compared case-insensitively (FBMS ships
    `Trainingset` and some copies spell it `TrainingSet`)."""
    exact = folder / name
    if exact.exists():
        return exact
    if not folder.is_dir():
        return None
    for p in folder.iterdir():
        if p.name.lower() == name.lower():
            return p
    return None
