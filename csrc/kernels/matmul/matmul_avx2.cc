// AVX2 fast paths: quantized products with maddubs (u8 × s8 -> s16 pairs) + madd (-> s32).
#include <algorithm>
#include <cmath>

#include "kernels/fast.h"
#include "kernels/matmul/x86_quant.h"

namespace cpullm {
namespace avx2 {
namespace {
struct Dot {
  static __m256i dot(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
  }
};
}  // namespace

bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  return x86::matmul_quant<Dot>(W, Xq, m, Y, ldy, r0, r1);
}

bool quantize_act(const float* x, int64_t n, ActBlock* out) {
  x86::quantize_act_avx2(x, n, out);
  return true;
}

}  // namespace avx2
}  // namespace cpullm
