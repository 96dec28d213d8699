"""Benchmarks of the ldm stack (not tests): `python benchmarks/bench.py --help`, or `make bench`."""
