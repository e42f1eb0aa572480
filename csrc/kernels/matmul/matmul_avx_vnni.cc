// AVX-VNNI fast paths: the avx2 set's quantized products with vpdpbusd in its VEX (256-bit) encoding,
// for CPUs that have VNNI without AVX-512 (Alder Lake, Sierra Forest). Everything else in the variant
// (activation quantization, the packed layout, float products) comes from the avx2 set.
#include <algorithm>
#include <cmath>

#include "kernels/fast.h"
#include "kernels/matmul/x86_packed.h"
#include "kernels/matmul/x86_quant.h"

namespace cpullm {
namespace avx_vnni {
namespace {
struct Dot {
  static __m256i dot(__m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s); }
  // Signed weights: (w + 128) is u8; the extra 128·Σs is removed per block from the exact integer sum.
  static constexpr int kSignedBias = 128;
  static __m256i acc_u(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(acc, u, s); }
  static __m256i acc_s(__m256i acc, __m256i w, __m256i s) {
    return _mm256_dpbusd_avx_epi32(acc, _mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80))), s);
  }
};
}  // namespace

bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  if (x86::matmul_packed<Dot>(W, Xq, m, Y, ldy, r0, r1, x86::matmul_quant<Dot>)) return true;
  return x86::matmul_quant<Dot>(W, Xq, m, Y, ldy, r0, r1);
}

}  // namespace avx_vnni
}  // namespace cpullm
