"""Benchmarks for zmqserver (run with ``python -m bench.run``)."""
