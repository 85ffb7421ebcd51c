"""track4gen: fine-tune Stable Video Diffusion with a point-tracking refiner (Track4Gen, Sec. 3.3).

`track4gen.load_pipeline(DIR)` loads a model folder written by `track4gen export` (or a run /
checkpoint folder) as a diffusers StableVideoDiffusionPipeline whose UNet owns the tracking
head; `track4gen.model.tracking_head(pipe.unet)` returns that head (or None).
"""

__version__ = "0.1.0"


def load_pipeline(path, **kwargs):
    """See `track4gen.export.load_pipeline` (imported on first use: diffusers is heavy)."""
    from track4gen.export import load_pipeline as _load_pipeline

    return _load_pipeline(path, **kwargs)
