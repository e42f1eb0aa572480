// The kernel C ABI (cpullm.h): argument checks that name the problem, then the kernels.h entry points
// (CPULLM_IMPL_BEST) or the references (CPULLM_IMPL_REF).
#include <cstdio>
#include <string>
#include <vector>

#include "api/last_error.h"
#include "cpullm/cpullm.h"
#include "kernels/kernels.h"

namespace {

thread_local std::string g_error;

int fail(const char* fmt, long long a = 0, long long b = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, a, b);
  g_error = buf;
  return -1;
}

int check_impl(int impl) {
  if (impl != CPULLM_IMPL_BEST && impl != CPULLM_IMPL_REF) {
    return fail("impl must be CPULLM_IMPL_BEST (0) or CPULLM_IMPL_REF (1), not %lld", impl);
  }
  return 0;
}

// The type is supported and cols is a whole number of its blocks.
int check_type(int32_t type, int64_t cols) {
  if (!cpullm::dtype_supported(type)) {
    fail("weight type %lld is not supported; use one of ", type);
    g_error += cpullm_tensor_types();
    g_error += " (name:id:weights per block:bytes per block)";
    return -1;
  }
  const int64_t bs = cpullm::block_size(static_cast<cpullm::DType>(type));
  if (cols <= 0 || cols % bs != 0) {
    return fail("%lld values is not a positive multiple of the type's block size %lld", cols, bs);
  }
  return 0;
}

bool ref(int impl) { return impl == CPULLM_IMPL_REF; }

int check_kv(int32_t kv_type, int32_t block_size, int32_t n_kv_heads, int32_t head_dim, const void* k_pool,
             const void* v_pool, const int32_t* block_table) {
  if (kv_type != 0 && kv_type != 1 && kv_type != 8)
    return fail("KV cache type must be F32 (0), F16 (1) or Q8_0 (8), not %lld", kv_type);
  if (kv_type == 8 && head_dim % 32 != 0)
    return fail("a Q8_0 KV cache needs a head dimension that is a multiple of 32, not %lld", head_dim);
  if (block_size <= 0 || n_kv_heads <= 0 || head_dim <= 0) {
    return fail("block_size, n_kv_heads and head_dim must be positive (got block_size %lld, n_kv_heads %lld)",
                block_size, n_kv_heads);
  }
  if (!k_pool || !v_pool || !block_table) return fail("k_pool, v_pool and block_table must not be NULL");
  return 0;
}

cpullm::KVCache make_kv(int32_t kv_type, int32_t block_size, int32_t n_kv_heads, int32_t head_dim,
                        const void* k_pool, const void* v_pool, const int32_t* block_table) {
  return cpullm::KVCache{
      static_cast<cpullm::DType>(kv_type), block_size, n_kv_heads, head_dim, const_cast<void*>(k_pool),
      const_cast<void*>(v_pool),           block_table};
}

}  // namespace

// Shared with the model ABI (api/last_error.h): one per-thread message behind cpullm_last_error().
void cpullm::set_last_error(std::string message) { g_error = std::move(message); }

extern "C" {

const char* cpullm_last_error(void) { return g_error.c_str(); }

int cpullm_set_num_threads(int n) {
  if (n < 1 || n > 1024) return fail("thread count must be between 1 and 1024, not %lld", n);
  cpullm::set_num_threads(n);
  return 0;
}

int cpullm_get_num_threads(void) { return cpullm::num_threads(); }

const char* cpullm_best_kernel_set(void) { return cpullm::best_kernel_set(); }

const char* cpullm_tensor_types(void) {
  static const std::string list = [] {
    std::string joined;
#define CPULLM_DTYPE(name, id, block_size, block_bytes)                                     \
  joined += std::string(joined.empty() ? "" : ",") + #name ":" + std::to_string(id) + ":" + \
            std::to_string(block_size) + ":" + std::to_string(block_bytes);
#include "kernels/dtypes.def"
    return joined;
  }();
  return list.c_str();
}

int64_t cpullm_row_bytes(int32_t type, int64_t cols) {
  if (check_type(type, cols)) return -1;
  return cpullm::row_bytes(static_cast<cpullm::DType>(type), cols);
}

int64_t cpullm_act_row_bytes(int32_t type, int64_t cols) {
  if (check_type(type, cols)) return -1;
  return cpullm::act_row_bytes(static_cast<cpullm::DType>(type), cols);
}

int cpullm_quantize_act(int impl, const float* x, int64_t n, void* out) {
  if (check_impl(impl)) return -1;
  if (n <= 0 || n % 32 != 0) return fail("activation length %lld is not a positive multiple of 32", n);
  if (!x || !out) return fail("x and out must not be NULL");
  auto* blocks = static_cast<cpullm::ActBlock*>(out);
  if (ref(impl))
    cpullm::ref::quantize_act(x, n, blocks);
  else
    cpullm::quantize_act(x, n, blocks);
  return 0;
}

int cpullm_dequantize(int32_t type, const void* data, int64_t n, float* y) {
  if (check_type(type, n)) return -1;
  if (!data || !y) return fail("data and y must not be NULL");
  cpullm::dequantize(static_cast<cpullm::DType>(type), data, n, y);
  return 0;
}

int cpullm_matmul(int impl, int32_t type, const void* w, int64_t rows, int64_t cols, const float* x,
                  int64_t m, float* y) {
  if (check_impl(impl) || check_type(type, cols)) return -1;
  if (rows <= 0 || m <= 0) return fail("rows (%lld) and m (%lld) must be positive", rows, m);
  if (!w || !x || !y) return fail("w, x and y must not be NULL");
  const auto t = static_cast<cpullm::DType>(type);
  const cpullm::Matrix W{t, rows, cols, w};
  if (!ref(impl)) {
    cpullm::matmul(W, x, m, y, cpullm::global_pool());
    return 0;
  }
  std::vector<uint8_t> xq(static_cast<size_t>(cpullm::act_row_bytes(t, cols) * m));
  const void* act = x;
  if (cpullm::uses_act_blocks(t)) {
    for (int64_t i = 0; i < m; ++i) {
      cpullm::ref::quantize_act(x + i * cols, cols,
                                reinterpret_cast<cpullm::ActBlock*>(xq.data()) + i * (cols / 32));
    }
    act = xq.data();
  }
  cpullm::ref::matmul_rows(W, act, m, y, rows, 0, rows);
  return 0;
}

int64_t cpullm_packed_bytes(int32_t type, int64_t rows, int64_t cols) {
  if (check_type(type, cols)) return -1;
  if (rows <= 0) return fail("rows (%lld) must be positive", rows);
  return cpullm::packed_bytes(cpullm::Matrix{static_cast<cpullm::DType>(type), rows, cols, nullptr});
}

int cpullm_repack(int32_t type, const void* w, int64_t rows, int64_t cols, void* packed) {
  const int64_t bytes = cpullm_packed_bytes(type, rows, cols);
  if (bytes < 0) return -1;
  if (bytes == 0) return fail("this library has no packed layout for weight type %lld", type);
  if (!w || !packed) return fail("w and packed must not be NULL");
  cpullm::repack(cpullm::Matrix{static_cast<cpullm::DType>(type), rows, cols, w}, packed);
  return 0;
}

int cpullm_matmul_packed(int32_t type, const void* w, const void* packed, int64_t rows, int64_t cols,
                         const float* x, int64_t m, float* y) {
  if (check_type(type, cols)) return -1;
  if (rows <= 0 || m <= 0) return fail("rows (%lld) and m (%lld) must be positive", rows, m);
  if (!w || !x || !y) return fail("w, x and y must not be NULL");
  cpullm::Matrix W{static_cast<cpullm::DType>(type), rows, cols, w};
  W.packed = packed;
  cpullm::matmul(W, x, m, y, cpullm::global_pool());
  return 0;
}

int cpullm_rmsnorm(int impl, const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps) {
  if (check_impl(impl)) return -1;
  if (rows <= 0 || n <= 0) return fail("rows (%lld) and n (%lld) must be positive", rows, n);
  if (!x || !w || !y) return fail("x, w and y must not be NULL");
  (ref(impl) ? cpullm::ref::rmsnorm : cpullm::rmsnorm)(x, w, y, rows, n, eps);
  return 0;
}

int cpullm_silu_mul(int impl, const float* g, const float* u, float* y, int64_t n) {
  if (check_impl(impl)) return -1;
  if (n <= 0 || !g || !u || !y) return fail("n (%lld) must be positive and g, u, y not NULL", n);
  (ref(impl) ? cpullm::ref::silu_mul : cpullm::silu_mul)(g, u, y, n);
  return 0;
}

int cpullm_add(int impl, const float* a, const float* b, float* y, int64_t n) {
  if (check_impl(impl)) return -1;
  if (n <= 0 || !a || !b || !y) return fail("n (%lld) must be positive and a, b, y not NULL", n);
  (ref(impl) ? cpullm::ref::add : cpullm::add)(a, b, y, n);
  return 0;
}

int cpullm_softmax(int impl, float* x, int64_t n) {
  if (check_impl(impl)) return -1;
  if (n <= 0 || !x) return fail("n (%lld) must be positive and x not NULL", n);
  (ref(impl) ? cpullm::ref::softmax : cpullm::softmax)(x, n);
  return 0;
}

int64_t cpullm_argmax(int impl, const float* x, int64_t n) {
  if (check_impl(impl)) return -1;
  if (n <= 0 || !x) return fail("n (%lld) must be positive and x not NULL", n);
  return (ref(impl) ? cpullm::ref::argmax : cpullm::argmax)(x, n);
}

int cpullm_rope(int impl, float* x, int64_t n_tokens, int32_t n_heads, int32_t head_dim, const int32_t* pos,
                int32_t mode, int32_t rot_dims, float theta_base, float freq_scale,
                const float* freq_factors) {
  if (check_impl(impl)) return -1;
  if (mode != 0 && mode != 2) return fail("rope mode must be 0 (interleaved) or 2 (neox), not %lld", mode);
  if (n_tokens <= 0 || n_heads <= 0 || head_dim <= 0) {
    return fail("n_tokens (%lld) and n_heads (%lld) must be positive", n_tokens, n_heads);
  }
  if (rot_dims <= 0 || rot_dims % 2 != 0 || rot_dims > head_dim) {
    return fail("rot_dims %lld must be even, positive and at most head_dim %lld", rot_dims, head_dim);
  }
  if (!x || !pos) return fail("x and pos must not be NULL");
  const cpullm::RopeParams p{static_cast<cpullm::RopeMode>(mode), rot_dims, theta_base, freq_scale,
                             freq_factors};
  (ref(impl) ? cpullm::ref::rope : cpullm::rope)(x, n_tokens, n_heads, head_dim, pos, p);
  return 0;
}

int cpullm_kv_write(int32_t kv_type, int32_t block_size, int32_t n_kv_heads, int32_t head_dim, void* k_pool,
                    void* v_pool, const int32_t* block_table, const float* k, const float* v, int64_t pos0,
                    int64_t n_tokens) {
  if (check_kv(kv_type, block_size, n_kv_heads, head_dim, k_pool, v_pool, block_table)) return -1;
  if (pos0 < 0 || n_tokens <= 0 || !k || !v)
    return fail("pos0 (%lld) must be >= 0, n_tokens (%lld) positive", pos0, n_tokens);
  cpullm::kv_write(make_kv(kv_type, block_size, n_kv_heads, head_dim, k_pool, v_pool, block_table), k, v,
                   pos0, n_tokens);
  return 0;
}

int cpullm_attention(int impl, const float* q, int64_t n_q, int64_t pos0, int32_t n_heads, int32_t kv_type,
                     int32_t block_size, int32_t n_kv_heads, int32_t head_dim, const void* k_pool,
                     const void* v_pool, const int32_t* block_table, float scale, float* out) {
  if (check_impl(impl) || check_kv(kv_type, block_size, n_kv_heads, head_dim, k_pool, v_pool, block_table))
    return -1;
  if (n_heads <= 0 || n_heads % n_kv_heads != 0) {
    return fail("n_heads %lld must be a positive multiple of n_kv_heads %lld", n_heads, n_kv_heads);
  }
  if (pos0 < 0 || n_q <= 0 || !q || !out)
    return fail("pos0 (%lld) must be >= 0 and n_q (%lld) positive", pos0, n_q);
  const auto kv = make_kv(kv_type, block_size, n_kv_heads, head_dim, k_pool, v_pool, block_table);
  if (ref(impl))
    cpullm::ref::attention_items(q, n_q, pos0, n_heads, kv, scale, out, 0, n_q * n_heads);
  else
    cpullm::attention(q, n_q, pos0, n_heads, kv, scale, out, cpullm::global_pool());
  return 0;
}

}  // extern "C"
