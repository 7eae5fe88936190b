"""A model over the cached features: the Dataset and its batches, inference."""
