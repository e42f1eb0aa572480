// Where a token's K and V live in the paged KV cache (see KVCache in kernels/kernels.h).
//
// Per physical block b and KV head h, K is stored transposed, [head_dim][block_size] (one row per
// dimension, one column per token slot), and V as [block_size][head_dim]. So 16 consecutive keys of a
// head are 16 contiguous values per dimension — the SIMD attention loads scores' operands directly,
// with no transpose — and each value row is contiguous for the weighted sum.
//
// Q8_0 (the optional quantized cache): the same two tiles in int8, each followed by its scales. A scale
// (f16) covers 32 consecutive dimensions of one token, as a GGUF Q8_0 block does; the scales of a tile are
// [head_dim / 32][block_size], so the 16 keys' scales of one group load as one vector too. One tile is
// head_dim·block_size·17/16 bytes: 1.0625 bytes a value, against 2 for F16.
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

// Q8_0: values per scale, and the bytes of one (block, head) tile with its scales.
constexpr int32_t kQ8Group = 32;
inline int64_t q8_tile_bytes(const KVCache& kv) {
  return static_cast<int64_t>(kv.head_dim) * kv.block_size * 17 / 16;
}
// Bytes of one (block, head) tile of either pool, any type.
inline int64_t tile_bytes(const KVCache& kv) {
  if (kv.type == DType::Q8_0) return q8_tile_bytes(kv);
  return static_cast<int64_t>(kv.head_dim) * kv.block_size * (kv.type == DType::F16 ? 2 : 4);
}
// Q8_0: byte offset of (block, head)'s tile, and where in a tile the scale of (group g, slot) lives.
inline size_t q8_tile(const KVCache& kv, int64_t block, int32_t h) {
  return static_cast<size_t>((block * kv.n_kv_heads + h) * q8_tile_bytes(kv));
}
inline size_t q8_scale(const KVCache& kv, int32_t g, int64_t slot) {
  return static_cast<size_t>(static_cast<int64_t>(kv.head_dim) * kv.block_size +
                             2 * (static_cast<int64_t>(g) * kv.block_size + slot));
}

}  // namespace cpullm::kvlayout

#endif  // CPULLM_KERNELS_ATTENTION_KV_LAYOUT_H
