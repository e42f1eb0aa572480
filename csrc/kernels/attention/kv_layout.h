// Where a token's K and V live in the paged KV cache (see KVCache in kernels/kernels.h).
//
// Per physical block b and KV head h, K is stored transposed, [head_dim][block_size] (one row per
// dimension, one column per token slot), and V as [block_size][head_dim]. So 16 consecutive keys of a
// head are 16 contiguous values per dimension — the SIMD attention loads scores' operands directly,
// with no transpose — and each value row is contiguous for the weighted sum.
#ifndef CPULLM_KERNELS_ATTENTION_KV_LAYOUT_H
#define CPULLM_KERNELS_ATTENTION_KV_LAYOUT_H

#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

namespace cpullm::kvlayout {

// First element of (block b, head h) in either pool; the K tile and the V tile are the same size.
inline size_t tile(const KVCache& kv, int64_t block, int32_t h) {
  return static_cast<size_t>((block * kv.n_kv_heads + h) * static_cast<int64_t>(kv.head_dim) * kv.block_size);
}

// K of position p, dimension i: stride block_size between dimensions.
inline size_t k_index(const KVCache& kv, int64_t p, int32_t h, int32_t i) {
  return tile(kv, kv.block_table[p / kv.block_size], h) + static_cast<size_t>(i) * kv.block_size +
         static_cast<size_t>(p % kv.block_size);
}

// V of position p: head_dim contiguous values starting here.
inline size_t v_row(const KVCache& kv, int64_t p, int32_t h) {
  return tile(kv, kv.block_table[p / kv.block_size], h) +
         static_cast<size_t>(p % kv.block_size) * kv.head_dim;
}

}  // namespace cpullm::kvlayout

#endif  // CPULLM_KERNELS_ATTENTION_KV_LAYOUT_H
