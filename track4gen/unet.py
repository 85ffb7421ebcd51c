"""`Track4GenUNet`: Stable Video Diffusion's UNet that owns Track4Gen's tracking head.

The head is a registered submodule (`unet.tracking_head`) driven by a forward hook on
`up_blocks[2].upsamplers[0]`, and its configuration is a key of the UNet's config
(`track4gen_head`). So the head moves with `.to()` and CPU offload, and `save_pretrained`
writes it into the UNet's folder (config.json + the same safetensors file, tensors
`tracking_head.*`). `from_pretrained` rebuilds it from the config before the weights are
read, so diffusers' own loader (sharding, variants, dtype, low-memory loading) fills it in.
A plain `UNetSpatioTemporalConditionModel.from_pretrained` of such a folder still works: it
ignores the head (with a warning about the unexpected tensors) and gives the UNet alone.
`StableVideoDiffusionPipeline.from_pretrained` of a folder saved with this UNet (model_index.json
names ["track4gen.unet", "Track4GenUNet"]) works once `track4gen.unet` has been imported.

This module imports diffusers; `track4gen.model` keeps the light helpers.
"""

from __future__ import annotations

# ModelMixin is imported for diffusers' pipeline loader: for a component recorded as
# ["track4gen.unet", "Track4GenUNet"] it looks up the loadable base classes in this module.
from diffusers import ModelMixin, UNetSpatioTemporalConditionModel  # noqa: F401

HEAD_CONFIG_KEY = "track4gen_head"


class Track4GenUNet(UNetSpatioTemporalConditionModel):
    """UNetSpatioTemporalConditionModel + `tracking_head` (or none: then it is the plain UNet)."""

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        from track4gen.model import add_tracking_head
        from track4gen.refiner import TrackingHead

        # The head's entry is taken out before diffusers matches the config to __init__'s arguments
        # (it would warn that it ignores it), and registered again by add_tracking_head.
        config = dict(config if config is not None else kwargs.pop("config", {}))
        spec = config.pop(HEAD_CONFIG_KEY, None)
        out = super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)
        model = out[0] if isinstance(out, tuple) else out
        if spec:
            add_tracking_head(model, TrackingHead.from_config_dict(spec))
        return out
