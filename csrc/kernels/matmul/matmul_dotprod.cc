// Armv8.2 dot-product fast paths: int8 block dots with sdot (four s8 products summed into s32).
#include <arm_neon.h>

#include "kernels/fast.h"
#include "kernels/matmul/arm_quant.h"

namespace cpullm {
namespace dotprod {
namespace {
struct Dot {
  static int32x4_t dot(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, a0), w1, a1);
  }
  static int32x4_t half(int8x16_t w, int8x16_t a) { return vdotq_s32(vdupq_n_s32(0), w, a); }
};
}  // namespace

bool matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  return arm::matmul_quant<Dot>(W, Xq, m, Y, ldy, r0, r1);
}

}  // namespace dotprod
}  // namespace cpullm
