// Fast paths compiled into this variant: one namespace per kernel set of kernel_sets.def. Each bool
// function returns false when it does not handle the case (e.g. a weight type it has no kernel for) so
// the dispatcher tries the next set.
#ifndef CPULLM_KERNELS_FAST_H
#define CPULLM_KERNELS_FAST_H

#include "kernels/kernels.h"

namespace cpullm {

// What a kernel set implements: the `provides` column of kernel_sets.def.
enum KernelSetProvides : unsigned {
  kMatmul = 1u << 0,        // matmul_rows
  kQuantize = 1u << 1,      // quantize_act
  kRowOps = 1u << 2,        // rmsnorm, silu_mul, softmax
  kAttention = 1u << 3,     // attention_items, attention_decode
  kPackedLayout = 1u << 4,  // packed_bytes, repack: the weight layout this library's products read
  kNeedsOsGrant = 1u << 5,  // usable(): the OS must grant the set's register state to the process (AMX tiles)
};
constexpr bool has(unsigned provides, KernelSetProvides what) { return (provides & what) != 0; }

// Each compiled set's namespace declares the whole interface. A set defines what its row provides; the
// dispatcher calls nothing else (behind `if constexpr`), so the rest needs no definition.
#define CPULLM_KERNEL_SET(set, features, provides)                                                    \
  namespace set {                                                                                     \
  bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0,     \
                   int64_t r1);                                                                       \
  bool quantize_act(const float* x, int64_t n, ActBlock* out);                                        \
  void silu_mul(const float* g, const float* u, float* y, int64_t n);                                 \
  void softmax(float* x, int64_t n);                                                                  \
  void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps);         \
  bool attention_items(const float* q, int64_t n_q, int64_t pos0, int32_t n_heads, const KVCache& kv, \
                       float scale, float* out, int64_t i0, int64_t i1);                              \
  bool attention_decode(const DecodeQuery* queries, int64_t n, int32_t n_heads, float scale,          \
                        ThreadPool* pool);                                                            \
  int64_t packed_bytes(const Matrix& W);                                                              \
  void repack(const Matrix& W, void* dst);                                                            \
  bool usable(); /* asks the OS for the set's state, once */                                          \
  }
#include "kernels/kernel_sets.def"

}  // namespace cpullm

#endif  // CPULLM_KERNELS_FAST_H
