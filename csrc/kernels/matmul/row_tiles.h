// The row-tile loop shared by the x86 and Arm quantized products (x86_quant.h, arm_quant.h): weight
// rows [r0, r1) in tiles of 4 (then single tail rows) against activation rows in groups of up to 4. Each
// ISA supplies only the tile kernel, as `tile(nr, mr, w, wstride, a, nblocks, y, ldy, r)` with nr and mr
// as std::integral_constant, so every (rows, activations) shape is its own register-blocked instance.
#ifndef CPULLM_KERNELS_MATMUL_ROW_TILES_H
#define CPULLM_KERNELS_MATMUL_ROW_TILES_H

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/blocks.h"
#include "kernels/kernels.h"

namespace cpullm::row_tiles {

template <int N>
using Int = std::integral_constant<int, N>;

// T: the block format (weights per sub-block kSubs × kQK); Tile: the ISA's tile kernel (see above).
template <class T, class Tile>
void quant_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1,
                Tile tile) {
  constexpr int NR = 4;
  const int64_t wstride = row_bytes(W.type, W.cols);
  const int64_t nblocks = W.cols / (T::kSubs * kQK);
  const int64_t ablocks = W.cols / kQK;
  const auto* base = static_cast<const uint8_t*>(W.data);
  const auto* act = static_cast<const ActBlock*>(Xq);
  // One activation group of mr rows against weight rows of nr at a time.
  auto rows = [&](auto nr, const ActBlock* const* a, int mr, float* y, int64_t r) {
    const uint8_t* w = base + r * wstride;
    switch (mr) {
      case 4: tile(nr, Int<4>{}, w, wstride, a, nblocks, y, ldy, r); break;
      case 3: tile(nr, Int<3>{}, w, wstride, a, nblocks, y, ldy, r); break;
      case 2: tile(nr, Int<2>{}, w, wstride, a, nblocks, y, ldy, r); break;
      default: tile(nr, Int<1>{}, w, wstride, a, nblocks, y, ldy, r); break;
    }
  };
  for (int64_t i = 0; i < m; i += 4) {
    const ActBlock* a[4];
    const int mr = static_cast<int>(std::min<int64_t>(4, m - i));
    for (int t = 0; t < mr; ++t) a[t] = act + (i + t) * ablocks;
    float* y = Y + i * ldy;
    int64_t r = r0;
    for (; r + NR <= r1; r += NR) rows(Int<NR>{}, a, mr, y, r);
    for (; r < r1; ++r) rows(Int<1>{}, a, mr, y, r);
  }
}

}  // namespace cpullm::row_tiles

#endif  // CPULLM_KERNELS_MATMUL_ROW_TILES_H
