// The dispatching entry points of kernels.h: try the fast paths compiled into this variant in the order of
// kernel_sets.def (best first), then fall back to the reference. Also the pool-splitting convenience
// wrappers. Each chain below expands the table once: a row whose set does not provide the entry point
// expands to a discarded `if constexpr`.
#include <algorithm>
#include <vector>

#include "kernels/blocks.h"
#include "kernels/fast.h"
#include "kernels/kernels.h"

namespace cpullm {

// set::runs_here(): true, or for a set the OS must grant its state to first, whether it did.
#define CPULLM_KERNEL_SET(set, features, provides)               \
  namespace set {                                                \
  inline bool runs_here() {                                      \
    if constexpr (has(provides, kNeedsOsGrant)) return usable(); \
    return true;                                                 \
  }                                                              \
  }
#include "kernels/kernel_sets.def"

const char* best_kernel_set() {
#define CPULLM_KERNEL_SET(set, features, provides) \
  if (set::runs_here()) return #set;
#include "kernels/kernel_sets.def"
  return "ref";
}

void quantize_act(const float* x, int64_t n, ActBlock* out) {
#define CPULLM_KERNEL_SET(set, features, provides)                \
  if constexpr (has(provides, kQuantize)) {                       \
    if (set::runs_here() && set::quantize_act(x, n, out)) return; \
  }
#include "kernels/kernel_sets.def"
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

namespace {
// Activation rows from which prepare_act splits them over the pool (fewer: a row takes ~1 µs, less than
// waking the threads).
constexpr int64_t kActSplitRows = 32;
}  // namespace

// Quantizing the activations is a serial step between two parallel ones unless split too: with 512 rows it
// was a few % of a prefill with the other threads idle. Whole rows per thread.
void prepare_act(DType type, const float* X, int64_t m, int64_t cols, void* Xq, ThreadPool* pool) {
  if (pool == nullptr || pool->size() == 1 || m < kActSplitRows) {
    prepare_act(type, X, m, cols, Xq);
    return;
  }
  auto* out = static_cast<uint8_t*>(Xq);
  const int64_t rb = act_row_bytes(type, cols);
  pool->parallel_for(m, kActSplitRows / 2, [&](int64_t i0, int64_t i1) {
    prepare_act(type, X + i0 * cols, i1 - i0, cols, out + i0 * rb);
  });
}

// One set per architecture provides the packed layout (avx2, dotprod); the other sets read it too.
int64_t packed_bytes(const Matrix& W) {
#define CPULLM_KERNEL_SET(set, features, provides)     \
  if constexpr (has(provides, kPackedLayout)) {        \
    if (set::runs_here()) return set::packed_bytes(W); \
  }
#include "kernels/kernel_sets.def"
  (void)W;
  return 0;
}

void repack(const Matrix& W, void* dst) {
#define CPULLM_KERNEL_SET(set, features, provides)    \
  if constexpr (has(provides, kPackedLayout)) {       \
    if (set::runs_here()) return set::repack(W, dst); \
  }
#include "kernels/kernel_sets.def"
  (void)W;
  (void)dst;
}

void matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  if (r0 >= r1 || m <= 0) return;
#define CPULLM_KERNEL_SET(set, features, provides)                              \
  if constexpr (has(provides, kMatmul)) {                                       \
    if (set::runs_here() && set::matmul_rows(W, Xq, m, Y, ldy, r0, r1)) return; \
  }
#include "kernels/kernel_sets.def"
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
  pool->parallel_for(W.rows, kRowGrain,
                     [&](int64_t r0, int64_t r1) { matmul_rows(W, Xq, m, Y, ldy, r0, r1); });
}

void matmul(const Matrix& W, const float* X, int64_t m, float* Y, ThreadPool* pool) {
  thread_local std::vector<uint8_t> scratch;
  const int64_t bytes = act_row_bytes(W.type, W.cols) * m;
  if (static_cast<int64_t>(scratch.size()) < bytes) scratch.resize(static_cast<size_t>(bytes));
  const void* Xq = X;
  if (uses_act_blocks(W.type)) {
    prepare_act(W.type, X, m, W.cols, scratch.data(), pool);
    Xq = scratch.data();
  }
  matmul_prepared(W, Xq, m, Y, W.rows, pool);
}

void dequant_row(const Matrix& W, int64_t r, float* y) {
  dequantize(W.type, static_cast<const uint8_t*>(W.data) + r * row_bytes(W.type, W.cols), W.cols, y);
}

void dequantize(DType type, const void* data, int64_t n, float* y) { ref::dequantize(type, data, n, y); }

// The row ops run the first providing set's vector copy (ops/ops_vec.h); AVX-512 gains nothing over
// AVX2 for these 8-float vectors, so only avx2 and neon provide them.
void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps) {
#define CPULLM_KERNEL_SET(set, features, provides)                    \
  if constexpr (has(provides, kRowOps)) {                             \
    if (set::runs_here()) return set::rmsnorm(x, w, y, rows, n, eps); \
  }
#include "kernels/kernel_sets.def"
  ref::rmsnorm(x, w, y, rows, n, eps);
}
void silu_mul(const float* g, const float* u, float* y, int64_t n) {
#define CPULLM_KERNEL_SET(set, features, provides)          \
  if constexpr (has(provides, kRowOps)) {                   \
    if (set::runs_here()) return set::silu_mul(g, u, y, n); \
  }
#include "kernels/kernel_sets.def"
  ref::silu_mul(g, u, y, n);
}
// Gemma only, for now: the reference loops (their tanh is the cost, off the hot path of the other families).
void gelu_tanh_mul(const float* g, const float* u, float* y, int64_t n) { ref::gelu_tanh_mul(g, u, y, n); }
void softcap(float* x, int64_t n, float cap) { ref::softcap(x, n, cap); }
// Compiled with the variant's flags, the reference loop is already vectorized.
void add(const float* a, const float* b, float* y, int64_t n) { ref::add(a, b, y, n); }
void softmax(float* x, int64_t n) {
#define CPULLM_KERNEL_SET(set, features, provides)   \
  if constexpr (has(provides, kRowOps)) {            \
    if (set::runs_here()) return set::softmax(x, n); \
  }
#include "kernels/kernel_sets.def"
  ref::softmax(x, n);
}
int64_t argmax(const float* x, int64_t n) { return ref::argmax(x, n); }
void rope(float* x, int64_t n_tokens, int32_t n_heads, int32_t head_dim, const int32_t* pos,
          const RopeParams& p) {
  ref::rope(x, n_tokens, n_heads, head_dim, pos, p);
}

void attention_items(const float* q, int64_t n_q, int64_t pos0, int32_t n_heads, const KVCache& kv,
                     float scale, float* out, int64_t i0, int64_t i1) {
#define CPULLM_KERNEL_SET(set, features, provides)                                                       \
  if constexpr (has(provides, kAttention)) {                                                             \
    if (set::runs_here() && set::attention_items(q, n_q, pos0, n_heads, kv, scale, out, i0, i1)) return; \
  }
#include "kernels/kernel_sets.def"
  ref::attention_items(q, n_q, pos0, n_heads, kv, scale, out, i0, i1);
}

// The first providing set answers (its false: not for these shapes, attention_items serves them).
bool attention_decode(const DecodeQuery* queries, int64_t n, int32_t n_heads, float scale, ThreadPool* pool) {
#define CPULLM_KERNEL_SET(set, features, provides)                                        \
  if constexpr (has(provides, kAttention)) {                                              \
    if (set::runs_here()) return set::attention_decode(queries, n, n_heads, scale, pool); \
  }
#include "kernels/kernel_sets.def"
  (void)queries, (void)n, (void)n_heads, (void)scale, (void)pool;
  return false;  // the reference has no split path: attention_items serves every token
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
