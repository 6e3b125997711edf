"""Benchmarks of fleet-webhook, each measured next to its baseline in the same run.

`python -m bench` (or `make bench`) runs them all, prints a table and writes bench/results.json.
See bench/README.md for what each benchmark measures and how to read the numbers.
"""
