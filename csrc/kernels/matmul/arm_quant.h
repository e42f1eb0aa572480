// Quantized and float matrix products for aarch64 (NEON / dotprod), one template for every kernel set:
// a set supplies only its integer dot products: Dot::dot of one 32-value block and Dot::half of 16
// values (-> 4 s32 lanes each).
//
// Tile: NR weight rows × MR activation rows. Per 32-weight (sub-)block and per (row, act row) pair:
//   acc (4 f32 lanes) += f32(int dot lanes) · d_act · d_w;   min += m_w · d_act·Σq_act
// then y = hsum(acc) + min, whatever the tile shape or row range (thread-count independent).
// Included by matmul_<set>.cc only; compiled with that set's flags.
#ifndef CPULLM_KERNELS_ARM_QUANT_H
#define CPULLM_KERNELS_ARM_QUANT_H

#include <arm_neon.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/blocks.h"
#include "kernels/matmul/row_tiles.h"

namespace cpullm {
namespace arm {

inline float f16_scalar(uint16_t h) {
  __fp16 v;
  std::memcpy(&v, &h, 2);
  return static_cast<float>(v);
}

// A 32-weight sub-block: elements 0..15 in q0, 16..31 in q1 (int8; Q4 values are 0..15), w = d·q + m.
struct Sub {
  int8x16_t q0, q1;
  float d, m;
};

struct Q4_0T {
  using Block = BlockQ4_0;
  static constexpr int kSubs = 1;
  static constexpr bool kHasMin = true;
  static constexpr bool kHalves = false;  // w = d·q - 8d
  static Sub sub(const Block& b, int) {
    const uint8x16_t v = vld1q_u8(b.qs);
    const float d = f16_scalar(b.d);
    return {vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), d,
            -8.0f * d};
  }
};

struct Q4_1T {
  using Block = BlockQ4_1;
  static constexpr int kSubs = 1;
  static constexpr bool kHasMin = true;
  static constexpr bool kHalves = false;
  static Sub sub(const Block& b, int) {
    const uint8x16_t v = vld1q_u8(b.qs);
    return {vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), vreinterpretq_s8_u8(vshrq_n_u8(v, 4)),
            f16_scalar(b.d), f16_scalar(b.m)};
  }
};

// Q5: bits 16·half .. 16·half+15 of the block's fifth bits as 0x10 / 0 bytes (element order).
inline uint8x16_t q5_high(const uint8_t* qh, int half) {
  const uint8x16_t bit = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t bytes = vcombine_u8(vdup_n_u8(qh[2 * half]), vdup_n_u8(qh[2 * half + 1]));
  return vandq_u8(vtstq_u8(bytes, bit), vdupq_n_u8(0x10));
}

// Q5_0 as signed values q - 16 (-16..15), no min; Q5_1 as q (0..31) with its min.
struct Q5_0T {
  using Block = BlockQ5_0;
  static constexpr int kSubs = 1;
  static constexpr bool kHasMin = false;
  static constexpr bool kHalves = false;
  static Sub sub(const Block& b, int) {
    const uint8x16_t v = vld1q_u8(b.qs);
    const int8x16_t k16 = vdupq_n_s8(16);
    const uint8x16_t q0 = vorrq_u8(vandq_u8(v, vdupq_n_u8(0x0F)), q5_high(b.qh, 0));
    const uint8x16_t q1 = vorrq_u8(vshrq_n_u8(v, 4), q5_high(b.qh, 1));
    return {vsubq_s8(vreinterpretq_s8_u8(q0), k16), vsubq_s8(vreinterpretq_s8_u8(q1), k16), f16_scalar(b.d),
            0.0f};
  }
};

struct Q5_1T {
  using Block = BlockQ5_1;
  static constexpr int kSubs = 1;
  static constexpr bool kHasMin = true;
  static constexpr bool kHalves = false;
  static Sub sub(const Block& b, int) {
    const uint8x16_t v = vld1q_u8(b.qs);
    const uint8x16_t q0 = vorrq_u8(vandq_u8(v, vdupq_n_u8(0x0F)), q5_high(b.qh, 0));
    const uint8x16_t q1 = vorrq_u8(vshrq_n_u8(v, 4), q5_high(b.qh, 1));
    return {vreinterpretq_s8_u8(q0), vreinterpretq_s8_u8(q1), f16_scalar(b.d), f16_scalar(b.m)};
  }
};

// IQ4_NL: nibbles looked up in the codebook (tbl), signed values, no min.
struct IQ4_NLT {
  using Block = BlockIQ4_NL;
  static constexpr int kSubs = 1;
  static constexpr bool kHasMin = false;
  static constexpr bool kHalves = false;
  static Sub sub(const Block& b, int) {
    const uint8x16_t v = vld1q_u8(b.qs);
    const int8x16_t book = vld1q_s8(kIQ4NL);
    return {vqtbl1q_s8(book, vandq_u8(v, vdupq_n_u8(0x0F))), vqtbl1q_s8(book, vshrq_n_u8(v, 4)),
            f16_scalar(b.d), 0.0f};
  }
};

// IQ4_XS: IQ4_NL's lookup per 32-weight sub-block, with the sub-block's scale d · (6-bit signed scale).
struct IQ4_XST {
  using Block = BlockIQ4_XS;
  static constexpr int kSubs = 8;
  static constexpr bool kHasMin = false;
  static constexpr bool kHalves = false;
  static Sub sub(const Block& b, int j) {
    const uint8x16_t v = vld1q_u8(b.qs + 16 * j);
    const int8x16_t book = vld1q_s8(kIQ4NL);
    return {vqtbl1q_s8(book, vandq_u8(v, vdupq_n_u8(0x0F))), vqtbl1q_s8(book, vshrq_n_u8(v, 4)),
            f16_scalar(b.d) * static_cast<float>(iq4xs_scale(b, j)), 0.0f};
  }
};

struct Q8_0T {
  using Block = BlockQ8_0;
  static constexpr int kSubs = 1;
  static constexpr bool kHasMin = false;
  static constexpr bool kHalves = false;
  static Sub sub(const Block& b, int) { return {vld1q_s8(b.qs), vld1q_s8(b.qs + 16), f16_scalar(b.d), 0.0f}; }
};

struct Q4_KT {
  using Block = BlockQ4_K;
  static constexpr int kSubs = 8;
  static constexpr bool kHasMin = true;
  static constexpr bool kHalves = false;
  static Sub sub(const Block& b, int j) {
    uint8_t sc, m;
    q4k_scale_min(j, b.scales, &sc, &m);
    const uint8_t* q = b.qs + 32 * (j / 2);
    uint8x16_t v0 = vld1q_u8(q), v1 = vld1q_u8(q + 16);
    if (j % 2) {
      v0 = vshrq_n_u8(v0, 4);
      v1 = vshrq_n_u8(v1, 4);
    } else {
      v0 = vandq_u8(v0, vdupq_n_u8(0x0F));
      v1 = vandq_u8(v1, vdupq_n_u8(0x0F));
    }
    return {vreinterpretq_s8_u8(v0), vreinterpretq_s8_u8(v1), f16_scalar(b.d) * sc,
            -(f16_scalar(b.dmin) * m)};
  }
};

struct Q5_KT {
  using Block = BlockQ5_K;
  static constexpr int kSubs = 8;
  static constexpr bool kHasMin = true;
  static constexpr bool kHalves = false;
  static Sub sub(const Block& b, int j) {
    uint8_t sc, m;
    q4k_scale_min(j, b.scales, &sc, &m);
    const uint8_t* q = b.qs + 32 * (j / 2);
    uint8x16_t v0 = vld1q_u8(q), v1 = vld1q_u8(q + 16);
    if (j % 2) {
      v0 = vshrq_n_u8(v0, 4);
      v1 = vshrq_n_u8(v1, 4);
    } else {
      v0 = vandq_u8(v0, vdupq_n_u8(0x0F));
      v1 = vandq_u8(v1, vdupq_n_u8(0x0F));
    }
    const int8x16_t shift = vdupq_n_s8(static_cast<int8_t>(4 - j));  // bit j to bit 4 (negative: right)
    const uint8x16_t h0 = vandq_u8(vshlq_u8(vld1q_u8(b.qh), shift), vdupq_n_u8(0x10));
    const uint8x16_t h1 = vandq_u8(vshlq_u8(vld1q_u8(b.qh + 16), shift), vdupq_n_u8(0x10));
    return {vreinterpretq_s8_u8(vorrq_u8(v0, h0)), vreinterpretq_s8_u8(vorrq_u8(v1, h1)),
            f16_scalar(b.d) * sc, -(f16_scalar(b.dmin) * m)};
  }
};

// kHalves (Q2_K, Q3_K, Q6_K): stored values q + kOffset and one int scale per 16 weights (T::hscale); the
// integer dot of sub-block j is hscale(2j)·Σ_{0..15}(q-kOffset)a + hscale(2j+1)·Σ_{16..31}(q-kOffset)a,
// exact (Dot::half gives each 16-value half). kHalfMins (Q2_K): one int min per 16 weights (T::hmin),
// its term (hmin(2j)·Σ_{0..15}a + hmin(2j+1)·Σ_{16..31}a) · d_act · Sub::m.

// Q2_K / Q3_K sub-block j's low 2 bits: bytes qs[32h .. 32h+31] (h = j / 4), bits 2·(j % 4) and up.
inline void q2k_low2(const uint8_t* qs, int j, uint8x16_t* v0, uint8x16_t* v1) {
  const int8x16_t shift = vdupq_n_s8(static_cast<int8_t>(-2 * (j % 4)));  // negative: shift right
  *v0 = vandq_u8(vshlq_u8(vld1q_u8(qs + 32 * (j / 4)), shift), vdupq_n_u8(3));
  *v1 = vandq_u8(vshlq_u8(vld1q_u8(qs + 32 * (j / 4) + 16), shift), vdupq_n_u8(3));
}

struct Q2_KT {
  using Block = BlockQ2_K;
  static constexpr int kSubs = 8;
  static constexpr bool kHasMin = false;
  static constexpr bool kHalves = true, kHalfMins = true;
  static constexpr int kOffset = 0;
  static int hscale(const Block& b, int l) { return b.scales[l] & 0xF; }
  static int hmin(const Block& b, int l) { return b.scales[l] >> 4; }
  static Sub sub(const Block& b, int j) {
    uint8x16_t v0, v1;
    q2k_low2(b.qs, j, &v0, &v1);
    return {vreinterpretq_s8_u8(v0), vreinterpretq_s8_u8(v1), f16_scalar(b.d), -f16_scalar(b.dmin)};
  }
};

struct Q3_KT {
  using Block = BlockQ3_K;
  static constexpr int kSubs = 8;
  static constexpr bool kHasMin = false;
  static constexpr bool kHalves = true, kHalfMins = false;
  static constexpr int kOffset = 4;  // stored q + 4: the low 2 bits, plus 4 where the third bit is set
  static int hscale(const Block& b, int l) { return q3k_scale(b.scales, l); }
  static Sub sub(const Block& b, int j) {
    uint8x16_t v0, v1;
    q2k_low2(b.qs, j, &v0, &v1);
    const int8x16_t shift = vdupq_n_s8(static_cast<int8_t>(2 - j));  // bit j to bit 2 (negative: right)
    const uint8x16_t h0 = vandq_u8(vshlq_u8(vld1q_u8(b.hmask), shift), vdupq_n_u8(4));
    const uint8x16_t h1 = vandq_u8(vshlq_u8(vld1q_u8(b.hmask + 16), shift), vdupq_n_u8(4));
    return {vreinterpretq_s8_u8(vorrq_u8(v0, h0)), vreinterpretq_s8_u8(vorrq_u8(v1, h1)), f16_scalar(b.d),
            0.0f};
  }
};

// Q6_K: stored values q + 32 (0..63) and one int8 scale per 16 weights.
struct Q6_KT {
  using Block = BlockQ6_K;
  static constexpr int kSubs = 8;
  static constexpr bool kHasMin = false;
  static constexpr bool kHalves = true, kHalfMins = false;
  static constexpr int kOffset = 32;
  static int hscale(const Block& b, int l) { return b.scales[l]; }
  static Sub sub(const Block& b, int j) {
    const int h = j / 4, c = j % 4;
    const uint8_t* ql = b.ql + 64 * h + 32 * (c % 2);
    const uint8_t* qh = b.qh + 32 * h;
    uint8x16_t lo0 = vld1q_u8(ql), lo1 = vld1q_u8(ql + 16);
    if (c < 2) {
      lo0 = vandq_u8(lo0, vdupq_n_u8(0x0F));
      lo1 = vandq_u8(lo1, vdupq_n_u8(0x0F));
    } else {
      lo0 = vshrq_n_u8(lo0, 4);
      lo1 = vshrq_n_u8(lo1, 4);
    }
    const int8x16_t shift = vdupq_n_s8(static_cast<int8_t>(-2 * c));  // negative: shift right
    const uint8x16_t hi0 = vandq_u8(vshlq_u8(vld1q_u8(qh), shift), vdupq_n_u8(3));
    const uint8x16_t hi1 = vandq_u8(vshlq_u8(vld1q_u8(qh + 16), shift), vdupq_n_u8(3));
    return {vreinterpretq_s8_u8(vorrq_u8(lo0, vshlq_n_u8(hi0, 4))),
            vreinterpretq_s8_u8(vorrq_u8(lo1, vshlq_n_u8(hi1, 4))), f16_scalar(b.d), 0.0f};
  }
};

template <class T>
constexpr bool half_mins() {
  if constexpr (T::kHalves) {
    return T::kHalfMins;
  } else {
    return false;
  }
}

template <class T, class Dot, int NR, int MR>
inline void tile(const uint8_t* w, int64_t wstride, const ActBlock* const* a, int64_t nblocks, float* Y,
                 int64_t ldy, int64_t r) {
  float32x4_t acc[NR][MR];
  float mins[NR][MR];
  for (int ri = 0; ri < NR; ++ri) {
    for (int i = 0; i < MR; ++i) {
      acc[ri][i] = vdupq_n_f32(0.0f);
      mins[ri][i] = 0.0f;
    }
  }
  for (int64_t k = 0; k < nblocks; ++k) {
    for (int j = 0; j < T::kSubs; ++j) {
      const int64_t ab = k * T::kSubs + j;
      int8x16_t a0[MR], a1[MR];
      int32_t as0[MR] = {}, as1[MR] = {};  // Σ of each 16-value half (kHalfMins only)
      for (int i = 0; i < MR; ++i) {
        a0[i] = vld1q_s8(a[i][ab].q);
        a1[i] = vld1q_s8(a[i][ab].q + 16);
        if constexpr (half_mins<T>()) {
          as0[i] = vaddlvq_s8(a0[i]);
          as1[i] = vaddlvq_s8(a1[i]);
        }
      }
      for (int ri = 0; ri < NR; ++ri) {
        const auto& blk = reinterpret_cast<const typename T::Block*>(w + ri * wstride)[k];
        const Sub s = T::sub(blk, j);
        for (int i = 0; i < MR; ++i) {
          int32x4_t dot;
          if constexpr (T::kHalves) {
            int32x4_t h0 = Dot::half(s.q0, a0[i]), h1 = Dot::half(s.q1, a1[i]);
            if constexpr (T::kOffset != 0) {
              const int8x16_t ko = vdupq_n_s8(T::kOffset);
              h0 = vsubq_s32(h0, Dot::half(ko, a0[i]));
              h1 = vsubq_s32(h1, Dot::half(ko, a1[i]));
            }
            dot = vmlaq_n_s32(vmulq_n_s32(h0, T::hscale(blk, 2 * j)), h1, T::hscale(blk, 2 * j + 1));
            if constexpr (half_mins<T>()) {
              const int32_t mn = T::hmin(blk, 2 * j) * as0[i] + T::hmin(blk, 2 * j + 1) * as1[i];
              mins[ri][i] = std::fma(s.m, a[i][ab].d * static_cast<float>(mn), mins[ri][i]);
            }
          } else {
            dot = Dot::dot(s.q0, s.q1, a0[i], a1[i]);
          }
          const float32x4_t p = vmulq_n_f32(vcvtq_f32_s32(dot), a[i][ab].d);
          acc[ri][i] = vfmaq_n_f32(acc[ri][i], p, s.d);
          if (T::kHasMin)
            mins[ri][i] = std::fma(s.m, a[i][ab].d * static_cast<float>(a[i][ab].sum), mins[ri][i]);
        }
      }
    }
  }
  for (int ri = 0; ri < NR; ++ri) {
    for (int i = 0; i < MR; ++i) Y[i * ldy + r + ri] = vaddvq_f32(acc[ri][i]) + mins[ri][i];
  }
}

template <class T, class Dot>
void quant_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  row_tiles::quant_rows<T>(W, Xq, m, Y, ldy, r0, r1, [](auto nr, auto mr, auto... args) {
    tile<T, Dot, decltype(nr)::value, decltype(mr)::value>(args...);
  });
}

template <class Dot>
bool matmul_quant(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  switch (W.type) {
    case DType::Q4_0: quant_rows<Q4_0T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q4_1: quant_rows<Q4_1T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q5_0: quant_rows<Q5_0T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q5_1: quant_rows<Q5_1T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q8_0: quant_rows<Q8_0T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::IQ4_NL: quant_rows<IQ4_NLT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::IQ4_XS: quant_rows<IQ4_XST, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q2_K: quant_rows<Q2_KT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q3_K: quant_rows<Q3_KT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q4_K: quant_rows<Q4_KT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q5_K: quant_rows<Q5_KT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q6_K: quant_rows<Q6_KT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    default: return false;
  }
}

}  // namespace arm
}  // namespace cpullm

#endif  // CPULLM_KERNELS_ARM_QUANT_H
