"""`trackprep viz`: pictures of the tracks in an annotation store (one video) or a segment store (one segment).

Output by file suffix: .gif (Pillow), .mp4 (H.264 through PyAV), .png (one frame, or a
grid of frames spread over the clip). Drawing itself is pure (trackprep.core.draw).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trackprep.core import draw
from trackprep.io import annotation_store as astore
from trackprep.io.annotation_reader import open_annotations
from trackprep.io import schema
from trackprep.io import segment_store as sstore

FORMATS = (".gif", ".mp4", ".png")
COLOR_MODES = ("rainbow", "label")
DEFAULT_MAX_TRACKS = 400


class VizError(ValueError):
    """Bad arguments or an unusable store for `viz`."""


@dataclass(frozen=True)
class VizInput:
    """What one picture shows: frames, masks and (already subsampled) tracks."""

    title: str
    frames: np.ndarray  # uint8 [T, H, W, 3]
    masks: np.ndarray  # uint8 [T, H, W]
    tracks: np.ndarray  # float32 [n, T, 2]
    visible: np.ndarray  # bool [n, T]
    labels: np.ndarray  # uint8 [n]


def load_video(store: str | os.PathLike, video: str, *, max_tracks: int = DEFAULT_MAX_TRACKS) -> VizInput:
    """One video of an annotation store, with about `max_tracks` tracks spread over the frame.

    The tracks are chosen from their first points and lengths; only the chosen rows are
    expanded to dense [n, T, 2], so a video with 10^6 tracks is never held dense in memory.
    """
    annotations = open_annotations(store)
    v = annotations[video]
    damaged = astore.damaged_videos(annotations.root, checksums=True, keys=[v.key])  # a missing chunk draws on black
    if damaged:
        raise VizError(damaged[v.key])
    h, w = v.size
    rows = draw.spread_tracks(v.first_points(), v.length, n=max_tracks, height=h, width=w)
    tracks, visible = v.dense(rows)
    return VizInput(title=video, frames=np.asarray(v.frames[:]), masks=np.asarray(v.masks[:]), tracks=tracks,
                    visible=visible, labels=v.labels[rows])


def load_segment(store: str | os.PathLike, index: int, *, max_tracks: int = DEFAULT_MAX_TRACKS) -> VizInput:
    """One segment of a segment store (complete or not yet), with about `max_tracks` of its tracks."""
    reader = sstore.SegmentReader(store, require_complete=False)
    seg = reader.read(index, verify=True)  # a missing frames file would draw on black
    n = seg["num_tracks"]
    tracks, visible = seg["tracks"][:n], seg["visible"][:n]
    rows = draw.spread_tracks(draw.first_visible_points(tracks, visible), visible.sum(axis=1), n=max_tracks,
                              height=reader.height, width=reader.width)
    return VizInput(title=f"segment {index}: {seg['video']} frames {seg['start']}..{seg['start'] + reader.length - 1}",
                    frames=seg["frames"], masks=seg["masks"], tracks=tracks[rows], visible=visible[rows],
                    labels=seg["labels"][:n][rows])


def render(
    data: VizInput, *, color_by: str = "rainbow", show_masks: bool = False, radius: int = 2, tail: int = 6
) -> np.ndarray:
    """uint8 [T, H, W, 3]: the frames with the tracks drawn over them."""
    if color_by not in COLOR_MODES:
        raise VizError(f"color_by: expected one of {COLOR_MODES}, got {color_by!r}")
    h, w = data.frames.shape[1:3]
    if color_by == "rainbow":
        colors = draw.rainbow_colors(draw.first_visible_points(data.tracks, data.visible), height=h, width=w)
    else:
        colors = draw.label_colors(data.labels)
    frames = draw.overlay_masks(data.frames, data.masks) if show_masks else data.frames
    return draw.draw_tracks(frames, data.tracks, data.visible, colors, radius=radius, tail=tail)


def write_gif(frames: np.ndarray, path: Path, *, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0,
                   optimize=False)


def write_mp4(frames: np.ndarray, path: Path, *, fps: float) -> None:
    import av
    from fractions import Fraction

    # yuv420p (what every player decodes) needs even sizes: repeat the last row / column if odd
    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}  # visually lossless, so thin tails survive
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_png(frames: np.ndarray, path: Path, *, frame: int | None, columns: int = 4, count: int = 8) -> None:
    from PIL import Image

    if frame is not None:
        if not -frames.shape[0] <= frame < frames.shape[0]:
            raise VizError(f"frame {frame}: the clip has {frames.shape[0]} frames (0..{frames.shape[0] - 1})")
        image = frames[frame]
    else:
        picks = np.unique(np.linspace(0, frames.shape[0] - 1, min(count, frames.shape[0])).round().astype(int))
        image = draw.grid(frames[picks], columns=columns)
    Image.fromarray(image).save(path)


def viz(
    store: str | os.PathLike,
    out: str | os.PathLike,
    *,
    video: str | None = None,
    segment: int | None = None,
    color_by: str = "rainbow",
    show_masks: bool = False,
    max_tracks: int = DEFAULT_MAX_TRACKS,
    radius: int = 2,
    tail: int = 6,
    fps: float = 10.0,
    frame: int | None = None,
) -> Path:
    """Draw the tracks of one video (annotation store) or one segment (segment store) into `out`."""
    store, out = Path(store), Path(out)
    if out.suffix.lower() not in FORMATS:
        raise VizError(f"{out}: expected a file ending in one of {FORMATS}, got {out.suffix or 'no suffix'!r}")
    if (video is None) == (segment is None):
        raise VizError("give exactly one of --video NAME (annotation store) or --segment I (segment store)")
    if fps <= 0:
        raise VizError(f"fps: expected a positive number, got {fps!r}")
    if frame is not None and out.suffix.lower() != ".png":
        raise VizError(f"--frame picks one frame for a .png; {out.name} is an animation")
    fmt = schema.store_format(store)
    if video is not None:
        if fmt == schema.SEGMENT_FORMAT:
            raise VizError(f"{store} is a segment store: pick a segment with --segment I, not --video")
        data = load_video(store, video, max_tracks=max_tracks)
    else:
        if fmt == schema.ANNOTATION_FORMAT:
            raise VizError(f"{store} is an annotation store: pick a video with --video DATASET/VIDEO, not --segment")
        data = load_segment(store, segment, max_tracks=max_tracks)
    pictures = render(data, color_by=color_by, show_masks=show_masks, radius=radius, tail=tail)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".gif":
        write_gif(pictures, out, fps=fps)
    elif suffix == ".mp4":
        write_mp4(pictures, out, fps=fps)
    else:
        write_png(pictures, out, frame=frame)
    return out
