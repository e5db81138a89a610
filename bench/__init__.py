"""Benchmarks. `python -m bench.reproduction --help`: the synthetic analogue of the paper's main table."""
