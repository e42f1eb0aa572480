// NEON (Armv8.0 Advanced SIMD) fast paths: int8 block dots with widening multiplies (smull/smlal +
// sadalp), F32/F16/BF16 products with 4-lane FMA, and activation quantization.
#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "kernels/fast.h"
#include "kernels/matmul/arm_quant.h"

namespace cpullm {
namespace neon {
namespace {

struct Dot {
  // |w·a| <= 128·127, so two products fit an s16 lane exactly.
  static int32x4_t dot(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
    int16x8_t p0 = vmull_s8(vget_low_s8(w0), vget_low_s8(a0));
    p0 = vmlal_s8(p0, vget_high_s8(w0), vget_high_s8(a0));
    int16x8_t p1 = vmull_s8(vget_low_s8(w1), vget_low_s8(a1));
    p1 = vmlal_s8(p1, vget_high_s8(w1), vget_high_s8(a1));
    return vpadalq_s16(vpaddlq_s16(p0), p1);
  }
  static int32x4_t half(int8x16_t w, int8x16_t a) {
    return vpaddlq_s16(vmlal_s8(vmull_s8(vget_low_s8(w), vget_low_s8(a)), vget_high_s8(w), vget_high_s8(a)));
  }
};

template <DType T>
inline float32x4_t load4(const uint8_t* p) {
  if constexpr (T == DType::F32) return vld1q_f32(reinterpret_cast<const float*>(p));
  if constexpr (T == DType::F16)
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p))));
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p)), 16));
}

template <DType T>
constexpr int64_t esize() {
  return T == DType::F32 ? 4 : 2;
}

// One weight row × MR activation rows; lane j sums columns c ≡ j mod 4, the ragged end zero-filled.
template <DType T, int MR>
void float_row(const uint8_t* w, const float* const* x, int64_t cols, float* Y, int64_t ldy, int64_t r) {
  float32x4_t acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = vdupq_n_f32(0.0f);
  const int64_t full = cols / 4 * 4;
  for (int64_t c = 0; c < full; c += 4) {
    const float32x4_t wv = load4<T>(w + c * esize<T>());
    for (int i = 0; i < MR; ++i) acc[i] = vfmaq_f32(acc[i], wv, vld1q_f32(x[i] + c));
  }
  if (full < cols) {
    alignas(16) uint8_t wt[16] = {};
    std::memcpy(wt, w + full * esize<T>(), static_cast<size_t>((cols - full) * esize<T>()));
    const float32x4_t wv = load4<T>(wt);
    for (int i = 0; i < MR; ++i) {
      alignas(16) float xt[4] = {};
      std::memcpy(xt, x[i] + full, static_cast<size_t>(cols - full) * 4);
      acc[i] = vfmaq_f32(acc[i], wv, vld1q_f32(xt));
    }
  }
  for (int i = 0; i < MR; ++i) Y[i * ldy + r] = vaddvq_f32(acc[i]);
}

template <DType T>
void float_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  const auto* X = static_cast<const float*>(Xq);
  const auto* base = static_cast<const uint8_t*>(W.data);
  for (int64_t i = 0; i < m; i += 4) {
    const int mr = static_cast<int>(std::min<int64_t>(4, m - i));
    const float* x[4];
    for (int t = 0; t < mr; ++t) x[t] = X + (i + t) * W.cols;
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* w = base + r * W.cols * esize<T>();
      switch (mr) {
        case 4: float_row<T, 4>(w, x, W.cols, Y + i * ldy, ldy, r); break;
        case 3: float_row<T, 3>(w, x, W.cols, Y + i * ldy, ldy, r); break;
        case 2: float_row<T, 2>(w, x, W.cols, Y + i * ldy, ldy, r); break;
        default: float_row<T, 1>(w, x, W.cols, Y + i * ldy, ldy, r); break;
      }
    }
  }
}

}  // namespace

bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  switch (W.type) {
    case DType::F32: float_rows<DType::F32>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::F16: float_rows<DType::F16>(W, Xq, m, Y, ldy, r0, r1); return true;
    case DType::BF16: float_rows<DType::BF16>(W, Xq, m, Y, ldy, r0, r1); return true;
    default: return arm::matmul_quant<Dot>(W, Xq, m, Y, ldy, r0, r1);
  }
}

// Bitwise the reference: same max, same scale, x·(1/d) rounded half-to-even (fcvtns).
bool quantize_act(const float* x, int64_t n, ActBlock* out) {
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK) {
    float32x4_t v[8];
    float32x4_t mx = vdupq_n_f32(0.0f);
    for (int t = 0; t < 8; ++t) {
      v[t] = vld1q_f32(x + 4 * t);
      mx = vmaxq_f32(mx, vabsq_f32(v[t]));
    }
    const float d = act_scale(vmaxvq_f32(mx));
    const float id = act_inv_scale(d);
    int32x4_t sum = vdupq_n_s32(0);
    int16x8_t h[4];
    for (int t = 0; t < 4; ++t) {
      const int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(v[2 * t], id));
      const int32x4_t q1 = vcvtnq_s32_f32(vmulq_n_f32(v[2 * t + 1], id));
      sum = vaddq_s32(sum, vaddq_s32(q0, q1));
      h[t] = vcombine_s16(vmovn_s32(q0), vmovn_s32(q1));
    }
    vst1q_s8(out[b].q, vcombine_s8(vmovn_s16(h[0]), vmovn_s16(h[1])));
    vst1q_s8(out[b].q + 16, vcombine_s8(vmovn_s16(h[2]), vmovn_s16(h[3])));
    out[b].d = d;
    out[b].sum = vaddvq_s32(sum);
  }
  return true;
}

}  // namespace neon
}  // namespace cpullm
