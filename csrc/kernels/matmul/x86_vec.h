// Vector width for the packed products (x86_packed.h): V256 computes one group of 8 weight rows per
// vector (one 32-bit lane per row), V512 two neighbouring groups at once (lanes 0-7 group g, 8-15 group
// g + 1, whose records lie `gs` bytes apart). The products are written once against this interface, so the
// AVX-512 sets run every packed type 16 rows wide, with half the instructions per multiply-add, while the
// AVX2 sets keep their 8.
#ifndef CPULLM_KERNELS_MATMUL_X86_VEC_H
#define CPULLM_KERNELS_MATMUL_X86_VEC_H

#include "kernels/matmul/x86_intrin.h"

#include <cstdint>

namespace cpullm {
namespace x86 {

struct V256 {
  using I = __m256i;
  using F = __m256;
  static constexpr int kGroups = 1;
  // 32 bytes of one group's record at p (gs unused: one group).
  static I load(const uint8_t* p, int64_t /*gs*/) {
    return _mm256_loadu_si256(reinterpret_cast<const I*>(p));
  }
  // 8 f16 / u8 / i8 values (one per row) at p, widened to a lane each.
  static F f16(const uint8_t* p, int64_t /*gs*/) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static I u8(const uint8_t* p, int64_t /*gs*/) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static I i8(const uint8_t* p, int64_t /*gs*/) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static void prefetch(const uint8_t* p, int64_t /*gs*/, int64_t bytes) {
    for (int64_t off = 0; off < bytes; off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(p) + off, _MM_HINT_T0);
  }
  static I bytes(char v) { return _mm256_set1_epi8(v); }
  static I ints(int32_t v) { return _mm256_set1_epi32(v); }
  static I table16(const int8_t* t) {  // a 16-byte lookup table in every 128-bit lane
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t));
    return _mm256_set_m128i(b, b);
  }
  static I lookup(I table, I idx) { return _mm256_shuffle_epi8(table, idx); }
  static I zero() { return _mm256_setzero_si256(); }
  static I and_(I a, I b) { return _mm256_and_si256(a, b); }
  static I or_(I a, I b) { return _mm256_or_si256(a, b); }
  static I srl16(I a, int n) { return _mm256_srli_epi16(a, n); }
  static I sll16(I a, int n) { return _mm256_slli_epi16(a, n); }
  static I add32(I a, I b) { return _mm256_add_epi32(a, b); }
  static I mul32(I a, I b) { return _mm256_mullo_epi32(a, b); }
  static F fzero() { return _mm256_setzero_ps(); }
  static F floats(float v) { return _mm256_set1_ps(v); }
  static F cvt(I a) { return _mm256_cvtepi32_ps(a); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnma(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static void store(float* out, F v) { _mm256_storeu_ps(out, v); }
};

#if defined(__AVX512F__) && defined(__AVX512BW__)
struct V512 {
  using I = __m512i;
  using F = __m512;
  static constexpr int kGroups = 2;
  static I load(const uint8_t* p, int64_t gs) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + gs));
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
  }
  static __m256i halves16(const uint8_t* p, int64_t gs) {  // 16 bytes of each group
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + gs));
    return _mm256_set_m128i(b, a);
  }
  static __m128i halves8(const uint8_t* p, int64_t gs) {  // 8 bytes of each group
    return _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)),
                              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + gs)));
  }
  static F f16(const uint8_t* p, int64_t gs) { return _mm512_cvtph_ps(halves16(p, gs)); }
  static I u8(const uint8_t* p, int64_t gs) { return _mm512_cvtepu8_epi32(halves8(p, gs)); }
  static I i8(const uint8_t* p, int64_t gs) { return _mm512_cvtepi8_epi32(halves8(p, gs)); }
  static void prefetch(const uint8_t* p, int64_t gs, int64_t bytes) {
    V256::prefetch(p, 0, bytes);
    V256::prefetch(p + gs, 0, bytes);
  }
  static I bytes(char v) { return _mm512_set1_epi8(v); }
  static I ints(int32_t v) { return _mm512_set1_epi32(v); }
  static I table16(const int8_t* t) {
    return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
  }
  static I lookup(I table, I idx) { return _mm512_shuffle_epi8(table, idx); }
  static I zero() { return _mm512_setzero_si512(); }
  static I and_(I a, I b) { return _mm512_and_si512(a, b); }
  static I or_(I a, I b) { return _mm512_or_si512(a, b); }
  static I srl16(I a, int n) { return _mm512_srli_epi16(a, static_cast<unsigned>(n)); }
  static I sll16(I a, int n) { return _mm512_slli_epi16(a, static_cast<unsigned>(n)); }
  static I add32(I a, I b) { return _mm512_add_epi32(a, b); }
  static I mul32(I a, I b) { return _mm512_mullo_epi32(a, b); }
  static F fzero() { return _mm512_setzero_ps(); }
  static F floats(float v) { return _mm512_set1_ps(v); }
  static F cvt(I a) { return _mm512_cvtepi32_ps(a); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnma(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static void store(float* out, F v) { _mm512_storeu_ps(out, v); }
};
#endif

}  // namespace x86
}  // namespace cpullm

#endif  // CPULLM_KERNELS_MATMUL_X86_VEC_H
