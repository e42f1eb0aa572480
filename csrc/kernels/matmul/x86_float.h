// F32 / F16 / BF16 weight products on x86 with f32 activations, for any vector traits V (8 lanes AVX2,
// 16 lanes AVX-512). Tile: NR weight rows × MR activation rows; each (row, act row) pair has its own
// accumulator vector (lane j sums columns c ≡ j mod V::kLanes, the ragged end zero-filled), reduced
// at the end in a fixed order, so no result depends on the tile shape or on the row range.
#ifndef CPULLM_KERNELS_X86_FLOAT_H
#define CPULLM_KERNELS_X86_FLOAT_H

#include "kernels/matmul/x86_intrin.h"

#include <algorithm>
#include <cstring>

#include "kernels/blocks.h"

namespace cpullm {
namespace x86 {

struct V8 {
  using Vec = __m256;
  static constexpr int kLanes = 8;
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(Vec v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
  }
  template <DType T>
  static Vec load(const void* p) {
    if constexpr (T == DType::F32) return _mm256_loadu_ps(static_cast<const float*>(p));
    const __m128i h = _mm_loadu_si128(static_cast<const __m128i*>(p));
    if constexpr (T == DType::F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
};

template <DType T>
constexpr int elem_bytes() {
  return T == DType::F32 ? 4 : 2;
}

// Loads of the last, partial chunk go through a zero-filled copy (same lanes for every row).
template <class V, DType T>
inline typename V::Vec load_tail(const uint8_t* p, int64_t n) {
  alignas(64) uint8_t tmp[64] = {};
  std::memcpy(tmp, p, static_cast<size_t>(n) * elem_bytes<T>());
  return V::template load<T>(tmp);
}

template <class V, DType T, int NR, int MR>
inline void float_tile(const uint8_t* w, int64_t wstride, const float* const* x, int64_t cols, float* Y,
                       int64_t ldy, int64_t r) {
  constexpr int L = V::kLanes;
  typename V::Vec acc[NR][MR];
  for (int a = 0; a < NR; ++a) {
    for (int i = 0; i < MR; ++i) acc[a][i] = V::zero();
  }
  const int64_t full = cols / L * L;
  for (int64_t c = 0; c < full; c += L) {
    typename V::Vec xv[MR];
    for (int i = 0; i < MR; ++i) xv[i] = V::template load<DType::F32>(x[i] + c);
    for (int a = 0; a < NR; ++a) {
      const typename V::Vec wv = V::template load<T>(w + a * wstride + c * elem_bytes<T>());
      for (int i = 0; i < MR; ++i) acc[a][i] = V::fma(wv, xv[i], acc[a][i]);
    }
  }
  if (full < cols) {
    typename V::Vec xv[MR];
    for (int i = 0; i < MR; ++i)
      xv[i] = load_tail<V, DType::F32>(reinterpret_cast<const uint8_t*>(x[i] + full), cols - full);
    for (int a = 0; a < NR; ++a) {
      const typename V::Vec wv = load_tail<V, T>(w + a * wstride + full * elem_bytes<T>(), cols - full);
      for (int i = 0; i < MR; ++i) acc[a][i] = V::fma(wv, xv[i], acc[a][i]);
    }
  }
  for (int a = 0; a < NR; ++a) {
    for (int i = 0; i < MR; ++i) Y[i * ldy + r + a] = V::hsum(acc[a][i]);
  }
}

template <class V, DType T>
void float_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int NR = 4;
  const int64_t wstride = W.cols * elem_bytes<T>();
  const auto* base = static_cast<const uint8_t*>(W.data);
  const auto* X = static_cast<const float*>(Xq);
  for (int64_t i = 0; i < m; i += 4) {
    const int mr = static_cast<int>(std::min<int64_t>(4, m - i));
    const float* x[4];
    for (int t = 0; t < mr; ++t) x[t] = X + (i + t) * W.cols;
    float* y = Y + i * ldy;
    int64_t r = r0;
    for (; r + NR <= r1; r += NR) {
      const uint8_t* w = base + r * wstride;
      switch (mr) {
        case 4: float_tile<V, T, NR, 4>(w, wstride, x, W.cols, y, ldy, r); break;
        case 3: float_tile<V, T, NR, 3>(w, wstride, x, W.cols, y, ldy, r); break;
        case 2: float_tile<V, T, NR, 2>(w, wstride, x, W.cols, y, ldy, r); break;
        default: float_tile<V, T, NR, 1>(w, wstride, x, W.cols, y, ldy, r); break;
      }
    }
    for (; r < r1; ++r) {
      const uint8_t* w = base + r * wstride;
      switch (mr) {
        case 4: float_tile<V, T, 1, 4>(w, wstride, x, W.cols, y, ldy, r); break;
        case 3: float_tile<V, T, 1, 3>(w, wstride, x, W.cols, y, ldy, r); break;
        case 2: float_tile<V, T, 1, 2>(w, wstride, x, W.cols, y, ldy, r); break;
        default: float_tile<V, T, 1, 1>(w, wstride, x, W.cols, y, ldy, r); break;
      }
    }
  }
}

template <class V>
bool matmul_float(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  switch (W.type) {
    case DType::F32: float_rows<V, DType::F32>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::F16: float_rows<V, DType::F16>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::BF16: float_rows<V, DType::BF16>(W, Xq, m, Y, ldy, r0, r1); return true;
    default: return false;
  }
}

}  // namespace x86
}  // namespace cpullm

#endif  // CPULLM_KERNELS_X86_FLOAT_H
