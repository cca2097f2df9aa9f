"""Data: benchmark adapters, image decoding, label indexes, the deterministic task sampler, task files and FeatureSet."""
