"""cpullm: a CPU inference engine for Llama-family GGUF models."""

__version__ = "0.1.0"

import os as _os

# The engine's NumPy work is per-token vectors; OpenBLAS worker threads would only spin against the
# native kernel threads for the same cores.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from cpullm.native import eager as _eager

# Load the native variant now, so a wheel built for CPU features this host lacks fails at import
# with an ImportError naming what is missing, never later with SIGILL.
_eager.load_at_import()

__all__ = ["LLM", "Completion", "SamplingParams", "__version__"]


def __getattr__(name: str) -> object:
    # Lazy, so `import cpullm` needs only the standard library (the wheel verifier imports it bare).
    if name in ("LLM", "Completion"):
        from cpullm import llm

        return getattr(llm, name)
    if name == "SamplingParams":
        from cpullm.runtime.sampling import SamplingParams

        return SamplingParams
    raise AttributeError(f"module 'cpullm' has no attribute {name!r}")
