// AVX512-VNNI fast paths: quantized products with vpdpbusd (u8 × s8, four products summed into s32).
#include "kernels/fast.h"
#include "kernels/matmul/x86_vnni.h"

namespace cpullm {
namespace avx512_vnni {
namespace {
struct Evex {
  static constexpr int kTileRows = 8;  // 32 vector registers
  using Wide = x86::V512;              // two row groups per vector
  static __m256i dpbusd(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
  // The 4 activation bytes at q broadcast by the instruction itself ({1toN}): GCC does not fold the
  // broadcast into vpdpbusd, and a separate vpbroadcastd per chunk was a third of the tile's instructions.
  static __m256i dpbusd_bcast(__m256i acc, __m256i u, const int8_t* q) {
    __asm__("vpdpbusd %2%{1to8%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*reinterpret_cast<const int32_t*>(q)));
    return acc;
  }
  static __m512i dpbusd_bcast(__m512i acc, __m512i u, const int8_t* q) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*reinterpret_cast<const int32_t*>(q)));
    return acc;
  }
};
}  // namespace

bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  return x86::quant_matmul_rows<x86::VnniDot<Evex>>(W, Xq, m, Y, ldy, r0, r1);
}

}  // namespace avx512_vnni
}  // namespace cpullm
