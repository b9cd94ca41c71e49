"""Benchmark scripts (not tests): each prints figures against a same-run baseline."""
