// Armv8.6 i8mm fast path for prefill (m >= 2): smmla multiplies a 2×8 int8 tile of two weight rows by
// an 8×2 tile of two activation rows into a 2×2 block of s32 sums, four at once per instruction. Tiles
// of 4 weight rows × 2 activation rows; the ragged rows and the odd activation row go to the dotprod path.
#include <arm_neon.h>

#include "kernels/fast.h"
#include "kernels/matmul/arm_quant.h"

namespace cpullm {
namespace i8mm {
namespace {

inline int8x16_t zip_lo(int8x16_t a, int8x16_t b) {  // [a[0..7], b[0..7]]
  return vreinterpretq_s8_s64(vzip1q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}
inline int8x16_t zip_hi(int8x16_t a, int8x16_t b) {  // [a[8..15], b[8..15]]
  return vreinterpretq_s8_s64(vzip2q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}

// Rows r..r+3 × activation rows i, i+1: Y lanes ordered (row, act) = (0,0), (0,1), (1,0), (1,1) per pair.
template <class T>
void tile(const uint8_t* w, int64_t wstride, const ActBlock* a0, const ActBlock* a1, int64_t nblocks,
          float* Y, int64_t ldy, int64_t r, int64_t i) {
  float32x4_t acc[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
  float32x4_t accm[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
  for (int64_t k = 0; k < nblocks; ++k) {
    for (int j = 0; j < T::kSubs; ++j) {
      const int64_t ab = k * T::kSubs + j;
      const int8x16_t x00 = vld1q_s8(a0[ab].q), x01 = vld1q_s8(a0[ab].q + 16);
      const int8x16_t x10 = vld1q_s8(a1[ab].q), x11 = vld1q_s8(a1[ab].q + 16);
      const int8x16_t xa = zip_lo(x00, x10), xb = zip_hi(x00, x10), xc = zip_lo(x01, x11),
                      xd = zip_hi(x01, x11);
      const float32x4_t da = {a0[ab].d, a1[ab].d, a0[ab].d, a1[ab].d};
      const float32x4_t sa = {
          a0[ab].d * static_cast<float>(a0[ab].sum), a1[ab].d * static_cast<float>(a1[ab].sum),
          a0[ab].d * static_cast<float>(a0[ab].sum), a1[ab].d * static_cast<float>(a1[ab].sum)};
      for (int p = 0; p < 2; ++p) {
        const arm::Sub s0 = T::sub(reinterpret_cast<const typename T::Block*>(w + (2 * p) * wstride)[k], j);
        const arm::Sub s1 =
            T::sub(reinterpret_cast<const typename T::Block*>(w + (2 * p + 1) * wstride)[k], j);
        int32x4_t dot = vdupq_n_s32(0);
        dot = vmmlaq_s32(dot, zip_lo(s0.q0, s1.q0), xa);
        dot = vmmlaq_s32(dot, zip_hi(s0.q0, s1.q0), xb);
        dot = vmmlaq_s32(dot, zip_lo(s0.q1, s1.q1), xc);
        dot = vmmlaq_s32(dot, zip_hi(s0.q1, s1.q1), xd);
        const float32x4_t dw = {s0.d, s0.d, s1.d, s1.d};
        acc[p] = vfmaq_f32(acc[p], vmulq_f32(vcvtq_f32_s32(dot), da), dw);
        if (T::kHasMin) accm[p] = vfmaq_f32(accm[p], float32x4_t{s0.m, s0.m, s1.m, s1.m}, sa);
      }
    }
  }
  for (int p = 0; p < 2; ++p) {
    const float32x4_t y = vaddq_f32(acc[p], accm[p]);
    Y[i * ldy + r + 2 * p] = vgetq_lane_f32(y, 0);
    Y[(i + 1) * ldy + r + 2 * p] = vgetq_lane_f32(y, 1);
    Y[i * ldy + r + 2 * p + 1] = vgetq_lane_f32(y, 2);
    Y[(i + 1) * ldy + r + 2 * p + 1] = vgetq_lane_f32(y, 3);
  }
}

template <class T>
void rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  const int64_t wstride = row_bytes(W.type, W.cols);
  const int64_t nblocks = W.cols / (T::kSubs * kQK), ablocks = W.cols / kQK;
  const auto* base = static_cast<const uint8_t*>(W.data);
  const auto* act = static_cast<const ActBlock*>(Xq);
  for (int64_t r = r0; r < r1; r += 4) {
    for (int64_t i = 0; i + 2 <= m; i += 2) {
      tile<T>(base + r * wstride, wstride, act + i * ablocks, act + (i + 1) * ablocks, nblocks, Y, ldy, r, i);
    }
  }
}

}  // namespace

bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  if (m < 2) return false;  // decode: the dotprod path
  const int64_t rmain = r0 + (r1 - r0) / 4 * 4;
  const int64_t mmain = m / 2 * 2;
  switch (W.type) {
    case DType::Q4_0: rows<arm::Q4_0T>(W, Xq, m, Y, ldy, r0, rmain); break;
    case DType::Q4_1: rows<arm::Q4_1T>(W, Xq, m, Y, ldy, r0, rmain); break;
    case DType::Q5_0: rows<arm::Q5_0T>(W, Xq, m, Y, ldy, r0, rmain); break;
    case DType::Q5_1: rows<arm::Q5_1T>(W, Xq, m, Y, ldy, r0, rmain); break;
    case DType::Q8_0: rows<arm::Q8_0T>(W, Xq, m, Y, ldy, r0, rmain); break;
    case DType::IQ4_NL: rows<arm::IQ4_NLT>(W, Xq, m, Y, ldy, r0, rmain); break;
    case DType::IQ4_XS: rows<arm::IQ4_XST>(W, Xq, m, Y, ldy, r0, rmain); break;
    case DType::Q4_K: rows<arm::Q4_KT>(W, Xq, m, Y, ldy, r0, rmain); break;
    case DType::Q5_K: rows<arm::Q5_KT>(W, Xq, m, Y, ldy, r0, rmain); break;
    default: return false;
  }
  const int64_t xbytes = act_row_bytes(W.type, W.cols);
  if (mmain < m) {
    dotprod::matmul_rows(W, static_cast<const uint8_t*>(Xq) + mmain * xbytes, 1, Y + mmain * ldy, ldy, r0,
                         rmain);
  }
  if (rmain < r1) dotprod::matmul_rows(W, Xq, m, Y, ldy, rmain, r1);
  return true;
}

}  // namespace i8mm
}  // namespace cpullm
