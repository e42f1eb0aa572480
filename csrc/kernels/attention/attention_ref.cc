// Reference attention over a paged KV cache, and the KV write. Causal, grouped-query heads, optionally a
// sliding window and soft-capped scores (KVCache::window, KVCache::softcap).
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/attention/kv_layout.h"
#include "kernels/blocks.h"
#include "kernels/kernels.h"

namespace cpullm {
namespace {

inline float load(const KVCache& kv, const void* pool, size_t index) {
  if (kv.type == DType::F16) return f16_to_f32(static_cast<const uint16_t*>(pool)[index]);
  return static_cast<const float*>(pool)[index];
}

inline void store(const KVCache& kv, void* pool, size_t index, float value) {
  if (kv.type == DType::F16) {
    static_cast<uint16_t*>(pool)[index] = f32_to_f16(value);
  } else {
    static_cast<float*>(pool)[index] = value;
  }
}

}  // namespace

void kv_write(const KVCache& kv, const float* k, const float* v, int64_t pos0, int64_t n_tokens) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int32_t h = 0; h < kv.n_kv_heads; ++h) {
      const float* ks = k + (t * kv.n_kv_heads + h) * static_cast<int64_t>(kv.head_dim);
      const float* vs = v + (t * kv.n_kv_heads + h) * static_cast<int64_t>(kv.head_dim);
      const size_t vrow = kvlayout::v_row(kv, pos0 + t, h);
      for (int32_t i = 0; i < kv.head_dim; ++i) {
        store(kv, kv.k_pool, kvlayout::k_index(kv, pos0 + t, h, i), ks[i]);
        store(kv, kv.v_pool, vrow + i, vs[i]);
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
    const int64_t pos = pos0 + t;  // causal: positions lo .. pos
    const int64_t lo = kv.window > 0 && pos - kv.window + 1 > 0 ? pos - kv.window + 1 : 0;
    const int64_t len = pos - lo + 1;
    p.resize(static_cast<size_t>(len));
    for (int64_t j = 0; j < len; ++j) {
      double s = 0.0;
      for (int32_t i = 0; i < hd; ++i) {
        s += static_cast<double>(qv[i]) * load(kv, kv.k_pool, kvlayout::k_index(kv, lo + j, kvh, i));
      }
      p[j] = static_cast<float>(s) * scale;
      if (kv.softcap > 0.0f) p[j] = kv.softcap * std::tanh(p[j] / kv.softcap);
    }
    softmax(p.data(), len);
    std::fill(o.begin(), o.end(), 0.0);
    for (int64_t j = 0; j < len; ++j) {
      const size_t row = kvlayout::v_row(kv, lo + j, kvh);
      for (int32_t i = 0; i < hd; ++i) o[i] += static_cast<double>(p[j]) * load(kv, kv.v_pool, row + i);
    }
    for (int32_t i = 0; i < hd; ++i) out[item * hd + i] = static_cast<float>(o[i]);
  }
}

}  // namespace ref
}  // namespace cpullm
