// Row-interleaved ("packed") layout for Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / IQ4_NL / IQ4_XS / Q4_K / Q5_K /
// Q6_K on x86, and its products.
//
// Rows are taken in groups of 8 (rows beyond the last full group stay in GGUF layout, read from W.data).
// For each group and each 32-weight block column k, one record of exactly 8 GGUF blocks' bytes:
//   f16 d[8]                         (row r's scale)
//   f16 m[8]                         (Q4_1 / Q5_1 only: row r's minimum)
//   Q5:  one chunk of the fifth bits: row r's 32 bits at 4r, bit 8b+g the fifth bit of element 4g+b and
//        bit 8b+4+g that of element 16+4g+b (g, b in 0..3), so byte b of a row serves all 4 nibble chunks;
//   Q4, Q5, IQ4_NL: 4 chunks × 32 bytes: chunk g holds, for rows 0..7, GGUF qs[4g .. 4g+3] (4 bytes per row);
//        low nibbles are elements 4g..4g+3, high nibbles elements 16+4g..16+4g+3.
//   Q8_0: 8 chunks × 32 bytes: chunk g holds, for rows 0..7, elements 4g .. 4g+3 (int8).
// Q4_K: one record per 256-weight super-block column (1184 bytes for 8 rows, 32 more than GGUF):
//   f16 d[8], f16 dmin[8], u8 scale[8 sub-blocks][8 rows], u8 min[8][8] (the 6-bit values, unpacked),
//   then per sub-block j: 4 chunks × 32 bytes as for Q4 above (low nibble element 4g+b, high 16+4g+b).
// Q5_K: the Q4_K record (its scales, mins and low 4 bits), then per sub-block j one chunk of fifth bits
//   laid out as Q5's above (1440 bytes for 8 rows, 32 more than GGUF).
// IQ4_XS: one record per super-block column (1104 bytes for 8 rows, 16 more than GGUF): f16 d[8], i8
//   scale[8 sub-blocks][8 rows] (the signed 6-bit values, unpacked), then per sub-block j 4 chunks × 32
//   bytes as for Q4 above (GGUF qs[16j + 4g .. 16j + 4g + 3] of each row in chunk g).
// Q6_K: one record per super-block column (1680 bytes for 8 rows, the same as GGUF): f16 d[8], i8
//   scale[16 halves][8 rows], then per sub-block j 192 bytes: 4 chunks × 32 bytes of low 4 bits (low
//   nibble element 4g+b, high nibble 16+4g+b, as for Q4) and 2 chunks × 32 bytes of high 2 bits: chunk
//   c, row r, byte b holds elements 8c+b, 16+8c+b, 8c+4+b, 16+8c+4+b in bits 0-1, 2-3, 4-5, 6-7.
// One 32-byte chunk times 4 broadcast activation bytes is then one integer dot instruction for 8 rows,
// and every 32-bit lane is one row: no horizontal sums, and scales load as one vector of 8.
#ifndef CPULLM_KERNELS_X86_PACKED_H
#define CPULLM_KERNELS_X86_PACKED_H

#include "kernels/matmul/x86_intrin.h"
#include "kernels/matmul/x86_vec.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/blocks.h"

namespace cpullm {
namespace x86 {

constexpr int kPackRows = 8;
// Software prefetch distance of the products' weight stream (bytes). Zen 4, 1.1B decode, 2 threads,
// interleaved: Q4_K_M 35 tok/s at 8 KiB, 43 at 1-4 KiB; Q4_0 the same at 2, 4 and 8 KiB.
constexpr int64_t kPrefetch = 4096;

inline bool packable(DType t) {
  return t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q5_0 || t == DType::Q5_1 || t == DType::Q8_0 ||
         t == DType::IQ4_NL || t == DType::IQ4_XS || t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}

// Byte offsets inside one record (the layouts above), ints like the loop indices they combine with. Every
// record starts with the 8 rows' f16 d at 0; a chunk holds 4 bytes of each of the 8 rows.
constexpr int kChunk = 4 * kPackRows;
// Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0: the f16 m[8] of Q4_1 / Q5_1 follows d; Q5's chunk of fifth bits
// follows the scales; the chunks of nibbles (or int8) follow.
constexpr bool has_min(DType t) { return t == DType::Q4_1 || t == DType::Q5_1; }
constexpr bool is_q5(DType t) { return t == DType::Q5_0 || t == DType::Q5_1; }
constexpr int kMinOffset = 2 * kPackRows;
constexpr int high_bits_offset(DType t) { return (has_min(t) ? 4 : 2) * kPackRows; }
constexpr int chunks_offset(DType t) { return high_bits_offset(t) + (is_q5(t) ? kChunk : 0); }
struct Q4KRecord {
  static constexpr int kDmin = 2 * kPackRows;            // f16 dmin[8]
  static constexpr int kScales = kDmin + 2 * kPackRows;  // u8 scale[8 sub-blocks][8 rows]
  static constexpr int kMins = kScales + 8 * kPackRows;  // u8 min[8 sub-blocks][8 rows]
  static constexpr int kQuants = kMins + 8 * kPackRows;  // then per sub-block, 4 chunks of nibbles
  static constexpr int kSubBlock = 4 * kChunk;
  static constexpr int kBytes = kQuants + 8 * kSubBlock;
  static constexpr int kHighBits = kBytes;  // Q5_K: then per sub-block, 1 chunk of fifth bits
  static constexpr int kQ5KBytes = kHighBits + 8 * kChunk;
};
struct IQ4XSRecord {
  static constexpr int kScales = 2 * kPackRows;            // i8 scale[8 sub-blocks][8 rows]
  static constexpr int kQuants = kScales + 8 * kPackRows;  // then per sub-block, 4 chunks of nibbles
  static constexpr int kSubBlock = 4 * kChunk;
  static constexpr int kBytes = kQuants + 8 * kSubBlock;
};
struct Q6KRecord {
  static constexpr int kScales = 2 * kPackRows;             // i8 scale[16 halves][8 rows]
  static constexpr int kQuants = kScales + 16 * kPackRows;  // then per sub-block:
  static constexpr int kHighBits = 4 * kChunk;              //   4 chunks of low 4 bits, then 2 of high 2 bits
  static constexpr int kSubBlock = kHighBits + 2 * kChunk;
  static constexpr int kBytes = kQuants + 8 * kSubBlock;
};
static_assert(Q4KRecord::kBytes == kPackRows * int64_t{sizeof(BlockQ4_K)} + 32, "1184 bytes, see above");
static_assert(Q4KRecord::kQ5KBytes == kPackRows * int64_t{sizeof(BlockQ5_K)} + 32, "1440 bytes, see above");
static_assert(IQ4XSRecord::kBytes == kPackRows * int64_t{sizeof(BlockIQ4_XS)} + 16, "1104 bytes, see above");
static_assert(Q6KRecord::kBytes == kPackRows * int64_t{sizeof(BlockQ6_K)}, "1680 bytes, see above");

// Bytes of one record (8 rows × one block column, or one super-block column for Q4_K / Q6_K).
constexpr int64_t record_bytes(DType t) {
  return t == DType::Q4_K     ? Q4KRecord::kBytes
         : t == DType::Q5_K   ? Q4KRecord::kQ5KBytes
         : t == DType::IQ4_XS ? IQ4XSRecord::kBytes
         : t == DType::Q6_K   ? Q6KRecord::kBytes
         : t == DType::Q4_0   ? kPackRows * int64_t{sizeof(BlockQ4_0)}
         : t == DType::Q4_1   ? kPackRows * int64_t{sizeof(BlockQ4_1)}
         : t == DType::Q5_0   ? kPackRows * int64_t{sizeof(BlockQ5_0)}
         : t == DType::Q5_1   ? kPackRows * int64_t{sizeof(BlockQ5_1)}
         : t == DType::IQ4_NL ? kPackRows * int64_t{sizeof(BlockIQ4_NL)}
                              : kPackRows * int64_t{sizeof(BlockQ8_0)};
}
// The packed types whose record covers a 256-weight super-block column (the rest: a 32-weight block).
constexpr bool super_block(DType t) {
  return t == DType::Q4_K || t == DType::Q5_K || t == DType::IQ4_XS || t == DType::Q6_K;
}
inline int64_t records_per_row(DType t, int64_t cols) { return cols / (super_block(t) ? kQKK : kQK); }

inline int64_t packed_bytes(const Matrix& W) {
  if (!packable(W.type)) return 0;
  return W.rows / kPackRows * records_per_row(W.type, W.cols) * record_bytes(W.type);
}

// Q4_K, and Q5_K (Block BlockQ5_K) with its fifth bits.
template <class Block>
inline void repack_q4k(const Matrix& W, uint8_t* out) {
  using R = Q4KRecord;
  constexpr bool kQ5 = std::is_same_v<Block, BlockQ5_K>;
  const int64_t rb = row_bytes(W.type, W.cols), ns = W.cols / kQKK;
  const auto* src = static_cast<const uint8_t*>(W.data);
  for (int64_t g = 0; g < W.rows / kPackRows; ++g) {
    for (int64_t k = 0; k < ns; ++k, out += kQ5 ? R::kQ5KBytes : R::kBytes) {
      for (int r = 0; r < kPackRows; ++r) {
        const auto& b = reinterpret_cast<const Block*>(src + (g * kPackRows + r) * rb)[k];
        std::memcpy(out + 2 * r, &b.d, 2);
        std::memcpy(out + R::kDmin + 2 * r, &b.dmin, 2);
        for (int j = 0; j < 8; ++j) {
          q4k_scale_min(j, b.scales, out + R::kScales + kPackRows * j + r,
                        out + R::kMins + kPackRows * j + r);
          // Elements i and 16 + i of sub-block j (nibble j % 2 of qs[32 (j / 2) + i] and of the byte 16
          // later) into one byte, 16 at once; bytes 4c .. 4c + 3 go to chunk c. Byte by byte, this loop was
          // most of a Q4_K_M file's load.
          const uint8_t* q = b.qs + 32 * (j / 2);
          const __m128i v0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
          const __m128i v1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16));
          const __m128i low = _mm_set1_epi8(0x0F);
          const __m128i packed =
              j % 2 == 0 ? _mm_or_si128(_mm_and_si128(v0, low), _mm_slli_epi16(_mm_and_si128(v1, low), 4))
                         : _mm_or_si128(_mm_and_si128(_mm_srli_epi16(v0, 4), low), _mm_andnot_si128(low, v1));
          alignas(16) uint8_t bytes[16];
          _mm_store_si128(reinterpret_cast<__m128i*>(bytes), packed);
          uint8_t* dst = out + R::kQuants + R::kSubBlock * j + 4 * r;
          for (int c = 0; c < 4; ++c) std::memcpy(dst + kChunk * c, bytes + 4 * c, 4);
          if constexpr (kQ5) {  // element i's fifth bit is bit j of qh[i]; bits placed as Q5's chunk above
            uint32_t packed = 0;
            for (int c = 0; c < 4; ++c) {
              for (int bb = 0; bb < 4; ++bb) {
                packed |= static_cast<uint32_t>((b.qh[4 * c + bb] >> j) & 1) << (8 * bb + c);
                packed |= static_cast<uint32_t>((b.qh[16 + 4 * c + bb] >> j) & 1) << (8 * bb + 4 + c);
              }
            }
            std::memcpy(out + R::kHighBits + kChunk * j + 4 * r, &packed, 4);
          }
        }
      }
    }
  }
}

inline void repack_iq4xs(const Matrix& W, uint8_t* out) {
  using R = IQ4XSRecord;
  const int64_t rb = row_bytes(W.type, W.cols), ns = W.cols / kQKK;
  const auto* src = static_cast<const uint8_t*>(W.data);
  for (int64_t g = 0; g < W.rows / kPackRows; ++g) {
    for (int64_t k = 0; k < ns; ++k, out += R::kBytes) {
      for (int r = 0; r < kPackRows; ++r) {
        const auto& b = reinterpret_cast<const BlockIQ4_XS*>(src + (g * kPackRows + r) * rb)[k];
        std::memcpy(out + 2 * r, &b.d, 2);
        for (int j = 0; j < 8; ++j) {
          out[R::kScales + kPackRows * j + r] = static_cast<uint8_t>(static_cast<int8_t>(iq4xs_scale(b, j)));
          for (int c = 0; c < 4; ++c) {
            std::memcpy(out + R::kQuants + R::kSubBlock * j + kChunk * c + 4 * r, b.qs + 16 * j + 4 * c, 4);
          }
        }
      }
    }
  }
}

inline void repack_q6k(const Matrix& W, uint8_t* out) {
  using R = Q6KRecord;
  const int64_t rb = row_bytes(W.type, W.cols), ns = W.cols / kQKK;
  const auto* src = static_cast<const uint8_t*>(W.data);
  for (int64_t g = 0; g < W.rows / kPackRows; ++g) {
    for (int64_t k = 0; k < ns; ++k, out += R::kBytes) {
      for (int r = 0; r < kPackRows; ++r) {
        const auto& b = reinterpret_cast<const BlockQ6_K*>(src + (g * kPackRows + r) * rb)[k];
        std::memcpy(out + 2 * r, &b.d, 2);
        for (int h = 0; h < 16; ++h) out[R::kScales + kPackRows * h + r] = static_cast<uint8_t>(b.scales[h]);
        // The 256 stored values (0..63) decoded once, 32 at a time (element l of each quarter of a half: low
        // 4 bits in a nibble of ql, high 2 bits in a bit pair of qh); value by value, this and the loop below
        // were most of a Q4_K_M file's load.
        alignas(32) uint8_t val[kQKK];
        const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
        for (int half = 0; half < 2; ++half) {
          const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * half));
          const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * half + 32));
          const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * half));
          // bits 2q .. 2q+1 of qh, as bits 4-5 (the 16-bit shifts' spill across bytes is masked off)
          auto high = [&](int q) {
            return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * q), m2), 4);
          };
          auto* v = reinterpret_cast<__m256i*>(val + 128 * half);
          _mm256_store_si256(v, _mm256_or_si256(_mm256_and_si256(ql0, m4), high(0)));
          _mm256_store_si256(v + 1, _mm256_or_si256(_mm256_and_si256(ql1, m4), high(1)));
          _mm256_store_si256(v + 2,
                             _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), high(2)));
          _mm256_store_si256(v + 3,
                             _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), high(3)));
        }
        const __m128i n4 = _mm_set1_epi8(0x0F), n2 = _mm_set1_epi8(3);
        for (int j = 0; j < 8; ++j) {
          uint8_t* q = out + R::kQuants + R::kSubBlock * j;
          const __m128i a = _mm_load_si128(reinterpret_cast<const __m128i*>(val + 32 * j));  // elements 0..15
          const __m128i c = _mm_load_si128(reinterpret_cast<const __m128i*>(val + 32 * j + 16));  // 16..31
          // byte e: low 4 bits of elements e and 16 + e; chunk e / 4 takes bytes 4g .. 4g + 3
          const __m128i low = _mm_or_si128(_mm_and_si128(a, n4), _mm_slli_epi16(_mm_and_si128(c, n4), 4));
          // t[e]: high 2 bits of elements e (bits 0-1) and 16 + e (bits 2-3); high-bit chunk c, byte bb
          // holds t[8c + bb] | t[8c + 4 + bb] << 4 (the layout above): bytes 0..3 and 8..11 of hb
          const __m128i t = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), n2),
                                         _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(c, 4), n2), 2));
          const __m128i hb = _mm_or_si128(t, _mm_slli_epi16(_mm_srli_si128(t, 4), 4));
          alignas(16) uint8_t lo_bytes[16], hi_bytes[16];
          _mm_store_si128(reinterpret_cast<__m128i*>(lo_bytes), low);
          _mm_store_si128(reinterpret_cast<__m128i*>(hi_bytes), hb);
          for (int g = 0; g < 4; ++g) std::memcpy(q + kChunk * g + 4 * r, lo_bytes + 4 * g, 4);
          std::memcpy(q + R::kHighBits + 4 * r, hi_bytes, 4);
          std::memcpy(q + R::kHighBits + kChunk + 4 * r, hi_bytes + 8, 4);
        }
      }
    }
  }
}

inline void repack(const Matrix& W, void* dst) {
  if (W.type == DType::Q4_K) {
    repack_q4k<BlockQ4_K>(W, static_cast<uint8_t*>(dst));
    return;
  }
  if (W.type == DType::Q5_K) {
    repack_q4k<BlockQ5_K>(W, static_cast<uint8_t*>(dst));
    return;
  }
  if (W.type == DType::Q6_K) {
    repack_q6k(W, static_cast<uint8_t*>(dst));
    return;
  }
  if (W.type == DType::IQ4_XS) {
    repack_iq4xs(W, static_cast<uint8_t*>(dst));
    return;
  }
  const int64_t rb = row_bytes(W.type, W.cols), nb = W.cols / kQK, bb = block_bytes(W.type);
  const int scales = has_min(W.type) ? 4 : 2;           // bytes of d (and m) per GGUF block
  const int header = scales + (is_q5(W.type) ? 4 : 0);  // and of Q5's fifth bits
  const int qbytes = static_cast<int>(bb) - header;     // 16 (Q4, Q5) or 32 (Q8_0)
  const int chunks = chunks_offset(W.type);
  const auto* src = static_cast<const uint8_t*>(W.data);
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t g = 0; g < W.rows / kPackRows; ++g) {
    for (int64_t k = 0; k < nb; ++k) {
      for (int r = 0; r < kPackRows; ++r) {
        const uint8_t* blk = src + (g * kPackRows + r) * rb + k * bb;
        std::memcpy(out + 2 * r, blk, 2);                                    // d
        if (scales == 4) std::memcpy(out + kMinOffset + 2 * r, blk + 2, 2);  // m
        if (is_q5(W.type)) {
          uint32_t h, packed = 0;
          std::memcpy(&h, blk + scales, 4);
          for (int c = 0; c < 4; ++c) {
            for (int b = 0; b < 4; ++b) {
              packed |= ((h >> (4 * c + b)) & 1u) << (8 * b + c);
              packed |= ((h >> (16 + 4 * c + b)) & 1u) << (8 * b + 4 + c);
            }
          }
          std::memcpy(out + high_bits_offset(W.type) + 4 * r, &packed, 4);
        }
      }
      // The quants: chunk c holds bytes 4c .. 4c+3 of each of the 8 rows, a 4×4 transpose of 32-bit words per
      // 16 bytes and 4 rows (byte by byte, this loop was most of a Q4_0 file's repack).
      for (int h = 0; h < qbytes / 16; ++h) {
        for (int half = 0; half < 2; ++half) {
          __m128i v[4];
          for (int r = 0; r < 4; ++r) {
            const uint8_t* blk = src + (g * kPackRows + 4 * half + r) * rb + k * bb + header + 16 * h;
            v[r] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk));
          }
          const __m128i t0 = _mm_unpacklo_epi32(v[0], v[1]), t1 = _mm_unpacklo_epi32(v[2], v[3]);
          const __m128i t2 = _mm_unpackhi_epi32(v[0], v[1]), t3 = _mm_unpackhi_epi32(v[2], v[3]);
          const __m128i c[4] = {_mm_unpacklo_epi64(t0, t1), _mm_unpackhi_epi64(t0, t1),
                                _mm_unpacklo_epi64(t2, t3), _mm_unpackhi_epi64(t2, t3)};
          for (int j = 0; j < 4; ++j) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + chunks + kChunk * (4 * h + j) + 16 * half),
                             c[j]);
          }
        }
      }
      out += record_bytes(W.type);
    }
  }
}

inline __m256i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// Per activation block, what the Q4_K / Q5_K / Q6_K products add besides the dot itself, computed once per
// call rather than per row group and tile, and broadcast from memory: one load instead of a scalar multiply
// and a move (Zen 4, m = 512, 2 threads: Q4_K +0-4 %, Q6_K +4-18 %). The 32-weight types keep computing
// theirs inline: there the extra pointer per activation row cost more than it saved (Q4_0 -6 %).
constexpr bool has_block_terms(DType t) { return t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K; }
struct BlockTerms {
  int32_t c0;  // Q6_K: -32·Σq over elements 0..15 (where the sum starts)
  int32_t c1;  // Q6_K: -32·Σq over elements 16..31
  float ds;    // Q4_K, Q5_K: d·Σq, the minimum's factor
};

template <DType T>
inline BlockTerms block_terms(const ActBlock& x) {
  BlockTerms t{0, 0, x.d * static_cast<float>(x.sum)};
  if constexpr (T == DType::Q6_K) {
    int32_t h0 = 0;
    for (int e = 0; e < 16; ++e) h0 += x.q[e];
    t.c0 = -32 * h0;
    t.c1 = -32 * (x.sum - h0);
  }
  return t;
}

// out[i][lane] for MR activation rows and the 8·V::kGroups rows of one group (V256) or two neighbouring
// groups whose records lie gs bytes apart (V512); see the layout above and x86_vec.h.
// Dot: dot_u_sum<N>(init, u8 chunks, act bytes) = init + Σ_g chunk g · act[4g .. 4g+3] broadcast,
// acc_s(acc, s8 chunk, act bytes) and kSignedBias (the bias acc_s adds per act value, removed exactly in
// integers with the block's Σq), kTileRows (activation rows per tile). Per-block integer corrections start
// the sum (init) rather than being subtracted after it.
template <class Dot, class V, DType T, int MR>
inline void packed_group(const uint8_t* rec, int64_t gs, int64_t nblocks, const ActBlock* const* a,
                         const BlockTerms* const* terms, float (*out)[16]) {
  using I = typename V::I;
  using F = typename V::F;
  constexpr int64_t kRec = record_bytes(T);
  F acc[MR], accm[MR];
  for (int i = 0; i < MR; ++i) acc[i] = accm[i] = V::fzero();
  const I low4 = V::bytes(0x0F);
  for (int64_t k = 0; k < nblocks; ++k, rec += kRec) {
    // Decode streams weights from DRAM: ask for the lines kPrefetch bytes ahead while this block computes
    // (the hardware prefetcher alone leaves ~30% of the read bandwidth unused here). A super-block record
    // (19-27 lines) asks an eighth at a time, one per sub-block, rather than all its lines in one burst.
    const auto prefetch_eighth = [&](int j) {
      constexpr int64_t kLines = (kRec + 63) / 64;
      for (int64_t l = kLines * j / 8; l < kLines * (j + 1) / 8; ++l)
        V::prefetch(rec + kPrefetch + 64 * l, gs, 1);
    };
    if constexpr (!super_block(T)) V::prefetch(rec + kPrefetch, gs, kRec);
    const F dw = V::f16(rec, gs);
    const uint8_t* qs = rec + chunks_offset(T);
    if constexpr (T == DType::Q6_K) {
      using R = Q6KRecord;
      const I three = V::bytes(3);
      for (int j = 0; j < 8; ++j) {
        prefetch_eighth(j);
        const uint8_t* q = rec + R::kQuants + R::kSubBlock * j;
        const I qh[2] = {V::load(q + R::kHighBits, gs), V::load(q + R::kHighBits + kChunk, gs)};
        I lo[4], hi[4];  // stored 6-bit values: lo[g] elements 4g+b, hi[g] elements 16+4g+b
        for (int g = 0; g < 4; ++g) {
          const I v = V::load(q + kChunk * g, gs);
          const I h = g % 2 ? V::srl16(qh[g / 2], 4) : qh[g / 2];
          lo[g] = V::or_(V::and_(v, low4), V::sll16(V::and_(h, three), 4));
          hi[g] = V::or_(V::and_(V::srl16(v, 4), low4), V::sll16(V::and_(V::srl16(h, 2), three), 4));
        }
        const I sc0 = V::i8(rec + R::kScales + kPackRows * (2 * j), gs);
        const I sc1 = V::i8(rec + R::kScales + kPackRows * (2 * j + 1), gs);
        for (int i = 0; i < MR; ++i) {
          const ActBlock& x = a[i][8 * k + j];
          const BlockTerms& e = terms[i][8 * k + j];
          // Σ (q - 32)·a per half (the -32·Σa starts the sum), times the half's scale: the integer the
          // reference computes, exactly. 6-bit values: s16 pair sums <= 2·63·128, two of them fit in s16.
          I d0 = Dot::template dot_u_sum<2>(V::ints(e.c0), lo, x.q);
          d0 = Dot::template dot_u_sum<2>(d0, lo + 2, x.q + 8);
          I d1 = Dot::template dot_u_sum<2>(V::ints(e.c1), hi, x.q + 16);
          d1 = Dot::template dot_u_sum<2>(d1, hi + 2, x.q + 24);
          const I dot = V::add32(V::mul32(d0, sc0), V::mul32(d1, sc1));
          acc[i] = V::fma(V::cvt(dot), V::mul(dw, V::floats(x.d)), acc[i]);
        }
      }
    } else if constexpr (T == DType::Q4_K || T == DType::Q5_K) {
      // Per super-block: s = Σ_j x.d_j·(scale_j·dot_j) and n = Σ_j x.d_j·Σx_j·min_j, then acc += d·s - dmin·n
      // once. scale_j·dot_j is an exact int32 (|dot| <= 32·31·127 for Q5_K, scale < 64: < 2^24) and exact
      // as a float.
      using R = Q4KRecord;
      const F dm = V::f16(rec + R::kDmin, gs);
      F s[MR], n[MR];
      for (int i = 0; i < MR; ++i) s[i] = n[i] = V::fzero();
      for (int j = 0; j < 8; ++j) {
        prefetch_eighth(j);
        const I sc = V::u8(rec + R::kScales + kPackRows * j, gs);        // scale_j per row
        const F mn = V::cvt(V::u8(rec + R::kMins + kPackRows * j, gs));  // min_j per row
        const uint8_t* q = rec + R::kQuants + R::kSubBlock * j;
        I w8[8];  // chunks 0..3: low nibbles (elements 4g+b), 4..7: high nibbles (16+4g+b)
        for (int g = 0; g < 4; ++g) {
          const I v = V::load(q + kChunk * g, gs);
          w8[g] = V::and_(v, low4);
          w8[4 + g] = V::and_(V::srl16(v, 4), low4);
        }
        if constexpr (T == DType::Q5_K) {  // fifth bits to bit 4, as for Q5 below
          const I h = V::load(rec + R::kHighBits + kChunk * j, gs);
          const I bit4 = V::bytes(0x10);
          for (int g = 0; g < 4; ++g) {
            w8[g] = V::or_(w8[g], V::and_(V::sll16(h, 4 - g), bit4));
            w8[4 + g] = V::or_(w8[4 + g], V::and_(V::srl16(h, g), bit4));
          }
        }
        for (int i = 0; i < MR; ++i) {
          const ActBlock& x = a[i][8 * k + j];
          // s16 pair sums <= 2·15·128 (Q4_K: all 8 chunks fit in s16) or 2·31·128 (Q5_K: 4 at a time).
          const I sum = T == DType::Q4_K
                            ? Dot::template dot_u_sum<8>(V::zero(), w8, x.q)
                            : Dot::template dot_u_sum<4>(Dot::template dot_u_sum<4>(V::zero(), w8, x.q),
                                                         w8 + 4, x.q + 16);
          s[i] = V::fma(V::cvt(V::mul32(sum, sc)), V::floats(x.d), s[i]);
          n[i] = V::fma(mn, V::floats(terms[i][8 * k + j].ds), n[i]);
        }
      }
      for (int i = 0; i < MR; ++i) {
        acc[i] = V::fma(dw, s[i], acc[i]);
        accm[i] = V::fnma(dm, n[i], accm[i]);
      }
    } else if constexpr (T == DType::IQ4_XS) {
      // As Q4_K without mins, signed codebook values: s = Σ_j x.d_j·(scale_j·dot_j), then acc += d·s once
      // per super-block (|scale_j·dot_j| <= 32·32·127·127 < 2^24: exact as an int32 and as a float).
      using R = IQ4XSRecord;
      const I book = V::table16(kIQ4NL);
      F s[MR];
      for (int i = 0; i < MR; ++i) s[i] = V::fzero();
      for (int j = 0; j < 8; ++j) {
        prefetch_eighth(j);
        const I sc = V::i8(rec + R::kScales + kPackRows * j, gs);
        const uint8_t* q = rec + R::kQuants + R::kSubBlock * j;
        I lo[4], hi[4];
        for (int g = 0; g < 4; ++g) {
          const I v = V::load(q + kChunk * g, gs);
          lo[g] = V::lookup(book, V::and_(v, low4));
          hi[g] = V::lookup(book, V::and_(V::srl16(v, 4), low4));
        }
        for (int i = 0; i < MR; ++i) {
          const ActBlock& x = a[i][8 * k + j];
          I d0 = V::ints(-Dot::kSignedBias * x.sum), d1 = V::zero();
          for (int g = 0; g < 4; ++g) {
            d0 = Dot::acc_s(d0, lo[g], x.q + 4 * g);
            d1 = Dot::acc_s(d1, hi[g], x.q + 16 + 4 * g);
          }
          s[i] = V::fma(V::cvt(V::mul32(V::add32(d0, d1), sc)), V::floats(x.d), s[i]);
        }
      }
      for (int i = 0; i < MR; ++i) acc[i] = V::fma(dw, s[i], acc[i]);
    } else if constexpr (T == DType::Q8_0) {
      I w[8];
      for (int g = 0; g < 8; ++g) w[g] = V::load(qs + kChunk * g, gs);
      for (int i = 0; i < MR; ++i) {
        const ActBlock& x = a[i][k];
        I dot = V::ints(-Dot::kSignedBias * x.sum);
        for (int g = 0; g < 8; ++g) dot = Dot::acc_s(dot, w[g], x.q + 4 * g);
        acc[i] = V::fma(V::cvt(dot), V::mul(dw, V::floats(x.d)), acc[i]);
      }
    } else {
      I lo[4], hi[4];
      for (int g = 0; g < 4; ++g) {
        const I v = V::load(qs + kChunk * g, gs);
        lo[g] = V::and_(v, low4);
        hi[g] = V::and_(V::srl16(v, 4), low4);
      }
      if constexpr (is_q5(T)) {
        // Chunk g's fifth bits are bits g (elements 4g+b) and 4+g (16+4g+b) of each byte: moved to bit 4.
        // The 16-bit shifts move no bit that survives the mask across a byte boundary (shifts <= 4).
        const I h = V::load(rec + high_bits_offset(T), gs);
        const I bit4 = V::bytes(0x10);
        for (int g = 0; g < 4; ++g) {
          lo[g] = V::or_(lo[g], V::and_(V::sll16(h, 4 - g), bit4));
          hi[g] = V::or_(hi[g], V::and_(V::srl16(h, g), bit4));
        }
      }
      if constexpr (T == DType::IQ4_NL) {  // nibbles -> the codebook's int8 values
        const I book = V::table16(kIQ4NL);
        for (int g = 0; g < 4; ++g) {
          lo[g] = V::lookup(book, lo[g]);
          hi[g] = V::lookup(book, hi[g]);
        }
      }
      F mw = V::fzero();
      if constexpr (has_min(T)) mw = V::f16(rec + kMinOffset, gs);
      for (int i = 0; i < MR; ++i) {
        const ActBlock& x = a[i][k];
        // The integer correction per block starts the sum: the signed-weight bias (IQ4_NL) or the zero
        // point 8 (Q4_0) / 16 (Q5_0) times Σa.
        constexpr int kZero = T == DType::Q4_0 ? 8 : T == DType::Q5_0 ? 16 : 0;
        I dot = V::ints(-(T == DType::IQ4_NL ? Dot::kSignedBias : kZero) * x.sum);
        if constexpr (T == DType::IQ4_NL) {
          for (int g = 0; g < 4; ++g) {
            dot = Dot::acc_s(dot, lo[g], x.q + 4 * g);
            dot = Dot::acc_s(dot, hi[g], x.q + 16 + 4 * g);
          }
        } else if constexpr (is_q5(T)) {
          // s16 pair sums <= 2·31·128 for 5-bit values: 4 chunks at once.
          dot = Dot::template dot_u_sum<4>(Dot::template dot_u_sum<4>(dot, lo, x.q), hi, x.q + 16);
        } else {
          // s16 pair sums <= 2·15·128 for 4-bit values: the 8 chunks at once.
          const I w8[8] = {lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]};
          dot = Dot::template dot_u_sum<8>(dot, w8, x.q);
        }
        acc[i] = V::fma(V::cvt(dot), V::mul(dw, V::floats(x.d)), acc[i]);
        if constexpr (has_min(T)) accm[i] = V::fma(mw, V::floats(x.d * static_cast<float>(x.sum)), accm[i]);
      }
    }
  }
  for (int i = 0; i < MR; ++i) V::store(out[i], V::add(acc[i], accm[i]));
}

// packed_group for mr (1..MR) activation rows: the full tile, or the ragged last one.
template <class Dot, class V, DType T, int MR>
inline void packed_tile(int mr, const uint8_t* rec, int64_t gs, int64_t nblocks, const ActBlock* const* a,
                        const BlockTerms* const* terms, float (*out)[16]) {
  if constexpr (MR > 1) {
    if (mr < MR) return packed_tile<Dot, V, T, MR - 1>(mr, rec, gs, nblocks, a, terms, out);
  }
  packed_group<Dot, V, T, MR>(rec, gs, nblocks, a, terms, out);
}

// Rows [r0, r1) of the packed groups (rows < W.rows / 8 * 8) for all m activation rows. Groups outer so a
// group's weights stay in L1 while every activation tile passes over them.
template <class Dot, DType T>
void packed_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  const int64_t nrec = records_per_row(T, W.cols), ablocks = W.cols / kQK;
  const int64_t group_bytes = nrec * record_bytes(T);
  const auto* act = static_cast<const ActBlock*>(Xq);
  const auto* packed = static_cast<const uint8_t*>(W.packed);
  thread_local std::vector<BlockTerms> terms;
  if constexpr (has_block_terms(T)) {
    terms.resize(static_cast<size_t>(m * ablocks));
    for (int64_t b = 0; b < m * ablocks; ++b) terms[static_cast<size_t>(b)] = block_terms<T>(act[b]);
  }
  // Activation rows per tile: kTileRows (4 with 16 vector registers, 8 with AVX-512's 32), so each decoded
  // weight chunk serves that many rows and each activation block read serves every weight row of the tile.
  constexpr int kMR = Dot::kTileRows;
  float out[kMR][16];
  const int64_t g_end = (r1 + kPackRows - 1) / kPackRows;
  for (int64_t g = r0 / kPackRows; g < g_end;) {
    // Two groups at once where the Dot's wide vector holds two (Dot::Wide, V512), both groups are in range
    // and a full tile of activation rows shares each decoded chunk. Not for decode (m = 1): two weight
    // streams per thread read DRAM slower than one (1.1B Q4_0, 2 threads: 40 against 53 tokens/s).
    const bool pair = Dot::Wide::kGroups == 2 && m >= kMR && g + 1 < g_end;
    const uint8_t* rec = packed + g * group_bytes;
    const int64_t rbeg = std::max(r0, g * kPackRows), rend = std::min(r1, (g + (pair ? 2 : 1)) * kPackRows);
    for (int64_t i = 0; i < m; i += kMR) {
      const int mr = static_cast<int>(std::min<int64_t>(kMR, m - i));
      const ActBlock* a[kMR];
      const BlockTerms* e[kMR] = {};
      for (int t = 0; t < mr; ++t) {
        a[t] = act + (i + t) * ablocks;
        if constexpr (has_block_terms(T)) e[t] = terms.data() + (i + t) * ablocks;
      }
      if (pair) {
        packed_tile<Dot, typename Dot::Wide, T, kMR>(mr, rec, group_bytes, nrec, a, e, out);
      } else {
        packed_tile<Dot, V256, T, kMR>(mr, rec, 0, nrec, a, e, out);
      }
      for (int t = 0; t < mr; ++t) {
        for (int64_t r = rbeg; r < rend; ++r) Y[(i + t) * ldy + r] = out[t][r - g * kPackRows];
      }
    }
    g += pair ? 2 : 1;
  }
}

// The packed part of [r0, r1), then the GGUF-layout tail through `plain`. False when W is not packed.
template <class Dot, class Plain>
bool matmul_packed(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1,
                   Plain plain) {
  if (W.packed == nullptr || !packable(W.type)) return false;
  const int64_t split = std::clamp(W.rows / kPackRows * kPackRows, r0, r1);
  if (r0 < split) {
    switch (W.type) {
      case DType::Q4_0: packed_rows<Dot, DType::Q4_0>(W, Xq, m, Y, ldy, r0, split); break;
      case DType::Q4_1: packed_rows<Dot, DType::Q4_1>(W, Xq, m, Y, ldy, r0, split); break;
      case DType::Q5_0: packed_rows<Dot, DType::Q5_0>(W, Xq, m, Y, ldy, r0, split); break;
      case DType::Q5_1: packed_rows<Dot, DType::Q5_1>(W, Xq, m, Y, ldy, r0, split); break;
      case DType::IQ4_NL: packed_rows<Dot, DType::IQ4_NL>(W, Xq, m, Y, ldy, r0, split); break;
      case DType::IQ4_XS: packed_rows<Dot, DType::IQ4_XS>(W, Xq, m, Y, ldy, r0, split); break;
      case DType::Q4_K: packed_rows<Dot, DType::Q4_K>(W, Xq, m, Y, ldy, r0, split); break;
      case DType::Q5_K: packed_rows<Dot, DType::Q5_K>(W, Xq, m, Y, ldy, r0, split); break;
      case DType::Q6_K: packed_rows<Dot, DType::Q6_K>(W, Xq, m, Y, ldy, r0, split); break;
      default: packed_rows<Dot, DType::Q8_0>(W, Xq, m, Y, ldy, r0, split); break;
    }
  }
  if (split < r1) plain(W, Xq, m, Y, ldy, split, r1);
  return true;
}

}  // namespace x86
}  // namespace cpullm

#endif  // CPULLM_KERNELS_X86_PACKED_H
