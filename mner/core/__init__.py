"""What every stage stands on: the HDF5 caches, params sections and registries, the workspace."""
