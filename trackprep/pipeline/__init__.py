"""Orchestration: plans of per-video stages run by a serial or Dask executor.

annotate.py builds and runs the annotation plan (dataset videos -> annotation store);
shard.py cuts an annotation store into the segment store, one task per shard file;
executors.py runs annotate's stages serially or on dask.distributed (both commands take
the same --scheduler names); progress.py shows it.
Depends on trackprep.core and trackprep.io; the CLI depends on this.
"""
