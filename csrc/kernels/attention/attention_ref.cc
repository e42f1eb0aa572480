// Reference attention over a paged KV cache, and the KV write. Causal, grouped-query heads.
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/blocks.h"
#include "kernels/kernels.h"

namespace cpullm {
namespace {

// Address of (position p, kv head h) in one of the pools: head_dim values of kv.type.
inline size_t kv_offset(const KVCache& kv, int64_t p, int32_t h) {
  const int64_t block = kv.block_table[p / kv.block_size];
  const int64_t slot = block * kv.block_size + p % kv.block_size;
  return static_cast<size_t>((slot * kv.n_kv_heads + h) * kv.head_dim);
}

inline float kv_at(const KVCache& kv, const void* pool, size_t off, int32_t i) {
  if (kv.type == DType::F16) return f16_to_f32(static_cast<const uint16_t*>(pool)[off + i]);
  return static_cast<const float*>(pool)[off + i];
}

}  // namespace

void kv_write(const KVCache& kv, const float* k, const float* v, int64_t pos0, int64_t n_tokens) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int32_t h = 0; h < kv.n_kv_heads; ++h) {
      const size_t off = kv_offset(kv, pos0 + t, h);
      const float* ks = k + (t * kv.n_kv_heads + h) * static_cast<int64_t>(kv.head_dim);
      const float* vs = v + (t * kv.n_kv_heads + h) * static_cast<int64_t>(kv.head_dim);
      if (kv.type == DType::F16) {
        auto* kd = static_cast<uint16_t*>(kv.k_pool) + off;
        auto* vd = static_cast<uint16_t*>(kv.v_pool) + off;
        for (int32_t i = 0; i < kv.head_dim; ++i) {
          kd[i] = f32_to_f16(ks[i]);
          vd[i] = f32_to_f16(vs[i]);
        }
      } else {
        std::memcpy(static_cast<float*>(kv.k_pool) + off, ks, kv.head_dim * sizeof(float));
        std::memcpy(static_cast<float*>(kv.v_pool) + off, vs, kv.head_dim * sizeof(float));
      }
    }
  }
}

namespace ref {

void attention_items(const float* q, int64_t n_q, int64_t pos0, int32_t n_heads, const KVCache& kv,
                     float scale, float* out, int64_t i0, int64_t i1) {
  (void)n_q;
  const int32_t group = n_heads / kv.n_kv_heads;
  const int32_t hd = kv.head_dim;
  std::vector<float> p;
  std::vector<double> o(hd);
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t t = item / n_heads;
    const int32_t h = static_cast<int32_t>(item % n_heads);
    const int32_t kvh = h / group;
    const float* qv = q + item * hd;
    const int64_t len = pos0 + t + 1;  // causal: positions 0 .. pos0 + t
    p.resize(static_cast<size_t>(len));
    for (int64_t j = 0; j < len; ++j) {
      const size_t off = kv_offset(kv, j, kvh);
      double s = 0.0;
      for (int32_t i = 0; i < hd; ++i) s += static_cast<double>(qv[i]) * kv_at(kv, kv.k_pool, off, i);
      p[j] = static_cast<float>(s) * scale;
    }
    softmax(p.data(), len);
    std::fill(o.begin(), o.end(), 0.0);
    for (int64_t j = 0; j < len; ++j) {
      const size_t off = kv_offset(kv, j, kvh);
      for (int32_t i = 0; i < hd; ++i) o[i] += static_cast<double>(p[j]) * kv_at(kv, kv.v_pool, off, i);
    }
    for (int32_t i = 0; i < hd; ++i) out[item * hd + i] = static_cast<float>(o[i]);
  }
}

}  // namespace ref
}  // namespace cpullm
