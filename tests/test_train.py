"""`track4gen train` / `sample` / `make-tiny-model` end to end on the tiny model (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from track4gen import checkpoint as ckpt
from track4gen.cli import app
from track4gen.model import load_components
from track4gen.train import TrainConfig, train
from train_fixtures import HEIGHT, WIDTH, make_segment_store, one_thread  # noqa: F401 (autouse fixture)

runner = CliRunner()




@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def tiny_model(work):
    result = runner.invoke(app, ["make-tiny-model", str(work / "tiny-svd")])
    assert result.exit_code == 0, result.output
    return work / "tiny-svd"


@pytest.fixture(scope="module")
def store(work):
    return make_segment_store(work / "segments.zarr", num_segments=4)


def config(store, model, out, **kw) -> TrainConfig:
    base = dict(store=str(store), pretrained=str(model), out=str(out), num_workers=0, num_pairs=64,
                checkpoint_every=2, max_steps=2)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def two_step_run(work, store, tiny_model):
    """Two steps through the CLI, writing a checkpoint at step 2."""
    out = work / "run"
    result = runner.invoke(app, ["train", "--store", str(store), "--pretrained", str(tiny_model), "--out", str(out),
                                 "--max-steps", "2", "--checkpoint-every", "2", "--num-workers", "0",
                                 "--num-pairs", "64"])
    assert result.exit_code == 0, result.output
    return out


def test_make_tiny_model_is_loadable_with_svd_layout(tiny_model):
    for sub in ("unet", "vae", "image_encoder", "feature_extractor", "scheduler"):
        assert (tiny_model / sub).is_dir()
    parts = load_components(tiny_model)
    assert len(parts.unet.up_blocks) == 4 and parts.image_encoder.config.image_size == 224


def test_two_steps_write_a_checkpoint_and_tensorboard_scalars(two_step_run):
    found = ckpt.list_checkpoints(two_step_run)
    assert [p.name for p in found] == ["step-00000002"]
    files = {p.name for p in found[0].iterdir()}
    assert {"weights.safetensors", "optimizer.safetensors", "rng-0.safetensors", "state.json"} <= files
    weights = load_file(str(found[0] / "weights.safetensors"))
    assert any(k.startswith("head.refiner.") for k in weights) and "head.zero_conv.weight" in weights
    assert all("temporal_transformer_blocks" in k for k in weights if k.startswith("unet."))
    assert ckpt.read_state(found[0])["step"] == 2

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(two_step_run / "logs" / "track4gen"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss/diffusion", "loss/correspondence", "loss/total"} <= set(tags)
    assert [e.step for e in events.Scalars("loss/correspondence")] == [1, 2]


def test_resume_latest_continues_at_step_3_exactly_as_an_uninterrupted_run(work, store, tiny_model, two_step_run):
    saved_opt = ckpt.load_optimizer_state(ckpt.list_checkpoints(two_step_run)[-1] / ckpt.OPTIMIZER)
    resumed = train(config(store, tiny_model, two_step_run, max_steps=3, resume="latest"))
    assert resumed.first_step == 3 and resumed.last_step == 3

    straight = train(config(store, tiny_model, work / "straight", max_steps=3))
    assert [r["step"] for r in straight.losses] == [1, 2, 3]
    # Same optimiser state after two steps, and the same third step (data, noise, weights).
    two = ckpt.load_optimizer_state(ckpt.checkpoint_dir(work / "straight", 2) / ckpt.OPTIMIZER)
    assert saved_opt["state"].keys() == two["state"].keys()
    for i, slots in saved_opt["state"].items():
        for key, value in slots.items():
            assert torch.equal(value, two["state"][i][key]), (i, key)
    assert resumed.losses[0] == straight.losses[2]
    a = load_file(str(ckpt.checkpoint_dir(two_step_run, 3) / ckpt.WEIGHTS))
    b = load_file(str(ckpt.checkpoint_dir(work / "straight", 3) / ckpt.WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # ... and the third step did change the weights.
    w2 = load_file(str(ckpt.checkpoint_dir(work / "straight", 2) / ckpt.WEIGHTS))
    assert not torch.equal(w2["head.zero_conv.weight"], b["head.zero_conv.weight"])


def test_resume_without_a_checkpoint_says_where_it_looked(work, store, tiny_model):
    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        train(config(store, tiny_model, work / "empty-run", resume="latest"))


def test_options_gradient_checkpointing_bf16_conditioning_dropout_and_checkpoint_rotation(work, store, tiny_model):
    cfg = config(store, tiny_model, work / "options", max_steps=3, checkpoint_every=1, checkpoints_total_limit=2,
                 gradient_checkpointing=True, mixed_precision="bf16", conditioning_dropout=0.3,
                 trainable="spatial-temporal", num_workers=1)
    result = train(cfg)
    assert result.last_step == 3 and all(np.isfinite(r["total"]) for r in result.losses)
    weights = load_file(str(result.checkpoints[-1] / ckpt.WEIGHTS))
    assert any(".transformer_blocks." in k for k in weights)  # spatial blocks trained too
    # A checkpoint every step, only the newest 2 kept, and no staging folder left behind.
    assert [p.name for p in ckpt.list_checkpoints(work / "options")] == ["step-00000002", "step-00000003"]
    assert sorted(p.name for p in (work / "options" / ckpt.CHECKPOINTS).iterdir()) == ["step-00000002", "step-00000003"]


def test_bad_options_are_reported(work, store, tiny_model):
    with pytest.raises(ValueError, match="mixed_precision.*'fp8'"):
        train(config(store, tiny_model, work / "bad", mixed_precision="fp8"))
    with pytest.raises(FileNotFoundError, match="nowhere.zarr"):
        train(config(work / "nowhere.zarr", tiny_model, work / "bad"))
    with pytest.raises(ValueError, match="trainable.*'everything'"):
        train(config(store, tiny_model, work / "bad", trainable="everything"))
    with pytest.raises(ValueError, match=r"conditioning_dropout.*\[0, 1/3\], got 0.5"):
        train(config(store, tiny_model, work / "bad", conditioning_dropout=0.5))
    # An annotation store where a segment store is expected is named, before any model loads.
    annotations = store.with_name(f"{store.stem}-annotations.zarr")
    with pytest.raises(ValueError, match=r"annotations.zarr: expected a segment store"):
        train(config(annotations, work / "no-model", work / "bad"))
    assert not (work / "bad").exists()
    result = runner.invoke(app, ["train", "--store", str(work / "nowhere.zarr"), "--pretrained", str(tiny_model),
                                 "--out", str(work / "bad")])
    assert result.exit_code == 2 and "error: --store" in result.output and "nowhere.zarr" in result.output


def test_overfitting_one_segment_halves_the_correspondence_loss(work, tiny_model):
    one = make_segment_store(work / "one.zarr", num_segments=1, seed=11)
    # A higher learning rate than the paper's 1e-5 so that a tiny random model moves in 50 steps.
    result = train(config(one, tiny_model, work / "overfit", max_steps=50, num_pairs=128, learning_rate=1e-3,
                          checkpoint_every=1000))
    corr = np.array([r["correspondence"] for r in result.losses])
    assert corr[-5:].mean() <= 0.5 * corr[:5].mean(), corr.round(3)


def test_sample_writes_a_video_with_the_requested_frame_count(work, two_step_run):
    import av

    image = work / "first.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(image)
    out = work / "video.mp4"
    result = runner.invoke(app, ["sample", "--checkpoint", str(two_step_run), "--image", str(image), "--out", str(out),
                                 "--num-frames", "6", "--height", str(HEIGHT), "--width", str(WIDTH)])
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (HEIGHT, WIDTH, 3)

    from track4gen.sample import sample_video

    gif = sample_video(ckpt.list_checkpoints(two_step_run)[-1], image, work / "video.gif", num_frames=5,
                       height=HEIGHT, width=WIDTH, num_inference_steps=2)
    assert Image.open(gif).n_frames == 5
    with pytest.raises(ValueError, match=r"\.mp4 or \.gif"):
        sample_video(two_step_run, image, work / "video.avi", height=HEIGHT, width=WIDTH)
    result = runner.invoke(app, ["sample", "--checkpoint", str(work / "no-run"), "--image", str(image),
                                 "--out", str(out)])
    assert result.exit_code == 2 and "no-run: neither a checkpoint folder" in result.output


def test_sample_pipeline_carries_the_trained_weights_and_the_attached_head(two_step_run):
    from track4gen.sample import load_pipeline

    last = ckpt.list_checkpoints(two_step_run)[-1]
    pipe = load_pipeline(two_step_run)
    trained = load_file(str(last / ckpt.WEIGHTS))
    unet_sd = pipe.unet.state_dict()
    assert all(torch.equal(unet_sd[k[len("unet."):]], v) for k, v in trained.items() if k.startswith("unet."))
    hooks = pipe.unet.up_blocks[2].upsamplers[0]._forward_hooks
    assert len(hooks) == 1
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 4, 8, HEIGHT // 8, WIDTH // 8, generator=g), torch.tensor([0.25]))
    kw = dict(encoder_hidden_states=torch.randn(1, 1, 32, generator=g), added_time_ids=torch.tensor([[6.0, 127.0, 0.02]]))
    with torch.no_grad():
        with_head = pipe.unet(*args, **kw).sample
        hooks.clear()  # the plain UNet: the trained zero conv must have made a difference
        plain = pipe.unet(*args, **kw).sample
    assert not torch.equal(with_head, plain)


@pytest.mark.slow
def test_torchrun_two_processes_train_data_parallel(work, store, tiny_model):
    """Two CPU processes (gloo) through the same entry point `accelerate launch` uses on GPUs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = work / "ddp"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "track4gen.cli", "train",
           "--store", str(store), "--pretrained", str(tiny_model), "--out", str(out), "--max-steps", "2",
           "--checkpoint-every", "2", "--num-workers", "0", "--num-pairs", "32", "--cpu"]
    proc = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = ckpt.list_checkpoints(out)[-1]
    assert ckpt.read_state(last)["num_processes"] == 2
    assert (last / "rng-0.safetensors").is_file() and (last / "rng-1.safetensors").is_file()
    # Each process drew its own noise stream.
    r0, r1 = load_file(str(last / "rng-0.safetensors")), load_file(str(last / "rng-1.safetensors"))
    assert not torch.equal(r0["generator"], r1["generator"])
