"""Test harnesses shipped for tests and benchmarks: kernel bindings with checks, a NumPy reference."""
