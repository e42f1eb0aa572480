// GGUF/ggml block layouts (exact byte layouts) and helpers shared by the reference and the fast paths.
#ifndef CPULLM_KERNELS_BLOCKS_H
#define CPULLM_KERNELS_BLOCKS_H

#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"

namespace cpullm {

constexpr int kQK = 32;    // weights per Q4_0/Q4_1/Q8_0 block and per ActBlock
constexpr int kQKK = 256;  // weights per K-quant super-block

struct BlockQ4_0 {
  uint16_t d;      // f16 scale
  uint8_t qs[16];  // element i: qs[i] & 15 (i < 16), qs[i - 16] >> 4 (i >= 16)
};
struct BlockQ4_1 {
  uint16_t d;  // f16 scale
  uint16_t m;  // f16 minimum
  uint8_t qs[16];
};
struct BlockQ5_0 {
  uint16_t d;      // f16 scale
  uint8_t qh[4];   // bit i: bit 4 of element i (little-endian u32)
  uint8_t qs[16];  // bits 0-3, as Q4_0: element i in qs[i] & 15 (i < 16), qs[i - 16] >> 4 (i >= 16)
};
struct BlockQ5_1 {
  uint16_t d;  // f16 scale
  uint16_t m;  // f16 minimum
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockIQ4_NL {
  uint16_t d;      // f16 scale
  uint8_t qs[16];  // as Q4_0; element i's weight is kIQ4NL[its nibble] * d
};
// IQ4_NL's non-linear codebook (ggml kvalues_iq4nl), in order; every value fits int8 with |v| <= 127.
constexpr int8_t kIQ4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
// IQ4_XS: IQ4_NL's codebook in 256-weight super-blocks, one 6-bit signed scale per 32-weight sub-block.
struct BlockIQ4_XS {
  uint16_t d;           // f16 super-block scale
  uint16_t scales_h;    // bits 2j, 2j+1: the high 2 bits of sub-block j's scale
  uint8_t scales_l[4];  // the low 4 bits of sub-block j's scale: scales_l[j / 2] >> 4 * (j % 2)
  uint8_t qs[128];      // sub-block j: qs[16j .. 16j+15] laid out as an IQ4_NL block's qs
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};
// Q2_K / Q3_K: 16 sub-blocks of 16 weights, each with its own scale; element e = 128h + 32s + i (h 0..1,
// s 0..3, i 0..31) has its low 2 bits in bits 2s, 2s+1 of qs[32h + i].
struct BlockQ2_K {
  uint8_t scales[16];  // 16-weight sub-block l: scale scales[l] & 15, min scales[l] >> 4; w = d·sc·q - dmin·m
  uint8_t qs[64];      // 2-bit values q (0..3)
  uint16_t d;          // f16 scale of the scales
  uint16_t dmin;       // f16 scale of the mins
};
struct BlockQ3_K {
  uint8_t hmask[32];   // element e's third bit: bit e / 32 of hmask[e % 32]; q = low 2 bits - (bit ? 0 : 4)
  uint8_t qs[64];      // low 2 bits, as Q2_K
  uint8_t scales[12];  // 16 six-bit scales (stored + 32), see q3k_scale; w = d·scale·q
  uint16_t d;          // f16
};
struct BlockQ4_K {
  uint16_t d;          // f16 super-block scale of the 6-bit scales
  uint16_t dmin;       // f16 super-block scale of the 6-bit mins
  uint8_t scales[12];  // 8 (scale, min) pairs of 6 bits, see q4k_scale_min
  uint8_t qs[128];     // 4 chunks of 64 weights: 32 bytes, low nibbles first 32, high nibbles next 32
};
struct BlockQ5_K {
  uint16_t d;  // as Q4_K
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];   // element 32j + l of sub-block j: fifth bit is bit j of qh[l]
  uint8_t qs[128];  // as Q4_K
};
struct BlockQ6_K {
  uint8_t ql[128];    // low 4 bits
  uint8_t qh[64];     // high 2 bits
  int8_t scales[16];  // one per 16 weights
  uint16_t d;         // f16
};
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ8_0) == 34, "ggml layout");
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24 && sizeof(BlockIQ4_NL) == 18 &&
                  sizeof(BlockIQ4_XS) == 136,
              "ggml layout");
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110, "ggml layout");
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210,
              "ggml layout");

// Sub-block j (0..7, 32 weights each) of a Q4_K super-block: 6-bit scale and min (ggml get_scale_min_k4).
inline void q4k_scale_min(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Sub-block j (0..7) of an IQ4_XS super-block: its scale, -32..31 (w = d · scale · kIQ4NL[q]).
inline int iq4xs_scale(const BlockIQ4_XS& b, int j) {
  return (((b.scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | (((b.scales_h >> (2 * j)) & 3) << 4)) - 32;
}

// The low 2 bits of element e (0..255) of a Q2_K / Q3_K super-block.
inline int q2k_low(const uint8_t* qs, int e) {
  return (qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3;
}
// Element e of a Q3_K super-block as its signed value, -4..3.
inline int q3k_value(const BlockQ3_K& b, int e) {
  return q2k_low(b.qs, e) - (((b.hmask[e % 32] >> (e / 32)) & 1) ? 0 : 4);
}
// Scale of 16-weight sub-block l (0..15) of a Q3_K super-block, -32..31: low 4 bits in scales[l % 8]
// (nibble l / 8), high 2 bits in scales[8 + l % 4] (bits 2·(l / 4)).
inline int q3k_scale(const uint8_t* s, int l) {
  return (((s[l % 8] >> (4 * (l / 8))) & 0xF) | (((s[8 + l % 4] >> (2 * (l / 4))) & 3) << 4)) - 32;
}

// Element e (0..31) of a Q5_0 / Q5_1 block as its unsigned 5-bit value (Q5_0 weights are q - 16).
inline int q5_value(const uint8_t* qh, const uint8_t* qs, int e) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  const int lo = e < 16 ? (qs[e] & 0xF) : (qs[e - 16] >> 4);
  return lo | static_cast<int>(((h >> e) & 1) << 4);
}

// Element e (0..255) of a Q6_K super-block as the signed 6-bit value q - 32.
inline int q6k_value(const BlockQ6_K& b, int e) {
  const int h = e / 128, r = e % 128;
  const uint8_t* ql = b.ql + 64 * h;
  const uint8_t* qh = b.qh + 32 * h;
  const int lo = r < 64 ? (ql[r] & 0xF) : (ql[r - 64] >> 4);
  const int hi = (qh[r % 32] >> (2 * (r / 32))) & 3;
  return (lo | (hi << 4)) - 32;
}

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ActBlock quantization of 32 values, shared by every implementation so all agree bit for bit:
// the scale and the int8 values depend only on exact IEEE operations (max, /, *, round-half-even).
inline float act_scale(float amax) { return amax / 127.0f; }
inline float act_inv_scale(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }

}  // namespace cpullm

#endif  // CPULLM_KERNELS_BLOCKS_H
