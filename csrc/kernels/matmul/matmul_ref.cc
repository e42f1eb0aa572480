// Reference matrix products: one weight row × one activation row at a time, exact integer block dots,
// then the block's float scales. The fast paths must agree with this to float rounding.
#include "kernels/blocks.h"
#include "kernels/kernels.h"

namespace cpullm {
namespace ref {
namespace {

// Σ_c W[row, c] · x[c] for one weight row (GGUF layout) and one prepared activation row.
float dot_row(DType type, const void* wrow, const void* xrow, int64_t cols) {
  const auto* a = static_cast<const ActBlock*>(xrow);
  const int64_t nb = cols / kQK;
  float acc = 0.0f;
  switch (type) {
    case DType::Q4_0: {
      const auto* w = static_cast<const BlockQ4_0*>(wrow);
      for (int64_t k = 0; k < nb; ++k) {
        int32_t s = 0;
        for (int i = 0; i < 16; ++i) {
          s += ((w[k].qs[i] & 0xF) - 8) * a[k].q[i] + ((w[k].qs[i] >> 4) - 8) * a[k].q[i + 16];
        }
        acc += f16_to_f32(w[k].d) * a[k].d * static_cast<float>(s);
      }
      return acc;
    }
    case DType::Q4_1: {
      const auto* w = static_cast<const BlockQ4_1*>(wrow);
      for (int64_t k = 0; k < nb; ++k) {
        int32_t s = 0;
        for (int i = 0; i < 16; ++i) s += (w[k].qs[i] & 0xF) * a[k].q[i] + (w[k].qs[i] >> 4) * a[k].q[i + 16];
        acc += f16_to_f32(w[k].d) * a[k].d * static_cast<float>(s) +
               f16_to_f32(w[k].m) * (a[k].d * static_cast<float>(a[k].sum));
      }
      return acc;
    }
    case DType::Q5_0: {
      const auto* w = static_cast<const BlockQ5_0*>(wrow);
      for (int64_t k = 0; k < nb; ++k) {
        int32_t s = 0;
        for (int e = 0; e < kQK; ++e) s += (q5_value(w[k].qh, w[k].qs, e) - 16) * a[k].q[e];
        acc += f16_to_f32(w[k].d) * a[k].d * static_cast<float>(s);
      }
      return acc;
    }
    case DType::Q5_1: {
      const auto* w = static_cast<const BlockQ5_1*>(wrow);
      for (int64_t k = 0; k < nb; ++k) {
        int32_t s = 0;
        for (int e = 0; e < kQK; ++e) s += q5_value(w[k].qh, w[k].qs, e) * a[k].q[e];
        acc += f16_to_f32(w[k].d) * a[k].d * static_cast<float>(s) +
               f16_to_f32(w[k].m) * (a[k].d * static_cast<float>(a[k].sum));
      }
      return acc;
    }
    case DType::IQ4_NL: {
      const auto* w = static_cast<const BlockIQ4_NL*>(wrow);
      for (int64_t k = 0; k < nb; ++k) {
        int32_t s = 0;
        for (int i = 0; i < 16; ++i) {
          s += kIQ4NL[w[k].qs[i] & 0xF] * a[k].q[i] + kIQ4NL[w[k].qs[i] >> 4] * a[k].q[i + 16];
        }
        acc += f16_to_f32(w[k].d) * a[k].d * static_cast<float>(s);
      }
      return acc;
    }
    case DType::IQ4_XS: {
      const auto* w = static_cast<const BlockIQ4_XS*>(wrow);
      for (int64_t k = 0; k < cols / kQKK; ++k) {
        const float d = f16_to_f32(w[k].d);
        for (int j = 0; j < 8; ++j) {
          const ActBlock& x = a[k * 8 + j];
          const uint8_t* q = w[k].qs + 16 * j;
          int32_t s = 0;
          for (int i = 0; i < 16; ++i) s += kIQ4NL[q[i] & 0xF] * x.q[i] + kIQ4NL[q[i] >> 4] * x.q[i + 16];
          // |scale · s| <= 32 · 32 · 127 · 127 < 2^24: exact as a float.
          acc += d * x.d * static_cast<float>(iq4xs_scale(w[k], j) * s);
        }
      }
      return acc;
    }
    case DType::Q8_0: {
      const auto* w = static_cast<const BlockQ8_0*>(wrow);
      for (int64_t k = 0; k < nb; ++k) {
        int32_t s = 0;
        for (int i = 0; i < kQK; ++i) s += w[k].qs[i] * a[k].q[i];
        acc += f16_to_f32(w[k].d) * a[k].d * static_cast<float>(s);
      }
      return acc;
    }
    case DType::Q2_K: {
      const auto* w = static_cast<const BlockQ2_K*>(wrow);
      for (int64_t k = 0; k < cols / kQKK; ++k) {
        const float d = f16_to_f32(w[k].d), dmin = f16_to_f32(w[k].dmin);
        for (int j = 0; j < 8; ++j) {
          const ActBlock& x = a[k * 8 + j];
          int32_t s = 0, mn = 0;  // Σ_halves scale·Σq·a and min·Σa: exact integers
          for (int h = 0; h < 2; ++h) {
            const uint8_t sm = w[k].scales[2 * j + h];
            int32_t sq = 0, sa = 0;
            for (int i = 16 * h; i < 16 * h + 16; ++i) {
              sq += q2k_low(w[k].qs, 32 * j + i) * x.q[i];
              sa += x.q[i];
            }
            s += (sm & 0xF) * sq;
            mn += (sm >> 4) * sa;
          }
          acc += d * x.d * static_cast<float>(s) - dmin * (x.d * static_cast<float>(mn));
        }
      }
      return acc;
    }
    case DType::Q3_K: {
      const auto* w = static_cast<const BlockQ3_K*>(wrow);
      for (int64_t k = 0; k < cols / kQKK; ++k) {
        const float d = f16_to_f32(w[k].d);
        for (int j = 0; j < 8; ++j) {
          const ActBlock& x = a[k * 8 + j];
          int32_t s0 = 0, s1 = 0;
          for (int i = 0; i < 16; ++i) {
            s0 += q3k_value(w[k], 32 * j + i) * x.q[i];
            s1 += q3k_value(w[k], 32 * j + 16 + i) * x.q[i + 16];
          }
          const int32_t s = q3k_scale(w[k].scales, 2 * j) * s0 + q3k_scale(w[k].scales, 2 * j + 1) * s1;
          acc += d * x.d * static_cast<float>(s);
        }
      }
      return acc;
    }
    case DType::Q4_K: {
      const auto* w = static_cast<const BlockQ4_K*>(wrow);
      for (int64_t k = 0; k < cols / kQKK; ++k) {
        const float d = f16_to_f32(w[k].d), dmin = f16_to_f32(w[k].dmin);
        for (int j = 0; j < 8; ++j) {
          const ActBlock& x = a[k * 8 + j];
          uint8_t sc, m;
          q4k_scale_min(j, w[k].scales, &sc, &m);
          const uint8_t* q = w[k].qs + 32 * (j / 2);
          const int shift = 4 * (j % 2);
          int32_t s = 0;
          for (int i = 0; i < 32; ++i) s += ((q[i] >> shift) & 0xF) * x.q[i];
          acc += d * x.d * static_cast<float>(sc * s) - dmin * (x.d * static_cast<float>(m * x.sum));
        }
      }
      return acc;
    }
    case DType::Q5_K: {
      const auto* w = static_cast<const BlockQ5_K*>(wrow);
      for (int64_t k = 0; k < cols / kQKK; ++k) {
        const float d = f16_to_f32(w[k].d), dmin = f16_to_f32(w[k].dmin);
        for (int j = 0; j < 8; ++j) {
          const ActBlock& x = a[k * 8 + j];
          uint8_t sc, m;
          q4k_scale_min(j, w[k].scales, &sc, &m);
          const uint8_t* q = w[k].qs + 32 * (j / 2);
          const int shift = 4 * (j % 2);
          int32_t s = 0;
          for (int i = 0; i < 32; ++i)
            s += (((q[i] >> shift) & 0xF) | (((w[k].qh[i] >> j) & 1) << 4)) * x.q[i];
          acc += d * x.d * static_cast<float>(sc * s) - dmin * (x.d * static_cast<float>(m * x.sum));
        }
      }
      return acc;
    }
    case DType::Q6_K: {
      const auto* w = static_cast<const BlockQ6_K*>(wrow);
      for (int64_t k = 0; k < cols / kQKK; ++k) {
        const float d = f16_to_f32(w[k].d);
        for (int j = 0; j < 8; ++j) {
          const ActBlock& x = a[k * 8 + j];
          int32_t s0 = 0, s1 = 0;
          for (int i = 0; i < 16; ++i) {
            s0 += q6k_value(w[k], 32 * j + i) * x.q[i];
            s1 += q6k_value(w[k], 32 * j + 16 + i) * x.q[i + 16];
          }
          const int32_t s = w[k].scales[2 * j] * s0 + w[k].scales[2 * j + 1] * s1;
          acc += d * x.d * static_cast<float>(s);
        }
      }
      return acc;
    }
    case DType::F32:
    case DType::F16:
    case DType::BF16: {
      // Float weights: accumulate in double, the reference being the accurate answer.
      const auto* x = static_cast<const float*>(xrow);
      double s = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        float wv;
        if (type == DType::F32)
          wv = static_cast<const float*>(wrow)[c];
        else if (type == DType::F16)
          wv = f16_to_f32(static_cast<const uint16_t*>(wrow)[c]);
        else
          wv = bf16_to_f32(static_cast<const uint16_t*>(wrow)[c]);
        s += static_cast<double>(wv) * x[c];
      }
      return static_cast<float>(s);
    }
  }
  return acc;
}

}  // namespace

void matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  const int64_t wbytes = row_bytes(W.type, W.cols);
  const int64_t xbytes = act_row_bytes(W.type, W.cols);
  const auto* wdata = static_cast<const uint8_t*>(W.data);
  const auto* xdata = static_cast<const uint8_t*>(Xq);
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t i = 0; i < m; ++i) {
      Y[i * ldy + r] = dot_row(W.type, wdata + r * wbytes, xdata + i * xbytes, W.cols);
    }
  }
}

}  // namespace ref
}  // namespace cpullm
