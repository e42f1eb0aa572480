// Armv8.2 dot-product fast paths: int8 block dots with sdot (four s8 products summed into s32), and the
// aarch64 packed layout (matmul/arm_packed.h) for decode.
#include <arm_neon.h>

#include "kernels/fast.h"
#include "kernels/matmul/arm_packed.h"
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
  if (arm::matmul_packed(W, Xq, m, Y, ldy, r0, r1, arm::matmul_quant<Dot>)) return true;
  return arm::matmul_quant<Dot>(W, Xq, m, Y, ldy, r0, r1);
}

int64_t packed_bytes(const Matrix& W) { return arm::packed_bytes(W); }
void repack(const Matrix& W, void* dst) { arm::repack(W, dst); }

}  // namespace dotprod
}  // namespace cpullm
