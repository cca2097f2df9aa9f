"""Runs: config, method setup, the evaluator, crash-safe records, manifests, sweeps, executors and distillation runs."""
