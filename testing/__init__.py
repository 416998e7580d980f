"""Helpers the tests and the benchmarks share (never used by the toolkit itself).

* :mod:`testing.synthetic`: synthetic faces with known shape, pose, light and albedo;
* :mod:`testing.small_models`: a tiny UV albedo model and detail generator for quick runs.
"""
