// cpullm kernel library: the internal C++ interface the forward pass (csrc/model/) is written against.
//
// Every function here has a plain scalar reference (namespace cpullm::ref, csrc/kernels/*/*_ref.cc) and
// the unqualified cpullm:: entry point dispatches to the fastest path compiled into this variant library
// (the kernel sets of kernel_sets.def, tried best first; dispatch.cc). Fast paths agree with the
// reference to float rounding (tolerances per format in tests/kernels/), and no result depends on the
// thread count: every output element is computed by exactly one thread, in the same order of summation.
//
// Conventions
// - Matrices are row-major. A weight matrix W is [rows × cols] in GGUF/ggml layout: each row is
//   cols / block_size(type) blocks, rows are contiguous (row r starts at r * row_bytes(type, cols)).
//   GGUF's ne[0] is `cols` (the reduction dimension), ne[1] is `rows` (the output dimension).
// - Products compute Y[i, r] = Σ_c W[r, c] · X[i, c]  (Y = X · Wᵀ, the layout llama.cpp uses).
// - For quantized weights the activations are quantized on the fly to ActBlock (8-bit blocks of 32),
//   so each block product is an exact integer dot product; F32/F16/BF16 weights take f32 activations.
// - Row ranges [r0, r1) let callers split work; the overloads taking a ThreadPool* split it themselves
//   (nullptr = run on the calling thread).
#ifndef CPULLM_KERNELS_H
#define CPULLM_KERNELS_H

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace cpullm {

// ggml/GGUF tensor type ids (the numbers GGUF files store): the rows of kernels/dtypes.def.
enum class DType : int32_t {
#define CPULLM_DTYPE(name, id, block_size, block_bytes) name = id,
#include "kernels/dtypes.def"
};

// True for the types of dtypes.def; false for any other id (e.g. read from a GGUF file).
bool dtype_supported(int32_t type);
// Weights per block (dtypes.def): 1 for F32/F16/BF16, 32 for Q4_0/Q8_0 etc., 256 for the K-quants.
int64_t block_size(DType type);
// Bytes of one block (of block_size(type) weights).
int64_t block_bytes(DType type);
// Bytes of one row of `cols` weights; cols must be a multiple of block_size(type).
int64_t row_bytes(DType type, int64_t cols);
const char* dtype_name(DType type);

// IEEE half / bfloat16 <-> f32 (round to nearest even), portable.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

// ---- activations --------------------------------------------------------------------------------------

// One block of 32 activations quantized to int8: x[i] ≈ d * q[i]; d = max|x| / 127, q = round-half-even
// (x / d) computed as x * (1/d); sum = Σ q[i] (exact), so a weight minimum m contributes m * d * sum.
struct ActBlock {
  float d;
  int32_t sum;
  int8_t q[32];
};
static_assert(sizeof(ActBlock) == 40, "ActBlock is 40 bytes");

// True when products with `type` weights take quantized activations (ActBlock), false for F32/F16/BF16.
bool uses_act_blocks(DType type);
// Bytes of one quantized activation row of `cols` values for weights of `type`
// (cols/32 ActBlocks for quantized types; cols * 4 for float types, which take f32 as is).
int64_t act_row_bytes(DType type, int64_t cols);

// x[n] f32 -> out[n / 32] ActBlock; n must be a multiple of 32.
void quantize_act(const float* x, int64_t n, ActBlock* out);
// X[m × cols] f32 -> Xq[m × act_row_bytes(type, cols)] ready for matmul_rows; copies for float types.
void prepare_act(DType type, const float* X, int64_t m, int64_t cols, void* Xq);

// ---- matrix products ----------------------------------------------------------------------------------

// A weight matrix as the kernels see it. `data` is GGUF layout, rows contiguous.
struct Matrix {
  DType type;
  int64_t rows;  // output features
  int64_t cols;  // input features (reduction), a multiple of block_size(type)
  const void* data;
  // Optional: the same weights repacked once at load by repack() into the layout this library's fast
  // path prefers (nullptr = none). `data` must stay valid too (the reference and tail rows read it).
  const void* packed = nullptr;
};

// Bytes repack() needs for W, or 0 when this library has no packed layout for W.type (then leave
// W.packed null). Repacking never changes results beyond float rounding; it only speeds products up.
int64_t packed_bytes(const Matrix& W);
// Writes W (GGUF layout, W.data) in this library's packed layout to dst[packed_bytes(W)]; then set
// W.packed = dst. The layout is private to the library that made it (never store it in files).
void repack(const Matrix& W, void* dst);

class ThreadPool;

// prepare_act with the rows split over `pool` when there are enough to pay for waking it (nullptr: serial).
void prepare_act(DType type, const float* X, int64_t m, int64_t cols, void* Xq, ThreadPool* pool);

// Y[i, r] for i in [0, m), r in [r0, r1): Y[i * ldy + r] = Σ_c W[r, c] · X[i, c].
// Xq: m rows of act_row_bytes(W.type, W.cols) bytes each, from prepare_act. m = 1 is the decode matvec;
// m > 1 (prefill) reuses each weight block for several activation rows.
void matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1);

// Convenience: X[m × W.cols] f32 -> Y[m × W.rows] f32 (ldy = W.rows), activations quantized internally
// (scratch is per-thread and reused), rows split over the pool.
void matmul(const Matrix& W, const float* X, int64_t m, float* Y, ThreadPool* pool);
// Same with activations already prepared by prepare_act (lets Q/K/V share one quantization).
void matmul_prepared(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, ThreadPool* pool);
// m = 1: y[W.rows] = W · x[W.cols].
inline void matvec(const Matrix& W, const float* x, float* y, ThreadPool* pool) { matmul(W, x, 1, y, pool); }

// Row r of W dequantized to f32: y[W.cols]. Used for token embeddings (get_rows).
void dequant_row(const Matrix& W, int64_t r, float* y);
// Dequantize n values (n a multiple of block_size(type)) of GGUF-layout data to f32.
void dequantize(DType type, const void* data, int64_t n, float* y);

// ---- element-wise and row ops (x, y [rows × n], row-major, contiguous) ------------------------------

// y = x / sqrt(mean(x²) + eps) * w, per row; w[n]. y may alias x.
void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps);
// y = silu(g) * u = g / (1 + exp(-g)) * u; y may alias g or u.
void silu_mul(const float* g, const float* u, float* y, int64_t n);
// y = gelu(g) * u with GELU's tanh approximation, 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g³))) (Gemma);
// y may alias g or u.
void gelu_tanh_mul(const float* g, const float* u, float* y, int64_t n);
// In place: x = cap * tanh(x / cap) (logit soft-capping, Gemma 2); cap > 0.
void softcap(float* x, int64_t n, float cap);
// y = a + b; y may alias a or b.
void add(const float* a, const float* b, float* y, int64_t n);
// In place, numerically stable: x = exp(x - max) / Σ exp(x - max).
void softmax(float* x, int64_t n);
// Index of the largest value (the first one on ties); n >= 1. NaNs are never chosen unless all are NaN.
int64_t argmax(const float* x, int64_t n);

enum class RopeMode : int32_t {
  Interleaved = 0,  // rotate pairs (x[2i], x[2i+1])  — GGML_ROPE_TYPE_NORM, Llama GGUF
  Neox = 2,         // rotate pairs (x[i], x[i + rot/2]) — GGML_ROPE_TYPE_NEOX
};
struct RopeParams {
  RopeMode mode;
  int32_t rot_dims;           // dimensions rotated per head (even, <= head_dim); usually head_dim
  float theta_base;           // e.g. 10000 or 500000
  float freq_scale;           // linear position scaling (1 = none): angle uses pos * freq_scale
  const float* freq_factors;  // nullable; [rot_dims / 2]: angle_i is divided by freq_factors[i] (Llama 3)
  // YaRN (ext_factor 1; 0 = plain): pair i's angle blends the scaled angle (low frequencies) into the
  // unscaled one (high frequencies) over the pairs between corr_low and corr_high, and cos/sin are
  // multiplied by attn_factor * (1 + 0.1 ln(1 / freq_scale)). attn_factor alone scales cos/sin otherwise.
  float ext_factor = 0.0f;
  float attn_factor = 1.0f;
  float corr_low = 0.0f;
  float corr_high = 0.0f;
};
// x[n_tokens × n_heads × head_dim] rotated in place; token t is at position pos[t].
// angle_i = pos * freq_scale * theta_base^(-2i / rot_dims) / freq_factors[i], i in [0, rot_dims/2)
// (with YaRN, blended as above).
void rope(float* x, int64_t n_tokens, int32_t n_heads, int32_t head_dim, const int32_t* pos,
          const RopeParams& p);

// ---- attention over a paged KV cache -----------------------------------------------------------------

// The KV cache of one sequence, stored as fixed-size blocks of `block_size` tokens taken from a pool.
// Physical block b of each pool holds block_size × n_kv_heads × head_dim values of `type` (F32 or F16),
// one tile per KV head: tile (b, h) starts at (b * n_kv_heads + h) * head_dim * block_size. A K tile is
// transposed, [head_dim][block_size] (K of slot s, dim i at i * block_size + s), so consecutive keys are
// contiguous per dimension; a V tile is [block_size][head_dim]. Token position p of the sequence lives in
// physical block block_table[p / block_size], slot p % block_size (kernels/attention/kv_layout.h).
struct KVCache {
  DType type;          // F32 or F16
  int32_t block_size;  // tokens per block
  int32_t n_kv_heads;
  int32_t head_dim;
  void* k_pool;                // base of the K block pool
  void* v_pool;                // base of the V block pool
  const int32_t* block_table;  // logical block -> physical block index
  // How a query reads it (the layer's attention options): only the last `window` positions up to its own
  // (0 = all: keys pos - window + 1 .. pos, Gemma's sliding-window layers); scores q·k·scale soft-capped
  // to softcap · tanh(score / softcap) before the softmax (0 = not; Gemma 2).
  int32_t window = 0;
  float softcap = 0.0f;
};

// Store k, v [n_tokens × n_kv_heads × head_dim] f32 at positions pos0 .. pos0 + n_tokens - 1.
void kv_write(const KVCache& kv, const float* k, const float* v, int64_t pos0, int64_t n_tokens);

// Causal grouped-query attention. q, out [n_q × n_heads × head_dim]; query t is at position pos0 + t
// and attends to cache positions 0 .. pos0 + t (which must already be written). Query head h reads KV
// head h / (n_heads / n_kv_heads). scores = q·k * scale (usually 1/sqrt(head_dim)), softmax, Σ p·v.
// n_q = 1 is single-token decode; n_q > 1 is (chunked) prefill.
void attention(const float* q, int64_t n_q, int64_t pos0, int32_t n_heads, const KVCache& kv, float scale,
               float* out, ThreadPool* pool);
// The (query t, head h) items idx in [i0, i1), idx = t * n_heads + h, for callers that split work.
void attention_items(const float* q, int64_t n_q, int64_t pos0, int32_t n_heads, const KVCache& kv,
                     float scale, float* out, int64_t i0, int64_t i1);

// One decode token of one sequence: its query q and output out [n_heads × head_dim], at position pos
// (it attends to cache positions 0 .. pos).
struct DecodeQuery {
  const float* q;
  int64_t pos;
  KVCache kv;
  float* out;
};
// Keys per segment of attention_decode.
constexpr int64_t kDecodeSplitKeys = 512;
// Decode attention for several sequences at once, each one's keys cut into segments of kDecodeSplitKeys:
// the work items (sequence, KV head, segment) spread over the pool, so one long context keeps every
// thread busy, and each head's segments are merged in order afterwards. The result depends neither on
// the thread count nor on the batch; with one segment it equals attention_items' bit for bit. False
// when this variant has no such path or not for these shapes (then use attention_items).
bool attention_decode(const DecodeQuery* queries, int64_t n, int32_t n_heads, float scale, ThreadPool* pool);

// ---- threads -----------------------------------------------------------------------------------------

// A persistent pool: n_threads - 1 workers plus the calling thread; workers spin briefly then yield
// while waiting, so back-to-back parallel_for calls in a decode step cost no thread creation.
class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const;
  // Calls fn(ctx, begin, end, thread_index) on disjoint ranges covering [0, n), contiguous chunks whose
  // boundaries are multiples of `grain` (except the end), claimed dynamically by the threads (a thread
  // may run several; thread_index < size() says which thread runs this one). Returns when all are
  // done. Not reentrant: call it from one thread at a time.
  using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end, int thread_index);
  void parallel_for(int64_t n, int64_t grain, RangeFn fn, void* ctx);

  // Lambda convenience: fn(begin, end).
  template <class F>
  void parallel_for(int64_t n, int64_t grain, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    parallel_for(
        n, grain, [](void* c, int64_t b, int64_t e, int) { (*static_cast<Fn*>(c))(b, e); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

  struct Impl;

 private:
  Impl* impl_;
};

// The library-wide pool (created on first use with set_num_threads' value, default 1).
ThreadPool* global_pool();
// Resize the library-wide pool (n >= 1). Not to be called while kernels run.
void set_num_threads(int n);
int num_threads();

// ---- reference implementations (the definition of correct) ------------------------------------------

namespace ref {
void quantize_act(const float* x, int64_t n, ActBlock* out);
void matmul_rows(const Matrix& W, const void* Xq, int64_t m, float* Y, int64_t ldy, int64_t r0, int64_t r1);
void dequantize(DType type, const void* data, int64_t n, float* y);
void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps);
void silu_mul(const float* g, const float* u, float* y, int64_t n);
void gelu_tanh_mul(const float* g, const float* u, float* y, int64_t n);
void softcap(float* x, int64_t n, float cap);
void add(const float* a, const float* b, float* y, int64_t n);
void softmax(float* x, int64_t n);
int64_t argmax(const float* x, int64_t n);
void rope(float* x, int64_t n_tokens, int32_t n_heads, int32_t head_dim, const int32_t* pos,
          const RopeParams& p);
void attention_items(const float* q, int64_t n_q, int64_t pos0, int32_t n_heads, const KVCache& kv,
                     float scale, float* out, int64_t i0, int64_t i1);
}  // namespace ref

// Which fast path the dispatching entry points use in this library, e.g. "avx512_vnni" (or "ref").
const char* best_kernel_set();

}  // namespace cpullm

#endif  // CPULLM_KERNELS_H
