// Flash-style attention over the paged KV cache, written once with GCC/Clang vector extensions and
// compiled per kernel set (attention_<set>.cc), so the vector width and instructions come from that
// file's flags: 16-float vectors are one zmm with AVX-512, two ymm with AVX2, four q registers on NEON.
//
// Work is grouped by (tile of up to 16 query tokens, KV head): the query heads and tokens of a group
// read the same 16-key tiles, in batches of up to kBatch queries that each load of a K or V row serves (a
// decode token's query heads for one KV head are one batch when the group is at most kBatch).
// Per query it keeps a running max m, a running sum l and an output accumulator (online softmax):
//   s = q·K_tile * scale;  m' = max(m, max s);  p = exp(s - m');  l = l·e^(m-m') + Σp;
//   acc = acc·e^(m-m') + Σ_j p_j V_j;  out = acc / l.
// Options of the layer (KVCache): s is soft-capped (kv.softcap), keys before the sliding window
// (kv.window) are masked like future ones and their tiles skipped.
// Everything here has internal linkage: each kernel set's copy stays in its own file.
#ifndef CPULLM_KERNELS_ATTENTION_SIMD_H
#define CPULLM_KERNELS_ATTENTION_SIMD_H

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/attention/kv_layout.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#elif defined(__F16C__) || defined(__AVX512F__)
#include "kernels/matmul/x86_intrin.h"
#endif
#include "kernels/kernels.h"

#if defined(__GNUC__) && !defined(__clang__)
// 16-float vectors are passed between these internal-linkage functions only, never across a library
// boundary, so GCC's note that their calling convention differs without AVX-512 does not apply. (GCC
// reports it at the end of the including file, so it stays off there: include this header last.)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace cpullm {
namespace {
namespace simd_attention {

constexpr int kLanes = 16;      // keys per tile = lanes of one score vector
constexpr int kMaxTokens = 16;  // query tokens per work group
constexpr int kMaxGroup = 16;   // query heads per KV head we keep state for
constexpr int kMaxHeadDim = 256;
// Queries per run_batch, one score accumulator each (their batch's independent FMA chains), all in registers.
// AVX-512's 32 zmm hold 8: each converted K or V row then serves 8 queries, not 4 (Zen 4, 2 threads, 512
// tokens: the default model's attention 4.8 -> 4.1 ms and 1.1B's 14.1 -> 12.4 ms, against 4 queries × 4
// chains). With AVX2 (16 ymm, a 16-float vector is two) or NEON, 4: more spilled to the stack on every key
// row and made attention a third of a 512-token prefill of the default model.
#if defined(__AVX512F__)
constexpr int kBatch = 8;
#else
constexpr int kBatch = 4;
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
#if !defined(__aarch64__)
typedef _Float16 h16 __attribute__((vector_size(32)));
#endif

inline v16 splat(float x) { return v16{} + x; }

inline v16 load_f32(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline v16 load_f16(const uint16_t* p) {
#if defined(__aarch64__)
  // GCC 12 has no _Float16 in C++ on aarch64: convert four halves at a time with fcvtl.
  v16 v;
  for (int i = 0; i < 4; ++i) {
    const float32x4_t f = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p + 4 * i)));
    std::memcpy(reinterpret_cast<char*>(&v) + 16 * i, &f, 16);
  }
  return v;
#elif defined(__AVX512F__)
  // One vcvtph2ps: GCC 12 lowers __builtin_convertvector on _Float16 vectors to a libgcc call per
  // element on x86 (no AVX512-FP16), which made F16 caches 3x slower than F32 ones.
  const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  v16 v;
  std::memcpy(&v, &f, sizeof v);
  return v;
#elif defined(__F16C__)
  const __m256 lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256 hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  v16 v;
  std::memcpy(&v, &lo, 32);
  std::memcpy(reinterpret_cast<char*>(&v) + 32, &hi, 32);
  return v;
#else
  h16 h;
  std::memcpy(&h, p, sizeof h);
  return __builtin_convertvector(h, v16);
#endif
}

// e^x for x <= 0 (scores minus their max), to about 2 ulp: x = n ln2 + r, e^r by a degree-6 polynomial.
inline v16 exp_nonpositive(v16 x) {
  x = x < -87.0f ? splat(-87.0f) : x;
  const v16 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const v16 r = x - n * 0.693359375f + n * 2.12194440e-4f;
  v16 p = splat(1.0f / 720.0f);
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const v16i bits = (__builtin_convertvector(n, v16i) + 127) << 23;
  v16 scale;  // 2^n, built in the exponent field
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// Horizontal max / sum by halving (4 vector steps instead of 15 dependent scalar ones).
inline float hmax(v16 v) {
  v = v > __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7)
          ? v
          : __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  v = v > __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11)
          ? v
          : __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  v = v > __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)
          ? v
          : __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  return v[0] > v[1] ? v[0] : v[1];
}

inline float hsum(v16 v) {
  v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  return v[0] + v[1];
}

// cap · tanh(x / cap) with tanh(|y|) = (1 - e^(-2|y|)) / (1 + e^(-2|y|)), sign restored.
inline v16 softcap_v(v16 x, float cap) {
  const v16 y = x * (1.0f / cap);
  const v16 a = y < 0.0f ? -y : y;
  const v16 t = exp_nonpositive(-2.0f * a);
  const v16 th = (1.0f - t) / (1.0f + t);
  return (y < 0.0f ? -th : th) * cap;
}

struct QueryState {
  int64_t item;  // t * n_heads + h
  int64_t pos;   // the query's position: it sees keys lo .. pos
  int64_t lo;    // its first key: 0, or pos - window + 1 in a sliding-window layer
  float m, l;
  alignas(64) float q[kMaxHeadDim];    // scaled query
  alignas(64) float acc[kMaxHeadDim];  // Σ p V, rescaled as m grows
};

template <DType kT>
inline v16 load_as(const void* pool, size_t index) {
  if constexpr (kT == DType::F16) return load_f16(static_cast<const uint16_t*>(pool) + index);
  return load_f32(static_cast<const float*>(pool) + index);
}

// 16 int8 (a Q8_0 cache's values) as floats. Written per ISA: GCC 12 turns __builtin_convertvector of
// int8 to float into element-wise code on x86, which halved the Q8_0 cache's attention speed.
inline v16 load_i8(const uint8_t* p) {
  v16 v;
#if defined(__aarch64__)
  const int8x16_t b = vld1q_s8(reinterpret_cast<const int8_t*>(p));
  const int16x8_t lo = vmovl_s8(vget_low_s8(b)), hi = vmovl_s8(vget_high_s8(b));
  const float32x4_t f[4] = {
      vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))),
      vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi)))};
  std::memcpy(&v, f, sizeof v);
#elif defined(__AVX512F__)
  const __m512 f =
      _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  std::memcpy(&v, &f, sizeof v);
#elif defined(__AVX2__)
  const __m256 lo =
      _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  const __m256 hi =
      _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8))));
  std::memcpy(&v, &lo, 32);
  std::memcpy(reinterpret_cast<char*>(&v) + 32, &hi, 32);
#else
  typedef int8_t v16b __attribute__((vector_size(16)));
  v16b b;
  std::memcpy(&b, p, sizeof b);
  v = __builtin_convertvector(b, v16);
#endif
  return v;
}

// The f16 scales of the 16 slots from slot0 for dimension group g of a Q8_0 tile.
inline v16 q8_scales(const KVCache& kv, const uint8_t* tile, int32_t g, int64_t slot0) {
  return load_f16(reinterpret_cast<const uint16_t*>(tile + kvlayout::q8_scale(kv, g, slot0)));
}

// Ask for the K and V rows of the 16 keys from k0 on. A head's tiles lie a few KiB apart in the pools
// (blocks interleave the KV heads), so each starts a new page that the hardware prefetchers do not
// enter: without this, decode at a 4096-token context waited on memory for most of its attention time.
// GCC 12 drops __builtin_prefetch from this loop once inlined; an asm statement it must keep.
inline void prefetch_line(const char* p) {
#if defined(__x86_64__)
  __asm__ volatile("prefetcht0 %0" : : "m"(*p));
#elif defined(__aarch64__)
  __asm__ volatile("prfm pldl1keep, %0" : : "Q"(*p));
#else
  __builtin_prefetch(p);
#endif
}

template <DType kT>
inline void prefetch_tile(const KVCache& kv, int32_t kvh, int64_t k0) {
  const size_t elem = kT == DType::F32 ? 4 : kT == DType::F16 ? 2 : 1;
  const int64_t block = kv.block_table[k0 / kv.block_size];
  const size_t slot0 = static_cast<size_t>(k0 % kv.block_size);
  const auto* kp = static_cast<const char*>(kv.k_pool);
  const auto* vp = static_cast<const char*>(kv.v_pool);
  // In elements (bytes for Q8_0, whose tile offset is in bytes already).
  const size_t tile = kT == DType::Q8_0 ? kvlayout::q8_tile(kv, block, kvh) : kvlayout::tile(kv, block, kvh);
  if constexpr (kT == DType::Q8_0) {  // the 16 slots' scales: one 32-byte row per group, both tiles
    for (int32_t g = 0; g < kv.head_dim / kvlayout::kQ8Group; ++g) {
      prefetch_line(kp + tile + kvlayout::q8_scale(kv, g, static_cast<int64_t>(slot0)));
      prefetch_line(vp + tile + kvlayout::q8_scale(kv, g, static_cast<int64_t>(slot0)));
    }
  }
  // K: head_dim rows of kLanes keys, block_size apart; V: kLanes rows of head_dim, contiguous.
  for (int32_t d = 0; d < kv.head_dim; ++d) {
    const size_t at = (tile + static_cast<size_t>(d) * kv.block_size + slot0) * elem;
    if (d == 0 || (at & 63) < kLanes * elem) prefetch_line(kp + at);
  }
  const size_t v0 = (tile + slot0 * kv.head_dim) * elem, vbytes = kLanes * kv.head_dim * elem;
  for (size_t off = 0; off < vbytes; off += 64) prefetch_line(vp + v0 + off);
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
// acc[16c .. 16c + 16) = acc·corr + Σ_j p_j V_j of run_batch below, in explicit ymm halves: GCC 12 kept the
// generic 16-float accumulators of that loop in memory on AVX2 (moving them through general registers),
// which made it most of attention's time in a 512-token prefill.
template <DType kT, int N>
inline void pv_ymm(const KVCache& kv, size_t tile, const uint8_t* vq, int64_t slot0, int nk, int c,
                   const float (*p)[kLanes], const float* vs, const float* corr, QueryState* st) {
  const int32_t hd = kv.head_dim;
  __m256 lo[N], hi[N];
  for (int i = 0; i < N; ++i) {
    lo[i] = _mm256_mul_ps(_mm256_loadu_ps(st[i].acc + c * kLanes), _mm256_set1_ps(corr[i]));
    hi[i] = _mm256_mul_ps(_mm256_loadu_ps(st[i].acc + c * kLanes + 8), _mm256_set1_ps(corr[i]));
  }
  for (int j = 0; j < nk; ++j) {
    const size_t at = static_cast<size_t>(slot0 + j) * hd + static_cast<size_t>(c) * kLanes;
    __m256 vl, vh;
    if constexpr (kT == DType::Q8_0) {
      const uint8_t* r = vq + at;
      vl = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(r))));
      vh = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(r + 8))));
    } else if constexpr (kT == DType::F16) {
      const auto* r = static_cast<const uint16_t*>(kv.v_pool) + tile + at;
      vl = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r)));
      vh = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + 8)));
    } else {
      const float* r = static_cast<const float*>(kv.v_pool) + tile + at;
      vl = _mm256_loadu_ps(r);
      vh = _mm256_loadu_ps(r + 8);
    }
    for (int i = 0; i < N; ++i) {
      const __m256 w = _mm256_set1_ps(kT == DType::Q8_0 ? p[i][j] * vs[j] : p[i][j]);
      lo[i] = _mm256_fmadd_ps(w, vl, lo[i]);
      hi[i] = _mm256_fmadd_ps(w, vh, hi[i]);
    }
  }
  for (int i = 0; i < N; ++i) {
    _mm256_storeu_ps(st[i].acc + c * kLanes, lo[i]);
    _mm256_storeu_ps(st[i].acc + c * kLanes + 8, hi[i]);
  }
}
#endif

// Up to kBatch queries `st[0..N)` of one KV head over keys 0 .. max_pos, tile by tile. kT: the cache's
// type (F32, F16, or Q8_0: int8 values times their group's scale). Each K row (16 keys of one
// dimension) and each V row is loaded once, converted in registers, and used by every query of the
// batch. Every query does the same operations in the same order whatever N is and whichever other
// queries share its batch, so how items are split between threads never changes a result. The batch's
// queries are the independent FMA chains that hide the latency (one score accumulator each).
template <DType kT, int N>
inline void run_batch(const KVCache& kv, int32_t kvh, QueryState* st, int64_t k_first, int64_t max_pos) {
  const int32_t hd = kv.head_dim;
  const int nv = hd / kLanes;
  const size_t kstride = static_cast<size_t>(kv.block_size);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  v16i lane;
  for (int j = 0; j < kLanes; ++j) lane[j] = j;
  alignas(64) float p[N][kLanes];  // this tile's softmax numerators, 0 where masked
  for (int64_t k0 = k_first; k0 <= max_pos; k0 += kLanes) {
    const int64_t block = kv.block_table[k0 / kv.block_size];
    const size_t tile = kvlayout::tile(kv, block, kvh);
    // Q8_0: the (block, head) tiles, in bytes
    const uint8_t* kq = static_cast<const uint8_t*>(kv.k_pool) + kvlayout::q8_tile(kv, block, kvh);
    const uint8_t* vq = static_cast<const uint8_t*>(kv.v_pool) + kvlayout::q8_tile(kv, block, kvh);
    const int64_t slot0 = k0 % kv.block_size;
    const int nk = static_cast<int>(max_pos - k0 + 1 < kLanes ? max_pos - k0 + 1 : kLanes);
    if (k0 + kLanes <= max_pos) prefetch_tile<kT>(kv, kvh, k0 + kLanes);
    // Scores of the 16 keys: Σ_d q[d] · K[d][keys], K rows contiguous over the tile's slots.
    v16 s0[N];
    for (int i = 0; i < N; ++i) s0[i] = v16{};
    v16 ks = splat(1.0f);                  // Q8_0: the 16 keys' scales of the current group of 32 dimensions
    for (int32_t d = 0; d < hd; d += 4) {  // hd is a multiple of 16
      v16 ka, kb, kc, kd;
      if constexpr (kT == DType::Q8_0) {
        if (d % kvlayout::kQ8Group == 0) ks = q8_scales(kv, kq, d / kvlayout::kQ8Group, slot0);
        const uint8_t* row = kq + static_cast<size_t>(d) * kstride + slot0;
        ka = load_i8(row) * ks;
        kb = load_i8(row + kstride) * ks;
        kc = load_i8(row + 2 * kstride) * ks;
        kd = load_i8(row + 3 * kstride) * ks;
      } else {
        ka = load_as<kT>(kv.k_pool, tile + static_cast<size_t>(d) * kstride + slot0);
        kb = load_as<kT>(kv.k_pool, tile + static_cast<size_t>(d + 1) * kstride + slot0);
        kc = load_as<kT>(kv.k_pool, tile + static_cast<size_t>(d + 2) * kstride + slot0);
        kd = load_as<kT>(kv.k_pool, tile + static_cast<size_t>(d + 3) * kstride + slot0);
      }
      for (int i = 0; i < N; ++i) {
        s0[i] += st[i].q[d] * ka;
        s0[i] += st[i].q[d + 1] * kb;
        s0[i] += st[i].q[d + 2] * kc;
        s0[i] += st[i].q[d + 3] * kd;
      }
    }
    float corr[N];
    for (int i = 0; i < N; ++i) {
      QueryState& s = st[i];
      corr[i] = 1.0f;
      std::memset(p[i], 0, sizeof p[i]);
      if (k0 > s.pos || k0 + nk <= s.lo)
        continue;  // every key of the tile: in its future or before its window
      const int valid = static_cast<int>(s.pos - k0 + 1 < nk ? s.pos - k0 + 1 : nk);
      const int first = static_cast<int>(s.lo > k0 ? s.lo - k0 : 0);
      const v16i in = (lane >= first) & (lane < valid);
      v16 sc = s0[i];
      if (kv.softcap > 0.0f) sc = softcap_v(sc, kv.softcap);
      sc = in ? sc : splat(neg_inf);
      const float m_new = std::fmax(s.m, hmax(sc));
      corr[i] = std::exp(s.m - m_new);  // 0 on the query's first tile (s.m = -inf)
      v16 e = exp_nonpositive(sc - m_new);
      e = in ? e : v16{};
      s.l = s.l * corr[i] + hsum(e);
      s.m = m_new;
      std::memcpy(p[i], &e, sizeof e);
    }
    // acc = acc·corr + Σ_j p_j V_j, 16 dimensions at a time. Keys past a query's position have p = 0
    // and are written (they are at most max_pos), so they add exactly nothing.
    alignas(64) float vs[kLanes];  // Q8_0: the 16 keys' V scales of this group of 32 dimensions
    for (int c = 0; c < nv; ++c) {
      if constexpr (kT == DType::Q8_0) {
        if (c * kLanes % kvlayout::kQ8Group == 0) {
          const v16 sv = q8_scales(kv, vq, c * kLanes / kvlayout::kQ8Group, slot0);
          std::memcpy(vs, &sv, sizeof vs);
        }
      }
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
      pv_ymm<kT, N>(kv, tile, vq, slot0, nk, c, p, vs, corr, st);
#else
      v16 a[N];
      for (int i = 0; i < N; ++i) a[i] = load_f32(st[i].acc + c * kLanes) * corr[i];
      for (int j = 0; j < nk; ++j) {
        if constexpr (kT == DType::Q8_0) {
          const v16 v = load_i8(vq + static_cast<size_t>(slot0 + j) * hd + static_cast<size_t>(c) * kLanes);
          for (int i = 0; i < N; ++i) a[i] += (p[i][j] * vs[j]) * v;
        } else {
          const v16 v = load_as<kT>(
              kv.v_pool, tile + static_cast<size_t>(slot0 + j) * hd + static_cast<size_t>(c) * kLanes);
          for (int i = 0; i < N; ++i) a[i] += p[i][j] * v;
        }
      }
      for (int i = 0; i < N; ++i) std::memcpy(st[i].acc + c * kLanes, &a[i], sizeof a[i]);
#endif
    }
  }
}

// run_batch for nb (1..M) queries: N is a compile-time count there, so its accumulators stay in registers.
template <DType kT, int M>
inline void run_batch_n(int nb, const KVCache& kv, int32_t kvh, QueryState* st, int64_t k_first,
                        int64_t max_pos) {
  if constexpr (M > 1) {
    if (nb < M) return run_batch_n<kT, M - 1>(nb, kv, kvh, st, k_first, max_pos);
  }
  run_batch<kT, M>(kv, kvh, st, k_first, max_pos);
}

// One KV head's queries st[0..n), in batches of up to kBatch, over keys k_first .. k_last (a multiple of
// kLanes; k_last < 0: up to each batch's last query position).
template <DType kT>
inline void run_group(const KVCache& kv, int32_t kvh, QueryState* st, int n, int64_t k_first,
                      int64_t k_last) {
  for (int i0 = 0; i0 < n; i0 += kBatch) {
    const int nb = n - i0 < kBatch ? n - i0 : kBatch;
    int64_t max_pos = k_last;
    if (max_pos < 0) {
      for (int i = i0; i < i0 + nb; ++i) max_pos = st[i].pos > max_pos ? st[i].pos : max_pos;
    }
    int64_t lo = st[i0].lo;  // tiles before every query's window are skipped
    for (int i = i0; i < i0 + nb; ++i) lo = st[i].lo < lo ? st[i].lo : lo;
    const int64_t first = lo / kLanes * kLanes > k_first ? lo / kLanes * kLanes : k_first;
    run_batch_n<kT, kBatch>(nb, kv, kvh, st + i0, first, max_pos);
  }
}

inline bool handles(const KVCache& kv, int32_t n_heads) {
  const int32_t hd = kv.head_dim;
  return hd % kLanes == 0 && hd <= kMaxHeadDim && kv.block_size % kLanes == 0 &&
         n_heads / kv.n_kv_heads <= kMaxGroup &&
         (kv.type == DType::F16 || kv.type == DType::F32 ||
          (kv.type == DType::Q8_0 && hd % kvlayout::kQ8Group == 0));
}

// One KV head's queries over keys k_first .. k_last for the cache's type (see run_group).
inline void run_group_any(const KVCache& kv, int32_t kvh, QueryState* st, int n, int64_t k_first,
                          int64_t k_last) {
  switch (kv.type) {
    case DType::F16: run_group<DType::F16>(kv, kvh, st, n, k_first, k_last); break;
    case DType::Q8_0: run_group<DType::Q8_0>(kv, kvh, st, n, k_first, k_last); break;
    default: run_group<DType::F32>(kv, kvh, st, n, k_first, k_last); break;
  }
}

// Starts query state s for head h of query row q (already at its position).
inline void start_query(QueryState& s, const float* q, int32_t h, int32_t hd, float scale, int64_t item,
                        int64_t pos, int32_t window) {
  s.item = item;
  s.pos = pos;
  s.lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
  s.m = -std::numeric_limits<float>::infinity();
  s.l = 0.0f;
  for (int32_t d = 0; d < hd; ++d) {
    s.q[d] = q[static_cast<int64_t>(h) * hd + d] * scale;
    s.acc[d] = 0.0f;
  }
}

// The items [i0, i1) (item = t * n_heads + h) of attention(); false when the shapes are not ones this
// path handles (head_dim not a multiple of 16 or too large, blocks not a multiple of 16 tokens).
inline bool attention_items(const float* q, int64_t n_q, int64_t pos0, int32_t n_heads, const KVCache& kv,
                            float scale, float* out, int64_t i0, int64_t i1) {
  (void)n_q;
  if (!handles(kv, n_heads)) return false;
  const int32_t hd = kv.head_dim, group = n_heads / kv.n_kv_heads;
  static thread_local QueryState st[kMaxTokens * kMaxGroup];
  const int64_t t_first = i0 / n_heads, t_last = (i1 - 1) / n_heads;
  for (int64_t t0 = t_first; t0 <= t_last; t0 += kMaxTokens) {
    const int64_t t1 = t0 + kMaxTokens - 1 < t_last ? t0 + kMaxTokens - 1 : t_last;
    for (int32_t kvh = 0; kvh < kv.n_kv_heads; ++kvh) {
      int n = 0;
      for (int64_t t = t0; t <= t1; ++t) {
        for (int32_t h = kvh * group; h < (kvh + 1) * group; ++h) {
          const int64_t item = t * n_heads + h;
          if (item < i0 || item >= i1) continue;
          start_query(st[n++], q + t * n_heads * hd, h, hd, scale, item, pos0 + t, kv.window);
        }
      }
      if (n == 0) continue;
      run_group_any(kv, kvh, st, n, 0, -1);
      for (int i = 0; i < n; ++i) {
        const float inv = 1.0f / st[i].l;
        for (int32_t d = 0; d < hd; ++d) out[st[i].item * hd + d] = st[i].acc[d] * inv;
      }
    }
  }
  return true;
}

// See attention_decode in kernels/kernels.h. Item = (query, KV head, segment); each item leaves, per
// head of its group, the segment's running max m, sum l and unnormalized Σ p·V, merged per head below.
inline bool attention_decode(const DecodeQuery* qs, int64_t n, int32_t n_heads, float scale,
                             ThreadPool* pool) {
  if (n <= 0) return true;
  if (!handles(qs[0].kv, n_heads)) return false;
  const int32_t hd = qs[0].kv.head_dim, n_kv = qs[0].kv.n_kv_heads, group = n_heads / n_kv;
  const int64_t stride = hd + 2;            // m, l, acc[hd]
  thread_local std::vector<int64_t> first;  // first item of each query, [n + 1]
  thread_local std::vector<float> part;     // [items × group × stride]
  first.assign(static_cast<size_t>(n + 1), 0);
  for (int64_t i = 0; i < n; ++i) first[i + 1] = first[i] + n_kv * (qs[i].pos / kDecodeSplitKeys + 1);
  const int64_t items = first[n];
  part.resize(static_cast<size_t>(items * group * stride));
  const int64_t* fi = first.data();
  float* pp = part.data();
  auto run = [&](int64_t i0, int64_t i1) {
    static thread_local QueryState st[kMaxGroup];
    int64_t qi = 0;
    for (int64_t item = i0; item < i1; ++item) {
      while (fi[qi + 1] <= item) ++qi;
      const DecodeQuery& dq = qs[qi];
      const int64_t n_seg = dq.pos / kDecodeSplitKeys + 1, local = item - fi[qi];
      const auto kvh = static_cast<int32_t>(local / n_seg);
      const int64_t k_first = local % n_seg * kDecodeSplitKeys;
      const int64_t k_last =
          k_first + kDecodeSplitKeys - 1 < dq.pos ? k_first + kDecodeSplitKeys - 1 : dq.pos;
      for (int32_t g = 0; g < group; ++g) {
        start_query(st[g], dq.q, kvh * group + g, hd, scale, 0, dq.pos, dq.kv.window);
      }
      run_group_any(dq.kv, kvh, st, group, k_first, k_last);
      for (int32_t g = 0; g < group; ++g) {
        float* out = pp + (item * group + g) * stride;
        out[0] = st[g].m;
        out[1] = st[g].l;
        std::memcpy(out + 2, st[g].acc, sizeof(float) * static_cast<size_t>(hd));
      }
    }
  };
  if (pool == nullptr || pool->size() == 1) {
    run(0, items);
  } else {
    pool->parallel_for(items, 1, run);
  }
  // Merge: m = max_s m_s, l = Σ_s l_s e^(m_s - m), acc = Σ_s acc_s e^(m_s - m), out = acc / l, segments
  // in order. With one segment the weights are exactly 1 and this is attention_items' last step. A segment
  // wholly before a sliding window saw no key (m = -inf, l = 0): its weight is 0.
  alignas(64) float acc[kMaxHeadDim];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t n_seg = qs[i].pos / kDecodeSplitKeys + 1;
    for (int32_t h = 0; h < n_heads; ++h) {
      const int32_t kvh = h / group, g = h % group;
      const float* seg0 = pp + ((fi[i] + kvh * n_seg) * group + g) * stride;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t sgi = 0; sgi < n_seg; ++sgi) m = std::fmax(m, seg0[sgi * group * stride]);
      float l = 0.0f;
      for (int32_t d = 0; d < hd; ++d) acc[d] = 0.0f;
      for (int64_t sgi = 0; sgi < n_seg; ++sgi) {
        const float* p = seg0 + sgi * group * stride;
        const float w = std::exp(p[0] - m);
        l += p[1] * w;
        for (int32_t d = 0; d < hd; ++d) acc[d] += p[2 + d] * w;
      }
      const float inv = 1.0f / l;
      float* out = qs[i].out + static_cast<int64_t>(h) * hd;
      for (int32_t d = 0; d < hd; ++d) out[d] = acc[d] * inv;
    }
  }
  return true;
}

}  // namespace simd_attention
}  // namespace
}  // namespace cpullm

#endif  // CPULLM_KERNELS_ATTENTION_SIMD_H
