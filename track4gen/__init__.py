"""track4gen: fine-tune Stable Video Diffusion with a point-tracking refiner (Track4Gen, Sec. 3.3)."""

__version__ = "0.1.0"
