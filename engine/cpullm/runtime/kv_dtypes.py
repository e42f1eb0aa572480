"""The KV cache's element types (``--kv-cache-dtype``): one table the native binding, the engine's memory
budget and the command lines read. Importable without numpy or the native library.

``q8_0`` stores each token's K and V per head as int8 with one f16 scale per 32 values (GGUF's Q8_0
rounding): 1.0625 bytes a value, 53 % of F16's, so a long context or many sequences fit in half the memory.
Its accuracy on the default model is stated in the README (KV cache section).
"""

from __future__ import annotations

from typing import NamedTuple


class KVDType(NamedTuple):
    native_id: int  # the GGML type id the C ABI takes (cpullm_kv_create's kv_type)
    bytes_per_value: float


KV_DTYPES: dict[str, KVDType] = {
    "f16": KVDType(1, 2.0),
    "f32": KVDType(0, 4.0),
    "q8_0": KVDType(8, 34 / 32),  # 32 int8 + one f16 scale per 32 values of one head
}
DEFAULT_KV_DTYPE = "f16"
