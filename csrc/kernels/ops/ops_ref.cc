// Reference element-wise and row ops: RMSNorm, SiLU·mul, GELU·mul, soft-capping, add, softmax, argmax, RoPE.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/kernels.h"

namespace cpullm {
namespace ref {

void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r, x += n, y += n) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
    const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
  }
}

void silu_mul(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void gelu_tanh_mul(const float* g, const float* u, float* y, int64_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i];
    y[i] = 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x))) * u[i];
  }
}

void softcap(float* x, int64_t n, float cap) {
  const float inv = 1.0f / cap;
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] * inv);
}

void add(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void softmax(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::fmax(mx, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best] || (std::isnan(x[best]) && !std::isnan(x[i]))) best = i;
  }
  return best;
}

void rope(float* x, int64_t n_tokens, int32_t n_heads, int32_t head_dim, const int32_t* pos,
          const RopeParams& p) {
  const int32_t half = p.rot_dims / 2;
  std::vector<float> cs(2 * static_cast<size_t>(half));
  // theta_scale^i computed by repeated multiplication, as ggml does, so logits track llama.cpp closely.
  const float theta_scale = std::pow(p.theta_base, -2.0f / static_cast<float>(p.rot_dims));
  // YaRN's magnitude correction, for every pair.
  const float mscale =
      p.ext_factor != 0.0f ? p.attn_factor * (1.0f + 0.1f * std::log(1.0f / p.freq_scale)) : p.attn_factor;
  for (int64_t t = 0; t < n_tokens; ++t) {
    float theta = static_cast<float>(pos[t]);  // unscaled angle of pair i: pos · theta_scale^i
    for (int32_t i = 0; i < half; ++i) {
      const float extrap = theta / (p.freq_factors ? p.freq_factors[i] : 1.0f);
      float angle = p.freq_scale * extrap;
      if (p.ext_factor != 0.0f) {
        // 1 below corr_low (keep the unscaled angle), 0 above corr_high (the scaled one), linear between
        const float y = (static_cast<float>(i) - p.corr_low) / std::max(0.001f, p.corr_high - p.corr_low);
        const float mix = (1.0f - std::min(1.0f, std::max(0.0f, y))) * p.ext_factor;
        angle = angle * (1.0f - mix) + extrap * mix;
      }
      cs[2 * i] = std::cos(angle) * mscale;
      cs[2 * i + 1] = std::sin(angle) * mscale;
      theta *= theta_scale;
    }
    for (int32_t h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * static_cast<int64_t>(head_dim);
      for (int32_t i = 0; i < half; ++i) {
        const int32_t a = p.mode == RopeMode::Neox ? i : 2 * i;
        const int32_t b = p.mode == RopeMode::Neox ? i + half : 2 * i + 1;
        const float x0 = v[a], x1 = v[b], c = cs[2 * i], s = cs[2 * i + 1];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
      }
    }
  }
}

}  // namespace ref
}  // namespace cpullm
