// AVX512-VNNI fast paths: quantized products with vpdpbusd (u8 × s8, four products summed into s32).
#include "kernels/fast.h"
#include "kernels/matmul/x86_vnni.h"

namespace cpullm {
namespace avx512_vnni {
namespace {
struct Evex {
  static __m256i dpbusd(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
};
}  // namespace

bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  return x86::quant_matmul_rows<x86::VnniDot<Evex>>(W, Xq, m, Y, ldy, r0, r1);
}

}  // namespace avx512_vnni
}  // namespace cpullm
