"""Shared utilities: atomic file output, safe loading of untrusted files,
argument and shape checks, configuration, logging and mesh/image I/O."""
