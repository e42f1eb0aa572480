// Reference attention over a paged KV cache (F32, F16 or Q8_0), and the KV write. Causal, grouped-query
// heads, optionally a sliding window and soft-capped scores (KVCache::window, KVCache::softcap).
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

inline float q8_scale_at(const uint8_t* tile, const KVCache& kv, int32_t g, int64_t slot) {
  uint16_t h;
  std::memcpy(&h, tile + kvlayout::q8_scale(kv, g, slot), 2);
  return f16_to_f32(h);
}

// Q8_0: x[0 .. 32) to int8 q[i * stride] and one f16 scale d = max|x| / 127 (GGUF's Q8_0 rounding).
inline void q8_store(const float* x, int8_t* q, int64_t stride, uint8_t* scale) {
  float amax = 0.0f;
  for (int i = 0; i < kvlayout::kQ8Group; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < kvlayout::kQ8Group; ++i) q[i * stride] = static_cast<int8_t>(std::nearbyint(x[i] * id));
  const uint16_t h = f32_to_f16(d);
  std::memcpy(scale, &h, 2);
}

void kv_write_q8(const KVCache& kv, const float* k, const float* v, int64_t pos0, int64_t n_tokens) {
  const int32_t hd = kv.head_dim;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int64_t p = pos0 + t, slot = p % kv.block_size, block = kv.block_table[p / kv.block_size];
    for (int32_t h = 0; h < kv.n_kv_heads; ++h) {
      const float* ks = k + (t * kv.n_kv_heads + h) * static_cast<int64_t>(hd);
      const float* vs = v + (t * kv.n_kv_heads + h) * static_cast<int64_t>(hd);
      auto* kt = static_cast<uint8_t*>(kv.k_pool) + kvlayout::q8_tile(kv, block, h);
      auto* vt = static_cast<uint8_t*>(kv.v_pool) + kvlayout::q8_tile(kv, block, h);
      for (int32_t g = 0; g < hd / kvlayout::kQ8Group; ++g) {
        const int32_t i0 = g * kvlayout::kQ8Group;
        q8_store(ks + i0, reinterpret_cast<int8_t*>(kt + i0 * kv.block_size + slot), kv.block_size,
                 kt + kvlayout::q8_scale(kv, g, slot));
        q8_store(vs + i0, reinterpret_cast<int8_t*>(vt + slot * hd + i0), 1,
                 vt + kvlayout::q8_scale(kv, g, slot));
      }
    }
  }
}

// K / V of position p, KV head h, dimension i, whatever the cache's type.
float k_at(const KVCache& kv, int64_t p, int32_t h, int32_t i) {
  if (kv.type != DType::Q8_0) return load(kv, kv.k_pool, kvlayout::k_index(kv, p, h, i));
  const int64_t slot = p % kv.block_size;
  const auto* tile =
      static_cast<const uint8_t*>(kv.k_pool) + kvlayout::q8_tile(kv, kv.block_table[p / kv.block_size], h);
  const auto q = static_cast<int8_t>(tile[static_cast<int64_t>(i) * kv.block_size + slot]);
  return q * q8_scale_at(tile, kv, i / kvlayout::kQ8Group, slot);
}

float v_at(const KVCache& kv, int64_t p, int32_t h, int32_t i) {
  if (kv.type != DType::Q8_0) return load(kv, kv.v_pool, kvlayout::v_row(kv, p, h) + static_cast<size_t>(i));
  const int64_t slot = p % kv.block_size;
  const auto* tile =
      static_cast<const uint8_t*>(kv.v_pool) + kvlayout::q8_tile(kv, kv.block_table[p / kv.block_size], h);
  const auto q = static_cast<int8_t>(tile[slot * kv.head_dim + i]);
  return q * q8_scale_at(tile, kv, i / kvlayout::kQ8Group, slot);
}

}  // namespace

void kv_write(const KVCache& kv, const float* k, const float* v, int64_t pos0, int64_t n_tokens) {
  if (kv.type == DType::Q8_0) {
    kv_write_q8(kv, k, v, pos0, n_tokens);
    return;
  }
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
      for (int32_t i = 0; i < hd; ++i) { s += static_cast<double>(qv[i]) * k_at(kv, lo + j, kvh, i); }
      p[j] = static_cast<float>(s) * scale;
      if (kv.softcap > 0.0f) p[j] = kv.softcap * std::tanh(p[j] / kv.softcap);
    }
    softmax(p.data(), len);
    std::fill(o.begin(), o.end(), 0.0);
    for (int64_t j = 0; j < len; ++j) {
      for (int32_t i = 0; i < hd; ++i) o[i] += static_cast<double>(p[j]) * v_at(kv, lo + j, kvh, i);
    }
    for (int32_t i = 0; i < hd; ++i) out[item * hd + i] = static_cast<float>(o[i]);
  }
}

}  // namespace ref
}  // namespace cpullm
