"""Benchmarks: training-step throughput of growth models (see tools/bench_model.py)."""
