// f16/bf16 conversion, activation quantization and dequantization: the scalar reference.
#include <cmath>
#include <cstring>

#include "kernels/blocks.h"
#include "kernels/kernels.h"

namespace cpullm {

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t mant = h & 0x3FF;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in f32
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7F800000u | (mant << 13));
  return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

// Round to nearest even through float arithmetic (the FP16 library's method, exact for every input).
uint16_t f32_to_f16(float f) {
  const float scale_to_inf = 0x1.0p+112f;
  const float scale_to_zero = 0x1.0p-110f;
  float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;
  const uint32_t w = f32_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = bits_f32((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = f32_bits(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

float bf16_to_f32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }

uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 64);  // quiet NaN
  u += 0x7FFFu + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

namespace ref {

void quantize_act(const float* x, int64_t n, ActBlock* out) {
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK) {
    float amax = 0.0f;
    for (int i = 0; i < kQK; ++i) amax = std::fmax(amax, std::fabs(x[i]));
    const float d = act_scale(amax);
    const float id = act_inv_scale(d);
    int32_t sum = 0;
    for (int i = 0; i < kQK; ++i) {
      const int q = static_cast<int>(std::nearbyint(x[i] * id));
      out[b].q[i] = static_cast<int8_t>(q);
      sum += q;
    }
    out[b].d = d;
    out[b].sum = sum;
  }
}

void dequantize(DType type, const void* data, int64_t n, float* y) {
  switch (type) {
    case DType::F32: std::memcpy(y, data, n * 4); return;
    case DType::F16: {
      const auto* h = static_cast<const uint16_t*>(data);
      for (int64_t i = 0; i < n; ++i) y[i] = f16_to_f32(h[i]);
      return;
    }
    case DType::BF16: {
      const auto* h = static_cast<const uint16_t*>(data);
      for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(h[i]);
      return;
    }
    case DType::Q4_0: {
      const auto* b = static_cast<const BlockQ4_0*>(data);
      for (int64_t k = 0; k < n / kQK; ++k, y += kQK) {
        const float d = f16_to_f32(b[k].d);
        for (int i = 0; i < 16; ++i) {
          y[i] = d * static_cast<float>((b[k].qs[i] & 0xF) - 8);
          y[i + 16] = d * static_cast<float>((b[k].qs[i] >> 4) - 8);
        }
      }
      return;
    }
    case DType::Q4_1: {
      const auto* b = static_cast<const BlockQ4_1*>(data);
      for (int64_t k = 0; k < n / kQK; ++k, y += kQK) {
        const float d = f16_to_f32(b[k].d), m = f16_to_f32(b[k].m);
        for (int i = 0; i < 16; ++i) {
          y[i] = d * static_cast<float>(b[k].qs[i] & 0xF) + m;
          y[i + 16] = d * static_cast<float>(b[k].qs[i] >> 4) + m;
        }
      }
      return;
    }
    case DType::Q5_0: {
      const auto* b = static_cast<const BlockQ5_0*>(data);
      for (int64_t k = 0; k < n / kQK; ++k, y += kQK) {
        const float d = f16_to_f32(b[k].d);
        for (int e = 0; e < kQK; ++e) y[e] = d * static_cast<float>(q5_value(b[k].qh, b[k].qs, e) - 16);
      }
      return;
    }
    case DType::Q5_1: {
      const auto* b = static_cast<const BlockQ5_1*>(data);
      for (int64_t k = 0; k < n / kQK; ++k, y += kQK) {
        const float d = f16_to_f32(b[k].d), m = f16_to_f32(b[k].m);
        for (int e = 0; e < kQK; ++e) y[e] = d * static_cast<float>(q5_value(b[k].qh, b[k].qs, e)) + m;
      }
      return;
    }
    case DType::IQ4_NL: {
      const auto* b = static_cast<const BlockIQ4_NL*>(data);
      for (int64_t k = 0; k < n / kQK; ++k, y += kQK) {
        const float d = f16_to_f32(b[k].d);
        for (int i = 0; i < 16; ++i) {
          y[i] = d * static_cast<float>(kIQ4NL[b[k].qs[i] & 0xF]);
          y[i + 16] = d * static_cast<float>(kIQ4NL[b[k].qs[i] >> 4]);
        }
      }
      return;
    }
    case DType::IQ4_XS: {  // gguf.quants: dl = d · scale, then dl · value
      const auto* b = static_cast<const BlockIQ4_XS*>(data);
      for (int64_t k = 0; k < n / kQKK; ++k) {
        const float d = f16_to_f32(b[k].d);
        for (int j = 0; j < 8; ++j, y += 32) {
          const float dl = d * static_cast<float>(iq4xs_scale(b[k], j));
          const uint8_t* q = b[k].qs + 16 * j;
          for (int i = 0; i < 16; ++i) {
            y[i] = dl * static_cast<float>(kIQ4NL[q[i] & 0xF]);
            y[i + 16] = dl * static_cast<float>(kIQ4NL[q[i] >> 4]);
          }
        }
      }
      return;
    }
    case DType::Q8_0: {
      const auto* b = static_cast<const BlockQ8_0*>(data);
      for (int64_t k = 0; k < n / kQK; ++k, y += kQK) {
        const float d = f16_to_f32(b[k].d);
        for (int i = 0; i < kQK; ++i) y[i] = d * static_cast<float>(b[k].qs[i]);
      }
      return;
    }
    case DType::Q2_K: {  // gguf.quants: dl = d · scale, ml = dmin · min, then dl · q - ml
      const auto* b = static_cast<const BlockQ2_K*>(data);
      for (int64_t k = 0; k < n / kQKK; ++k, y += kQKK) {
        const float d = f16_to_f32(b[k].d), dmin = f16_to_f32(b[k].dmin);
        for (int e = 0; e < kQKK; ++e) {
          const uint8_t sm = b[k].scales[e / 16];
          const float dl = d * static_cast<float>(sm & 0xF), ml = dmin * static_cast<float>(sm >> 4);
          y[e] = dl * static_cast<float>(q2k_low(b[k].qs, e)) - ml;
        }
      }
      return;
    }
    case DType::Q3_K: {  // gguf.quants: dl = d · scale, then dl · q
      const auto* b = static_cast<const BlockQ3_K*>(data);
      for (int64_t k = 0; k < n / kQKK; ++k, y += kQKK) {
        const float d = f16_to_f32(b[k].d);
        for (int e = 0; e < kQKK; ++e) {
          y[e] = (d * static_cast<float>(q3k_scale(b[k].scales, e / 16))) *
                 static_cast<float>(q3k_value(b[k], e));
        }
      }
      return;
    }
    case DType::Q4_K: {
      const auto* b = static_cast<const BlockQ4_K*>(data);
      for (int64_t k = 0; k < n / kQKK; ++k) {
        const float d = f16_to_f32(b[k].d), dmin = f16_to_f32(b[k].dmin);
        for (int j = 0; j < 8; ++j, y += 32) {
          uint8_t sc, m;
          q4k_scale_min(j, b[k].scales, &sc, &m);
          const float dl = d * sc, ml = dmin * m;
          const uint8_t* q = b[k].qs + 32 * (j / 2);
          const int shift = 4 * (j % 2);
          for (int i = 0; i < 32; ++i) y[i] = dl * static_cast<float>((q[i] >> shift) & 0xF) - ml;
        }
      }
      return;
    }
    case DType::Q5_K: {
      const auto* b = static_cast<const BlockQ5_K*>(data);
      for (int64_t k = 0; k < n / kQKK; ++k) {
        const float d = f16_to_f32(b[k].d), dmin = f16_to_f32(b[k].dmin);
        for (int j = 0; j < 8; ++j, y += 32) {
          uint8_t sc, m;
          q4k_scale_min(j, b[k].scales, &sc, &m);
          const float dl = d * sc, ml = dmin * m;
          const uint8_t* q = b[k].qs + 32 * (j / 2);
          const int shift = 4 * (j % 2);
          for (int i = 0; i < 32; ++i) {
            const int v = ((q[i] >> shift) & 0xF) | (((b[k].qh[i] >> j) & 1) << 4);
            y[i] = dl * static_cast<float>(v) - ml;
          }
        }
      }
      return;
    }
    case DType::Q6_K: {
      const auto* b = static_cast<const BlockQ6_K*>(data);
      for (int64_t k = 0; k < n / kQKK; ++k, y += kQKK) {
        const float d = f16_to_f32(b[k].d);
        for (int e = 0; e < kQKK; ++e) {
          y[e] = (d * static_cast<float>(b[k].scales[e / 16])) * static_cast<float>(q6k_value(b[k], e));
        }
      }
      return;
    }
  }
}

}  // namespace ref
}  // namespace cpullm
