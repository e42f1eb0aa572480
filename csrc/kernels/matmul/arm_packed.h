// Row-interleaved ("packed") layout for Q4_0 / Q4_1 / Q8_0 on aarch64 with dot product (sdot), and its
// products. Rows are taken in groups of 4 (rows beyond the last full group stay in GGUF layout, read
// from W.data). For each group and 32-weight block column, one record of exactly 4 GGUF blocks' bytes:
//   f16 d[4]; f16 m[4] (Q4_1 only);
//   Q4:  4 chunks × 16 bytes: chunk g holds, for rows 0..3, GGUF qs[4g .. 4g+3] (low nibbles are
//        elements 4g..4g+3, high nibbles 16+4g..16+4g+3);
//   Q8_0: 8 chunks × 16 bytes: chunk g holds, for rows 0..3, elements 4g .. 4g+3.
// sdot by element (vdotq_laneq_s32) multiplies one chunk by 4 activation bytes for all 4 rows at once,
// each 32-bit lane one row: no horizontal sums, scales load as one vector of 4.
#ifndef CPULLM_KERNELS_ARM_PACKED_H
#define CPULLM_KERNELS_ARM_PACKED_H

#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "kernels/blocks.h"

namespace cpullm {
namespace arm {

constexpr int kPackRows = 4;

inline bool packable(DType t) { return t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q8_0; }

constexpr int64_t record_bytes(DType t) {
  return t == DType::Q4_0   ? kPackRows * int64_t{sizeof(BlockQ4_0)}
         : t == DType::Q4_1 ? kPackRows * int64_t{sizeof(BlockQ4_1)}
                            : kPackRows * int64_t{sizeof(BlockQ8_0)};
}

inline int64_t packed_bytes(const Matrix& W) {
  if (!packable(W.type)) return 0;
  return W.rows / kPackRows * (W.cols / kQK) * record_bytes(W.type);
}

inline void repack(const Matrix& W, void* dst) {
  const int64_t rb = row_bytes(W.type, W.cols), nb = W.cols / kQK, bb = block_bytes(W.type);
  const int header = W.type == DType::Q4_1 ? 4 : 2;  // bytes of d (and m) per GGUF block
  const int qbytes = static_cast<int>(bb) - header;  // 16 (Q4) or 32 (Q8_0)
  const auto* src = static_cast<const uint8_t*>(W.data);
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t g = 0; g < W.rows / kPackRows; ++g) {
    for (int64_t k = 0; k < nb; ++k, out += record_bytes(W.type)) {
      for (int r = 0; r < kPackRows; ++r) {
        const uint8_t* blk = src + (g * kPackRows + r) * rb + k * bb;
        std::memcpy(out + 2 * r, blk, 2);
        if (header == 4) std::memcpy(out + 2 * kPackRows + 2 * r, blk + 2, 2);
        for (int c = 0; c < qbytes / 4; ++c) {
          std::memcpy(out + header * kPackRows + 16 * c + 4 * r, blk + header + 4 * c, 4);
        }
      }
    }
  }
}

inline float32x4_t load_f16x4(const uint8_t* p) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p))));
}

// out[i][r] for MR activation rows and the 4 rows of one group.
template <DType T, int MR>
void packed_group(const uint8_t* rec, int64_t nblocks, const ActBlock* const* a, float (*out)[4]) {
  constexpr int64_t kRec = record_bytes(T);
  constexpr int kHeader = T == DType::Q4_1 ? 16 : 8;
  float32x4_t acc[MR], accm[MR];
  for (int i = 0; i < MR; ++i) acc[i] = accm[i] = vdupq_n_f32(0.0f);
  for (int64_t k = 0; k < nblocks; ++k, rec += kRec) {
    __builtin_prefetch(rec + 4096);
    const float32x4_t dw = load_f16x4(rec);
    const uint8_t* qs = rec + kHeader;
    if constexpr (T == DType::Q8_0) {
      int8x16_t w[8];
      for (int g = 0; g < 8; ++g) w[g] = vld1q_s8(reinterpret_cast<const int8_t*>(qs + 16 * g));
      for (int i = 0; i < MR; ++i) {
        const ActBlock& x = a[i][k];
        const int8x16_t a0 = vld1q_s8(x.q), a1 = vld1q_s8(x.q + 16);
        int32x4_t d0 = vdotq_laneq_s32(vdupq_n_s32(0), w[0], a0, 0);
        int32x4_t d1 = vdotq_laneq_s32(vdupq_n_s32(0), w[1], a0, 1);
        d0 = vdotq_laneq_s32(d0, w[2], a0, 2);
        d1 = vdotq_laneq_s32(d1, w[3], a0, 3);
        d0 = vdotq_laneq_s32(d0, w[4], a1, 0);
        d1 = vdotq_laneq_s32(d1, w[5], a1, 1);
        d0 = vdotq_laneq_s32(d0, w[6], a1, 2);
        d1 = vdotq_laneq_s32(d1, w[7], a1, 3);
        acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(vaddq_s32(d0, d1)), vmulq_n_f32(dw, x.d));
      }
    } else {
      int8x16_t lo[4], hi[4];
      for (int g = 0; g < 4; ++g) {
        const uint8x16_t v = vld1q_u8(qs + 16 * g);
        lo[g] = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F)));
        hi[g] = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
      }
      float32x4_t mw = vdupq_n_f32(0.0f);
      if constexpr (T == DType::Q4_1) mw = load_f16x4(rec + 8);
      for (int i = 0; i < MR; ++i) {
        const ActBlock& x = a[i][k];
        const int8x16_t a0 = vld1q_s8(x.q), a1 = vld1q_s8(x.q + 16);
        int32x4_t d0 = vdotq_laneq_s32(vdupq_n_s32(0), lo[0], a0, 0);
        int32x4_t d1 = vdotq_laneq_s32(vdupq_n_s32(0), hi[0], a1, 0);
        d0 = vdotq_laneq_s32(d0, lo[1], a0, 1);
        d1 = vdotq_laneq_s32(d1, hi[1], a1, 1);
        d0 = vdotq_laneq_s32(d0, lo[2], a0, 2);
        d1 = vdotq_laneq_s32(d1, hi[2], a1, 2);
        d0 = vdotq_laneq_s32(d0, lo[3], a0, 3);
        d1 = vdotq_laneq_s32(d1, hi[3], a1, 3);
        int32x4_t dot = vaddq_s32(d0, d1);
        if constexpr (T == DType::Q4_0) dot = vsubq_s32(dot, vdupq_n_s32(8 * x.sum));
        acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(dot), vmulq_n_f32(dw, x.d));
        if constexpr (T == DType::Q4_1) accm[i] = vfmaq_n_f32(accm[i], mw, x.d * static_cast<float>(x.sum));
      }
    }
  }
  for (int i = 0; i < MR; ++i) vst1q_f32(out[i], vaddq_f32(acc[i], accm[i]));
}

template <DType T>
void packed_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  const int64_t nblocks = W.cols / kQK;
  const int64_t group_bytes = nblocks * record_bytes(T);
  const auto* act = static_cast<const ActBlock*>(Xq);
  const auto* packed = static_cast<const uint8_t*>(W.packed);
  float out[4][4];
  for (int64_t g = r0 / kPackRows; g * kPackRows < r1; ++g) {
    const uint8_t* rec = packed + g * group_bytes;
    const int64_t rbeg = std::max(r0, g * kPackRows), rend = std::min(r1, (g + 1) * kPackRows);
    for (int64_t i = 0; i < m; i += 4) {
      const int mr = static_cast<int>(std::min<int64_t>(4, m - i));
      const ActBlock* a[4];
      for (int t = 0; t < mr; ++t) a[t] = act + (i + t) * nblocks;
      switch (mr) {
        case 4: packed_group<T, 4>(rec, nblocks, a, out); break;
        case 3: packed_group<T, 3>(rec, nblocks, a, out); break;
        case 2: packed_group<T, 2>(rec, nblocks, a, out); break;
        default: packed_group<T, 1>(rec, nblocks, a, out); break;
      }
      for (int t = 0; t < mr; ++t) {
        for (int64_t r = rbeg; r < rend; ++r) Y[(i + t) * ldy + r] = out[t][r - g * kPackRows];
      }
    }
  }
}

// The packed part of [r0, r1), then the GGUF-layout tail through `plain`. False when W is not packed.
template <class Plain>
bool matmul_packed(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1,
                   Plain plain) {
  if (W.packed == nullptr || !packable(W.type)) return false;
  const int64_t split = std::clamp(W.rows / kPackRows * kPackRows, r0, r1);
  if (r0 < split) {
    switch (W.type) {
      case DType::Q4_0: packed_rows<DType::Q4_0>(W, Xq, m, Y, ldy, r0, split); break;
      case DType::Q4_1: packed_rows<DType::Q4_1>(W, Xq, m, Y, ldy, r0, split); break;
      default: packed_rows<DType::Q8_0>(W, Xq, m, Y, ldy, r0, split); break;
    }
  }
  if (split < r1) plain(W, Xq, m, Y, ldy, split, r1);
  return true;
}

}  // namespace arm
}  // namespace cpullm

#endif  // CPULLM_KERNELS_ARM_PACKED_H
