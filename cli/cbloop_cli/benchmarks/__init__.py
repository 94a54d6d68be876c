"""Benchmarks for `cbloop bench`: each measures us against a floor in the same run."""
