"""A side-by-side benchmark of Python task queues on Redis.

Run from the repository root: python -m benchmarks.peers [--quick] [--only NAME]
"""
