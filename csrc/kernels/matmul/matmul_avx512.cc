// avx512 fast paths: not written yet; every case falls back to the next kernel set.
#include "kernels/fast.h"

namespace cpullm {
namespace avx512 {
bool matmul_rows(const Matrix&, const void*, int64_t, float*, int64_t, int64_t, int64_t) { return false; }
bool quantize_act(const float*, int64_t, ActBlock*) { return false; }

}  // namespace avx512
}  // namespace cpullm
