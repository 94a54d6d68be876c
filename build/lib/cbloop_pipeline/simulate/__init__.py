"""Closed-loop simulation: a world, the real service and the real pipeline, plus baselines.

`run_simulation` drives `cbloop serve` over HTTP with a stream of contexts from a world,
returns the world's rewards, runs the pipeline cycle between rounds, and measures what the
system earned against baselines computed on the same stream.
"""
