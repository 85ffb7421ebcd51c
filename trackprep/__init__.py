"""trackprep: dense point trajectories from video segmentation datasets (Track4Gen, Appendix A.1)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import trackprep` (and so `trackprep --help`) must not import zarr, torch or dask.
    if name == "open_annotations":
        from trackprep.io.annotation_reader import open_annotations

        return open_annotations
    raise AttributeError(f"module 'trackprep' has no attribute {name!r}")


__all__ = ["__version__", "open_annotations"]
