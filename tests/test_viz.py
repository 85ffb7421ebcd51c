"""`trackprep viz` and the drawing core (issue 6)."""

import av
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from trackprep.cli import app
from trackprep.core import draw
from trackprep.core.synthetic import make_scene
from trackprep.io import annotation_store as astore
from trackprep.io import segment_store as sstore
from trackprep.viz import VizError, load_segment, render, viz

H, W, T = 64, 96, 12


@pytest.fixture(scope="module")
def scene_tracks():
    """A synthetic clip and the exact tracks of a grid of points seeded at frame 0."""
    scene = make_scene(seed=3, num_frames=T, height=H, width=W, num_objects=2, max_speed=3.0)
    frames, masks = scene.render()
    ys, xs = np.mgrid[4:H:10, 4:W:10]
    queries = np.stack([np.zeros(xs.size), xs.ravel(), ys.ravel()], 1).astype(np.float64)
    tracks, visible = scene.ground_truth(queries)
    tracks = np.where(visible[..., None], tracks, np.nan).astype(np.float32)
    labels = masks[0, ys.ravel(), xs.ravel()]
    return scene, frames, masks, tracks, visible, labels


@pytest.fixture(scope="module")
def segment_store(scene_tracks, tmp_path_factory):
    _, frames, masks, tracks, visible, labels = scene_tracks
    path = tmp_path_factory.mktemp("viz") / "S.zarr"
    root = sstore.create_segment_store(path, num_segments=2, length=T, height=H, width=W, max_tracks=200, config={})
    for i in range(2):
        sstore.write_segment(root, i, frames=frames, masks=masks, has_mask=np.ones(T, bool), tracks=tracks,
                             visible=visible, labels=labels, video="synth/grid", start=i)
    sstore.mark_complete(root)
    return path


def near_tracks(tracks, visible, t, *, tail, reach):
    """bool [H, W]: pixels within `reach` px of the head at t or of the tail segments t-tail .. t."""
    pts = []
    for k in range(max(0, t - tail), t):
        ok = visible[:, k] & visible[:, k + 1]
        s = np.linspace(0, 1, 64)[None, :, None]
        pts.append((tracks[ok, k, None] + (tracks[ok, k + 1] - tracks[ok, k])[:, None] * s).reshape(-1, 2))
    pts.append(tracks[visible[:, t], t])
    pts = np.concatenate(pts)
    seeds = np.ones((H, W), bool)
    ix, iy = np.rint(pts[:, 0]).astype(int), np.rint(pts[:, 1]).astype(int)
    ok = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
    seeds[iy[ok], ix[ok]] = False
    return ndimage.distance_transform_edt(seeds) <= reach


def test_drawing_changes_only_pixels_near_tracks(scene_tracks):
    _, frames, _, tracks, visible, _ = scene_tracks
    colors = draw.rainbow_colors(draw.first_visible_points(tracks, visible), height=H, width=W)
    out = draw.draw_tracks(frames, tracks, visible, colors, radius=2, tail=4)
    assert out.shape == frames.shape and out.dtype == np.uint8
    for t in range(T):
        changed = (out[t] != frames[t]).any(-1)
        assert changed.any()
        assert not (changed & ~near_tracks(tracks, visible, t, tail=4, reach=2.5)).any(), t
        # every visible head is painted in its track's colour
        ok = visible[:, t]
        ix, iy = np.rint(tracks[ok, t, 0]).astype(int), np.rint(tracks[ok, t, 1]).astype(int)
        inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
        np.testing.assert_array_equal(out[t, iy[inside], ix[inside]], colors[ok][inside])


def test_rainbow_hue_follows_start_row_and_labels_have_fixed_colours():
    pts = np.array([[0, 0], [10, 30], [10, 63], [np.nan, np.nan]], np.float32)
    c = draw.rainbow_colors(pts, height=64, width=96)
    assert c[0].tolist() == [255, 0, 0]  # first row: red, as the top rows of DINO-Tracker pictures
    assert len({tuple(x) for x in c[:3]}) == 3
    lc = draw.label_colors(np.array([0, 1, 2, 255], np.uint8))
    assert lc[0].tolist() == list(draw.BACKGROUND_COLOR) and lc[3].tolist() == list(draw.VOID_COLOR)
    assert lc[1].tolist() != lc[2].tolist()


def test_spread_tracks_one_per_cell_and_never_invisible():
    rng = np.random.default_rng(0)
    pts = rng.uniform([0, 0], [W, H], (5000, 2)).astype(np.float32)
    lengths = rng.integers(0, 10, 5000)
    rows = draw.spread_tracks(pts, lengths, n=24, height=H, width=W)
    assert 12 <= rows.size <= 35 and (lengths[rows] > 0).all()
    cell = np.sqrt(H * W / 24)
    cells = {(int(x // cell), int(y // cell)) for x, y in pts[rows]}
    assert len(cells) == rows.size  # one per cell
    with pytest.raises(ValueError, match="n: expected a positive number"):
        draw.spread_tracks(pts, lengths, n=0, height=H, width=W)


def test_png_frame_differs_from_raw_only_near_tracks(segment_store, scene_tracks, tmp_path):
    _, frames, _, tracks, visible, _ = scene_tracks
    out = viz(segment_store, tmp_path / "f.png", segment=1, frame=7, tail=3, radius=1, max_tracks=1000)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (H, W, 3)
    changed = (img != frames[7]).any(-1)
    assert changed.sum() > 50
    assert not (changed & ~near_tracks(tracks, visible, 7, tail=3, reach=1.5)).any()


def test_gif_has_every_frame_at_full_size(segment_store, tmp_path):
    out = viz(segment_store, tmp_path / "s.gif", segment=0, color_by="label", show_masks=True, fps=5)
    with Image.open(out) as im:
        assert im.n_frames == T and im.size == (W, H)
        assert im.info["duration"] == 200  # GIF stores centiseconds: 5 fps is exact


def test_mp4_decodes_to_every_frame(segment_store, scene_tracks, tmp_path):
    out = viz(segment_store, tmp_path / "s.mp4", segment=0)
    with av.open(str(out)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert decoded.shape == (T, H, W, 3)
    # H.264 in yuv420p is lossy (chroma at half resolution, which blurs saturated dots on a
    # 64 x 96 clip), but it is clearly the rendered picture and not the raw frames
    expected = render(load_segment(segment_store, 0))
    to_picture = np.abs(decoded.astype(int) - expected.astype(int)).mean()
    to_frames = np.abs(decoded.astype(int) - scene_tracks[1].astype(int)).mean()
    assert to_picture < 16 and to_picture < 0.7 * to_frames


def test_png_grid_of_eight_frames(segment_store, tmp_path):
    out = viz(segment_store, tmp_path / "g.png", segment=0)
    with Image.open(out) as im:
        assert im.size == (4 * W + 3 * 2, 2 * H + 2)


def test_viz_of_an_annotation_store_video(scene_tracks, tmp_path):
    scene, *_ = scene_tracks
    from trackprep.core.chaining import chain_tracks
    from trackprep.core.labels import label_tracks

    clip = scene.to_clip("grid")
    ts = label_tracks(chain_tracks(scene.flow(), seed_stride=4), clip.masks, clip.has_mask)
    root = astore.create_store(tmp_path / "A.zarr", config={})
    astore.write_video(root, "synth/grid", clip, ts)
    out = viz(tmp_path / "A.zarr", tmp_path / "v.gif", video="synth/grid", max_tracks=50)
    with Image.open(out) as im:
        assert im.n_frames == T and im.size == (W, H)
    with pytest.raises(astore.StoreError, match="synth/nope: video does not exist"):
        viz(tmp_path / "A.zarr", tmp_path / "v.gif", video="synth/nope")
    with pytest.raises(VizError, match="annotation store: pick a video with --video"):
        viz(tmp_path / "A.zarr", tmp_path / "v.gif", segment=0)


def test_viz_argument_errors(segment_store, tmp_path):
    with pytest.raises(VizError, match=r"x.jpg: expected a file ending in one of \('.gif', '.mp4', '.png'\), got '.jpg'"):
        viz(segment_store, tmp_path / "x.jpg", segment=0)
    with pytest.raises(VizError, match="exactly one of --video NAME"):
        viz(segment_store, tmp_path / "x.gif", segment=0, video="a/b")
    with pytest.raises(VizError, match="segment store: pick a segment with --segment"):
        viz(segment_store, tmp_path / "x.gif", video="synth/grid")
    with pytest.raises(IndexError, match="segment index 5 out of range for 2 segments"):
        viz(segment_store, tmp_path / "x.gif", segment=5)
    with pytest.raises(VizError, match=f"frame 40: the clip has {T} frames"):
        viz(segment_store, tmp_path / "x.png", segment=0, frame=40)


def test_cli_viz_and_its_error_exit(segment_store, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["viz", str(segment_store), "--segment", "1", "--out", str(tmp_path / "c.gif")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c.gif").is_file()
    res = runner.invoke(app, ["viz", str(segment_store), "--segment", "1", "--out", str(tmp_path / "c.bmp")])
    assert res.exit_code == 2 and "expected a file ending in one of" in res.output
