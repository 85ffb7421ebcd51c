"""`trackprep demo`: synthetic dataset -> annotation store -> segments -> pictures, offline."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from trackprep.cli import app
from trackprep.demo import run_demo
from trackprep.io import annotation_store as S
from trackprep.io.validate import validate_store


def test_demo_end_to_end(tmp_path):
    r = run_demo(tmp_path / "demo", num_videos=1, num_frames=24, size=(64, 96))
    assert not r.summary.failed and [x.key for x in r.summary.completed] == ["synthetic/scene000"]
    assert validate_store(r.store) == [] and validate_store(r.segments) == []
    acc = r.accuracy["synthetic/scene000"]
    assert acc.points > 1000 and acc.median_px < 0.05  # oracle flow: chained tracks follow the exact motion
    assert r.num_segments == 1
    picture = np.asarray(Image.open(r.picture))
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.std() > 10
    assert (r.out / "tracks.gif").is_file()

    # Running it again resumes: nothing is recomputed, the same store comes back.
    again = run_demo(tmp_path / "demo", num_videos=1, num_frames=24, size=(64, 96), overwrite=False)
    assert list(again.summary.skipped) == ["synthetic/scene000"] and not again.summary.results
    assert S.complete_videos(S.open_store(again.store)) == ["synthetic/scene000"]


def test_demo_command_rejects_raft(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--flow", "raft"])
    assert r.exit_code == 2 and "expected oracle or dis" in r.stderr
