// AVX2 fast paths: quantized products with maddubs (u8 × s8 -> s16 pairs) + madd (-> s32), the x86
// packed layout (also used by the AVX-512 sets), and activation quantization.
#include <algorithm>
#include <cmath>

#include "kernels/fast.h"
#include "kernels/matmul/x86_float.h"
#include "kernels/matmul/x86_packed.h"
#include "kernels/matmul/x86_quant.h"

namespace cpullm {
namespace avx2 {
namespace {
struct Dot {
  static constexpr int kTileRows = 4;  // activation rows per packed tile: 16 vector registers
  using Wide = x86::V256;              // one row group per vector
  static __m256i dot(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
  }
  static constexpr int kSignedBias = 0;
  // maddubs needs unsigned weights: |w| × (q with w's sign); |w| <= 128 keeps the s16 pairs exact.
  static __m256i acc_s(__m256i acc, __m256i w, const int8_t* q) {
    return _mm256_add_epi32(acc, dot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x86::bcast4(q), w)));
  }
  // init + Σ_g u[g]·q[4g .. 4g+3] per s32 lane for unsigned weights small enough that the N chunks' s16
  // pair sums add up in s16 without overflow (the caller's bound, see x86_packed.h): N maddubs, N - 1 adds
  // and one madd instead of N of each. The multiplier port is the limit here, and this halves its work.
  template <int N>
  static __m256i dot_u_sum(__m256i init, const __m256i* u, const int8_t* q) {
    __m256i p = _mm256_maddubs_epi16(u[0], x86::bcast4(q));
    for (int g = 1; g < N; ++g) p = _mm256_add_epi16(p, _mm256_maddubs_epi16(u[g], x86::bcast4(q + 4 * g)));
    return _mm256_add_epi32(init, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
  }
};
}  // namespace

bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  if (x86::matmul_packed<Dot>(W, Xq, m, Y, ldy, r0, r1, x86::matmul_quant<Dot>)) return true;
  if (x86::matmul_quant<Dot>(W, Xq, m, Y, ldy, r0, r1)) return true;
  return x86::matmul_float<x86::V8>(W, Xq, m, Y, ldy, r0, r1);
}

bool quantize_act(const float* x, int64_t n, ActBlock* out) {
  x86::quantize_act_avx2(x, n, out);
  return true;
}

int64_t packed_bytes(const Matrix& W) { return x86::packed_bytes(W); }
void repack(const Matrix& W, void* dst) { x86::repack(W, dst); }

}  // namespace avx2
}  // namespace cpullm
