"""Benchmark adapters, label indexes and the deterministic task sampler."""
