"""cpullm: a CPU inference engine for Llama-family GGUF models."""

__version__ = "0.1.0"

from cpullm import _eager

# Load the native variant now, so a wheel built for CPU features this host lacks fails at import
# with an ImportError naming what is missing, never later with SIGILL.
_eager.load_at_import()
