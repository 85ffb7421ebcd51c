"""trackprep: dense point trajectories from video segmentation datasets (Track4Gen, Appendix A.1)."""

__version__ = "0.1.0"
