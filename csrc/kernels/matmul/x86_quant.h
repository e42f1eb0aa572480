// Quantized matrix products for x86 (AVX2 / AVX-512 / AVX512-VNNI), one template for every kernel set
// (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL in GGUF layout — see x86_packed.h for the faster packed layout — and
// Q4_K, Q6_K): a kernel set supplies only its 32-byte integer dot product (Dot::dot(u8 weights, s8
// activations)).
//
// Tile: NR weight rows × MR activation rows. Per 32-weight (sub-)block and per (row, act row) pair:
//   acc[r][i] (8 f32 lanes) += f32(int dot lanes) · d_act[i] · d_w[r];   min[r][i] += m_w[r] ·
//   d_act[i]·Σq_act[i]
// then y = hsum(acc) + min. Each output element goes through exactly these operations whatever the tile
// shape or row range, so results do not depend on how rows are split over threads.
// Included by matmul_<set>.cc only; compiled with that set's flags.
#ifndef CPULLM_KERNELS_X86_QUANT_H
#define CPULLM_KERNELS_X86_QUANT_H

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/blocks.h"
#include "kernels/matmul/row_tiles.h"
#include "kernels/matmul/x86_intrin.h"

namespace cpullm {
namespace x86 {

inline float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }

// Weight formats as sequences of 32-weight sub-blocks: T::scales fills the float scale d and additive
// min m (w = d·q + m) of every sub-block of a block, T::quants gives sub-block j's weights as 32 bytes.
// kSigned: int8 weights (Q8_0), which need the sign trick (maddubs/vpdpbusd take u8 × s8).
// kHalves (Q2_K, Q3_K, Q6_K): each 16-weight half has its own int scale (T::iscales, per 32-bit lane) and
// the stored values are q + kOffset (Q6_K 32, Q3_K 4, Q2_K 0), so the integer dot becomes
// iscale · (Σ q·a - kOffset·Σ a) per lane, exactly. kHalfMins (Q2_K): each half also has an int min
// (T::imins, per lane), its term imin · Σ a per lane times d_act and the float m of the block.

inline __m256i unpack_nibbles(const uint8_t* qs) {  // 16 bytes -> 32 u8: low nibbles then high nibbles
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

struct Q4_0T {
  using Block = BlockQ4_0;
  static constexpr int kSubs = 1;
  static constexpr bool kSigned = false, kHasMin = true, kHalves = false;  // w = d·q - 8d
  static void scales(const Block& b, float* d, float* m) {
    d[0] = f16_scalar(b.d);
    m[0] = -8.0f * d[0];
  }
  static __m256i quants(const Block& b, int) { return unpack_nibbles(b.qs); }
};

struct Q4_1T {
  using Block = BlockQ4_1;
  static constexpr int kSubs = 1;
  static constexpr bool kSigned = false, kHasMin = true, kHalves = false;
  static void scales(const Block& b, float* d, float* m) {
    d[0] = f16_scalar(b.d);
    m[0] = f16_scalar(b.m);
  }
  static __m256i quants(const Block& b, int) { return unpack_nibbles(b.qs); }
};

// 32 bits -> 32 bytes: byte i is 0x10 where bit i of the little-endian u32 at p is set, else 0 (the fifth
// bit of Q5 element i, in the element order of unpack_nibbles).
inline __m256i q5_high_bits(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  const __m256i spread = _mm256_shuffle_epi8(  // byte i holds byte i / 8 of bits
      _mm256_set1_epi32(static_cast<int32_t>(bits)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
  // Every bit but bit i % 8 set: all ones exactly when bit i was set.
  const __m256i set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)),
                                        _mm256_set1_epi64x(-1));
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

struct Q5_0T {
  using Block = BlockQ5_0;
  static constexpr int kSubs = 1;
  static constexpr bool kSigned = false, kHasMin = true, kHalves = false;  // w = d·q - 16d
  static void scales(const Block& b, float* d, float* m) {
    d[0] = f16_scalar(b.d);
    m[0] = -16.0f * d[0];
  }
  static __m256i quants(const Block& b, int) {
    return _mm256_or_si256(unpack_nibbles(b.qs), q5_high_bits(b.qh));
  }
};

struct Q5_1T {
  using Block = BlockQ5_1;
  static constexpr int kSubs = 1;
  static constexpr bool kSigned = false, kHasMin = true, kHalves = false;
  static void scales(const Block& b, float* d, float* m) {
    d[0] = f16_scalar(b.d);
    m[0] = f16_scalar(b.m);
  }
  static __m256i quants(const Block& b, int) {
    return _mm256_or_si256(unpack_nibbles(b.qs), q5_high_bits(b.qh));
  }
};

// IQ4_NL: the codebook values (int8) looked up by nibble, signed like Q8_0.
inline __m256i iq4nl_values(__m256i nibbles) {
  const __m128i book = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4NL));
  return _mm256_shuffle_epi8(_mm256_set_m128i(book, book), nibbles);
}

struct IQ4_NLT {
  using Block = BlockIQ4_NL;
  static constexpr int kSubs = 1;
  static constexpr bool kSigned = true, kHasMin = false, kHalves = false;
  static void scales(const Block& b, float* d, float* m) {
    d[0] = f16_scalar(b.d);
    m[0] = 0.0f;
  }
  static __m256i quants(const Block& b, int) { return iq4nl_values(unpack_nibbles(b.qs)); }
};

// IQ4_XS: IQ4_NL's values in 8 sub-blocks, each with the float scale d · (6-bit signed scale).
struct IQ4_XST {
  using Block = BlockIQ4_XS;
  static constexpr int kSubs = 8;
  static constexpr bool kSigned = true, kHasMin = false, kHalves = false;
  static void scales(const Block& b, float* d, float* m) {
    const float bd = f16_scalar(b.d);
    for (int j = 0; j < 8; ++j) {
      d[j] = bd * static_cast<float>(iq4xs_scale(b, j));
      m[j] = 0.0f;
    }
  }
  static __m256i quants(const Block& b, int j) { return iq4nl_values(unpack_nibbles(b.qs + 16 * j)); }
};

struct Q8_0T {
  using Block = BlockQ8_0;
  static constexpr int kSubs = 1;
  static constexpr bool kSigned = true, kHasMin = false, kHalves = false;
  static void scales(const Block& b, float* d, float* m) {
    d[0] = f16_scalar(b.d);
    m[0] = 0.0f;
  }
  static __m256i quants(const Block& b, int) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  }
};

// Q4_K / Q5_K: the 8 six-bit (scale, min) pairs unpacked all at once (ggml's mask trick, same values as
// q4k_scale_min), then d·sc and -(dmin·m) for the 8 sub-blocks as two vectors.
template <class Block>
inline void k4_scales(const Block& b, float* d, float* m) {
  uint32_t u[4];
  std::memcpy(u, b.scales, 12);
  const uint32_t lo6 = 0x3f3f3f3f, lo4 = 0x0f0f0f0f, lo2 = 0x03030303;
  u[3] = ((u[2] >> 4) & lo4) | (((u[1] >> 6) & lo2) << 4);  // mins 4..7
  const uint32_t mins03 = u[1] & lo6;
  u[1] = (u[2] & lo4) | (((u[0] >> 6) & lo2) << 4);  // scales 4..7
  u[2] = mins03;
  u[0] &= lo6;  // scales 0..3
  const __m256 sc =
      _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(u))));
  const __m256 mn =
      _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(u + 2))));
  _mm256_storeu_ps(d, _mm256_mul_ps(_mm256_set1_ps(f16_scalar(b.d)), sc));
  _mm256_storeu_ps(
      m, _mm256_xor_ps(_mm256_mul_ps(_mm256_set1_ps(f16_scalar(b.dmin)), mn), _mm256_set1_ps(-0.0f)));
}

struct Q4_KT {
  using Block = BlockQ4_K;
  static constexpr int kSubs = 8;
  static constexpr bool kSigned = false, kHasMin = true, kHalves = false;
  static void scales(const Block& b, float* d, float* m) { k4_scales(b, d, m); }
  static __m256i quants(const Block& b, int j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * (j / 2)));
    const __m256i q = (j % 2) ? _mm256_srli_epi16(v, 4) : v;
    return _mm256_and_si256(q, _mm256_set1_epi8(0x0F));
  }
};

struct Q5_KT {
  using Block = BlockQ5_K;
  static constexpr int kSubs = 8;
  static constexpr bool kSigned = false, kHasMin = true, kHalves = false;
  static void scales(const Block& b, float* d, float* m) { k4_scales(b, d, m); }
  static __m256i quants(const Block& b, int j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * (j / 2)));
    const __m256i q = _mm256_and_si256((j % 2) ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(0x0F));
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh));
    // Bit j of each byte to bit 4 (the 16-bit shifts keep it inside its byte after the mask).
    const __m256i hb = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(j)), _mm256_set1_epi8(1));
    return _mm256_or_si256(q, _mm256_slli_epi16(hb, 4));
  }
};

// Q2_K / Q3_K sub-block j's low 2 bits: bytes qs[32h .. 32h+31] (h = j / 4), bits 2·(j % 4) and up.
inline __m256i q2k_low2(const uint8_t* qs, int j) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * (j / 4)));
  return _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * (j % 4))), _mm256_set1_epi8(3));
}
inline __m256i halves(int lo, int hi) { return _mm256_set_m128i(_mm_set1_epi32(hi), _mm_set1_epi32(lo)); }

struct Q2_KT {
  using Block = BlockQ2_K;
  static constexpr int kSubs = 8;
  static constexpr bool kSigned = false, kHasMin = false, kHalves = true, kHalfMins = true;
  static constexpr int kOffset = 0;
  static void scales(const Block& b, float* d, float* m) {
    const float bd = f16_scalar(b.d), bm = -f16_scalar(b.dmin);
    for (int j = 0; j < 8; ++j) {
      d[j] = bd;
      m[j] = bm;
    }
  }
  static __m256i quants(const Block& b, int j) { return q2k_low2(b.qs, j); }
  static __m256i iscales(const Block& b, int j) {
    return halves(b.scales[2 * j] & 0xF, b.scales[2 * j + 1] & 0xF);
  }
  static __m256i imins(const Block& b, int j) {
    return halves(b.scales[2 * j] >> 4, b.scales[2 * j + 1] >> 4);
  }
};

struct Q3_KT {
  using Block = BlockQ3_K;
  static constexpr int kSubs = 8;
  static constexpr bool kSigned = false, kHasMin = false, kHalves = true, kHalfMins = false;
  static constexpr int kOffset = 4;  // stored q + 4 (0..7): the low 2 bits, plus 4 where the third bit is set
  static void scales(const Block& b, float* d, float* m) {
    const float bd = f16_scalar(b.d);
    for (int j = 0; j < 8; ++j) {
      d[j] = bd;
      m[j] = 0.0f;
    }
  }
  static __m256i quants(const Block& b, int j) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.hmask));
    // Bit j of each byte to bit 0 (j <= 7: the 16-bit shift keeps it inside its byte after the mask).
    const __m256i hb = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(j)), _mm256_set1_epi8(1));
    return _mm256_or_si256(q2k_low2(b.qs, j), _mm256_slli_epi16(hb, 2));
  }
  static __m256i iscales(const Block& b, int j) {
    return halves(q3k_scale(b.scales, 2 * j), q3k_scale(b.scales, 2 * j + 1));
  }
};

struct Q6_KT {
  using Block = BlockQ6_K;
  static constexpr int kSubs = 8;
  static constexpr bool kSigned = false, kHasMin = false, kHalves = true, kHalfMins = false;
  static constexpr int kOffset = 32;
  static void scales(const Block& b, float* d, float* m) {
    const float bd = f16_scalar(b.d);
    for (int j = 0; j < 8; ++j) {
      d[j] = bd;
      m[j] = 0.0f;
    }
  }
  // Stored 6-bit values (q + 32, 0..63) of elements 32j .. 32j+31.
  static __m256i quants(const Block& b, int j) {
    const int h = j / 4, c = j % 4;
    const __m256i ql = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * h + 32 * (c % 2)));
    const __m256i lo = _mm256_and_si256(c < 2 ? ql : _mm256_srli_epi16(ql, 4), _mm256_set1_epi8(0x0F));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * h));
    const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c)), _mm256_set1_epi8(3));
    return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));  // hi <= 3, so the shift stays inside each byte
  }
  // Lanes 0..3 (elements 0..15) take the first half's scale, lanes 4..7 the second's.
  static __m256i iscales(const Block& b, int j) {
    return _mm256_set_m128i(_mm_set1_epi32(b.scales[2 * j + 1]), _mm_set1_epi32(b.scales[2 * j]));
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

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

template <class T, class Dot, int NR, int MR>
inline void tile(const uint8_t* w, int64_t wstride, const ActBlock* const* a, int64_t nblocks, float* Y,
                 int64_t ldy, int64_t r) {
  // K-quants (8 sub-blocks with mins) accumulate their min terms as 8-lane vectors (one lane per
  // sub-block position), the other formats as scalars.
  constexpr bool kVecMin = T::kHasMin && T::kSubs == 8;
  constexpr bool kHalfMins = half_mins<T>();
  __m256 acc[NR][MR], vmins[NR][MR];
  float mins[NR][MR];
  for (int ri = 0; ri < NR; ++ri) {
    for (int i = 0; i < MR; ++i) {
      acc[ri][i] = vmins[ri][i] = _mm256_setzero_ps();
      mins[ri][i] = 0.0f;
    }
  }
  for (int64_t k = 0; k < nblocks; ++k) {
    alignas(32) float d[NR][T::kSubs], m[NR][T::kSubs];
    for (int ri = 0; ri < NR; ++ri) {
      T::scales(reinterpret_cast<const typename T::Block*>(w + ri * wstride)[k], d[ri], m[ri]);
      // Rows are short streams the hardware prefetcher cannot ramp up on: fetch the next tile's block.
      const char* next =
          reinterpret_cast<const char*>(w + (NR + ri) * wstride) + k * sizeof(typename T::Block);
      for (size_t off = 0; off < sizeof(typename T::Block); off += 64) _mm_prefetch(next + off, _MM_HINT_T0);
    }
    if constexpr (kVecMin) {
      for (int i = 0; i < MR; ++i) {
        alignas(32) float sa[8];  // d_act · Σq_act of the 8 activation blocks under this super-block
        for (int j = 0; j < 8; ++j) sa[j] = a[i][k * 8 + j].d * static_cast<float>(a[i][k * 8 + j].sum);
        const __m256 sav = _mm256_load_ps(sa);
        for (int ri = 0; ri < NR; ++ri)
          vmins[ri][i] = _mm256_fmadd_ps(_mm256_load_ps(m[ri]), sav, vmins[ri][i]);
      }
    }
    for (int j = 0; j < T::kSubs; ++j) {
      const int64_t ab = k * T::kSubs + j;
      __m256i aq[MR], aoff[MR], a1[MR];
      __m256 ad[MR];
      for (int i = 0; i < MR; ++i) {
        aq[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i][ab].q));
        ad[i] = _mm256_set1_ps(a[i][ab].d);
        if constexpr (T::kHalves) {
          if constexpr (T::kOffset != 0)
            aoff[i] = Dot::dot(_mm256_set1_epi8(T::kOffset), aq[i]);              // kOffset·Σa
          if constexpr (kHalfMins) a1[i] = Dot::dot(_mm256_set1_epi8(1), aq[i]);  // Σa per lane
        }
      }
      for (int ri = 0; ri < NR; ++ri) {
        const auto& blk = reinterpret_cast<const typename T::Block*>(w + ri * wstride)[k];
        const __m256i q = T::quants(blk, j);
        const __m256 dw = _mm256_set1_ps(d[ri][j]);
        const __m256i u = T::kSigned ? _mm256_sign_epi8(q, q) : q;
        __m256i isc = _mm256_setzero_si256();
        if constexpr (T::kHalves) isc = T::iscales(blk, j);
        for (int i = 0; i < MR; ++i) {
          const __m256i x = T::kSigned ? _mm256_sign_epi8(aq[i], q) : aq[i];
          __m256i dot = Dot::dot(u, x);
          if constexpr (T::kHalves) {
            if constexpr (T::kOffset != 0) dot = _mm256_sub_epi32(dot, aoff[i]);
            dot = _mm256_mullo_epi32(dot, isc);
          }
          const __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), ad[i]);
          acc[ri][i] = _mm256_fmadd_ps(p, dw, acc[ri][i]);
          if constexpr (kHalfMins) {
            const __m256 mn = _mm256_cvtepi32_ps(_mm256_mullo_epi32(a1[i], T::imins(blk, j)));
            vmins[ri][i] = _mm256_fmadd_ps(mn, _mm256_mul_ps(ad[i], _mm256_set1_ps(m[ri][j])), vmins[ri][i]);
          }
          if constexpr (T::kHasMin && !kVecMin) {
            mins[ri][i] = std::fma(m[ri][j], a[i][ab].d * static_cast<float>(a[i][ab].sum), mins[ri][i]);
          }
        }
      }
    }
  }
  for (int ri = 0; ri < NR; ++ri) {
    for (int i = 0; i < MR; ++i) {
      const float mn = kVecMin || kHalfMins ? hsum(vmins[ri][i]) : mins[ri][i];
      Y[i * ldy + r + ri] = hsum(acc[ri][i]) + mn;
    }
  }
}

// Rows [r0, r1) × all m activation rows. Prefill: 4×4 tiles (each weight block feeds 4 activation rows
// from registers); decode (m = 1): 4×1 tiles.
template <class T, class Dot>
void matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  row_tiles::quant_rows<T>(W, Xq, m, Y, ldy, r0, r1, [](auto nr, auto mr, auto... args) {
    tile<T, Dot, decltype(nr)::value, decltype(mr)::value>(args...);
  });
}

template <class Dot>
bool matmul_quant(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  switch (W.type) {
    case DType::Q4_0: matmul_rows<Q4_0T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q4_1: matmul_rows<Q4_1T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q5_0: matmul_rows<Q5_0T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q5_1: matmul_rows<Q5_1T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q8_0: matmul_rows<Q8_0T, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::IQ4_NL: matmul_rows<IQ4_NLT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::IQ4_XS: matmul_rows<IQ4_XST, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q2_K: matmul_rows<Q2_KT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q3_K: matmul_rows<Q3_KT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q4_K: matmul_rows<Q4_KT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q5_K: matmul_rows<Q5_KT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::Q6_K: matmul_rows<Q6_KT, Dot>(W, Xq, m, Y, ldy, r0, r1); return true;
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
