"""Benchmarks: measured numbers as tables (``python -m benchmarks`` runs the three main ones)."""
