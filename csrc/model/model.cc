// Model construction: find and check every tensor, repack weights for the fast path, allocate the KV cache.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include <sys/mman.h>
#include <unistd.h>
#include <unordered_map>

#include "kernels/attention/kv_layout.h"
#include "model/model.h"

namespace cpullm {
namespace {

using TensorMap = std::unordered_map<std::string, const TensorRef*>;

std::string shape(int64_t rows, int64_t cols) {
  return "[" + std::to_string(rows) + " x " + std::to_string(cols) + "]";
}

const TensorRef& need(const TensorMap& map, const std::string& name) {
  const auto it = map.find(name);
  if (it == map.end()) throw std::runtime_error("tensor '" + name + "' is missing");
  return *it->second;
}

Matrix matrix(const TensorMap& map, const std::string& name, int64_t rows, int64_t cols) {
  const TensorRef& t = need(map, name);
  if (t.rows != rows || t.cols != cols) {
    throw std::runtime_error("tensor '" + name + "' is " + shape(t.rows, t.cols) + ", expected " +
                             shape(rows, cols));
  }
  if (cols % block_size(t.type) != 0) {
    throw std::runtime_error("tensor '" + name + "': " + std::to_string(cols) +
                             " columns is not a multiple of " + dtype_name(t.type) + "'s block size");
  }
  return Matrix{t.type, rows, cols, t.data};
}

// Drop the whole pages inside [data, data + bytes) from this process's memory (file-backed: they are read
// back from the file if touched again). Keeps the model's resident size near the packed weights alone.
void release_pages(const void* data, int64_t bytes) {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(data) + static_cast<uintptr_t>(bytes)) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// Map the whole pages inside [p, p + bytes) in one call (zeroed by the kernel in bulk) instead of one page
// fault per 4 KiB as the repack first writes them (a 1.1B model's ~170k faults: about 0.07 s of a 0.67 s
// load here). Linux 5.14+; elsewhere, or on error, the pages fault in as before.
void populate(const void* p, int64_t bytes) {
#if defined(__linux__)
  constexpr int kPopulateWrite = 23;  // MADV_POPULATE_WRITE, absent from older headers
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, kPopulateWrite);
#else
  (void)p;
  (void)bytes;
#endif
}

// Every product's packed copy, written in parallel: loading is mostly this (a 0.6B Q8_0 file spent 0.85 s
// of its load here on one thread). Largest first, claimed dynamically, so the threads finish together.
void repack_all(std::vector<Matrix>& jobs, bool release_sources) {
  auto bytes = [](const Matrix& W) { return W.rows * row_bytes(W.type, W.cols); };
  std::sort(jobs.begin(), jobs.end(), [&](const Matrix& a, const Matrix& b) { return bytes(a) > bytes(b); });
  global_pool()->parallel_for(static_cast<int64_t>(jobs.size()), 1, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const Matrix& W = jobs[static_cast<size_t>(j)];
      populate(W.packed, packed_bytes(W));
      repack(W, const_cast<void*>(W.packed));  // W.packed: a buffer of owned_
      if (release_sources) release_pages(W.data, bytes(W));
    }
  });
}

}  // namespace

int64_t Projection::out_dim() const {
  int64_t n = 0;
  for (const Matrix& m : parts) n += m.rows;
  return n;
}

Model::Model(const ModelConfig& cfg, const std::vector<TensorRef>& tensors) : cfg_(cfg) {
  if (cfg.n_layers <= 0 || cfg.d_model <= 0 || cfg.n_heads <= 0 || cfg.n_kv_heads <= 0 || cfg.head_dim <= 0 ||
      cfg.d_ff <= 0 || cfg.vocab_size <= 0 || cfg.n_heads % cfg.n_kv_heads != 0) {
    throw std::runtime_error(
        "model config is inconsistent (layers, sizes and heads must be positive; heads a "
        "multiple of kv heads)");
  }
  if (cfg.rope_dims <= 0 || cfg.rope_dims > cfg.head_dim || cfg.rope_dims % 2 != 0) {
    throw std::runtime_error("rope_dims must be even and at most head_dim");
  }
  if (!cfg.layer_windows.empty() && static_cast<int32_t>(cfg.layer_windows.size()) != cfg.n_layers) {
    throw std::runtime_error("layer windows must be given for every layer");
  }
  for (int32_t w : cfg.layer_windows) {
    if (w < 0) throw std::runtime_error("a layer's sliding window must be 0 (none) or positive");
  }
  if (!(cfg.attn_softcap >= 0.0f) || !(cfg.final_softcap >= 0.0f) || !(cfg.attn_scale >= 0.0f) ||
      !(cfg.embed_scale > 0.0f)) {
    throw std::runtime_error("soft-caps and the attention scale must be >= 0, the embedding scale > 0");
  }
  if (!(cfg.rope_ext_factor >= 0.0f && cfg.rope_ext_factor <= 1.0f) || !(cfg.rope_attn_factor > 0.0f) ||
      !std::isfinite(cfg.rope_attn_factor) || !std::isfinite(cfg.rope_corr_low) ||
      !std::isfinite(cfg.rope_corr_high) || !(cfg.rope_freq_scale > 0.0f)) {
    throw std::runtime_error(
        "RoPE scaling is inconsistent (frequency scale and attention factor must be positive, the YaRN "
        "mix from 0 to 1, the correction range finite)");
  }
  if (!(cfg.rope_theta_local >= 0.0f) || !std::isfinite(cfg.rope_theta_local)) {
    throw std::runtime_error("the local RoPE base must be 0 (none) or a finite positive number");
  }
  if (cfg.n_experts < 0 ||
      (cfg.n_experts > 0 &&
       (cfg.n_experts_used <= 0 || cfg.n_experts_used > cfg.n_experts || cfg.d_ff_expert <= 0 ||
        cfg.fused_gate_up || cfg.d_ff_shared < 0 || (cfg.shared_expert_gate && cfg.d_ff_shared == 0)))) {
    throw std::runtime_error(
        "mixture of experts: n_experts_used must be from 1 to n_experts, d_ff_expert positive, the gate "
        "and up matrices not fused, and a shared expert's gate needs a shared expert");
  }
  TensorMap map;
  for (const TensorRef& t : tensors) map[t.name] = &t;
  const int64_t d = cfg.d_model, q = cfg.q_dim(), kv = cfg.kv_dim(), ff = cfg.d_ff;

  // Small f32 vectors (norm weights, biases): used in place when f32, else converted once.
  auto vec = [&](const std::string& name, int64_t n) -> const float* {
    const TensorRef& t = need(map, name);
    if (t.rows * t.cols != n) {
      throw std::runtime_error("tensor '" + name + "' has " + std::to_string(t.rows * t.cols) +
                               " values, expected " + std::to_string(n));
    }
    if (t.type == DType::F32) return static_cast<const float*>(t.data);
    auto* out = reinterpret_cast<float*>(own(n * static_cast<int64_t>(sizeof(float))));
    dequantize(t.type, t.data, n, out);
    return out;
  };
  // Repack a product's weights once into the layout this variant's fast path prefers, if it has one.
  // The copies are written at the end, all at once over the thread pool (repack_all).
  std::vector<Matrix> to_pack;
  auto packed = [&](Matrix W, const std::string& name) -> Matrix {
    const int64_t bytes = packed_bytes(W);
    if (bytes <= 0) return W;
    W.packed = own(bytes);
    to_pack.push_back(W);
    if (packed_names_.empty() || packed_names_.back() != name)
      packed_names_.push_back(name);  // experts: once
    return W;
  };
  auto weight = [&](const std::string& name, int64_t rows, int64_t cols) {
    return packed(matrix(map, name, rows, cols), name);
  };

  token_embd_ = matrix(map, "token_embd.weight", cfg.vocab_size, d);
  // Tied embeddings: the output product reads a packed copy, the embedding lookup the original rows.
  output_ = map.count("output.weight") ? weight("output.weight", cfg.vocab_size, d)
                                       : packed(token_embd_, "token_embd.weight");
  output_norm_ = vec("output_norm.weight", d);
  if (map.count("rope_freqs.weight")) rope_freqs_ = vec("rope_freqs.weight", cfg.rope_dims / 2);
  const bool bias = map.count("blk.0.attn_q.bias") > 0;

  layers_.resize(static_cast<size_t>(cfg.n_layers));
  for (int32_t i = 0; i < cfg.n_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    Layer& L = layers_[static_cast<size_t>(i)];
    L.attn_norm = vec(p + "attn_norm.weight", d);
    // A fused matrix is the same product with one part: its rows are already [q | k | v] or [gate | up].
    L.qkv = cfg.fused_qkv ? Projection{{weight(p + "attn_qkv.weight", q + 2 * kv, d)}}
                          : Projection{{weight(p + "attn_q.weight", q, d), weight(p + "attn_k.weight", kv, d),
                                        weight(p + "attn_v.weight", kv, d)}};
    L.bqkv = nullptr;
    if (bias) {
      auto* b = reinterpret_cast<float*>(own((q + 2 * kv) * static_cast<int64_t>(sizeof(float))));
      std::memcpy(b, vec(p + "attn_q.bias", q), q * sizeof(float));
      std::memcpy(b + q, vec(p + "attn_k.bias", kv), kv * sizeof(float));
      std::memcpy(b + q + kv, vec(p + "attn_v.bias", kv), kv * sizeof(float));
      L.bqkv = b;
    }
    L.q_norm = cfg.qk_norm ? vec(p + "attn_q_norm.weight", cfg.head_dim) : nullptr;
    L.k_norm = cfg.qk_norm ? vec(p + "attn_k_norm.weight", cfg.head_dim) : nullptr;
    L.wo = weight(p + "attn_output.weight", d, q);
    L.post_attn_norm = cfg.post_norms ? vec(p + "post_attention_norm.weight", d) : nullptr;
    L.ffn_norm = vec(p + "ffn_norm.weight", d);
    if (cfg.n_experts > 0) {
      // Stacked experts: expert e's matrix is rows [e·rows, (e+1)·rows) of the tensor, repacked alone.
      const int64_t n_exp = cfg.n_experts, fe = cfg.d_ff_expert;
      auto expert = [&](const std::string& name, int64_t e, int64_t rows, int64_t cols) {
        Matrix W = matrix(map, name, n_exp * rows, cols);
        W.rows = rows;
        W.data = static_cast<const uint8_t*>(W.data) + e * rows * row_bytes(W.type, cols);
        return packed(W, name);
      };
      L.router = matrix(map, p + "ffn_gate_inp.weight", n_exp, d);
      L.expert_gate_up.resize(static_cast<size_t>(n_exp));
      for (int64_t e = 0; e < n_exp; ++e)
        L.expert_gate_up[e].parts.push_back(expert(p + "ffn_gate_exps.weight", e, fe, d));
      for (int64_t e = 0; e < n_exp; ++e)
        L.expert_gate_up[e].parts.push_back(expert(p + "ffn_up_exps.weight", e, fe, d));
      for (int64_t e = 0; e < n_exp; ++e)
        L.expert_down.push_back(expert(p + "ffn_down_exps.weight", e, d, fe));
      if (cfg.d_ff_shared > 0) {
        const int64_t fs = cfg.d_ff_shared;
        L.shared_gate_up = Projection{
            {weight(p + "ffn_gate_shexp.weight", fs, d), weight(p + "ffn_up_shexp.weight", fs, d)}};
        L.shared_down = weight(p + "ffn_down_shexp.weight", d, fs);
      }
      if (cfg.shared_expert_gate) L.shared_gate = vec(p + "ffn_gate_inp_shexp.weight", d);
    } else {
      L.gate_up =
          cfg.fused_gate_up
              ? Projection{{weight(p + "ffn_up.weight", 2 * ff, d)}}
              : Projection{{weight(p + "ffn_gate.weight", ff, d), weight(p + "ffn_up.weight", ff, d)}};
      L.wdown = weight(p + "ffn_down.weight", d, ff);
    }
    L.post_ffn_norm = cfg.post_norms ? vec(p + "post_ffw_norm.weight", d) : nullptr;
  }
  repack_all(to_pack, cfg.release_packed_sources);
}

void Model::Unmap::operator()(uint8_t* p) const {
  if (bytes == 0) {
    delete[] p;
  } else {
    munmap(p, bytes);
  }
}

// Buffers of 4 MiB and more are page-aligned anonymous mappings of their own (populate() above maps them
// in bulk; freed at once on munmap).
uint8_t* Model::own(int64_t bytes) {
  constexpr int64_t kMapAtLeast = int64_t{4} << 20;
  if (bytes >= kMapAtLeast) {
    void* p =
        mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    owned_.emplace_back(static_cast<uint8_t*>(p), Unmap{static_cast<size_t>(bytes)});
  } else {
    owned_.emplace_back(new uint8_t[static_cast<size_t>(bytes)], Unmap{0});  // default-initialized
  }
  owned_bytes_ += bytes;
  return owned_.back().get();
}

int64_t Model::repacked_bytes() const { return owned_bytes_; }

KVStore::KVStore(const ModelConfig& cfg, int32_t n_blocks, int32_t block_size, DType type)
    : n_blocks_(n_blocks),
      block_size_(block_size),
      n_kv_heads_(cfg.n_kv_heads),
      head_dim_(cfg.head_dim),
      type_(type) {
  if (n_blocks <= 0 || block_size <= 0)
    throw std::runtime_error("KV cache needs a positive block count and size");
  if (type != DType::F32 && type != DType::F16 && type != DType::Q8_0)
    throw std::runtime_error("KV cache type must be F32, F16 or Q8_0");
  if (type == DType::Q8_0 && cfg.head_dim % kvlayout::kQ8Group != 0) {
    throw std::runtime_error("a Q8_0 KV cache needs a head dimension that is a multiple of 32, not " +
                             std::to_string(cfg.head_dim));
  }
  const KVCache shape{type, block_size, cfg.n_kv_heads, cfg.head_dim, nullptr, nullptr, nullptr};
  const int64_t block_stride = kvlayout::tile_bytes(shape) * cfg.n_kv_heads;
  layer_stride_ = block_stride * n_blocks;
  // calloc, not a zero-filled vector: large zeroed blocks come from the OS untouched, so a big cache
  // cap costs memory only as sequences fill it.
  bytes_ = layer_stride_ * cfg.n_layers;
  k_.reset(static_cast<uint8_t*>(std::calloc(static_cast<size_t>(bytes_), 1)));
  v_.reset(static_cast<uint8_t*>(std::calloc(static_cast<size_t>(bytes_), 1)));
  if (!k_ || !v_) throw std::bad_alloc();
}

KVCache KVStore::view(int32_t layer, const int32_t* block_table) const {
  uint8_t* k = k_.get() + layer * layer_stride_;
  uint8_t* v = v_.get() + layer * layer_stride_;
  return KVCache{type_, block_size_, n_kv_heads_, head_dim_, k, v, block_table};
}

}  // namespace cpullm
