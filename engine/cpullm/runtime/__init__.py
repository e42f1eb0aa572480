"""The runtime: the continuous-batching engine, KV block bookkeeping, sampling, speed measurement."""
