"""Damaged checkpoints: `--resume latest` falls back to the newest intact one and says why;
an explicit damaged `--resume DIR` is a one-line error naming the file (issue 14, item 5)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from track4gen import checkpoint as ckpt
from track4gen.cli import app
from track4gen.export import EMA_WEIGHTS
from track4gen.train import TrainConfig, train
from train_fixtures import make_segment_store, make_tiny_model_dir, one_thread  # noqa: F401 (autouse fixture)

FILES = (ckpt.WEIGHTS, ckpt.OPTIMIZER, ckpt.STATE, ckpt.rng_name(0))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def inputs(work):
    return make_segment_store(work / "segments.zarr", num_segments=4), make_tiny_model_dir(work / "tiny-svd")


def config(inputs, out, **kw) -> TrainConfig:
    store, model = inputs
    base = dict(store=str(store), pretrained=str(model), out=str(out), num_workers=0, num_pairs=32,
                checkpoint_every=2, max_steps=4, export=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def run(work, inputs):
    """An uninterrupted 4-step run with checkpoints at steps 2 and 4."""
    result = train(config(inputs, work / "run"))
    assert [p.name for p in ckpt.list_checkpoints(work / "run")] == ["step-00000002", "step-00000004"]
    return work / "run", result


def damaged_copy(run, tmp_path, name: str, how: str):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    path = ckpt.checkpoint_dir(out, 4) / name
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "flipped":  # same size, one byte changed: only the checksum can tell
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    return out, path


def test_a_checkpoint_ends_with_a_manifest_of_its_files(run):
    final = ckpt.checkpoint_dir(run[0], 4)
    manifest = json.loads((final / ckpt.MANIFEST).read_text())
    assert manifest["step"] == 4 and sorted(manifest["files"]) == sorted(FILES)
    for name, record in manifest["files"].items():
        data = (final / name).read_bytes()
        assert record == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
    assert ckpt.verify_checkpoint(final)["step"] == 4
    assert not list((run[0] / ckpt.CHECKPOINTS).glob(".tmp-*"))


@pytest.mark.parametrize("how", ["missing", "truncated"])
@pytest.mark.parametrize("name", FILES)
def test_latest_skips_a_damaged_newest_checkpoint_and_resumes_from_the_previous(run, inputs, tmp_path, caplog,
                                                                               name, how):
    run_dir, uninterrupted = run
    out, damaged = damaged_copy(run_dir, tmp_path, name, how)
    with caplog.at_level(logging.INFO, logger="track4gen"):
        resumed = train(config(inputs, out, max_steps=3, resume="latest"))
    assert resumed.first_step == 3 and resumed.last_step == 3
    assert resumed.losses[0] == uninterrupted.losses[2]  # exactly the uninterrupted run's step 3
    skipped = [r.getMessage() for r in caplog.records
               if r.name == "track4gen.checkpoint" and r.levelno == logging.WARNING]
    assert len(skipped) == 1 and "skipping checkpoint step-00000004" in skipped[0] and str(damaged) in skipped[0]
    assert any(f"resumed from {ckpt.checkpoint_dir(out, 2)}" in r.getMessage() for r in caplog.records)


def test_the_rerun_replaces_the_damaged_checkpoint_with_an_identical_intact_one(run, inputs, tmp_path):
    run_dir, _ = run
    out, _ = damaged_copy(run_dir, tmp_path, ckpt.WEIGHTS, "missing")
    train(config(inputs, out, max_steps=4, resume="latest"))
    ckpt.verify_checkpoint(ckpt.checkpoint_dir(out, 4))
    a = load_file(str(ckpt.checkpoint_dir(out, 4) / ckpt.WEIGHTS))
    b = load_file(str(ckpt.checkpoint_dir(run_dir, 4) / ckpt.WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_changed_byte_is_caught_by_the_checksum(run, tmp_path):
    out, damaged = damaged_copy(run[0], tmp_path, ckpt.OPTIMIZER, "flipped")
    with pytest.raises(ckpt.CheckpointError, match="checksum"):
        ckpt.verify_checkpoint(ckpt.checkpoint_dir(out, 4))
    assert ckpt.latest_checkpoint(out) == ckpt.checkpoint_dir(out, 2)


def test_a_checkpoint_without_manifest_is_checked_by_parsing_its_files(run, tmp_path, caplog):
    # Checkpoints written before manifests existed still resume; a cut file among them is still caught.
    out, _ = damaged_copy(run[0], tmp_path, ckpt.MANIFEST, "missing")
    with caplog.at_level(logging.INFO, logger="track4gen.checkpoint"):
        assert ckpt.latest_checkpoint(out) == ckpt.checkpoint_dir(out, 4)
    assert "has no manifest.json" in caplog.text
    weights = ckpt.checkpoint_dir(out, 4) / ckpt.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ckpt.CheckpointError, match=f"{weights}: unreadable safetensors"):
        ckpt.verify_checkpoint(ckpt.checkpoint_dir(out, 4))


def test_an_explicit_damaged_checkpoint_is_a_one_line_error_naming_the_file(run, inputs, tmp_path):
    out, damaged = damaged_copy(run[0], tmp_path, ckpt.OPTIMIZER, "truncated")
    store, model = inputs
    result = CliRunner().invoke(app, ["train", "--store", str(store), "--pretrained", str(model), "--out", str(out),
                                      "--max-steps", "5", "--num-workers", "0",
                                      "--resume", str(ckpt.checkpoint_dir(out, 4))])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(damaged) in errors[0] and "truncated" in errors[0], result.output
    assert "Traceback" not in result.output


def test_when_every_checkpoint_is_damaged_each_reason_is_given(run, tmp_path):
    out, _ = damaged_copy(run[0], tmp_path, ckpt.STATE, "missing")
    (ckpt.checkpoint_dir(out, 2) / ckpt.rng_name(0)).unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"no intact checkpoint.*step-00000004.*state\.json.*"
                                                   r"step-00000002.*rng-0\.safetensors"):
        ckpt.latest_checkpoint(out)


def test_a_garbled_manifest_or_state_is_named(run, tmp_path):
    out, _ = damaged_copy(run[0], tmp_path, ckpt.MANIFEST, "truncated")
    manifest = ckpt.checkpoint_dir(out, 4) / ckpt.MANIFEST
    with pytest.raises(ckpt.CheckpointError, match=f"{manifest}: not valid JSON"):
        ckpt.verify_checkpoint(manifest.parent)
    manifest.write_text(json.dumps({"files": {ckpt.WEIGHTS: {"bytes": "many"}}}))
    with pytest.raises(ckpt.CheckpointError, match=f"{manifest}: expected"):
        ckpt.verify_checkpoint(manifest.parent)
    state = ckpt.checkpoint_dir(out, 2) / ckpt.STATE
    state.write_text(json.dumps({"step": 2}))
    with pytest.raises(ckpt.CheckpointError, match=r"state\.json: expected the keys .* missing \['epoch'"):
        ckpt.verify_checkpoint(state.parent)


def test_saving_flushes_every_file_then_the_folders_before_and_after_the_rename(inputs, tmp_path, monkeypatch):
    flushed = []
    real_fsync = os.fsync

    def fsync(fd):
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    train(config(inputs, tmp_path / "run", max_steps=2))
    stage = str(ckpt.staging_dir(tmp_path / "run", 2))
    names = [p[len(stage) + 1:] for p in flushed if p.startswith(stage + "/")]
    assert sorted(names) == sorted(FILES + (ckpt.MANIFEST,)) and names[-1] == ckpt.MANIFEST
    assert len(names) == len(set(names))
    # The staging folder's entries, then the rename (in the parent folder), after every file.
    assert flushed[-2:] == [stage, str(tmp_path / "run" / ckpt.CHECKPOINTS)]


def test_the_ema_copy_of_the_weights_is_listed_and_verified_too(inputs, tmp_path):
    train(config(inputs, tmp_path / "run", max_steps=2, use_ema=True))
    final = ckpt.checkpoint_dir(tmp_path / "run", 2)
    assert EMA_WEIGHTS in json.loads((final / ckpt.MANIFEST).read_text())["files"]
    ckpt.verify_checkpoint(final)
    ema = final / EMA_WEIGHTS
    ema.write_bytes(ema.read_bytes()[:-8])
    with pytest.raises(ckpt.CheckpointError, match=f"{ema}: .* bytes, expected"):
        ckpt.verify_checkpoint(final)
