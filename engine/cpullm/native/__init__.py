"""Native layer: choosing and loading the variant library, its ABI, threads and pinning."""
