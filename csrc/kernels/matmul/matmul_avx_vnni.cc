// AVX-VNNI fast paths: the quantized products with vpdpbusd in its VEX (256-bit) encoding, for CPUs that
// have VNNI without AVX-512 (Alder Lake, Sierra Forest). Everything else in the variant (activation
// quantization, the packed layout, float products) comes from the avx2 set.
#include "kernels/fast.h"
#include "kernels/matmul/x86_vnni.h"

namespace cpullm {
namespace avx_vnni {
namespace {
struct Vex {
  static constexpr int kTileRows = 4;  // 16 vector registers
  using Wide = x86::V256;              // no 512-bit registers
  static __m256i dpbusd(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(acc, u, s); }
  static __m256i dpbusd_bcast(__m256i acc, __m256i u, const int8_t* q) {
    return dpbusd(acc, u, x86::bcast4(q));
  }
};
}  // namespace

bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  return x86::quant_matmul_rows<x86::VnniDot<Vex>>(W, Xq, m, Y, ldy, r0, r1);
}

}  // namespace avx_vnni
}  // namespace cpullm
