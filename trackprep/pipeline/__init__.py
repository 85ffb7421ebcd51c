"""Orchestration: plans of per-video stages run by a serial or Dask executor.

annotate.py builds and runs the annotation plan (dataset videos -> annotation store);
executors.py runs any plan's stages serially or on dask.distributed; progress.py shows it.
Depends on trackprep.core and trackprep.io; the CLI depends on this.
"""
