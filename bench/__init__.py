"""Benchmark harness (``make bench``)."""
