"""Benchmarks and their helpers (timed scripts, not tests): `python -m bench.engine --help`."""
