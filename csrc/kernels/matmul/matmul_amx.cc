// AMX INT8 tile GEMM for prefill (m >= 16) with Q4_0 / Q4_1 / Q8_0 weights.
//
// UNTESTED ON AMX HARDWARE: this host has no AMX; the code compiles in the amx variant and its tests
// skip where AMX is not usable. Run the self-test (cpullm_selftest) on a Sapphire Rapids or newer CPU
// before trusting it.
//
// Per 16 weight rows × 16 activation rows and per 32-value block: tile A = the 16 rows' weights as u8
// (16 × 32 bytes), tile B = the 16 activation rows' int8 values in the VNNI layout (8 × 64 bytes:
// B[k/4][4n + k%4] = act[n][k]), C = A·B (16 × 16 s32) by tdpbusd; C is stored and scaled by the block's
// d_w · d_act with AVX-512 into f32 accumulators (each block has its own scales, so K is one block).
// Signed Q8_0 weights are biased to u8 (w + 128) and 128·Σq_act is removed from C exactly.
// Ragged rows / activation rows and decode (m < 16) go to the AVX512-VNNI path.
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "kernels/blocks.h"
#include "kernels/fast.h"
#include "kernels/matmul/x86_intrin.h"

namespace cpullm {
namespace amx {
namespace {

constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtiledata = 18;

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

void configure_tiles() {
  TileConfig cfg{};
  cfg.palette_id = 1;
  cfg.rows[0] = 16;  // C: 16 weight rows × 16 s32
  cfg.colsb[0] = 64;
  cfg.rows[1] = 16;  // A: 16 weight rows × 32 u8
  cfg.colsb[1] = 32;
  cfg.rows[2] = 8;  // B: 32 / 4 rows × (16 activation rows × 4 bytes)
  cfg.colsb[2] = 64;
  _tile_loadconfig(&cfg);
}

// Weight block k of `row` as 32 u8 (Q8_0 biased by +128), its scale and its additive min.
void unpack_row(DType t, const uint8_t* row, int64_t k, uint8_t* out, float* d, float* m) {
  if (t == DType::Q8_0) {
    const auto& b = reinterpret_cast<const BlockQ8_0*>(row)[k];
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                        _mm256_xor_si256(q, _mm256_set1_epi8(static_cast<char>(0x80))));
    *d = _cvtsh_ss(b.d);
    *m = 0.0f;
    return;
  }
  const uint8_t* qs;
  if (t == DType::Q4_0) {
    const auto& b = reinterpret_cast<const BlockQ4_0*>(row)[k];
    qs = b.qs;
    *d = _cvtsh_ss(b.d);
    *m = -8.0f * *d;
  } else {
    const auto& b = reinterpret_cast<const BlockQ4_1*>(row)[k];
    qs = b.qs;
    *d = _cvtsh_ss(b.d);
    *m = _cvtsh_ss(b.m);
  }
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x0F));
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), lo);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), hi);
}

// Y[i0..i0+16) × rows [r, r+16).
void tile16(const Matrix& W, const ActBlock* act, int64_t ablocks, float* Y, int64_t ldy, int64_t r,
            int64_t i0) {
  const int64_t wstride = row_bytes(W.type, W.cols), nb = W.cols / kQK;
  const auto* base = static_cast<const uint8_t*>(W.data) + r * wstride;
  alignas(64) uint8_t a[16][32];
  alignas(64) int8_t b[8][64];
  alignas(64) int32_t c[16][16];
  float dw[16], mw[16];
  __m512 acc[16];
  for (auto& v : acc) v = _mm512_setzero_ps();
  for (int64_t k = 0; k < nb; ++k) {
    alignas(64) float da[16], sa[16];
    alignas(64) int32_t bias[16];
    for (int n = 0; n < 16; ++n) {
      const ActBlock& x = act[(i0 + n) * ablocks + k];
      for (int kk = 0; kk < 32; ++kk) b[kk / 4][4 * n + kk % 4] = x.q[kk];
      da[n] = x.d;
      sa[n] = x.d * static_cast<float>(x.sum);
      bias[n] = W.type == DType::Q8_0 ? 128 * x.sum : 0;
    }
    for (int row = 0; row < 16; ++row)
      unpack_row(W.type, base + row * wstride, k, a[row], &dw[row], &mw[row]);
    _tile_zero(0);
    _tile_loadd(1, a, 32);
    _tile_loadd(2, b, 64);
    _tile_dpbusd(0, 1, 2);
    _tile_stored(0, c, 64);
    const __m512 dav = _mm512_load_ps(da), sav = _mm512_load_ps(sa);
    const __m512i biasv = _mm512_load_si512(bias);
    for (int row = 0; row < 16; ++row) {
      const __m512i dot = _mm512_sub_epi32(_mm512_load_si512(c[row]), biasv);
      const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), dav);
      acc[row] = _mm512_fmadd_ps(p, _mm512_set1_ps(dw[row]), acc[row]);
      acc[row] = _mm512_fmadd_ps(_mm512_set1_ps(mw[row]), sav, acc[row]);
    }
  }
  alignas(64) float out[16];
  for (int row = 0; row < 16; ++row) {
    _mm512_store_ps(out, acc[row]);
    for (int n = 0; n < 16; ++n) Y[(i0 + n) * ldy + r + row] = out[n];
  }
}

}  // namespace

bool usable() {
  // Linux gives a process AMX tile state only after it asks (arch_prctl); the probe asked in Python's
  // process, but a library loaded elsewhere (e.g. the self-test driver) must ask itself.
  static const bool ok = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  return ok;
}

bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  if (m < 16 || (W.type != DType::Q4_0 && W.type != DType::Q4_1 && W.type != DType::Q8_0)) return false;
  const int64_t rmain = r0 + (r1 - r0) / 16 * 16, mmain = m / 16 * 16;
  const auto* act = static_cast<const ActBlock*>(Xq);
  const int64_t ablocks = W.cols / kQK;
  configure_tiles();
  for (int64_t r = r0; r < rmain; r += 16) {
    for (int64_t i = 0; i < mmain; i += 16) tile16(W, act, ablocks, Y, ldy, r, i);
  }
  _tile_release();
  // The ragged edges through AVX512-VNNI (the unpacked GGUF layout).
  Matrix plain = W;
  plain.packed = nullptr;
  const int64_t xbytes = act_row_bytes(W.type, W.cols);
  if (mmain < m) {
    avx512_vnni::matmul_rows(plain, static_cast<const uint8_t*>(Xq) + mmain * xbytes, m - mmain,
                             Y + mmain * ldy, ldy, r0, rmain);
  }
  if (rmain < r1) avx512_vnni::matmul_rows(plain, Xq, m, Y, ldy, rmain, r1);
  return true;
}

}  // namespace amx
}  // namespace cpullm
