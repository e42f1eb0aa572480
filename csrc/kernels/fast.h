// Fast paths compiled into this variant (one namespace per kernel set). Each returns false when it does
// not handle the case (e.g. a weight type it has no kernel for) so the dispatcher tries the next one.
#ifndef CPULLM_KERNELS_FAST_H
#define CPULLM_KERNELS_FAST_H

#include "kernels/kernels.h"

#define CPULLM_FAST_MATMUL_DECL                                                                          \
  bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, \
                   int64_t r1);
#define CPULLM_FAST_QUANT_DECL bool quantize_act(const float* x, int64_t n, ActBlock* out);
#define CPULLM_FAST_ATTENTION_DECL                                                                        \
  bool attention_items(const float* q, int64_t n_q, int64_t pos0, int32_t n_heads, const KVCache& kv, \
                       float scale, float* out, int64_t i0, int64_t i1);                                \
  bool attention_decode(const DecodeQuery* queries, int64_t n, int32_t n_heads, float scale, ThreadPool* pool);
#define CPULLM_FAST_OPS_DECL                                                         \
  void silu_mul(const float* g, const float* u, float* y, int64_t n);              \
  void softmax(float* x, int64_t n);                                               \
  void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps);

namespace cpullm {
#if CPULLM_KSET_AVX2
namespace avx2 {
CPULLM_FAST_MATMUL_DECL
CPULLM_FAST_QUANT_DECL
CPULLM_FAST_OPS_DECL
CPULLM_FAST_ATTENTION_DECL
// The x86 packed layout (matmul/x86_packed.h), read by every x86 kernel set.
int64_t packed_bytes(const Matrix& W);
void repack(const Matrix& W, void* dst);
}
#endif
#if CPULLM_KSET_AVX512
namespace avx512 {
CPULLM_FAST_MATMUL_DECL
CPULLM_FAST_QUANT_DECL
CPULLM_FAST_ATTENTION_DECL
}
#endif
#if CPULLM_KSET_AVX_VNNI
namespace avx_vnni {
CPULLM_FAST_MATMUL_DECL
}
#endif
#if CPULLM_KSET_AVX512_VNNI
namespace avx512_vnni {
CPULLM_FAST_MATMUL_DECL
}
#endif
#if CPULLM_KSET_AVX512_BF16
namespace avx512_bf16 {
CPULLM_FAST_MATMUL_DECL
}
#endif
#if CPULLM_KSET_AMX
namespace amx {
CPULLM_FAST_MATMUL_DECL
// True when AMX tiles are usable in this process (asks the kernel for permission once).
bool usable();
}
#endif
#if CPULLM_KSET_NEON
namespace neon {
CPULLM_FAST_MATMUL_DECL
CPULLM_FAST_QUANT_DECL
CPULLM_FAST_OPS_DECL
CPULLM_FAST_ATTENTION_DECL
}
#endif
#if CPULLM_KSET_DOTPROD
namespace dotprod {
CPULLM_FAST_MATMUL_DECL
// The aarch64 packed layout (matmul/arm_packed.h).
int64_t packed_bytes(const Matrix& W);
void repack(const Matrix& W, void* dst);
}
#endif
#if CPULLM_KSET_I8MM
namespace i8mm {
CPULLM_FAST_MATMUL_DECL
}
#endif
}  // namespace cpullm

#endif  // CPULLM_KERNELS_FAST_H
