// The integer dot of the two VNNI kernel sets, avx512_vnni (EVEX vpdpbusd) and avx_vnni (VEX vpdpbusd),
// for the products of x86_packed.h and x86_quant.h. Dp supplies the instruction in its set's encoding,
// as Dp::dpbusd(acc, u8, s8): four u8 × s8 products summed into each s32 lane of acc.
#ifndef CPULLM_KERNELS_MATMUL_X86_VNNI_H
#define CPULLM_KERNELS_MATMUL_X86_VNNI_H

#include "kernels/matmul/x86_packed.h"
#include "kernels/matmul/x86_quant.h"

namespace cpullm {
namespace x86 {

template <class Dp>
struct VnniDot {
  static constexpr int kTileRows = Dp::kTileRows;
  // The widest vector of the set's products: V512 (two row groups at once) where it has 512-bit vpdpbusd.
  using Wide = typename Dp::Wide;
  static __m256i dot(__m256i u, __m256i s) { return Dp::dpbusd(_mm256_setzero_si256(), u, s); }
  // Signed weights: (w + 128) is u8; the extra 128·Σs is removed per block from the exact integer sum.
  static constexpr int kSignedBias = 128;
  // acc + Σ (w + 128)·q over one chunk, q the 4 activation bytes every row's lane multiplies.
  static __m256i acc_s(__m256i acc, __m256i w, const int8_t* q) {
    return Dp::dpbusd_bcast(acc, _mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80))), q);
  }
#if defined(__AVX512F__)
  static __m512i acc_s(__m512i acc, __m512i w, const int8_t* q) {
    return Dp::dpbusd_bcast(acc, _mm512_xor_si512(w, _mm512_set1_epi8(static_cast<char>(0x80))), q);
  }
#endif
  // init + Σ_g u[g]·q[4g .. 4g+3]: one dpbusd each, no s16 stage to bound. One chain: splitting it in two
  // or four for small tiles gained nothing measurable in decode.
  template <int N, class I>
  static I dot_u_sum(I init, const I* u, const int8_t* q) {
    for (int g = 0; g < N; ++g) init = Dp::dpbusd_bcast(init, u[g], q + 4 * g);
    return init;
  }
};

// Rows [r0, r1) of a quantized product: the packed layout where W has one, else the GGUF layout.
template <class Dot>
bool quant_matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0,
                       int64_t r1) {
  if (matmul_packed<Dot>(W, Xq, m, Y, ldy, r0, r1, matmul_quant<Dot>)) return true;
  return matmul_quant<Dot>(W, Xq, m, Y, ldy, r0, r1);
}

}  // namespace x86
}  // namespace cpullm

#endif  // CPULLM_KERNELS_MATMUL_X86_VNNI_H
