"""Synthetic videos with exact ground-truth motion, for testing everything apart from real data.

A scene is a stack of layers: a background plane and K textured objects above it, each moving
by its own similarity transform (translation, rotation, scaling) over time. Because every
layer's motion is known in closed form, so are the frames, the masks (object ids by depth
order), the forward and backward flow, and the track and visibility of any query point.

Layer coordinates q map to frame coordinates p by p = V(c(t) + s(t) R(a(t)) q), where
c(t) = c0 + v t, a(t) = a0 + w t, s(t) = s0 exp(g t) and V is the view transform (identity at
the scene's native size; `rescaled` changes it). Textures are periodic 1/f noise, so the
background is an infinite plane and flow estimators have structure to match at every scale.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from trackprep.core.types import Clip, FlowPair

TEXTURE_SIZE = 512


@dataclass(frozen=True)
class Layer:
    texture_seed: int
    tint: tuple[float, float, float]
    c0: tuple[float, float]  # centre at t = 0, pixels (x, y)
    v: tuple[float, float]  # centre velocity, pixels per frame
    a0: float = 0.0  # angle at t = 0, radians
    w: float = 0.0  # angular velocity, radians per frame
    s0: float = 1.0  # scale at t = 0
    g: float = 0.0  # log-scale rate per frame
    # Shape in layer coordinates: r(theta) = radius * (1 + lobe_amp * sin(lobes * theta + lobe_phase));
    # radius <= 0 means an unbounded plane (the background).
    radius: float = 0.0
    lobes: int = 0
    lobe_amp: float = 0.0
    lobe_phase: float = 0.0

    def matrix(self, t: float) -> np.ndarray:
        """float64 [3, 3]: layer coordinates -> native frame coordinates at time t."""
        a, s = self.a0 + self.w * t, self.s0 * np.exp(self.g * t)
        c, sn = np.cos(a) * s, np.sin(a) * s
        return np.array(
            [[c, -sn, self.c0[0] + self.v[0] * t], [sn, c, self.c0[1] + self.v[1] * t], [0.0, 0.0, 1.0]]
        )

    def contains(self, q: np.ndarray) -> np.ndarray:
        """bool [...]: whether layer-coordinate points q [..., 2] lie inside the layer's shape."""
        if self.radius <= 0:
            return np.ones(q.shape[:-1], dtype=bool)
        r = np.hypot(q[..., 0], q[..., 1])
        theta = np.arctan2(q[..., 1], q[..., 0])
        return r < self.radius * (1.0 + self.lobe_amp * np.sin(self.lobes * theta + self.lobe_phase))


@dataclass(frozen=True)
class Scene:
    height: int
    width: int
    num_frames: int
    layers: tuple[Layer, ...]  # layers[0] is the background (mask id 0); layers[k] is object k, drawn above k-1
    view: tuple[float, float, float, float] = (1.0, 1.0, 0.0, 0.0)  # (sx, sy, ex, ey): p = (sx x + ex, sy y + ey)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    # ---------------------------------------------------------------- transforms
    def transform(self, layer: int, t: float) -> np.ndarray:
        """float64 [3, 3]: layer coordinates -> frame coordinates at time t (view applied)."""
        sx, sy, ex, ey = self.view
        return np.array([[sx, 0, ex], [0, sy, ey], [0, 0, 1.0]]) @ self.layers[layer].matrix(t)

    def _map(self, layer: int, t_from: float, t_to: float, points: np.ndarray) -> np.ndarray:
        """Move frame-t_from points [..., 2] of `layer` to where they are at t_to."""
        m = self.transform(layer, t_to) @ np.linalg.inv(self.transform(layer, t_from))
        return points @ m[:2, :2].T + m[:2, 2]

    def _to_layer(self, layer: int, t: float, points: np.ndarray) -> np.ndarray:
        m = np.linalg.inv(self.transform(layer, t))
        return points @ m[:2, :2].T + m[:2, 2]

    def top_layer(self, t: int, points: np.ndarray) -> np.ndarray:
        """int64 [...]: index of the top-most layer covering each frame-t point [..., 2]."""
        top = np.zeros(points.shape[:-1], dtype=np.int64)
        for k in range(1, len(self.layers)):
            top[self.layers[k].contains(self._to_layer(k, t, points))] = k
        return top

    # ---------------------------------------------------------------- rendering
    def _pixel_grid(self) -> np.ndarray:
        if "grid" not in self._cache:
            ys, xs = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
            self._cache["grid"] = np.stack([xs, ys], axis=-1)
        return self._cache["grid"]

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """(frames uint8 [T, H, W, 3], masks uint8 [T, H, W])."""
        grid = self._pixel_grid()
        frames = np.empty((self.num_frames, self.height, self.width, 3), dtype=np.uint8)
        masks = np.empty((self.num_frames, self.height, self.width), dtype=np.uint8)
        for t in range(self.num_frames):
            top = self.top_layer(t, grid)
            image = np.zeros((self.height, self.width, 3), dtype=np.float64)
            for k, layer in enumerate(self.layers):
                sel = top == k
                if sel.any():
                    q = self._to_layer(k, t, grid[sel])
                    image[sel] = _sample_texture(texture(layer.texture_seed, layer.tint), q)
            frames[t] = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
            masks[t] = top.astype(np.uint8)
        return frames, masks

    def flow(self) -> FlowPair:
        """Exact flow between consecutive frames: forward[t] at a pixel of frame t follows the
        layer visible there one frame on; backward[t] at a pixel of frame t + 1 follows its
        visible layer back."""
        return self.flow_pairs([(t, t + 1) for t in range(self.num_frames - 1)])

    def flow_pairs(self, pairs: list[tuple[int, int]]) -> FlowPair:
        """Exact flow for frame pairs (a, b): forward[i] maps frame a to b, backward[i] b to a
        (each pixel follows the layer visible there)."""
        grid = self._pixel_grid()
        shape = (len(pairs), 2, self.height, self.width)
        forward, backward = np.empty(shape, np.float32), np.empty(shape, np.float32)
        for i, (a, b) in enumerate(pairs):
            for out, t_from, t_to in ((forward, a, b), (backward, b, a)):
                top = self.top_layer(t_from, grid)
                f = np.empty((self.height, self.width, 2))
                for k in range(len(self.layers)):
                    sel = top == k
                    f[sel] = self._map(k, t_from, t_to, grid[sel]) - grid[sel]
                out[i] = f.transpose(2, 0, 1)
        import torch  # here, not at the top: the dataset readers import this module and must start without torch

        return FlowPair(forward=torch.from_numpy(forward), backward=torch.from_numpy(backward))

    def ground_truth(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact tracks of query points [Q, 3] (t, x, y): (tracks float32 [Q, T, 2], visible bool [Q, T]).

        A query follows the layer on top at its (exact, sub-pixel) position; it is visible at a
        frame where it lies inside the frame and no layer above it covers it.
        """
        queries = np.asarray(queries, dtype=np.float64).reshape(-1, 3)
        q_t = queries[:, 0].astype(np.int64)
        pts = queries[:, 1:]
        tracks = np.empty((queries.shape[0], self.num_frames, 2))
        layer_of = np.empty(queries.shape[0], dtype=np.int64)
        for t0 in np.unique(q_t):
            sel = q_t == t0
            layer_of[sel] = self.top_layer(int(t0), pts[sel])
        for k in range(len(self.layers)):
            for t0 in np.unique(q_t[layer_of == k]):
                sel = (layer_of == k) & (q_t == t0)
                for t in range(self.num_frames):
                    tracks[sel, t] = self._map(k, int(t0), t, pts[sel])
        visible = (
            (tracks[..., 0] >= 0) & (tracks[..., 0] <= self.width - 1)
            & (tracks[..., 1] >= 0) & (tracks[..., 1] <= self.height - 1)
        )
        for t in range(self.num_frames):
            covered_by = self.top_layer(t, tracks[:, t])
            visible[:, t] &= covered_by <= layer_of
        return tracks.astype(np.float32), visible

    def track_errors(self, tracks: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """Distances (px) between tracks [n, T, 2] and the exact tracks of the same points, at every
        frame where visible [n, T] is True; each track is queried at its first visible point."""
        first = visible.argmax(axis=1)
        start = tracks[np.arange(tracks.shape[0]), first]
        gt, _ = self.ground_truth(np.concatenate([first[:, None].astype(np.float64), start], axis=1))
        return np.linalg.norm(tracks - gt, axis=-1)[visible]

    # ---------------------------------------------------------------- conversions
    def to_clip(self, name: str) -> Clip:
        frames, masks = self.render()
        return Clip(name=name, frames=frames, masks=masks, has_mask=np.ones(self.num_frames, dtype=bool), scene=self)

    def rescaled(self, *, height: int, width: int) -> "Scene":
        """The same scene seen at another resolution (pixel-centre convention: x' = (x + 0.5) * W'/W - 0.5)."""
        sx0, sy0, ex0, ey0 = self.view
        kx, ky = width / self.width, height / self.height
        view = (sx0 * kx, sy0 * ky, (ex0 + 0.5) * kx - 0.5, (ey0 + 0.5) * ky - 0.5)
        return replace(self, height=height, width=width, view=view, _cache={})

    def to_dict(self) -> dict:
        return {
            "height": self.height,
            "width": self.width,
            "num_frames": self.num_frames,
            "view": list(self.view),
            "layers": [asdict(layer) for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        layers = tuple(
            Layer(**{**ld, "tint": tuple(ld["tint"]), "c0": tuple(ld["c0"]), "v": tuple(ld["v"])}) for ld in d["layers"]
        )
        return cls(
            height=int(d["height"]), width=int(d["width"]), num_frames=int(d["num_frames"]),
            layers=layers, view=tuple(float(v) for v in d["view"]),
        )


@functools.lru_cache(maxsize=64)
def texture(seed: int, tint: tuple[float, float, float]) -> np.ndarray:
    """float64 [S, S, 3] in [0, 1]: periodic 1/f^1.1 colour noise (natural-image-like spectrum)."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(TEXTURE_SIZE)
    radius = np.hypot(f[:, None], f[None, :])
    radius[0, 0] = 1.0
    amplitude = radius**-1.1
    amplitude[0, 0] = 0.0
    out = np.empty((TEXTURE_SIZE, TEXTURE_SIZE, 3))
    shared = rng.standard_normal((TEXTURE_SIZE, TEXTURE_SIZE)) + 1j * rng.standard_normal((TEXTURE_SIZE, TEXTURE_SIZE))
    for ch in range(3):
        own = rng.standard_normal((TEXTURE_SIZE, TEXTURE_SIZE)) + 1j * rng.standard_normal((TEXTURE_SIZE, TEXTURE_SIZE))
        noise = np.fft.ifft2((0.7 * shared + 0.3 * own) * amplitude).real
        noise = (noise - noise.mean()) / (noise.std() + 1e-12)
        out[..., ch] = np.clip(0.5 + 0.22 * noise, 0.0, 1.0) * 0.7 + 0.3 * tint[ch]
    return out


def _sample_texture(tex: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Bilinear, wrap-around sample of a periodic texture at layer coordinates q [P, 2]."""
    s = tex.shape[0]
    x, y = q[:, 0] + s / 2, q[:, 1] + s / 2
    x0, y0 = np.floor(x), np.floor(y)
    wx, wy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64) % s, y0.astype(np.int64) % s
    x1, y1 = (x0 + 1) % s, (y0 + 1) % s
    top = tex[y0, x0] * (1 - wx) + tex[y0, x1] * wx
    bottom = tex[y1, x0] * (1 - wx) + tex[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def make_scene(
    *,
    seed: int,
    num_frames: int = 24,
    height: int = 320,
    width: int = 576,
    num_objects: int = 3,
    max_speed: float = 4.0,
    min_relative_speed: float = 2.0,
) -> Scene:
    """A random scene: a slowly panning background and `num_objects` textured blobs that
    translate, rotate and scale across it and occlude one another.

    Objects move at least `min_relative_speed` px/frame relative to the background and to each
    other, so that occlusions are visible to a 1.5 px cycle test.
    """
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    if max_speed < min_relative_speed:
        raise ValueError(f"max_speed ({max_speed}) must be >= min_relative_speed ({min_relative_speed})")
    rng = np.random.default_rng(seed)
    size = min(height, width)
    bg_v = tuple(rng.uniform(-0.3, 0.3, 2) * max_speed)
    layers = [
        Layer(
            texture_seed=int(rng.integers(2**31)), tint=tuple(rng.uniform(0.2, 0.8, 3)),
            c0=(width / 2, height / 2), v=bg_v, g=float(rng.uniform(-0.002, 0.002)),
        )
    ]
    velocities = [np.asarray(bg_v)]
    for _ in range(num_objects):
        for _attempt in range(100):
            speed = rng.uniform(min_relative_speed, max_speed)
            angle = rng.uniform(0, 2 * np.pi)
            v = np.array([np.cos(angle), np.sin(angle)]) * speed
            if all(np.linalg.norm(v - u) >= min_relative_speed for u in velocities):
                break
        velocities.append(v)
        mid = np.array([rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height])
        c0 = mid - v * (num_frames - 1) / 2  # the object crosses the middle of the frame mid-clip
        layers.append(
            Layer(
                texture_seed=int(rng.integers(2**31)), tint=tuple(rng.uniform(0.0, 1.0, 3)),
                c0=(float(c0[0]), float(c0[1])), v=(float(v[0]), float(v[1])),
                a0=float(rng.uniform(0, 2 * np.pi)), w=float(rng.uniform(-0.02, 0.02)),
                s0=1.0, g=float(rng.uniform(-0.008, 0.008)),
                radius=float(rng.uniform(0.15, 0.25) * size), lobes=int(rng.integers(2, 6)),
                lobe_amp=float(rng.uniform(0.05, 0.3)), lobe_phase=float(rng.uniform(0, 2 * np.pi)),
            )
        )
    return Scene(height=height, width=width, num_frames=num_frames, layers=tuple(layers))
