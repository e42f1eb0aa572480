// Quantized matrix products for x86 (AVX2 / AVX-512 / AVX512-VNNI), one template for every kernel set:
// a kernel set supplies only its 32-byte integer dot product (Dot::dot(u8 weights, s8 activations)).
//
// Tile: NR weight rows × MR activation rows. Per 32-weight (sub-)block and per (row, act row) pair:
//   acc[r][i] (8 f32 lanes) += f32(int dot lanes) · d_act[i] · d_w[r];   min[r][i] += m_w[r] · d_act[i]·Σq_act[i]
// then y = hsum(acc) + min. Each output element goes through exactly these operations whatever the tile
// shape or row range, so results do not depend on how rows are split over threads.
// Included by matmul_<set>.cc only; compiled with that set's flags.
#ifndef CPULLM_KERNELS_X86_QUANT_H
#define CPULLM_KERNELS_X86_QUANT_H

#include "kernels/matmul/x86_intrin.h"

#include "kernels/blocks.h"

namespace cpullm {
namespace x86 {

inline float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }

// A 32-weight sub-block ready for the dot product: weights as bytes, scale d and additive min m
// (w = d·q + m); `is_signed` weights are int8 (Q8_0) and need the sign trick (maddubs/vpdpbusd want u8).
struct Sub {
  __m256i q;
  float d;
  float m;
};

inline __m256i unpack_nibbles(const uint8_t* qs) {  // 16 bytes -> 32 u8: low nibbles then high nibbles
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

struct Q4_0T {
  using Block = BlockQ4_0;
  static constexpr int kSubs = 1;
  static constexpr bool kSigned = false;
  static constexpr bool kHasMin = true;  // w = d·q - 8d
  static Sub sub(const Block& b, int) {
    const float d = f16_scalar(b.d);
    return {unpack_nibbles(b.qs), d, -8.0f * d};
  }
};

struct Q4_1T {
  using Block = BlockQ4_1;
  static constexpr int kSubs = 1;
  static constexpr bool kSigned = false;
  static constexpr bool kHasMin = true;
  static Sub sub(const Block& b, int) { return {unpack_nibbles(b.qs), f16_scalar(b.d), f16_scalar(b.m)}; }
};

struct Q8_0T {
  using Block = BlockQ8_0;
  static constexpr int kSubs = 1;
  static constexpr bool kSigned = true;
  static constexpr bool kHasMin = false;
  static Sub sub(const Block& b, int) {
    return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)), f16_scalar(b.d), 0.0f};
  }
};

struct Q4_KT {
  using Block = BlockQ4_K;
  static constexpr int kSubs = 8;
  static constexpr bool kSigned = false;
  static constexpr bool kHasMin = true;
  static Sub sub(const Block& b, int j) {
    uint8_t sc, m;
    q4k_scale_min(j, b.scales, &sc, &m);
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * (j / 2)));
    const __m256i q = (j % 2) ? _mm256_srli_epi16(v, 4) : v;
    return {_mm256_and_si256(q, _mm256_set1_epi8(0x0F)), f16_scalar(b.d) * sc, -(f16_scalar(b.dmin) * m)};
  }
};

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

template <class T, class Dot, int NR, int MR>
inline void tile(const uint8_t* w, int64_t wstride, const ActBlock* const* a, int64_t nblocks, float* Y,
                 int64_t ldy, int64_t r) {
  __m256 acc[NR][MR];
  float mins[NR][MR];
  for (int ri = 0; ri < NR; ++ri) {
    for (int i = 0; i < MR; ++i) {
      acc[ri][i] = _mm256_setzero_ps();
      mins[ri][i] = 0.0f;
    }
  }
  for (int64_t k = 0; k < nblocks; ++k) {
    for (int j = 0; j < T::kSubs; ++j) {
      const int64_t ab = k * T::kSubs + j;
      __m256i aq[MR];
      __m256 ad[MR];
      for (int i = 0; i < MR; ++i) {
        aq[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i][ab].q));
        ad[i] = _mm256_set1_ps(a[i][ab].d);
      }
      for (int ri = 0; ri < NR; ++ri) {
        const auto& blk = reinterpret_cast<const typename T::Block*>(w + ri * wstride)[k];
        const Sub s = T::sub(blk, j);
        const __m256 dw = _mm256_set1_ps(s.d);
        const __m256i u = T::kSigned ? _mm256_sign_epi8(s.q, s.q) : s.q;
        for (int i = 0; i < MR; ++i) {
          const __m256i x = T::kSigned ? _mm256_sign_epi8(aq[i], s.q) : aq[i];
          const __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(Dot::dot(u, x)), ad[i]);
          acc[ri][i] = _mm256_fmadd_ps(p, dw, acc[ri][i]);
          if (T::kHasMin) mins[ri][i] = std::fma(s.m, a[i][ab].d * static_cast<float>(a[i][ab].sum), mins[ri][i]);
        }
      }
    }
  }
  for (int ri = 0; ri < NR; ++ri) {
    for (int i = 0; i < MR; ++i) Y[i * ldy + r + ri] = hsum(acc[ri][i]) + mins[ri][i];
  }
}

// Rows [r0, r1) × all m activation rows. Prefill: 4×4 tiles (each weight block feeds 4 activation rows
// from registers); decode (m = 1): 4×1 tiles.
template <class T, class Dot>
void matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int NR = 4;
  const int64_t wstride = row_bytes(W.type, W.cols);
  const int64_t nblocks = W.cols / (T::kSubs * kQK);
  const int64_t ablocks = W.cols / kQK;
  const auto* base = static_cast<const uint8_t*>(W.data);
  const auto* act = static_cast<const ActBlock*>(Xq);
  for (int64_t i = 0; i < m; i += 4) {
    const ActBlock* a[4];
    const int mr = static_cast<int>(std::min<int64_t>(4, m - i));
    for (int t = 0; t < mr; ++t) a[t] = act + (i + t) * ablocks;
    float* y = Y + i * ldy;
    int64_t r = r0;
    for (; r + NR <= r1; r += NR) {
      const uint8_t* w = base + r * wstride;
      switch (mr) {
        case 4: tile<T, Dot, NR, 4>(w, wstride, a, nblocks, y, ldy, r); break;
        case 3: tile<T, Dot, NR, 3>(w, wstride, a, nblocks, y, ldy, r); break;
        case 2: tile<T, Dot, NR, 2>(w, wstride, a, nblocks, y, ldy, r); break;
        default: tile<T, Dot, NR, 1>(w, wstride, a, nblocks, y, ldy, r); break;
      }
    }
    for (; r < r1; ++r) {
      const uint8_t* w = base + r * wstride;
      switch (mr) {
        case 4: tile<T, Dot, 1, 4>(w, wstride, a, nblocks, y, ldy, r); break;
        case 3: tile<T, Dot, 1, 3>(w, wstride, a, nblocks, y, ldy, r); break;
        case 2: tile<T, Dot, 1, 2>(w, wstride, a, nblocks, y, ldy, r); break;
        default: tile<T, Dot, 1, 1>(w, wstride, a, nblocks, y, ldy, r); break;
      }
    }
  }
}

// The quantized types this template handles; false for others (the caller falls back).
template <class Dot>
bool matmul_quant(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  switch (W.type) {
    case DType::Q4_0: matmul_rows<Q4_0T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q4_1: matmul_rows<Q4_1T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q8_0: matmul_rows<Q8_0T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q4_K: matmul_rows<Q4_KT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    default: return false;
  }
}

// Bitwise the reference quantize_act: same max, same scale, x·(1/d) rounded half-to-even by cvtps.
inline void quantize_act_avx2(const float* x, int64_t n, ActBlock* out) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK) {
    __m256 v[4];
    __m256 mx = _mm256_setzero_ps();
    for (int t = 0; t < 4; ++t) {
      v[t] = _mm256_loadu_ps(x + 8 * t);
      mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[t]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float d = act_scale(_mm_cvtss_f32(m4));
    const __m256 id = _mm256_set1_ps(act_inv_scale(d));
    __m256i q[4];
    for (int t = 0; t < 4; ++t) q[t] = _mm256_cvtps_epi32(_mm256_mul_ps(v[t], id));
    // Sum of the 32 ints, then pack 32-bit -> 8-bit (packs reorder 128-bit lanes; permute restores order).
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    const __m256i p01 = _mm256_packs_epi32(q[0], q[1]);
    const __m256i p23 = _mm256_packs_epi32(q[2], q[3]);
    __m256i p = _mm256_packs_epi16(p01, p23);
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].q), p);
    out[b].d = d;
    out[b].sum = _mm_cvtsi128_si32(s4);
  }
}

}  // namespace x86
}  // namespace cpullm

#endif  // CPULLM_KERNELS_X86_QUANT_H
