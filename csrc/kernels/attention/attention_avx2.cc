// The attention fast path for the avx2 kernel set: attention_simd.h compiled with this set's flags.
#include "kernels/fast.h"
// Last: it turns off GCC's -Wpsabi note for the rest of this file (see the header).
#include "kernels/attention/attention_simd.h"

namespace cpullm::avx2 {

bool attention_items(const float* q, int64_t n_q, int64_t pos0, int32_t n_heads, const KVCache& kv,
                     float scale, float* out, int64_t i0, int64_t i1) {
  return simd_attention::attention_items(q, n_q, pos0, n_heads, kv, scale, out, i0, i1);
}

bool attention_decode(const DecodeQuery* queries, int64_t n, int32_t n_heads, float scale, ThreadPool* pool) {
  return simd_attention::attention_decode(queries, n, n_heads, scale, pool);
}

}  // namespace cpullm::avx2
