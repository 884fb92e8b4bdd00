"""Synthetic employees, simulation runs, experiments and benchmarks."""
