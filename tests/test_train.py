"""`track4gen train` / `export` / `sample` / `make-tiny-model` end to end on the tiny model (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

import track4gen
from track4gen import checkpoint as ckpt
from track4gen import train as train_mod
from track4gen.cli import app
from track4gen.data import SegmentStream
from track4gen.export import EMA_WEIGHTS, MODEL_CARD, load_pipeline
from track4gen.model import VARIANTS, load_components, tracking_head
from track4gen.sample import generate
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
    # The tiny model on CPU: fp32 and no checkpointing are also what "auto" picks here.
    base = dict(store=str(store), pretrained=str(model), out=str(out), num_workers=0, num_pairs=64,
                checkpoint_every=2, max_steps=2, export=False)
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


@pytest.fixture(scope="module")
def first_image(work):
    image = work / "first.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(image)
    return image


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
    with pytest.raises(ValueError, match="variant.*'tracker'"):
        train(config(store, tiny_model, work / "bad", variant="tracker"))
    with pytest.raises(ValueError, match="soft_argmax.*'max'"):
        train(config(store, tiny_model, work / "bad", soft_argmax="max"))
    assert not (work / "bad").exists()
    assert TrainConfig(store="data/segments.zarr", variant="finetune").out == "runs/segments-finetune"
    result = runner.invoke(app, ["train", "--store", str(work / "nowhere.zarr"), "--pretrained", str(tiny_model),
                                 "--out", str(work / "bad")])
    assert result.exit_code == 2 and "error: --store" in result.output and "nowhere.zarr" in result.output
    result = runner.invoke(app, ["train", "--store", str(store), "--pretrained", str(tiny_model), "--variant", "fp16",
                                 "--no-gradient-checkpointing", "--out", str(work / "bad")])
    assert result.exit_code == 2 and "variant: expected one of ('track4gen', 'no-refiner', 'finetune'), got 'fp16'" \
        in result.output  # the old weight-variant meaning of --variant is --weights-variant now


def test_overfitting_one_segment_halves_the_correspondence_loss(work, tiny_model):
    one = make_segment_store(work / "one.zarr", num_segments=1, seed=11)
    # A higher learning rate than the paper's 1e-5 so that a tiny random model moves in 50 steps.
    result = train(config(one, tiny_model, work / "overfit", max_steps=50, num_pairs=128, learning_rate=1e-3,
                          checkpoint_every=1000))
    corr = np.array([r["correspondence"] for r in result.losses])
    assert corr[-5:].mean() <= 0.5 * corr[:5].mean(), corr.round(3)


def test_sample_writes_a_video_with_the_requested_frame_count(work, two_step_run, first_image):
    import av

    image = first_image
    out = work / "video.mp4"
    result = runner.invoke(app, ["sample", "--model", str(two_step_run / "model"), "--image", str(image), "--out", str(out),
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


def test_export_load_sample_gives_the_frames_of_the_training_checkpoint(work, two_step_run, first_image):
    from diffusers import StableVideoDiffusionPipeline
    from PIL import Image as PILImage

    from track4gen.unet import Track4GenUNet

    exported = two_step_run / "model"  # the run's last step exports it
    card = json.loads((exported / MODEL_CARD).read_text())
    step2 = ckpt.checkpoint_dir(two_step_run, 2)  # the run's last step (the resume test goes on, without export)
    assert card["step"] == 2 and card["checkpoint"] == str(step2.resolve())
    assert card["variant"] == "track4gen" and card["head"]["channels"] == 64
    assert json.loads((exported / "unet" / "config.json").read_text())["track4gen_head"]["num_layers"] == 8
    for sub in ("unet", "vae", "image_encoder", "feature_extractor", "scheduler"):
        assert (exported / sub).is_dir()

    picture = PILImage.open(first_image).convert("RGB")
    kw = dict(num_frames=4, num_inference_steps=2, seed=3)
    from_run = generate(load_pipeline(step2), picture, **kw)
    pipe = track4gen.load_pipeline(exported)
    assert isinstance(pipe, StableVideoDiffusionPipeline) and tracking_head(pipe.unet) is not None
    from_model = generate(pipe, picture, **kw)
    assert from_model.shape == (4, HEIGHT, WIDTH, 3)
    assert np.abs(from_model - from_run).max() < 1e-5
    # Model CPU offload (accelerate's hooks move the UNet, head included, per forward) keeps it.
    offloaded = track4gen.load_pipeline(exported)
    offloaded.enable_model_cpu_offload(device="cpu")
    assert np.abs(generate(offloaded, picture, **kw) - from_run).max() < 1e-5
    # save_pretrained of the loaded pipeline keeps the head, for our loader and diffusers' own.
    pipe.save_pretrained(work / "resaved")
    again = track4gen.load_pipeline(work / "resaved")
    assert tracking_head(again.unet) is not None
    assert np.abs(generate(again, picture, **kw) - from_run).max() < 1e-5
    native = StableVideoDiffusionPipeline.from_pretrained(work / "resaved")
    assert isinstance(native.unet, Track4GenUNet) and tracking_head(native.unet) is not None
    # Without the head (what plain diffusers gets from unet/ alone) the frames differ.
    from track4gen.model import remove_tracking_head

    remove_tracking_head(again.unet)
    assert np.abs(generate(again, picture, **kw) - from_run).max() > 1e-4


def test_export_command_writes_a_folder_and_refuses_to_overwrite(work, two_step_run):
    out = work / "exported"
    result = runner.invoke(app, ["export", str(two_step_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    trained = load_file(str(ckpt.list_checkpoints(two_step_run)[-1] / ckpt.WEIGHTS))  # the newest checkpoint
    as_exported = {("tracking_head." + k[5:]) if k.startswith("head.") else k[5:]: v for k, v in trained.items()}
    assert as_exported.keys() <= exported.keys()
    assert all(torch.equal(exported[k], v) for k, v in as_exported.items())
    base = load_file(str(next((two_step_run.parent / "tiny-svd" / "unet").glob("*.safetensors"))))
    frozen = [k for k in base if "temporal_transformer_blocks" not in k]
    assert frozen and all(torch.equal(exported[k], base[k]) for k in frozen)  # the rest is the base model
    result = runner.invoke(app, ["export", str(two_step_run), "--out", str(out)])
    assert result.exit_code == 2 and "already exists" in result.output
    assert not list(work.glob(".exported.tmp"))


def first_batch(store):
    stream = SegmentStream(store, num_pairs=64, rank=0, world_size=1)
    stream.set_epoch(0)
    item = next(iter(stream))
    return {k: v.unsqueeze(0) for k, v in item.items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_trains_exactly_its_parameters(work, store, tiny_model, variant):
    cfg = config(store, tiny_model, work / f"variant-{variant}", variant=variant)
    parts = load_components(cfg.pretrained)
    model, names = train_mod.build_model(parts, cfg=cfg)
    head = model.head
    temporal = {f"unet.{n}" for n, _ in parts.unet.named_parameters() if "temporal_transformer_blocks" in n}
    head_keys = {f"head.{n}" for n, _ in head.named_parameters()} if head is not None else set()
    if variant == "track4gen":
        assert head_keys and any(".refiner." in k or k.startswith("head.refiner") for k in head_keys)
        assert {"head.zero_conv.weight", "head.zero_conv.bias"} <= head_keys
    else:
        assert not head_keys  # no-refiner: a tap without parameters; finetune: no head at all
        assert (head is None) == (variant == "finetune")
    named = dict(train_mod.trainable_named(model))
    assert set(named) == temporal | head_keys and {f"unet.{n}" for n in names} == temporal
    everything = {f"unet.{n}": p for n, p in parts.unet.named_parameters() if not n.startswith("tracking_head.")}
    everything.update({f"head.{n}": p for n, p in (head.named_parameters() if head is not None else [])})
    before = {k: p.detach().clone() for k, p in everything.items()}
    optimizer = train_mod.make_optimizer(model, cfg=cfg)
    terms = train_mod.compute_losses(model, parts, first_batch(store), cfg=cfg, generator=torch.Generator().manual_seed(0))
    terms["total"].backward()
    optimizer.step()
    changed = {k for k, p in everything.items() if not torch.equal(p.detach(), before[k])}
    assert changed <= temporal | head_keys, sorted(changed - temporal - head_keys)[:5]
    assert changed & temporal and head_keys <= changed
    if variant == "finetune":
        assert terms["correspondence"].item() == 0.0 and torch.equal(terms["total"], terms["diffusion"])
    else:
        assert terms["correspondence"].item() > 0.0


def test_no_refiner_correspondence_loss_reaches_the_blocks_before_the_hook(work, store, tiny_model):
    cfg = config(store, tiny_model, work / "variant-grad", variant="no-refiner")
    parts = load_components(cfg.pretrained)
    model, _ = train_mod.build_model(parts, cfg=cfg)
    terms = train_mod.compute_losses(model, parts, first_batch(store), cfg=cfg, generator=torch.Generator().manual_seed(0))
    terms["correspondence"].backward()
    grads = {n: p.grad for n, p in parts.unet.named_parameters() if p.requires_grad}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("down_blocks"))
    # L_corr is read at up_blocks[2]; the last decoder block comes after it and gets nothing.
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if n.startswith("up_blocks.3"))


def test_ema_is_saved_and_exported(work, store, tiny_model):
    out = work / "ema-run"
    result = train(config(store, tiny_model, out, use_ema=True, ema_decay=0.5, export=True))
    last = result.checkpoints[-1]
    ema = load_file(str(last / EMA_WEIGHTS))
    raw = load_file(str(last / ckpt.WEIGHTS))
    assert ema.keys() == raw.keys() and ckpt.read_state(last)["ema_step"] == 2
    assert not torch.equal(ema["head.zero_conv.weight"], raw["head.zero_conv.weight"])
    exported = load_file(str(out / "model" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(exported["tracking_head.zero_conv.weight"], ema["head.zero_conv.weight"])
    assert json.loads((out / "model" / MODEL_CARD).read_text())["ema"] is True
    # Resuming carries the EMA on exactly as an uninterrupted run does.
    train(config(store, tiny_model, out, use_ema=True, ema_decay=0.5, max_steps=3, checkpoint_every=3, resume="latest"))
    train(config(store, tiny_model, work / "ema-straight", use_ema=True, ema_decay=0.5, max_steps=3, checkpoint_every=3))
    resumed = load_file(str(ckpt.checkpoint_dir(out, 3) / EMA_WEIGHTS))
    straight = load_file(str(ckpt.checkpoint_dir(work / "ema-straight", 3) / EMA_WEIGHTS))
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in resumed)


def test_default_pretrained_offline_stops_in_one_line_before_reading_data(work, store, tmp_path):
    """`track4gen train --store S.zarr` with no network: the Hub id, the remedy, nothing written."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "empty-hf-home")}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-m", "track4gen.cli", "train", "--store", str(store)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --pretrained stabilityai/stable-video-diffusion-img2vid-xt")
    assert "HF_HUB_OFFLINE" in lines[0] and "hf auth login" in lines[0] and "hf download" in lines[0]
    assert "empty-hf-home" in lines[0]  # where it looked
    assert not (tmp_path / "runs").exists()  # the default --out (runs/segments-track4gen) was never made


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


def test_a_run_on_fp16_weights_loads_every_component_from_them(work, store, tiny_model):
    """A base folder holding both weight sets, trained with --weights-variant fp16: the run's
    pipeline (and its exported model) read the VAE and image encoder of the fp16 files, as
    training did, not the plain ones beside them."""
    import shutil

    from diffusers import StableVideoDiffusionPipeline

    both = work / "both-variants"
    shutil.copytree(tiny_model, both)
    half = StableVideoDiffusionPipeline.from_pretrained(both)
    with torch.no_grad():
        for p in [*half.vae.parameters(), *half.image_encoder.parameters()]:
            p.add_(0.25)  # the fp16 set differs from the plain one
    half.to(torch.float16).save_pretrained(both, variant="fp16")
    out = work / "run-fp16"
    result = runner.invoke(app, ["train", "--store", str(store), "--pretrained", str(both), "--out", str(out),
                                 "--weights-variant", "fp16", "--max-steps", "1", "--checkpoint-every", "1",
                                 "--num-workers", "0", "--num-pairs", "64"])
    assert result.exit_code == 0, result.output
    for pipe in (load_pipeline(out), track4gen.load_pipeline(out / "model")):
        for name in ("vae", "image_encoder"):
            got, want = getattr(pipe, name).state_dict(), getattr(half, name).state_dict()
            assert all(torch.equal(v, want[k].float()) for k, v in got.items()), name


def test_each_train_command_logs_on_its_own_stderr(work, store, tiny_model, capsys):
    """Two in-process invocations: each one's progress lines reach its own output, and none is
    written to the first invocation's stream after it closed ("--- Logging error ---")."""
    outputs = []
    for k in range(2):
        result = runner.invoke(app, ["train", "--store", str(store), "--pretrained", str(tiny_model),
                                     "--out", str(work / f"log-run{k}"), "--max-steps", "1", "--checkpoint-every", "1",
                                     "--num-workers", "0", "--num-pairs", "64", "--no-export"])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert all("track4gen.train variant track4gen: training" in o and "track4gen.train step 1 " in o for o in outputs)
    assert "Logging error" not in capsys.readouterr().err
