"""Evaluator, records store, statistics and reports."""
