// The neon copy of the vectorized row ops (ops_vec.h compiled with this set's flags).
#include "kernels/fast.h"
// Last: it turns off GCC's -Wpsabi note for the rest of this file.
#include "kernels/ops/ops_vec.h"

namespace cpullm::neon {

void silu_mul(const float* g, const float* u, float* y, int64_t n) { vec_ops::silu_mul(g, u, y, n); }
void softmax(float* x, int64_t n) { vec_ops::softmax(x, n); }
void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps) {
  vec_ops::rmsnorm(x, w, y, rows, n, eps);
}

}  // namespace cpullm::neon
