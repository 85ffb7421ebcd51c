"""I/O: dataset readers, manifests, stores, weights. Depends on trackprep.core only."""

import warnings

# Video locks live in a store's hidden `.locks` folder (trackprep.io.locks), which zarr, listing
# the root group's members, reports as "not recognized as a component of a Zarr hierarchy".
warnings.filterwarnings("ignore", message=r"Object at \.locks is not recognized")
