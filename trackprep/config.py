"""The pipeline configuration: paper defaults, YAML files, command-line overrides.

A configuration is a plain nested dict (JSON/YAML-serialisable) so that it can be
recorded verbatim in a store's root attributes. `DEFAULTS` holds every default of
Track4Gen's preprocessing; pipelines/track4gen.yaml spells out the same values with
their sources (a test keeps the two equal). A YAML file may set any subset; flags
given on the command line override both.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    # Track4Gen Sec. 4.1: videos are trained at 320x576 (H x W), SVD's resolution.
    "size": [320, 576],
    "flow": {
        # Track4Gen App. A.1 follows DINO-Tracker: RAFT-large, forward and backward flow per pair.
        "name": "raft",
        "raft_model": "large",
        "raft_weights": None,  # None: torchvision's C_T_SKHT_V2 checkpoint from the weights cache
        "iters": 24,  # RAFT refinement iterations, as RAFT evaluates on KITTI (torchvision's own default is 12)
        "batch_size": None,  # frame pairs per RAFT call; None: chosen from the device's memory
        "device": "auto",
        "half": False,
        "dis_preset": "medium",  # OpenCV DIS preset, used only by the "dis" backend
    },
    "tracks": {
        # Track4Gen App. A.1: a chained step is kept when its forward-backward error is <= 1.5 px.
        "cycle_threshold": 1.5,
        # DINO-Tracker seeds a track at every pixel (stride 1).
        "seed_stride": 1,
        # Shorter tracks are not stored: a one-frame track gives no correspondence pair (about
        # half the tracks of a DAVIS video at stride 1), and DINO-Tracker drops them too.
        "min_track_length": 2,
        # "chain": the paper's one-frame chaining. "longrange": per point, the most consistent
        # of the chains through frame gaps 1, 2, 4, 8 (after MFT, WACV 2024; trackprep/core/longrange.py).
        "tracker": "chain",
    },
    "frames": {
        # How the annotation store keeps frames: "lossless" (Blosc zstd) or "jpeg" at jpeg_quality
        # (benchmarks/bench_long_video.py --frames: size and PSNR on DAVIS).
        "codec": "lossless",
        "jpeg_quality": 95,
    },
    "shard": {
        # Track4Gen Sec. 4.1: SVD is fine-tuned on 24-frame clips (xt variant).
        "segment_length": 24,
        "tracks_per_segment": 8192,
        # DINO-Tracker samples foreground and background pairs equally (256 + 256 per step).
        "fg_share": 0.5,
        "seed": 0,
    },
}

# The keys whose values change what `annotate` writes. The store records a hash of these,
# and a rerun that changes one is refused unless --overwrite. `device` and `batch_size`
# only change speed (RAFT in float32 gives the same flow up to rounding on any device).
ANNOTATION_RESULT_KEYS: tuple[tuple[str, ...], ...] = (
    ("size",),
    ("flow", "name"),
    ("flow", "raft_model"),
    ("flow", "raft_weights"),
    ("flow", "iters"),
    ("flow", "half"),
    ("flow", "dis_preset"),
    ("tracks", "cycle_threshold"),
    ("tracks", "seed_stride"),
    ("tracks", "min_track_length"),
    ("tracks", "tracker"),
    ("frames", "codec"),
    ("frames", "jpeg_quality"),
)

# Flow options that only one backend reads: left out of other backends' fingerprints.
_BACKEND_OF_KEY = {"raft_model": "raft", "raft_weights": "raft", "iters": "raft", "half": "raft", "dis_preset": "dis"}

FLOW_BACKENDS = ("raft", "dis", "oracle")
RAFT_MODELS = ("large", "small")
DIS_PRESETS = ("ultrafast", "fast", "medium")
TRACKERS = ("chain", "longrange")
FRAME_CODECS = ("lossless", "jpeg")  # trackprep.io.frame_codecs (not imported here: it needs zarr)


class ConfigError(ValueError):
    """A configuration file or value that is not what the pipeline expects."""


def parse_size(text: str | list | tuple) -> list[int]:
    """"320x576" (H x W) or [320, 576] -> [320, 576]."""
    if isinstance(text, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
        if not m:
            raise ConfigError(f"size {text!r}: expected HxW, e.g. 320x576")
        values = [int(m.group(1)), int(m.group(2))]
    elif isinstance(text, (list, tuple)):
        values = list(text)
    else:
        raise ConfigError(f"size {text!r}: expected two positive integers (H, W), as HxW or [H, W]")
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ConfigError(f"size {text!r}: expected two positive integers (H, W)")
    return values


def _merge(base: dict, update: dict, *, source: str, prefix: str = "") -> None:
    for key, value in update.items():
        where = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{source}: unknown key {where!r}; expected one of {sorted(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {where!r} must be a mapping, got {value!r}")
            _merge(base[key], value, source=source, prefix=f"{where}.")
        else:
            base[key] = value


def _check(config: dict, *, source: str) -> dict:
    """Type- and range-check a merged configuration; returns it with `size` normalised."""
    try:
        config["size"] = parse_size(config["size"])
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    flow, tracks, shard = config["flow"], config["tracks"], config["shard"]

    def expect(ok: bool, key: str, value: Any, what: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: {key} = {value!r}, expected {what}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    expect(flow["name"] in FLOW_BACKENDS, "flow.name", flow["name"], f"one of {list(FLOW_BACKENDS)}")
    expect(flow["raft_model"] in RAFT_MODELS, "flow.raft_model", flow["raft_model"], f"one of {list(RAFT_MODELS)}")
    expect(flow["dis_preset"] in DIS_PRESETS, "flow.dis_preset", flow["dis_preset"], f"one of {list(DIS_PRESETS)}")
    expect(is_int(flow["iters"]) and flow["iters"] >= 1, "flow.iters", flow["iters"], "a positive integer")
    expect(flow["batch_size"] is None or (is_int(flow["batch_size"]) and flow["batch_size"] >= 1),
           "flow.batch_size", flow["batch_size"], "a positive integer or null")
    expect(flow["half"] in (False, True, "fp16", "bf16"), "flow.half", flow["half"], "false, true, 'fp16' or 'bf16'")
    expect(isinstance(flow["device"], str), "flow.device", flow["device"], "'auto', 'cpu', 'cuda' or 'cuda:N'")
    expect(flow["raft_weights"] is None or isinstance(flow["raft_weights"], str),
           "flow.raft_weights", flow["raft_weights"], "a path or null")
    thr = tracks["cycle_threshold"]
    expect(isinstance(thr, (int, float)) and not isinstance(thr, bool) and thr > 0,
           "tracks.cycle_threshold", thr, "a positive number of pixels")
    tracks["cycle_threshold"] = float(thr)
    expect(is_int(tracks["seed_stride"]) and tracks["seed_stride"] >= 1,
           "tracks.seed_stride", tracks["seed_stride"], "a positive integer")
    expect(is_int(tracks["min_track_length"]) and tracks["min_track_length"] >= 1,
           "tracks.min_track_length", tracks["min_track_length"], "a positive integer number of frames")
    expect(tracks["tracker"] in TRACKERS, "tracks.tracker", tracks["tracker"], f"one of {list(TRACKERS)}")
    frames = config["frames"]
    expect(frames["codec"] in FRAME_CODECS, "frames.codec", frames["codec"], f"one of {list(FRAME_CODECS)}")
    expect(is_int(frames["jpeg_quality"]) and 1 <= frames["jpeg_quality"] <= 100,
           "frames.jpeg_quality", frames["jpeg_quality"], "an integer in 1..100")
    expect(is_int(shard["segment_length"]) and shard["segment_length"] >= 2,
           "shard.segment_length", shard["segment_length"], "an integer >= 2")
    expect(is_int(shard["tracks_per_segment"]) and shard["tracks_per_segment"] >= 1,
           "shard.tracks_per_segment", shard["tracks_per_segment"], "a positive integer")
    fg = shard["fg_share"]
    expect(isinstance(fg, (int, float)) and not isinstance(fg, bool) and 0 <= fg <= 1,
           "shard.fg_share", fg, "a number in [0, 1]")
    shard["fg_share"] = float(fg)
    expect(is_int(shard["seed"]), "shard.seed", shard["seed"], "an integer")
    return config


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a pipeline YAML file; a clear ConfigError naming the file when it is unusable."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    return data


def resolve_config(*, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """DEFAULTS, updated by the YAML file at `path`, updated by `overrides` (nested dict).

    Override values that are None mean "not given on the command line" and are skipped.
    """
    config = copy.deepcopy(DEFAULTS)
    source = "defaults"
    if path is not None:
        source = str(path)
        _merge(config, load_yaml(path), source=source)
    overrides = _drop_none(overrides or {})
    if overrides:  # only flags actually given: an error in the file then names the file alone
        _merge(config, overrides, source="command line")
        source = f"{source} + command line" if path is not None else "command line"
    return _check(config, source=source)


def _drop_none(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _drop_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def annotation_fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The result-affecting part of a configuration (ANNOTATION_RESULT_KEYS), as a flat dict.

    Options of the other flow backends are left out: a DIS store is not refused because
    --raft-model changed. The RAFT weights appear here as given (`None` for the default
    lookup); trackprep.pipeline.annotate replaces them by the digest of the file resolved.
    """
    out = {}
    backend = config["flow"]["name"]
    for path in ANNOTATION_RESULT_KEYS:
        if path[0] == "flow" and _BACKEND_OF_KEY.get(path[1], backend) != backend:
            continue
        if path == ("frames", "jpeg_quality") and config["frames"]["codec"] != "jpeg":
            continue  # read only by the JPEG codec
        if path == ("tracks", "tracker") and config["tracks"]["tracker"] == "chain":
            continue  # the default: stores made before the option existed keep their fingerprint
        value: Any = config
        for part in path:
            value = value[part]
        out[".".join(path)] = value
    return out


def config_differences(stored: Any, now: Any, *, prefix: str = "") -> list[str]:
    """"setting: stored X, now Y" for each setting that differs between two configurations,
    nested dicts compared key by key (settings named by dotted paths), so a refusal names
    what changed instead of printing both configurations whole."""
    if isinstance(stored, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(stored) | set(now), key=str):
            out += config_differences(stored.get(key), now.get(key), prefix=f"{prefix}{key}.")
        return out
    return [] if stored == now else [f"{prefix.rstrip('.') or 'config'}: stored {stored!r}, now {now!r}"]
