// cpullm_selftest: every fast path compiled into this library against the reference, on awkward random
// shapes, plus thread-count independence. The wheel verifier and the qemu cross-ISA tests call it.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpullm/cpullm.h"
#include "kernels/attention/kv_layout.h"
#include "kernels/kernels.h"

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 for aarch64 crashes (internal compiler error in vect_transform_reduction) vectorizing this
// file's checking loops; their speed does not matter, the kernels they check are compiled elsewhere.
#pragma GCC optimize("no-tree-vectorize")
#endif

namespace {

using cpullm::DType;

// Relative tolerance per weight type, against Σ|w|·|x| of the row (the scale of the rounding error).
// Quantized types: the integer block dots are exact; only the float combination of blocks differs.
// BF16: the fast path may round activations to bf16 pairs (hi + lo), so a little more.
double tolerance(DType t) {
  switch (t) {
    case DType::F32:
    case DType::F16: return 2e-5;
    case DType::BF16: return 1e-4;
    default: return 2e-5;
  }
}

struct Report {
  std::string text;
  int failures = 0;
  int checks = 0;
  void line(const std::string& s) { text += s + "\n"; }
  void check(bool ok, const std::string& what) {
    ++checks;
    if (!ok) {
      ++failures;
      line("FAIL " + what);
    }
  }
};

std::string fmt(const char* f, double a = 0, double b = 0, double c = 0, double d = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c, d);
  return buf;
}

// Random GGUF data for `rows` rows of `cols` values: random bytes, with every f16 scale/min replaced by
// a finite value of a realistic size so products stay finite.
std::vector<uint8_t> random_weights(DType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  const int64_t rb = cpullm::row_bytes(t, cols);
  std::vector<uint8_t> w(static_cast<size_t>(rb * rows));
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& b : w) b = static_cast<uint8_t>(byte(rng));
  auto put16 = [&](size_t off, uint16_t v) { std::memcpy(w.data() + off, &v, 2); };
  const int64_t bb = cpullm::block_bytes(t);
  const int64_t nblocks = rows * cols / cpullm::block_size(t);
  for (int64_t k = 0; k < nblocks; ++k) {
    const size_t base = static_cast<size_t>(k * bb);
    switch (t) {
      case DType::F32: {
        const float v = normal(rng);
        std::memcpy(w.data() + base, &v, 4);
        break;
      }
      case DType::F16: put16(base, cpullm::f32_to_f16(normal(rng))); break;
      case DType::BF16: put16(base, cpullm::f32_to_bf16(normal(rng))); break;
      case DType::Q4_0:
      case DType::Q5_0:
      case DType::Q8_0:
      case DType::IQ4_NL: put16(base, cpullm::f32_to_f16(0.01f * normal(rng))); break;
      case DType::Q4_1:
      case DType::Q5_1:
        put16(base, cpullm::f32_to_f16(0.01f * normal(rng)));
        put16(base + 2, cpullm::f32_to_f16(0.1f * normal(rng)));
        break;
      case DType::Q4_K:
      case DType::Q5_K:
        put16(base, cpullm::f32_to_f16(0.001f * normal(rng)));
        put16(base + 2, cpullm::f32_to_f16(0.001f * normal(rng)));
        break;
      case DType::IQ4_XS: put16(base, cpullm::f32_to_f16(0.001f * normal(rng))); break;
      case DType::Q2_K:
        put16(base + 80, cpullm::f32_to_f16(0.001f * normal(rng)));
        put16(base + 82, cpullm::f32_to_f16(0.001f * normal(rng)));
        break;
      case DType::Q3_K: put16(base + 108, cpullm::f32_to_f16(0.001f * normal(rng))); break;
      case DType::Q6_K: put16(base + 208, cpullm::f32_to_f16(0.001f * normal(rng))); break;
    }
  }
  return w;
}

std::vector<float> random_floats(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(rng);
  return x;
}

void test_quantize(Report& r, std::mt19937& rng) {
  for (int64_t n : {32, 96, 544, 4096}) {
    auto x = random_floats(n, rng);
    if (n >= 96) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // an all-zero block
    std::vector<cpullm::ActBlock> a(n / 32), b(n / 32);
    cpullm::quantize_act(x.data(), n, a.data());
    cpullm::ref::quantize_act(x.data(), n, b.data());
    r.check(
        std::memcmp(a.data(), b.data(), a.size() * sizeof(cpullm::ActBlock)) == 0,
        fmt("quantize_act n=%g: fast path differs from the reference (must be bitwise equal)", double(n)));
  }
}

// One matmul shape: best (threaded, three pool sizes, bitwise equal) vs reference within tolerance.
void test_matmul_shape(Report& r, DType t, int64_t rows, int64_t cols, int64_t m, std::mt19937& rng,
                       double* worst) {
  auto w = random_weights(t, rows, cols, rng);
  auto x = random_floats(m * cols, rng);
  const cpullm::Matrix W{t, rows, cols, w.data()};
  // Reference: quantize with the reference, multiply with the reference.
  const int64_t xb = cpullm::act_row_bytes(t, cols);
  std::vector<uint8_t> xq(static_cast<size_t>(xb * m));
  for (int64_t i = 0; i < m; ++i) {
    if (cpullm::uses_act_blocks(t))
      cpullm::ref::quantize_act(x.data() + i * cols, cols,
                                reinterpret_cast<cpullm::ActBlock*>(xq.data() + i * xb));
    else
      std::memcpy(xq.data() + i * xb, x.data() + i * cols, cols * 4);
  }
  std::vector<float> want(static_cast<size_t>(m * rows)), got1(want.size()), got(want.size());
  cpullm::ref::matmul_rows(W, xq.data(), m, want.data(), rows, 0, rows);
  // The error scale of each output: Σ_c |W[r,c]| · |x̂[i,c]| with x̂ the (de)quantized activations.
  std::vector<float> wrow(static_cast<size_t>(cols)), xhat(static_cast<size_t>(m * cols));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t c = 0; c < cols; ++c) {
      if (cpullm::uses_act_blocks(t)) {
        const auto* a = reinterpret_cast<const cpullm::ActBlock*>(xq.data() + i * xb) + c / 32;
        xhat[i * cols + c] = a->d * a->q[c % 32];
      } else {
        xhat[i * cols + c] = x[i * cols + c];
      }
    }
  }
  // The repacked layout when this library has one for the type (both paths must match the reference).
  std::vector<uint8_t> packed(static_cast<size_t>(cpullm::packed_bytes(W)));
  cpullm::Matrix P = W;
  if (!packed.empty()) {
    cpullm::repack(W, packed.data());
    P.packed = packed.data();
  }
  for (int threads : {1, 2, 3}) {
    cpullm::ThreadPool pool(threads);
    cpullm::matmul(P, x.data(), m, threads == 1 ? got1.data() : got.data(), &pool);
    if (threads > 1) {
      r.check(std::memcmp(got1.data(), got.data(), got.size() * 4) == 0,
              std::string("matmul ") + cpullm::dtype_name(t) +
                  fmt(" rows=%g cols=%g m=%g: the result with %g threads differs from 1 thread", double(rows),
                      double(cols), double(m), threads));
    }
  }
  std::vector<float> plain(want.size());
  cpullm::matmul(W, x.data(), m, plain.data(), nullptr);
  bool ok = true;
  for (int64_t rr = 0; rr < rows && ok; ++rr) {
    cpullm::dequant_row(W, rr, wrow.data());
    for (int64_t i = 0; i < m; ++i) {
      double scale = 0.0;
      for (int64_t c = 0; c < cols; ++c) scale += std::fabs(double(wrow[c]) * xhat[i * cols + c]);
      const double err = std::fmax(std::fabs(double(got1[i * rows + rr]) - want[i * rows + rr]),
                                   std::fabs(double(plain[i * rows + rr]) - want[i * rows + rr]));
      const double tol = tolerance(t) * scale + 1e-30;
      if (!(err <= tol)) {
        r.check(false, std::string("matmul ") + cpullm::dtype_name(t) +
                           fmt(" rows=%g cols=%g m=%g: output differs from the reference by %g", double(rows),
                               double(cols), double(m), err) +
                           fmt(" (tolerance %g)", tol));
        ok = false;
        break;
      }
      if (scale > 0) *worst = std::fmax(*worst, err / tol);
    }
  }
  if (ok) r.check(true, "");
}

void test_matmul(Report& r, std::mt19937& rng) {
  const DType types[] = {
#define CPULLM_DTYPE(name, id, block_size, block_bytes) DType::name,
#include "kernels/dtypes.def"
  };
  for (DType t : types) {
    const int64_t bs = cpullm::block_size(t);
    const int64_t unit = bs == 1 ? 1 : bs;
    // (rows, cols in blocks, m): one row, odd rows, rows around tile sizes, several activation rows, and
    // m >= 16 with ragged edges (the AMX tile path).
    const int64_t shapes[][3] = {{1, 1, 1},  {1, 3, 1},  {5, 7, 1},  {17, 2, 1}, {33, 5, 1}, {3, 1, 2},
                                 {19, 3, 5}, {16, 4, 4}, {40, 9, 7}, {7, 2, 13}, {35, 3, 19}};
    double worst = 0.0;
    for (const auto& s : shapes) {
      int64_t cols = s[1] * unit;
      if (bs == 1) cols = s[1] * 37 + 3;  // float types: odd lengths, not multiples of any vector width
      test_matmul_shape(r, t, s[0], cols, s[2], rng, &worst);
    }
    r.line(std::string("matmul ") + cpullm::dtype_name(t) +
           fmt(": %g shapes, worst error/tolerance %.3g", double(sizeof shapes / sizeof shapes[0]), worst));
  }
}

// Attention (the dispatching entry point, threaded) vs the reference on a paged cache with scattered
// blocks, GQA, F32, F16 and Q8_0 storage (Q8_0: the shapes with head_dim % 32 == 0), with and without a
// sliding window and soft-capped scores: |fast - ref| <= 1e-4 · max(1, |ref|) (outputs are O(1) averages).
void test_attention(Report& r, std::mt19937& rng) {
  // (n_heads, n_kv_heads, head_dim, block_size, n_ctx, n_q, window, softcap)
  const int shapes[][8] = {{9, 3, 64, 16, 37, 1, 0, 0},   {4, 4, 32, 8, 20, 20, 0, 0},
                           {6, 2, 48, 32, 70, 5, 0, 0},   {2, 1, 64, 4, 1, 1, 0, 0},
                           {8, 2, 64, 16, 70, 20, 13, 1}, {4, 2, 32, 16, 90, 1, 40, 0},
                           {6, 3, 64, 32, 50, 7, 0, 1}};
  const int n_shapes = static_cast<int>(sizeof shapes / sizeof shapes[0]);
  double worst = 0.0;
  int n_runs = 0;
  for (DType t : {DType::F32, DType::F16, DType::Q8_0}) {
    for (const auto& s : shapes) {
      const int n_heads = s[0], n_kv = s[1], hd = s[2], bs = s[3], n_ctx = s[4], n_q = s[5];
      if (t == DType::Q8_0 && hd % cpullm::kvlayout::kQ8Group != 0) continue;
      ++n_runs;
      const int n_blocks = (n_ctx + bs - 1) / bs + 2;
      std::vector<int32_t> table(static_cast<size_t>(n_blocks));
      for (int b = 0; b < n_blocks; ++b) table[b] = n_blocks - 1 - b;  // physical order reversed
      cpullm::KVCache kv{t, bs, n_kv, hd, nullptr, nullptr, table.data()};
      const auto pool = static_cast<size_t>(n_blocks * n_kv * cpullm::kvlayout::tile_bytes(kv));
      std::vector<uint8_t> kpool(pool), vpool(pool);
      kv.k_pool = kpool.data();
      kv.v_pool = vpool.data();
      kv.window = s[6];
      kv.softcap = static_cast<float>(s[7]);
      auto k = random_floats(int64_t(n_ctx) * n_kv * hd, rng),
           v = random_floats(int64_t(n_ctx) * n_kv * hd, rng);
      cpullm::kv_write(kv, k.data(), v.data(), 0, n_ctx);
      auto q = random_floats(int64_t(n_q) * n_heads * hd, rng);
      const int64_t pos0 = n_ctx - n_q;
      const float scale = 1.0f / std::sqrt(float(hd));
      std::vector<float> want(q.size()), got1(q.size()), got(q.size());
      cpullm::ref::attention_items(q.data(), n_q, pos0, n_heads, kv, scale, want.data(), 0,
                                   int64_t(n_q) * n_heads);
      for (int threads : {1, 2, 3}) {
        cpullm::ThreadPool tp(threads);
        cpullm::attention(q.data(), n_q, pos0, n_heads, kv, scale, threads == 1 ? got1.data() : got.data(),
                          &tp);
        if (threads > 1) {
          r.check(std::memcmp(got1.data(), got.data(), got.size() * 4) == 0,
                  std::string("attention ") + cpullm::dtype_name(t) +
                      fmt(" heads=%g ctx=%g n_q=%g: the result with %g threads differs from 1 thread",
                          n_heads, n_ctx, n_q, threads));
        }
      }
      double err = 0.0;
      for (size_t i = 0; i < q.size(); ++i) {
        err =
            std::fmax(err, std::fabs(double(got1[i]) - want[i]) / std::fmax(1.0, std::fabs(double(want[i]))));
      }
      r.check(err <= 1e-4,
              std::string("attention ") + cpullm::dtype_name(t) +
                  fmt(" heads=%g ctx=%g n_q=%g: differs from the reference by %g (tolerance 1e-4)", n_heads,
                      n_ctx, n_q, err));
      worst = std::fmax(worst, err / 1e-4);
    }
  }
  r.line(
      fmt("attention: F32, F16 and Q8_0 caches, %g runs of %g shapes (windows, soft-caps), worst "
          "error/tolerance %.3g",
          n_runs, n_shapes, worst));
}

// Row ops through the dispatching entry points vs the references: 4e-6 relative (exp approximation).
void test_ops(Report& r, std::mt19937& rng) {
  auto close = [](const std::vector<float>& a, const std::vector<float>& b) {
    double worst = 0.0;
    for (size_t i = 0; i < a.size(); ++i) {
      worst = std::fmax(worst, std::fabs(double(a[i]) - b[i]) / (4e-6 * std::fabs(double(b[i])) + 1e-7));
    }
    return worst;  // <= 1 passes
  };
  double worst = 0.0;
  for (int64_t n : {1, 7, 576, 1541}) {
    auto g = random_floats(n, rng), u = random_floats(n, rng), w = random_floats(n, rng);
    for (auto& v : g) v *= 8.0f;
    std::vector<float> a(static_cast<size_t>(n)), b(a.size());
    cpullm::silu_mul(g.data(), u.data(), a.data(), n);
    cpullm::ref::silu_mul(g.data(), u.data(), b.data(), n);
    const double e1 = close(a, b);
    a = g;
    b = g;
    cpullm::softmax(a.data(), n);
    cpullm::ref::softmax(b.data(), n);
    const double e2 = close(a, b);
    cpullm::rmsnorm(u.data(), w.data(), a.data(), 1, n, 1e-5f);
    cpullm::ref::rmsnorm(u.data(), w.data(), b.data(), 1, n, 1e-5f);
    const double e3 = close(a, b);
    r.check(
        e1 <= 1 && e2 <= 1 && e3 <= 1,
        fmt("row ops n=%g: silu_mul, softmax, rmsnorm error/tolerance %g, %g, %g", double(n), e1, e2, e3));
    worst = std::fmax(worst, std::fmax(e1, std::fmax(e2, e3)));
  }
  r.line(fmt("row ops: silu_mul, softmax, rmsnorm, 4 lengths, worst error/tolerance %.3g", worst));
}

}  // namespace

extern "C" int cpullm_selftest(char* report, size_t n) {
  Report r;
  r.line(std::string("cpullm selftest: variant ") + cpullm_variant_name() + ", fast paths " +
         cpullm::best_kernel_set() + " vs ref");
  std::mt19937 rng(20261121);
  test_quantize(r, rng);
  test_matmul(r, rng);
  test_attention(r, rng);
  test_ops(r, rng);
  r.line(fmt("%g checks, %g failed", r.checks, r.failures));
  if (report && n > 0) {
    std::strncpy(report, r.text.c_str(), n - 1);
    report[n - 1] = '\0';
  }
  return r.failures;
}
