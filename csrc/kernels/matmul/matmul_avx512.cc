// AVX-512 (F/BW) fast paths: 16-lane F32/F16/BF16 products and 512-bit activation quantization.
// Quantized products come from the avx2 / avx512_vnni sets compiled into the same library.
#include <algorithm>
#include <cmath>

#include "kernels/fast.h"
#include "kernels/matmul/x86_float.h"

namespace cpullm {
namespace x86 {
struct V16 {
  using Vec = __m512;
  static constexpr int kLanes = 16;
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(Vec v) {
    // Fixed order: halves, then the 8-lane sum of V8.
    return V8::hsum(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
  }
  template <DType T>
  static Vec load(const void* p) {
    if constexpr (T == DType::F32) return _mm512_loadu_ps(p);
    const __m256i h = _mm256_loadu_si256(static_cast<const __m256i*>(p));
    if constexpr (T == DType::F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
};
}  // namespace x86

namespace avx512 {

bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  return x86::matmul_float<x86::V16>(W, Xq, m, Y, ldy, r0, r1);
}

// Bitwise the reference: same max, same scale, x·(1/d) rounded half-to-even by cvtps.
bool quantize_act(const float* x, int64_t n, ActBlock* out) {
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK) {
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = act_scale(amax);
    const __m512 id = _mm512_set1_ps(act_inv_scale(d));
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out[b].q), _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out[b].q + 16), _mm512_cvtsepi32_epi8(q1));
    out[b].d = d;
    out[b].sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
  }
  return true;
}

}  // namespace avx512
}  // namespace cpullm
