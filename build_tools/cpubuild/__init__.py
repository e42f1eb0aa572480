"""cpubuild: probe a CPU's instruction sets and build tuned wheels of the cpullm engine."""

__version__ = "0.1.0"
