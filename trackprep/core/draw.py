"""Drawing tracks over frames (pure numpy): colours, dots with short tails, mask overlays, grids.

The look follows the rainbow track pictures of DINO-Tracker / TAPIR (`plot_tracks_v2` with
rainbow colours): a track's hue comes from where it starts, in raster order, so neighbouring
tracks get neighbouring hues and a rigid motion reads as a coherent band of colour.
Pixels are only touched within `radius` of a drawn point or on a tail segment, so a
picture differs from its frames only near tracks.
"""

from __future__ import annotations

import numpy as np

from trackprep.core.types import VOID, check_frames

BACKGROUND_COLOR = (70, 140, 255)  # blue: label 0
VOID_COLOR = (160, 160, 160)  # grey: label 255
# Warm, well-separated colours for object ids 1, 2, ... (cycled)
OBJECT_COLORS = np.array(
    [(255, 60, 60), (255, 200, 0), (0, 220, 120), (255, 0, 200), (255, 130, 0), (180, 255, 0), (0, 230, 230)],
    np.uint8,
)


def hsv_to_rgb(h: np.ndarray, s: float = 1.0, v: float = 1.0) -> np.ndarray:
    """uint8 [N, 3] RGB of hues h in [0, 1) at saturation s and value v."""
    h = np.mod(np.asarray(h, np.float64), 1.0) * 6.0
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    vv = np.full_like(f, v)
    pp, qq, tt = np.full_like(f, p), q, t
    table = np.stack([
        np.stack([vv, tt, pp], -1), np.stack([qq, vv, pp], -1), np.stack([pp, vv, tt], -1),
        np.stack([pp, qq, vv], -1), np.stack([tt, pp, vv], -1), np.stack([vv, pp, qq], -1),
    ])  # [6, N, 3]
    rgb = table[i, np.arange(h.shape[0])]
    return np.round(rgb * 255).astype(np.uint8)


def first_visible_points(tracks: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """float32 [N, 2]: each track's point at its first visible frame (NaN for a track never visible)."""
    first = np.argmax(visible, axis=1)
    pts = tracks[np.arange(tracks.shape[0]), first].astype(np.float32)
    pts[~visible.any(axis=1)] = np.nan
    return pts


def rainbow_colors(points: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """uint8 [N, 3]: hue from the raster position (y * W + x) of each track's first point."""
    x = np.clip(np.nan_to_num(points[:, 0]), 0, width - 1)
    y = np.clip(np.nan_to_num(points[:, 1]), 0, height - 1)
    # 0.85 of the hue circle: the last rows do not wrap around to the first rows' red
    return hsv_to_rgb(0.85 * (np.round(y) * width + x) / (height * width))


def label_colors(labels: np.ndarray) -> np.ndarray:
    """uint8 [N, 3]: background blue, each object id its own warm colour, void grey."""
    labels = np.asarray(labels)
    colors = OBJECT_COLORS[(labels.astype(np.int64) - 1) % len(OBJECT_COLORS)]
    colors[labels == 0] = BACKGROUND_COLOR
    colors[labels == VOID] = VOID_COLOR
    return colors


def spread_tracks(first_points: np.ndarray, lengths: np.ndarray, *, n: int, height: int, width: int) -> np.ndarray:
    """Sorted rows of at most ~n tracks spread evenly over the frame by their first points.

    first_points float [N, 2]; lengths int [N] (visible frames; 0 = never visible, never chosen).
    The frame is cut into about n square cells and each cell keeps its longest track, as the
    query grids of DINO-Tracker's pictures do: thousands of dense tracks drawn at once are a smear.
    """
    if n < 1:
        raise ValueError(f"n: expected a positive number of tracks to draw, got {n!r}")
    alive = np.flatnonzero(lengths > 0)
    if alive.size <= n:
        return alive
    pts = first_points[alive]
    cell = max(1.0, float(np.sqrt(height * width / n)))
    cols = int(np.ceil(width / cell))
    cx = np.floor(np.clip(pts[:, 0], 0, width - 1) / cell).astype(np.int64)
    cy = np.floor(np.clip(pts[:, 1], 0, height - 1) / cell).astype(np.int64)
    cid = cy * cols + cx
    order = np.lexsort((-lengths[alive], cid))  # by cell, longest first
    _, first_in_cell = np.unique(cid[order], return_index=True)
    return np.sort(alive[order[first_in_cell]])


def _disc(radius: int) -> tuple[np.ndarray, np.ndarray]:
    r = int(radius)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    inside = dx * dx + dy * dy <= r * r + r  # a round-looking digital disc
    return dy[inside], dx[inside]


def _paint(image: np.ndarray, xy: np.ndarray, colors: np.ndarray, alpha: np.ndarray | float) -> None:
    """Blend colours into image at the nearest pixels of points xy (float [M, 2]); out-of-frame points skipped."""
    h, w = image.shape[:2]
    ix = np.rint(xy[:, 0]).astype(np.int64)
    iy = np.rint(xy[:, 1]).astype(np.int64)
    ok = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    a = np.broadcast_to(np.asarray(alpha, np.float32), (xy.shape[0],))[ok, None]
    old = image[iy[ok], ix[ok]].astype(np.float32)
    image[iy[ok], ix[ok]] = np.rint(old * (1 - a) + colors[ok].astype(np.float32) * a).astype(np.uint8)


def draw_tracks(
    frames: np.ndarray,
    tracks: np.ndarray,
    visible: np.ndarray,
    colors: np.ndarray,
    *,
    radius: int = 2,
    tail: int = 6,
) -> np.ndarray:
    """Frames with each visible point drawn as a disc and its last `tail` steps as a fading line.

    frames uint8 [T, H, W, 3]; tracks float [N, T, 2] (x, y); visible bool [N, T]; colors uint8 [N, 3].
    """
    check_frames(frames)
    t_len = frames.shape[0]
    if tracks.ndim != 3 or tracks.shape[1:] != (t_len, 2) or visible.shape != tracks.shape[:2]:
        raise ValueError(
            f"draw_tracks: expected tracks [N, {t_len}, 2] and visible [N, {t_len}], "
            f"got {list(tracks.shape)} and {list(visible.shape)}"
        )
    if colors.shape != (tracks.shape[0], 3):
        raise ValueError(f"draw_tracks: expected colors [{tracks.shape[0]}, 3], got {list(colors.shape)}")
    if radius < 0 or tail < 0:
        raise ValueError(f"draw_tracks: radius and tail must be >= 0, got radius={radius}, tail={tail}")
    out = frames.copy()
    dy, dx = _disc(radius)
    for t in range(t_len):
        image = out[t]
        for k in range(min(tail, t), 0, -1):  # oldest step first, so newer steps paint over it
            a, b = t - k, t - k + 1
            ok = visible[:, a] & visible[:, b]
            if not ok.any():
                continue
            p, q = tracks[ok, a].astype(np.float32), tracks[ok, b].astype(np.float32)
            steps = int(np.ceil(np.abs(q - p).max() * 2)) + 2  # samples every <= 0.5 px: a gap-free line
            s = np.linspace(0.0, 1.0, steps, dtype=np.float32)[None, :, None]
            pts = (p[:, None] + (q - p)[:, None] * s).reshape(-1, 2)
            alpha = 0.9 - 0.6 * (k - 1) / max(1, tail)  # older steps fade
            _paint(image, pts, np.repeat(colors[ok], steps, axis=0), alpha)
        vis = visible[:, t]
        if vis.any():
            c = np.rint(tracks[vis, t]).astype(np.float32)
            pts = (c[:, None, :] + np.stack([dx, dy], -1)[None].astype(np.float32)).reshape(-1, 2)
            _paint(image, pts, np.repeat(colors[vis], dx.size, axis=0), 1.0)
    return out


def overlay_masks(frames: np.ndarray, masks: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Frames with each object id tinted in its label colour (background and void left as they are)."""
    check_frames(frames)
    if masks.shape != frames.shape[:3]:
        raise ValueError(f"overlay_masks: expected masks {list(frames.shape[:3])}, got {list(masks.shape)}")
    out = frames.copy()
    obj = (masks > 0) & (masks != VOID)
    tint = label_colors(masks[obj]).astype(np.float32)
    out[obj] = np.rint(out[obj].astype(np.float32) * (1 - alpha) + tint * alpha).astype(np.uint8)
    return out


def grid(images: np.ndarray, *, columns: int, gap: int = 2) -> np.ndarray:
    """uint8 [rows * (H + gap) - gap, columns * (W + gap) - gap, 3]: images [K, H, W, 3] in reading order, white gaps."""
    k, h, w = images.shape[:3]
    columns = max(1, min(columns, k))
    rows = -(-k // columns)
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
    for i in range(k):
        r, c = divmod(i, columns)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = images[i]
    return out
