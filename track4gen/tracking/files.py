"""Reading what `track4gen track` is given (a video, a queries file) and writing what it returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trackprep.eval.groundtruth import GroundTruthVideo, write_npz
from trackprep.io.datasets.base import IMAGE_EXTENSIONS, list_images, load_rgb, numbered_frames

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv")
QUERY_SUFFIXES = (".npy", ".txt", ".csv")


def read_video(path: str | Path) -> np.ndarray:
    """uint8 [T, H, W, 3]: a folder of numbered frames, or a video file (PyAV)."""
    path = Path(path)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise ValueError(f"--video {path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        frames = [load_rgb(p) for p in numbered_frames(path, files)]
        if len({f.shape for f in frames}) != 1:
            raise ValueError(f"--video {path}: frames differ in size ({sorted({f.shape[:2] for f in frames})})")
        return np.stack(frames)
    if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
        raise ValueError(f"--video {path}: expected a folder of frames or a video file ({', '.join(VIDEO_SUFFIXES)})")
    import av

    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise ValueError(f"--video {path}: cannot decode ({exc})") from exc
    if not frames:
        raise ValueError(f"--video {path}: no frames decoded")
    return np.stack(frames)


def read_queries(path: str | Path, *, num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """float32 [Q, 3] rows (t, x, y): t an integer frame, (x, y) pixels of the video (pixel
    centres at integers). `.npy`, or text (`.txt`/`.csv`: whitespace or commas, `#` comments)."""
    path = Path(path)
    if path.suffix.lower() not in QUERY_SUFFIXES or not path.is_file():
        raise ValueError(f"--queries {path}: expected a file of (t, x, y) rows ending in {', '.join(QUERY_SUFFIXES)}")
    try:
        if path.suffix.lower() == ".npy":
            q = np.load(path, allow_pickle=False)
        else:
            text = path.read_text().replace(",", " ")
            q = np.loadtxt(text.splitlines(), ndmin=2, comments="#")
    except (OSError, ValueError) as exc:
        raise ValueError(f"--queries {path}: cannot read ({exc}); expected rows of three numbers t, x, y") from exc
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 3 or q.shape[0] == 0:
        raise ValueError(f"--queries {path}: expected [Q, 3] rows (t, x, y) with Q >= 1, got shape {q.shape}")
    h, w = size
    t, x, y = q[:, 0], q[:, 1], q[:, 2]
    bad = ~np.isfinite(q).all(axis=1) | (t != np.round(t)) | (t < 0) | (t > num_frames - 1)
    bad |= (x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"--queries {path}: row {i} is {q[i].tolist()}; expected t an integer in [0, {num_frames - 1}] "
                         f"and (x, y) inside the {w}x{h} video ({int(bad.sum())} bad rows)")
    return q.astype(np.float32)


def write_tracks(path: str | Path, *, name: str, tracks: np.ndarray, visible: np.ndarray, queries: np.ndarray,
                 size: tuple[int, int]) -> Path:
    """Predictions in the ground-truth npz format (trackprep.eval.groundtruth), so they can be
    read back, scored or drawn by the same code."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"--out {path}: expected a file ending in .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_npz(path, [GroundTruthVideo(name=name, size=size, tracks=tracks.astype(np.float32), occluded=~visible,
                                      queries=queries.astype(np.float32))])
    return path
