"""Benchmarks for mailcore; run ``python -m benchmarks.api``."""
