/* cpullm C ABI: the only interface Python sees (through ctypes). Plain C types only.
 *
 * Every variant library (libcpullm_<variant>.so) exports the same functions; which one is loaded is
 * decided by Python from the probe library's answer (see probe.h) before anything ISA-specific runs.
 * Bump CPULLM_ABI_VERSION on any incompatible change; Python refuses a library with another version. */
#ifndef CPULLM_H
#define CPULLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CPULLM_API __attribute__((visibility("default")))
#define CPULLM_ABI_VERSION 1

CPULLM_API int cpullm_abi_version(void);

/* The recipe this library was built from, e.g. "avx512_bf16". */
CPULLM_API const char* cpullm_variant_name(void);

/* The CPU features this library was compiled to require, comma separated (recipe spelling). */
CPULLM_API const char* cpullm_variant_features(void);

/* The kernel sets compiled in, comma separated, e.g. "ref,avx2,avx512". */
CPULLM_API const char* cpullm_variant_kernel_sets(void);

/* ---- kernels ---------------------------------------------------------------------------------------
 * Every kernel of the library, for Python and tests. `impl` picks the implementation inside this one
 * library: CPULLM_IMPL_BEST (the fastest path compiled in, threaded over the library's pool) or
 * CPULLM_IMPL_REF (the scalar reference, single-threaded). Types are ggml/GGUF type ids, those that
 * cpullm_tensor_types() lists. Matrices are row-major; a weight matrix is
 * [rows x cols] in GGUF block layout (cols = GGUF ne[0], a multiple of the type's block size).
 * Functions returning int return 0 on success and -1 on bad arguments; cpullm_last_error() then says
 * what was wrong (per thread). Arrays are never NULL unless a size is 0. */
#define CPULLM_IMPL_BEST 0
#define CPULLM_IMPL_REF 1

CPULLM_API const char* cpullm_last_error(void);

/* Threads used by CPULLM_IMPL_BEST kernels (>= 1); results never depend on it. */
CPULLM_API int cpullm_set_num_threads(int n);
CPULLM_API int cpullm_get_num_threads(void);

/* The fast-path kernel set the BEST kernels use here, e.g. "avx512_vnni", or "ref". */
CPULLM_API const char* cpullm_best_kernel_set(void);

/* The tensor types this library runs (kernels/dtypes.def), comma separated, each
 * "name:id:weights per block:bytes per block", e.g. "F32:0:1:4,F16:1:1:2,Q4_0:2:32:18,...". */
CPULLM_API const char* cpullm_tensor_types(void);

/* Bytes of one weight row of `cols` values of `type`, or -1 (unsupported type or cols not a multiple of
 * the block size). */
CPULLM_API int64_t cpullm_row_bytes(int32_t type, int64_t cols);
/* Bytes of one prepared activation row for `type` weights (40-byte 8-bit blocks of 32, or f32). */
CPULLM_API int64_t cpullm_act_row_bytes(int32_t type, int64_t cols);

/* x[n] f32 -> n/32 activation blocks {f32 d; i32 sum; i8 q[32]} (40 bytes each); n % 32 == 0. */
CPULLM_API int cpullm_quantize_act(int impl, const float* x, int64_t n, void* out);
/* n values (a multiple of the block size) of GGUF data of `type` -> y[n] f32. */
CPULLM_API int cpullm_dequantize(int32_t type, const void* data, int64_t n, float* y);

/* Y[m x rows] = X[m x cols] . W^T, W [rows x cols] of `type`. Activations are quantized inside
 * (for quantized types) exactly as cpullm_quantize_act does. m = 1 is the decode matvec. */
CPULLM_API int cpullm_matmul(int impl, int32_t type, const void* w, int64_t rows, int64_t cols,
                             const float* x, int64_t m, float* y);

/* Repacking: bytes of this library's packed copy of a [rows x cols] `type` matrix (0 = no packed layout
 * for the type here), writing it, and the product using it (w, the GGUF data, is still read for the rows
 * the packed layout leaves out). The packed layout is private to this library. */
CPULLM_API int64_t cpullm_packed_bytes(int32_t type, int64_t rows, int64_t cols);
CPULLM_API int cpullm_repack(int32_t type, const void* w, int64_t rows, int64_t cols, void* packed);
CPULLM_API int cpullm_matmul_packed(int32_t type, const void* w, const void* packed, int64_t rows,
                                    int64_t cols, const float* x, int64_t m, float* y);

/* y[rows x n] = x / sqrt(mean(x^2) + eps) * w[n], per row. */
CPULLM_API int cpullm_rmsnorm(int impl, const float* x, const float* w, float* y, int64_t rows, int64_t n,
                              float eps);
/* y[n] = silu(g) * u. */
CPULLM_API int cpullm_silu_mul(int impl, const float* g, const float* u, float* y, int64_t n);
/* y[n] = a + b. */
CPULLM_API int cpullm_add(int impl, const float* a, const float* b, float* y, int64_t n);
/* x[n] = softmax(x), in place. */
CPULLM_API int cpullm_softmax(int impl, float* x, int64_t n);
/* Index of the largest of x[n] (first on ties), or -1 when n < 1. */
CPULLM_API int64_t cpullm_argmax(int impl, const float* x, int64_t n);
/* RoPE in place on x[n_tokens x n_heads x head_dim]; mode 0 = interleaved pairs, 2 = neox halves;
 * pos[n_tokens]; freq_factors[rot_dims/2] or NULL. */
CPULLM_API int cpullm_rope(int impl, float* x, int64_t n_tokens, int32_t n_heads, int32_t head_dim,
                           const int32_t* pos, int32_t mode, int32_t rot_dims, float theta_base,
                           float freq_scale, const float* freq_factors);

/* Paged KV cache of one sequence: kv_type F32 (0) or F16 (1); pools of blocks of block_size tokens x
 * n_kv_heads x head_dim values; block_table[logical block] = physical block. */
CPULLM_API int cpullm_kv_write(int32_t kv_type, int32_t block_size, int32_t n_kv_heads, int32_t head_dim,
                               void* k_pool, void* v_pool, const int32_t* block_table, const float* k,
                               const float* v, int64_t pos0, int64_t n_tokens);
/* Causal GQA attention: q, out [n_q x n_heads x head_dim], query t at position pos0 + t. */
CPULLM_API int cpullm_attention(int impl, const float* q, int64_t n_q, int64_t pos0, int32_t n_heads,
                                int32_t kv_type, int32_t block_size, int32_t n_kv_heads, int32_t head_dim,
                                const void* k_pool, const void* v_pool, const int32_t* block_table,
                                float scale, float* out);

/* Runs every fast path compiled into this library against the reference on awkward random shapes and
 * thread counts. Writes a readable report (at most n bytes including the NUL). Returns 0 when all pass,
 * otherwise the number of failed checks. */
CPULLM_API int cpullm_selftest(char* report, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* CPULLM_H */
