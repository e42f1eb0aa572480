"""cpullm: a CPU inference engine for Llama-family GGUF models."""

__version__ = "0.1.0"
