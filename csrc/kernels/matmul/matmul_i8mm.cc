// i8mm fast paths: not written yet; every case falls back to the next kernel set.
#include "kernels/fast.h"

namespace cpullm {
namespace i8mm {
bool matmul_rows(const Matrix&, const void*, int64_t, float*, int64_t, int64_t, int64_t) { return false; }


}  // namespace i8mm
}  // namespace cpullm
