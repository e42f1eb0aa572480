// RMSNorm, SiLU·mul and softmax with 8-float vectors (GCC/Clang vector extensions), compiled once per
// kernel set (ops_<set>.cc) so the instructions come from that file's flags. exp is Cephes' expf
// (Cody-Waite reduction + degree-6 polynomial, ~2 ulp); the ragged end of a row runs the same formula
// one value at a time, so results never depend on where a row starts.
#ifndef CPULLM_KERNELS_OPS_VEC_H
#define CPULLM_KERNELS_OPS_VEC_H

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__)
// 32-byte vectors only pass between internal functions of this file, never across a library boundary.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace cpullm {
namespace {
namespace vec_ops {

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

inline v8 load(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, v8 v) { std::memcpy(p, &v, sizeof v); }
inline v8 splat(float x) { return v8{} + x; }

// exp(x) for any x (underflows to 0 below -87.3, overflows to +inf above 88.7), lane-wise or scalar (T =
// v8 or float); `sel` picks per lane.
template <class T, class I>
inline T exp_impl(T x) {
  const T lo = T{} + -87.33654f, hi = T{} + 88.72283f;
  T c = x < lo ? lo : x;  // vector or scalar ?: (GCC vector extension)
  c = c > hi ? hi : c;
  // n = round(x / ln 2) by the 1.5·2^23 trick (exact for |n| < 2^22), r = x - n ln 2 in two parts.
  const T magic = T{} + 12582912.0f;
  const T n = (c * 1.44269504088896341f + magic) - magic;
  const T r = (c - n * 0.693359375f) + n * 2.12194440e-4f;
  T p = T{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const T y = p * (r * r) + r + 1.0f;
  // 2^n through the exponent field; n >= -126 after the clamp, so no denormal handling is needed.
  I bits;
  if constexpr (sizeof(T) == sizeof(float)) {
    bits = (static_cast<I>(n) + 127) << 23;
  } else {
    bits = (__builtin_convertvector(n, I) + 127) << 23;
  }
  T scale;
  std::memcpy(&scale, &bits, sizeof scale);
  T e = y * scale;
  e = x < lo ? T{} : e;
  return x > hi ? T{} + INFINITY : e;
}

inline v8 exp8(v8 x) { return exp_impl<v8, v8i>(x); }
inline float exp1(float x) { return exp_impl<float, int32_t>(x); }

inline float hsum(v8 v) {
  float s = 0.0f;
  for (int i = 0; i < 8; ++i) s += v[i];
  return s;
}

inline void silu_mul(const float* g, const float* u, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8 gv = load(g + i);
    store(y + i, gv / (1.0f + exp8(-gv)) * load(u + i));
  }
  for (; i < n; ++i) y[i] = g[i] / (1.0f + exp1(-g[i])) * u[i];
}

inline void softmax(float* x, int64_t n) {
  v8 mv = splat(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8 v = load(x + i);
    mv = v > mv ? v : mv;
  }
  float mx = -INFINITY;
  for (int j = 0; j < 8; ++j) mx = std::fmax(mx, mv[j]);
  for (int64_t k = i; k < n; ++k) mx = std::fmax(mx, x[k]);
  v8 sv = splat(0.0f);
  for (i = 0; i + 8 <= n; i += 8) {
    const v8 e = exp8(load(x + i) - mx);
    store(x + i, e);
    sv += e;
  }
  double sum = hsum(sv);
  for (; i < n; ++i) {
    x[i] = exp1(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (i = 0; i + 8 <= n; i += 8) store(x + i, load(x + i) * inv);
  for (; i < n; ++i) x[i] *= inv;
}

inline void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r, x += n, y += n) {
    v8 s0 = splat(0.0f), s1 = splat(0.0f);  // two accumulators: 16 partial sums
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const v8 a = load(x + i), b = load(x + i + 8);
      s0 += a * a;
      s1 += b * b;
    }
    double ss = static_cast<double>(hsum(s0)) + hsum(s1);
    for (; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
    const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
    for (i = 0; i + 8 <= n; i += 8) store(y + i, load(x + i) * scale * load(w + i));
    for (; i < n; ++i) y[i] = x[i] * scale * w[i];
  }
}

}  // namespace vec_ops
}  // namespace
}  // namespace cpullm

#endif  // CPULLM_KERNELS_OPS_VEC_H
