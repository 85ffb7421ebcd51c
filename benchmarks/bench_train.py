"""Track4Gen trainer figures: data loading rate, the correspondence loss's share of a step, the
balance of the two losses at step 1, and the full-size model's size and memory.

Sections (`--sections`, all by default):
- loading: the streaming dataset sustains >= 20 segments/s per process from a local segment
  store at 24 x 320 x 576 with 8192 tracks (issue 7; frames decoded, 512 pairs sampled);
- step: the correspondence loss adds < 10% to the tiny model's training step time (issue 7);
- balance: at step 1 with the paper's settings (24 x 320 x 576, 512 pairs, lambda = 8,
  R = 35 px, Eq. 3 weights), L_diff, lambda * L_corr and the gradient norm each puts on the
  trainable parameters both reach (temporal blocks before the hook), tiny model (issue 11);
- fullsize: SVD-xt's UNet (its unet/config.json) built on the meta device with the head:
  parameter counts, and an estimate of training memory at 1 x 24 x 320 x 576 in bf16 with and
  without gradient checkpointing, from the tensors autograd saves (an estimate, not a
  measurement: no GPU here; on a GPU, `--sections fullsize --device cuda` would time it).

Frames are real DAVIS-2016 frames when ../shared/data is there (natural images barely
compress, so reads are honest), otherwise synthetic scenes.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_train.py [--segments 24] [--steps 10] [--sections balance,fullsize]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch.utils.data import DataLoader

from trackprep.core.resize import resize_frames
from trackprep.io.segment_store import create_segment_store, mark_complete, write_segment
from track4gen import train as train_mod
from track4gen.data import SegmentStream
from track4gen.losses import correspondence_loss
from track4gen.model import add_tracking_head, make_head, select_trainable

L, H, W, N = 24, 320, 576, 8192
DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016" / "JPEGImages" / "480p"


def clip_frames(i: int) -> np.ndarray:
    seqs = sorted(DAVIS.glob("*")) if DAVIS.is_dir() else []
    if seqs:
        from PIL import Image

        files = sorted(seqs[i % len(seqs)].glob("*.jpg"))[:L]
        return resize_frames(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]), size=(H, W))
    from trackprep.core.synthetic import make_scene

    return make_scene(seed=i, num_frames=L, height=H, width=W).render()[0]


def random_tracks(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth random walks, each defined on one random run of >= 2 frames, half foreground."""
    start = rng.uniform([0, 0], [W - 1, H - 1], (N, 1, 2))
    tracks = (start + np.cumsum(rng.normal(0, 1.5, (N, L, 2)), axis=1)).clip(0, [W - 1, H - 1]).astype(np.float32)
    first = rng.integers(0, L - 1, N)
    last = np.minimum(L, first + rng.integers(2, L + 1, N))
    frames = np.arange(L)
    visible = (frames >= first[:, None]) & (frames < last[:, None])
    tracks[~visible] = np.nan
    labels = (np.arange(N) % 2).astype(np.uint8)
    return tracks, visible, labels


def build_store(path: Path, segments: int) -> None:
    root = create_segment_store(path, num_segments=segments, length=L, height=H, width=W, max_tracks=N,
                                config={"benchmark": "bench_train"})
    rng = np.random.default_rng(0)
    clips = {}
    for s in range(segments):
        frames = clips.setdefault(s % 8, clip_frames(s % 8))
        tracks, visible, labels = random_tracks(rng)
        write_segment(root, s, frames=frames, masks=np.zeros((L, H, W), np.uint8), has_mask=np.ones(L, bool),
                      tracks=tracks, visible=visible, labels=labels, video=f"bench/{s % 8}", start=0)
    mark_complete(root)


def bench_loading(store: Path, *, workers: int, scale_frames: bool, epochs: int = 2) -> float:
    ds = SegmentStream(store, num_pairs=512, scale_frames=scale_frames, rank=0, world_size=1)
    loader = DataLoader(ds, batch_size=1, num_workers=workers)
    ds.set_epoch(0)
    next(iter(loader))  # warm up (worker start, file cache) outside the timing
    count, t0 = 0, time.perf_counter()
    for e in range(epochs):
        ds.set_epoch(e + 1)
        for batch in loader:
            count += batch["frames"].shape[0]
    return count / (time.perf_counter() - t0)


def bench_step(work: Path, *, steps: int, height: int, width: int, frames: int) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from train_fixtures import make_segment_store
    from track4gen.tiny_model import make_tiny_model

    store = make_segment_store(work / f"s{height}.zarr", num_segments=1, length=frames, height=height, width=width)
    model_dir = make_tiny_model(work / "tiny", num_frames=frames)
    cfg = train_mod.TrainConfig(store=str(store), pretrained=str(model_dir), out=str(work / "run"), num_pairs=512)
    parts = train_mod.load_components(cfg.pretrained)
    model, _ = train_mod.build_model(parts, cfg=cfg)
    optimizer = train_mod.make_optimizer(model, cfg=cfg)
    batch = next(iter(DataLoader(SegmentStream(store, num_pairs=512, rank=0, world_size=1), batch_size=1)))
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        terms = train_mod.compute_losses(model, parts, batch, cfg=cfg, generator=gen)
        terms["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def once() -> float:
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0

    def no_corr(features, **kw):  # the same step without the correspondence term (no loss, no refiner backward)
        return features.sum() * 0.0

    step()  # warm-up
    full, without = [], []
    for _ in range(steps):  # interleaved, medians: a shared machine's load drifts between runs
        full.append(once())
        with mock.patch.object(train_mod, "correspondence_loss", no_corr):
            without.append(once())
    full, without = float(np.median(full)), float(np.median(without))
    # The loss op alone (cost volume, soft-argmax, Huber; forward + backward) on features of the same shape.
    with torch.no_grad():
        _, feats = model(torch.zeros(1, frames, 8, height // 8, width // 8), torch.zeros(1),
                         torch.zeros(1, 1, 32), torch.tensor([[6.0, 127.0, 0.02]]))
    feats.requires_grad_(True)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = correspondence_loss(feats, query_frame=batch["query_frame"], query_xy=batch["query_xy"],
                                   target_frame=batch["target_frame"], target_xy=batch["target_xy"],
                                   valid=batch["valid"], image_size=(height, width))
        loss.backward()
    op = (time.perf_counter() - t0) / steps
    return {"full": full, "without": without, "op": op}


def bench_balance(work: Path, *, frames: int = L, height: int = H, width: int = W, pairs: int = 512) -> dict[str, float]:
    """Step 1 at the paper's settings on the tiny model: the two loss terms and their gradients."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from train_fixtures import make_segment_store
    from track4gen.tiny_model import make_tiny_model

    store = make_segment_store(work / "balance.zarr", num_segments=1, length=frames, height=height, width=width,
                               max_tracks=N)
    model_dir = make_tiny_model(work / f"tiny{frames}", num_frames=frames)
    cfg = train_mod.TrainConfig(store=str(store), pretrained=str(model_dir), out=str(work / "run-balance"),
                                num_pairs=pairs)  # lambda 8, Eq. 3 cosine weights, R = 35 px: the defaults
    parts = train_mod.load_components(cfg.pretrained)
    model, _ = train_mod.build_model(parts, cfg=cfg)
    model.train()
    stream = SegmentStream(store, num_pairs=pairs, rank=0, world_size=1)
    stream.set_epoch(0)
    batch = {k: v.unsqueeze(0) for k, v in next(iter(stream)).items()}
    shared = [p for k, p in train_mod.trainable_named(model) if k.startswith("unet.")]
    results = {}
    for weighting in ("cosine", "softmax"):  # the same noise and batch for both
        cfg.soft_argmax = weighting
        terms = train_mod.compute_losses(model, parts, batch, cfg=cfg, generator=torch.Generator().manual_seed(0))
        g_diff = torch.autograd.grad(terms["diffusion"], shared, retain_graph=True, allow_unused=True)
        g_corr = torch.autograd.grad(cfg.corr_weight * terms["correspondence"], shared, allow_unused=True)
        both = [i for i in range(len(shared)) if g_diff[i] is not None and g_corr[i] is not None]
        norm = lambda gs: float(torch.sqrt(sum(gs[i].float().square().sum() for i in both)))  # noqa: E731
        results[weighting] = {"l_diff": terms["diffusion"].item(), "l_corr": cfg.corr_weight * terms["correspondence"].item(),
                              "g_diff": norm(g_diff), "g_corr": norm(g_corr), "tensors": len(both), "trainable": len(shared)}
    return results


# stabilityai/stable-video-diffusion-img2vid-xt unet/config.json (diffusers'
# UNetSpatioTemporalConditionModel defaults are this model, with num_frames 25 for -xt).
SVD_XT_UNET_CONFIG = dict(
    sample_size=96, in_channels=8, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=768, layers_per_block=2,
    cross_attention_dim=1024, transformer_layers_per_block=1, num_attention_heads=(5, 10, 20, 20), num_frames=25,
)


class _FlashLikeAttention(torch.autograd.Function):
    """Stands in for scaled_dot_product_attention on the meta device with what a fused (flash /
    memory-efficient) kernel keeps for backward: q, k, v, the output and the row log-sum-exp;
    the math kernel would also keep the [L, L] attention matrix, which GPUs do not."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)


def estimate_full_size(*, frames: int = L, height: int = H, width: int = W, pairs: int = 512) -> dict[str, float]:
    """Parameters of SVD-xt's UNet + head, and bytes autograd saves for one training forward (bf16)."""
    import torch.nn.functional as F
    from diffusers import UNetSpatioTemporalConditionModel
    from diffusers.models.attention import BasicTransformerBlock

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel(**SVD_XT_UNET_CONFIG)
    unet.to("meta", dtype=torch.bfloat16)  # a few mixing factors are created on the CPU by torch.Tensor([...])
    counts = {"unet": sum(p.numel() for p in unet.parameters()),
              "temporal": sum(p.numel() for n, p in unet.named_parameters() if "temporal_transformer_blocks" in n)}
    head = make_head(unet, variant="track4gen").to("meta", dtype=torch.bfloat16)
    head.initialized = torch.tensor(True)  # skip the data-dependent init (no values on meta)
    add_tracking_head(unet, head)
    counts["head"] = sum(p.numel() for p in head.parameters())
    select_trainable(unet, which="temporal")  # the trainer's default selection, then the head
    head.requires_grad_(True)
    unet.train()

    # What diffusers' gradient checkpointing wraps in SVD's UNet: every resnet of the blocks and
    # every spatial transformer block; their saved tensors are recomputed one at a time in backward.
    wrapped = [m for blk in (*unet.down_blocks, unet.mid_block, *unet.up_blocks) for m in getattr(blk, "resnets", [])]
    wrapped += [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)
                and not any(m is t for tt in unet.modules() for t in getattr(tt, "temporal_transformer_blocks", []))]
    stack: list[int] = []
    inside: dict[int, int] = {}
    inputs = 0
    outside = 0
    seen: set[int] = set()
    keep: list[torch.Tensor] = []

    def pack(t: torch.Tensor):
        nonlocal outside
        if id(t) not in seen:  # the same tensor saved by two ops is held once
            seen.add(id(t))
            keep.append(t)
            nbytes = t.numel() * t.element_size()
            if stack:
                inside[stack[0]] = inside.get(stack[0], 0) + nbytes
            else:
                outside += nbytes
        return t

    def pre(mod, args):
        nonlocal inputs
        if not stack:
            inputs += sum(a.numel() * a.element_size() for a in args if torch.is_tensor(a))
        stack.append(id(mod))

    def post(*_):
        stack.pop()

    handles = [m.register_forward_pre_hook(pre) for m in wrapped]
    handles += [m.register_forward_hook(post) for m in wrapped]
    meta = {"device": "meta", "dtype": torch.bfloat16}
    real_sdpa = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = lambda q, k, v, *a, **kw: _FlashLikeAttention.apply(q, k, v)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = unet(torch.empty(1, frames, 8, height // 8, width // 8, **meta), torch.zeros(1, **meta),
                       encoder_hidden_states=torch.empty(1, 1, 1024, **meta),
                       added_time_ids=torch.empty(1, 3, **meta)).sample
            feats = head.pop_features().reshape(1, frames, -1, height // 8, width // 8)
            # The correspondence loss's own graph: the cost volume of 512 queries against all frames.
            cost = feats.new_empty(pairs, frames * (height // 8) * (width // 8), dtype=torch.float32)
            pack(cost)
    finally:
        F.scaled_dot_product_attention = real_sdpa
        for h in handles:
            h.remove()
    assert out.shape == (1, frames, 4, height // 8, width // 8)
    trainable = counts["temporal"] + counts["head"]
    gib = 2.0**30
    return {
        **{k: v / 1e6 for k, v in counts.items()},
        "acts_full": (outside + sum(inside.values())) / gib,
        "acts_ckpt": (outside + inputs + max(inside.values())) / gib,
        # fp32 master weights of the whole UNet; fp32 gradients and two AdamW moments for the trained part.
        "states": (4 * (counts["unet"] + counts["head"]) + 12 * trainable) / gib,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=24)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the step timing")
    ap.add_argument("--sections", default="loading,step,balance,fullsize")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "balance" in sections:
            t0 = time.perf_counter()
            for weighting, r in bench_balance(work).items():
                print(f"step 1, paper settings (tiny model, {L}x{H}x{W}, 512 pairs, lambda 8, R 35 px, "
                      f"--soft-argmax {weighting}): L_diff {r['l_diff']:.4f}, lambda L_corr {r['l_corr']:.4f}; "
                      f"gradient norm on the {r['tensors']} trainable tensors both reach (of {r['trainable']}): "
                      f"L_diff {r['g_diff']:.4g}, lambda L_corr {r['g_corr']:.4g}, ratio corr/diff "
                      f"{r['g_corr'] / r['g_diff']:.3g}")
            print(f"  ({time.perf_counter() - t0:.0f} s)")
        if "fullsize" in sections:
            r = estimate_full_size()
            print(f"SVD-xt UNet: {r['unet']:.1f} M parameters, temporal blocks {r['temporal']:.1f} M, head "
                  f"{r['head']:.1f} M (trained: {r['temporal'] + r['head']:.1f} M)")
            print(f"estimated training memory at 1x{L}x{H}x{W}, bf16 autocast, fused attention, UNet + head "
                  f"(no VAE/CLIP): weights + grads + AdamW {r['states']:.1f} GiB; activations saved for backward "
                  f"{r['acts_full']:.1f} GiB without checkpointing, {r['acts_ckpt']:.1f} GiB with -> "
                  f"{r['states'] + r['acts_full']:.1f} / {r['states'] + r['acts_ckpt']:.1f} GiB (an estimate)")
        if not sections & {"loading", "step"}:
            return
        t0 = time.perf_counter()
        build_store(work / "bench.zarr", args.segments)
        print(f"store: {args.segments} segments of {L}x{H}x{W}, {N} tracks, built in {time.perf_counter() - t0:.1f} s"
              f" ({'DAVIS' if DAVIS.is_dir() else 'synthetic'} frames)")
        for scale in (False, True):
            for workers in ((0, 2) if "loading" in sections else ()):
                rate = bench_loading(work / "bench.zarr", workers=workers, scale_frames=scale)
                what = "float [-1, 1] frames in the workers" if scale else "uint8 frames (the trainer's mode)"
                print(f"data loading, {what}, {workers} workers: {rate:.1f} segments/s per process (target >= 20)")

        for h, w, f in ((64, 96, 8), (128, 192, 8)) if "step" in sections else ():
            r = bench_step(work, steps=args.steps, height=h, width=w, frames=f)
            print(f"tiny model step at {f}x{h}x{w}, 512 pairs: {r['full'] * 1e3:.0f} ms; without L_corr "
                  f"{r['without'] * 1e3:.0f} ms -> L_corr adds {100 * (r['full'] / r['without'] - 1):.1f}% "
                  f"(target < 10%); the loss op alone {r['op'] * 1e3:.1f} ms = {100 * r['op'] / r['full']:.1f}% of the step")


if __name__ == "__main__":
    main()
