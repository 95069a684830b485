"""Benchmarks: ``make bench`` (python -m bench.run) and ``make bench-smoke``; see bench/RESULTS.md."""
