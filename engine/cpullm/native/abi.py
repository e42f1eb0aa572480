"""The C ABI of the native libraries, bound from one signature table.

Every function Python calls in a variant library (``csrc/include/cpullm/cpullm.h`` for kernels,
``model_api.h`` for the model, KV cache and step) or in the probe library (``probe.h``) is one row of
``SIGNATURES`` / ``PROBE_SIGNATURES``: name -> (return type, argument types). ``bind(lib)`` declares
them all on a loaded library once; the modules that call the library (loader, runner, cli.info,
testing.kernels) only call. The structures passed by pointer mirror ``model_api.h``.
"""

from __future__ import annotations

import ctypes
from typing import Final

_i64, _i32, _int, _f32, _vp = ctypes.c_int64, ctypes.c_int32, ctypes.c_int, ctypes.c_float, ctypes.c_void_p
_str, _size = ctypes.c_char_p, ctypes.c_size_t


class ModelConfigC(ctypes.Structure):
    _fields_ = [
        ("n_layers", ctypes.c_int32),
        ("d_model", ctypes.c_int32),
        ("n_heads", ctypes.c_int32),
        ("n_kv_heads", ctypes.c_int32),
        ("head_dim", ctypes.c_int32),
        ("d_ff", ctypes.c_int32),
        ("vocab_size", ctypes.c_int32),
        ("rms_eps", ctypes.c_float),
        ("rope_mode", ctypes.c_int32),
        ("rope_dims", ctypes.c_int32),
        ("rope_theta", ctypes.c_float),
        ("rope_freq_scale", ctypes.c_float),
        ("release_packed_sources", ctypes.c_int32),
        ("qk_norm", ctypes.c_int32),
        ("activation", ctypes.c_int32),
        ("post_norms", ctypes.c_int32),
        ("embed_scale", ctypes.c_float),
        ("attn_scale", ctypes.c_float),
        ("attn_softcap", ctypes.c_float),
        ("final_softcap", ctypes.c_float),
        ("layer_windows", ctypes.POINTER(ctypes.c_int32)),
        ("fused_qkv", ctypes.c_int32),
        ("fused_gate_up", ctypes.c_int32),
        ("rope_theta_local", ctypes.c_float),
        ("n_experts", ctypes.c_int32),
        ("n_experts_used", ctypes.c_int32),
        ("d_ff_expert", ctypes.c_int32),
        ("moe_norm_topk", ctypes.c_int32),
        ("d_ff_shared", ctypes.c_int32),
        ("shared_expert_gate", ctypes.c_int32),
        ("rope_ext_factor", ctypes.c_float),
        ("rope_attn_factor", ctypes.c_float),
        ("rope_corr_low", ctypes.c_float),
        ("rope_corr_high", ctypes.c_float),
    ]


class TensorC(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("type", ctypes.c_int32),
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
        ("data", ctypes.c_void_p),
    ]


class SeqC(ctypes.Structure):
    _fields_ = [
        ("n_tokens", ctypes.c_int32),
        ("pos0", ctypes.c_int32),
        ("block_table", ctypes.POINTER(ctypes.c_int32)),
        ("n_blocks", ctypes.c_int32),
        ("n_logits", ctypes.c_int32),
    ]


Signature = tuple[type | None, list[type]]

SIGNATURES: Final[dict[str, Signature]] = {
    # identity and errors
    "cpullm_abi_version": (_int, []),
    "cpullm_last_error": (_str, []),
    "cpullm_variant_name": (_str, []),
    "cpullm_variant_features": (_str, []),
    "cpullm_variant_kernel_sets": (_str, []),
    "cpullm_best_kernel_set": (_str, []),
    "cpullm_tensor_types": (_str, []),
    "cpullm_selftest": (_int, [_str, _size]),
    # threads
    "cpullm_set_num_threads": (_int, [_int]),
    "cpullm_get_num_threads": (_int, []),
    # kernels
    "cpullm_row_bytes": (_i64, [_i32, _i64]),
    "cpullm_act_row_bytes": (_i64, [_i32, _i64]),
    "cpullm_quantize_act": (_int, [_int, _vp, _i64, _vp]),
    "cpullm_dequantize": (_int, [_i32, _vp, _i64, _vp]),
    "cpullm_matmul": (_int, [_int, _i32, _vp, _i64, _i64, _vp, _i64, _vp]),
    "cpullm_packed_bytes": (_i64, [_i32, _i64, _i64]),
    "cpullm_repack": (_int, [_i32, _vp, _i64, _i64, _vp]),
    "cpullm_matmul_packed": (_int, [_i32, _vp, _vp, _i64, _i64, _vp, _i64, _vp]),
    "cpullm_bench_matmul": (_int, [_int, _i32, _vp, _i64, _i64, _i64, _vp, _i64, _vp, _i64, _vp]),
    "cpullm_bench_stream_read": (_int, [_vp, _i64, _i64, _vp, _vp]),
    "cpullm_bench_int8_peak": (_int, [_i64, _i64, _vp, _vp]),
    "cpullm_bench_int8_block_peak": (_int, [_i32, _i64, _i64, _vp, _vp]),
    "cpullm_bench_f32_peak": (_int, [_i64, _i64, _vp, _vp]),
    "cpullm_rmsnorm": (_int, [_int, _vp, _vp, _vp, _i64, _i64, _f32]),
    "cpullm_silu_mul": (_int, [_int, _vp, _vp, _vp, _i64]),
    "cpullm_add": (_int, [_int, _vp, _vp, _vp, _i64]),
    "cpullm_softmax": (_int, [_int, _vp, _i64]),
    "cpullm_argmax": (_i64, [_int, _vp, _i64]),
    "cpullm_rope": (_int, [_int, _vp, _i64, _i32, _i32, _vp, _i32, _i32, _f32, _f32, _vp]),
    "cpullm_kv_write": (_int, [_i32, _i32, _i32, _i32, _vp, _vp, _vp, _vp, _vp, _i64, _i64]),
    "cpullm_attention": (_int, [_int, _vp, _i64, _i64, *[_i32] * 5, _vp, _vp, _vp, _f32, _vp]),
    # model, KV cache, step
    "cpullm_model_create": (_vp, [ctypes.POINTER(ModelConfigC), ctypes.POINTER(TensorC), _i32]),
    "cpullm_model_free": (None, [_vp]),
    "cpullm_model_repacked_bytes": (_i64, [_vp]),
    "cpullm_model_packed_names": (_size, [_vp, _str, _size]),
    "cpullm_kv_create": (_vp, [_vp, _i32, _i32, _i32]),
    "cpullm_kv_free": (None, [_vp]),
    "cpullm_kv_bytes": (_i64, [_vp]),
    "cpullm_model_step": (_int, [_vp, _vp, ctypes.POINTER(_i32), ctypes.POINTER(SeqC), _i32, _vp]),
    "cpullm_model_hidden": (_int, [_vp, _vp, ctypes.POINTER(_i32), ctypes.POINTER(SeqC), _i32, _vp]),
}

PROBE_SIGNATURES: Final[dict[str, Signature]] = {
    "cpullm_probe_abi_version": (_int, []),
    "cpullm_probe_arch": (_str, []),
    "cpullm_probe_usable": (_size, [_str, _size]),
    "cpullm_probe_unusable": (_size, [_str, _size]),
}


def bind(lib: ctypes.CDLL, table: dict[str, Signature] = SIGNATURES) -> ctypes.CDLL:
    """Declare every function of ``table`` that ``lib`` exports (once per library); returns ``lib``.

    A function the library lacks (``cpullm_selftest`` in a build without the self-test) stays
    undeclared; calling it raises AttributeError, which callers that allow its absence check first.
    """
    marker = f"_cpullm_bound_{id(table)}"
    if getattr(lib, marker, False):
        return lib
    for name, (restype, argtypes) in table.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    setattr(lib, marker, True)
    return lib
