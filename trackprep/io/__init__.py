"""I/O: dataset readers, manifests, stores, weights. Depends on trackprep.core only."""
