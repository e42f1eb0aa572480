// AVX512-BF16 fast path: BF16 weights with vdpbf16ps (pairs of bf16 products summed into f32 lanes).
// The f32 activations are split into bf16 hi + lo parts (x ≈ hi + lo to ~16 bits of mantissa), so the
// product keeps near-f32 accuracy for the cost of two vdpbf16ps per 32 weights.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/fast.h"
#include "kernels/matmul/x86_intrin.h"

namespace cpullm {
namespace avx512_bf16 {
namespace {

inline float hsum16(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

inline __m512bh load_bh(const uint16_t* p) { return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p)); }

// One (NR rows × MR act rows) tile over `padded` columns (a multiple of 32, zero-filled past cols).
template <int NR, int MR>
void tile(const uint16_t* const* w, const uint16_t* const* xhi, const uint16_t* const* xlo, int64_t cols,
          int64_t padded, float* Y, int64_t ldy, int64_t r) {
  __m512 acc[NR][MR];
  for (int a = 0; a < NR; ++a) {
    for (int i = 0; i < MR; ++i) acc[a][i] = _mm512_setzero_ps();
  }
  const int64_t full = cols / 32 * 32;
  alignas(64) uint16_t tail[NR][32];
  for (int64_t c = 0; c < padded; c += 32) {
    __m512bh wv[NR];
    for (int a = 0; a < NR; ++a) {
      if (c < full) {
        wv[a] = load_bh(w[a] + c);
      } else {  // ragged end: a zero-filled copy
        std::memset(tail[a], 0, sizeof tail[a]);
        std::memcpy(tail[a], w[a] + c, static_cast<size_t>(cols - c) * 2);
        wv[a] = load_bh(tail[a]);
      }
    }
    for (int i = 0; i < MR; ++i) {
      const __m512bh hi = load_bh(xhi[i] + c), lo = load_bh(xlo[i] + c);
      for (int a = 0; a < NR; ++a)
        acc[a][i] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[a][i], wv[a], hi), wv[a], lo);
    }
  }
  for (int a = 0; a < NR; ++a) {
    for (int i = 0; i < MR; ++i) Y[i * ldy + r + a] = hsum16(acc[a][i]);
  }
}

template <int MR>
void rows_for(const uint8_t* base, int64_t wstride, const uint16_t* const* xhi, const uint16_t* const* xlo,
              int64_t cols, int64_t padded, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const uint16_t* w[4];
    for (int a = 0; a < 4; ++a) w[a] = reinterpret_cast<const uint16_t*>(base + (r + a) * wstride);
    tile<4, MR>(w, xhi, xlo, cols, padded, Y, ldy, r);
  }
  for (; r < r1; ++r) {
    const uint16_t* w[1] = {reinterpret_cast<const uint16_t*>(base + r * wstride)};
    tile<1, MR>(w, xhi, xlo, cols, padded, Y, ldy, r);
  }
}

}  // namespace

bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  if (W.type != DType::BF16) return false;
  const int64_t cols = W.cols, padded = (cols + 31) / 32 * 32;
  thread_local std::vector<uint16_t> split;
  split.assign(static_cast<size_t>(2 * m * padded), 0);
  const auto* X = static_cast<const float*>(Xq);
  for (int64_t i = 0; i < m; ++i) {
    uint16_t* hi = split.data() + 2 * i * padded;
    uint16_t* lo = hi + padded;
    for (int64_t c = 0; c < cols; ++c) {
      const float x = X[i * cols + c];
      hi[c] = f32_to_bf16(x);
      lo[c] = f32_to_bf16(x - bf16_to_f32(hi[c]));
    }
  }
  const auto* base = static_cast<const uint8_t*>(W.data);
  const int64_t wstride = cols * 2;
  for (int64_t i = 0; i < m; i += 4) {
    const int mr = static_cast<int>(std::min<int64_t>(4, m - i));
    const uint16_t* xhi[4];
    const uint16_t* xlo[4];
    for (int t = 0; t < mr; ++t) {
      xhi[t] = split.data() + 2 * (i + t) * padded;
      xlo[t] = xhi[t] + padded;
    }
    float* y = Y + i * ldy;
    switch (mr) {
      case 4: rows_for<4>(base, wstride, xhi, xlo, cols, padded, y, ldy, r0, r1); break;
      case 3: rows_for<3>(base, wstride, xhi, xlo, cols, padded, y, ldy, r0, r1); break;
      case 2: rows_for<2>(base, wstride, xhi, xlo, cols, padded, y, ldy, r0, r1); break;
      default: rows_for<1>(base, wstride, xhi, xlo, cols, padded, y, ldy, r0, r1); break;
    }
  }
  return true;
}

}  // namespace avx512_bf16
}  // namespace cpullm
