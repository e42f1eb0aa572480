// The dispatching entry points of kernels.h: try the fast paths compiled into this variant, best first,
// then fall back to the reference. Also the pool-splitting convenience wrappers.
#include <algorithm>
#include <vector>

#include "kernels/blocks.h"
#include "kernels/fast.h"
#include "kernels/kernels.h"

namespace cpullm {

const char* best_kernel_set() {
#if CPULLM_KSET_AMX
  if (amx::usable()) return "amx";
#endif
#if CPULLM_KSET_AVX512_BF16
  return "avx512_bf16";
#elif CPULLM_KSET_AVX512_VNNI
  return "avx512_vnni";
#elif CPULLM_KSET_AVX512
  return "avx512";
#elif CPULLM_KSET_AVX_VNNI
  return "avx_vnni";
#elif CPULLM_KSET_AVX2
  return "avx2";
#elif CPULLM_KSET_I8MM
  return "i8mm";
#elif CPULLM_KSET_DOTPROD
  return "dotprod";
#elif CPULLM_KSET_NEON
  return "neon";
#else
  return "ref";
#endif
}

void quantize_act(const float* x, int64_t n, ActBlock* out) {
#if CPULLM_KSET_AVX512
  if (avx512::quantize_act(x, n, out)) return;
#endif
#if CPULLM_KSET_AVX2
  if (avx2::quantize_act(x, n, out)) return;
#endif
#if CPULLM_KSET_NEON
  if (neon::quantize_act(x, n, out)) return;
#endif
  ref::quantize_act(x, n, out);
}

void prepare_act(DType type, const float* X, int64_t m, int64_t cols, void* Xq) {
  auto* out = static_cast<uint8_t*>(Xq);
  const int64_t bytes = act_row_bytes(type, cols);
  for (int64_t i = 0; i < m; ++i) {
    if (uses_act_blocks(type)) {
      quantize_act(X + i * cols, cols, reinterpret_cast<ActBlock*>(out + i * bytes));
    } else {
      std::copy(X + i * cols, X + (i + 1) * cols, reinterpret_cast<float*>(out + i * bytes));
    }
  }
}

int64_t packed_bytes(const Matrix& W) {
#if CPULLM_KSET_AVX2
  return avx2::packed_bytes(W);
#elif CPULLM_KSET_DOTPROD
  return dotprod::packed_bytes(W);
#else
  (void)W;
  return 0;
#endif
}

void repack(const Matrix& W, void* dst) {
#if CPULLM_KSET_AVX2
  avx2::repack(W, dst);
#elif CPULLM_KSET_DOTPROD
  dotprod::repack(W, dst);
#else
  (void)W;
  (void)dst;
#endif
}

void matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  if (r0 >= r1 || m <= 0) return;
#if CPULLM_KSET_AMX
  if (amx::usable() && amx::matmul_rows(W, Xq, m, Y, ldy, r0, r1)) return;
#endif
#if CPULLM_KSET_AVX512_BF16
  if (avx512_bf16::matmul_rows(W, Xq, m, Y, ldy, r0, r1)) return;
#endif
#if CPULLM_KSET_AVX512_VNNI
  if (avx512_vnni::matmul_rows(W, Xq, m, Y, ldy, r0, r1)) return;
#endif
#if CPULLM_KSET_AVX512
  if (avx512::matmul_rows(W, Xq, m, Y, ldy, r0, r1)) return;
#endif
#if CPULLM_KSET_AVX_VNNI
  if (avx_vnni::matmul_rows(W, Xq, m, Y, ldy, r0, r1)) return;
#endif
#if CPULLM_KSET_AVX2
  if (avx2::matmul_rows(W, Xq, m, Y, ldy, r0, r1)) return;
#endif
#if CPULLM_KSET_I8MM
  if (i8mm::matmul_rows(W, Xq, m, Y, ldy, r0, r1)) return;
#endif
#if CPULLM_KSET_DOTPROD
  if (dotprod::matmul_rows(W, Xq, m, Y, ldy, r0, r1)) return;
#endif
#if CPULLM_KSET_NEON
  if (neon::matmul_rows(W, Xq, m, Y, ldy, r0, r1)) return;
#endif
  ref::matmul_rows(W, Xq, m, Y, ldy, r0, r1);
}

namespace {
// Weight rows per work unit: a multiple of every kernel's row tile, so thread boundaries fall on tiles.
constexpr int64_t kRowGrain = 16;
}  // namespace

void matmul_prepared(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, ThreadPool* pool) {
  if (pool == nullptr || pool->size() == 1) {
    matmul_rows(W, Xq, m, Y, ldy, 0, W.rows);
    return;
  }
  pool->parallel_for(W.rows, kRowGrain, [&](int64_t r0, int64_t r1) { matmul_rows(W, Xq, m, Y, ldy, r0, r1); });
}

void matmul(const Matrix& W, const float* X, int64_t m, float* Y, ThreadPool* pool) {
  thread_local std::vector<uint8_t> scratch;
  const int64_t bytes = act_row_bytes(W.type, W.cols) * m;
  if (static_cast<int64_t>(scratch.size()) < bytes) scratch.resize(static_cast<size_t>(bytes));
  const void* Xq = X;
  if (uses_act_blocks(W.type)) {
    prepare_act(W.type, X, m, W.cols, scratch.data());
    Xq = scratch.data();
  }
  matmul_prepared(W, Xq, m, Y, W.rows, pool);
}

void dequant_row(const Matrix& W, int64_t r, float* y) {
  dequantize(W.type, static_cast<const uint8_t*>(W.data) + r * row_bytes(W.type, W.cols), W.cols, y);
}

void dequantize(DType type, const void* data, int64_t n, float* y) { ref::dequantize(type, data, n, y); }

// The row ops' vector copies (ops/ops_vec.h); AVX-512 gains nothing over AVX2 for these 8-float vectors.
#if CPULLM_KSET_AVX2
namespace ops_set = avx2;
#elif CPULLM_KSET_NEON
namespace ops_set = neon;
#endif

void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps) {
#if CPULLM_KSET_AVX2 || CPULLM_KSET_NEON
  ops_set::rmsnorm(x, w, y, rows, n, eps);
#else
  ref::rmsnorm(x, w, y, rows, n, eps);
#endif
}
void silu_mul(const float* g, const float* u, float* y, int64_t n) {
#if CPULLM_KSET_AVX2 || CPULLM_KSET_NEON
  ops_set::silu_mul(g, u, y, n);
#else
  ref::silu_mul(g, u, y, n);
#endif
}
// Compiled with the variant's flags, the reference loop is already vectorized.
void add(const float* a, const float* b, float* y, int64_t n) { ref::add(a, b, y, n); }
void softmax(float* x, int64_t n) {
#if CPULLM_KSET_AVX2 || CPULLM_KSET_NEON
  ops_set::softmax(x, n);
#else
  ref::softmax(x, n);
#endif
}
int64_t argmax(const float* x, int64_t n) { return ref::argmax(x, n); }
void rope(float* x, int64_t n_tokens, int32_t n_heads, int32_t head_dim, const int32_t* pos,
          const RopeParams& p) {
  ref::rope(x, n_tokens, n_heads, head_dim, pos, p);
}

void attention_items(const float* q, int64_t n_q, int64_t pos0, int32_t n_heads, const KVCache& kv,
                     float scale, float* out, int64_t i0, int64_t i1) {
#if CPULLM_KSET_AVX512
  if (avx512::attention_items(q, n_q, pos0, n_heads, kv, scale, out, i0, i1)) return;
#endif
#if CPULLM_KSET_AVX2
  if (avx2::attention_items(q, n_q, pos0, n_heads, kv, scale, out, i0, i1)) return;
#endif
#if CPULLM_KSET_NEON
  if (neon::attention_items(q, n_q, pos0, n_heads, kv, scale, out, i0, i1)) return;
#endif
  ref::attention_items(q, n_q, pos0, n_heads, kv, scale, out, i0, i1);
}

bool attention_decode(const DecodeQuery* queries, int64_t n, int32_t n_heads, float scale, ThreadPool* pool) {
#if CPULLM_KSET_AVX512
  return avx512::attention_decode(queries, n, n_heads, scale, pool);
#elif CPULLM_KSET_AVX2
  return avx2::attention_decode(queries, n, n_heads, scale, pool);
#elif CPULLM_KSET_NEON
  return neon::attention_decode(queries, n, n_heads, scale, pool);
#else
  (void)queries, (void)n, (void)n_heads, (void)scale, (void)pool;
  return false;  // the reference has no split path: attention_items serves every token
#endif
}

void attention(const float* q, int64_t n_q, int64_t pos0, int32_t n_heads, const KVCache& kv, float scale,
               float* out, ThreadPool* pool) {
  const int64_t items = n_q * n_heads;
  if (pool == nullptr || pool->size() == 1) {
    attention_items(q, n_q, pos0, n_heads, kv, scale, out, 0, items);
    return;
  }
  pool->parallel_for(items, 1, [&](int64_t i0, int64_t i1) {
    attention_items(q, n_q, pos0, n_heads, kv, scale, out, i0, i1);
  });
}

}  // namespace cpullm
