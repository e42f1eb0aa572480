// The transformer (llama, mistral, qwen2, qwen3, qwen2moe, qwen3moe, gemma2, gemma3, phi3) over the kernel
// library: one block whose options (QKV bias, per-head Q/K norm, activation, post-norms, soft-capping,
// sliding window...) the architecture sets (engine/cpullm/config.py ARCHITECTURES).
//
// A Model borrows the weights (GGUF-layout bytes, usually the memory-mapped file) and owns only what it
// repacks at load: each product's weights in the layout the variant's fast path prefers. Q/K/V (and
// gate/up) read the same input, so each group runs as one threaded product over all their rows. A KVStore
// owns the paged KV cache: per layer, a pool of fixed-size blocks of `block_size` tokens that the sequences
// of a batch index through their own block tables.
#ifndef CPULLM_MODEL_MODEL_H
#define CPULLM_MODEL_MODEL_H

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace cpullm {

enum class Activation : int32_t { Silu = 0, GeluTanh = 1 };  // the FFN gate's: SwiGLU or GeGLU

struct ModelConfig {
  int32_t n_layers = 0;
  int32_t d_model = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t d_ff = 0;
  int32_t vocab_size = 0;
  float rms_eps = 1e-5f;
  RopeMode rope_mode = RopeMode::Interleaved;
  int32_t rope_dims = 0;
  float rope_theta = 10000.0f;
  float rope_freq_scale = 1.0f;
  bool qk_norm = false;  // per-head RMSNorm of queries and keys before RoPE (qwen3)
  Activation activation = Activation::Silu;
  bool post_norms = false;              // RMSNorm of each sub-layer's output before its residual add (gemma2)
  float embed_scale = 1.0f;             // token embeddings are multiplied by it (gemma2: sqrt(d_model))
  float attn_scale = 0.0f;              // attention score factor; 0 = 1 / sqrt(head_dim)
  float attn_softcap = 0.0f;            // scores -> cap · tanh(score / cap) before the softmax; 0 = not
  float final_softcap = 0.0f;           // the same for the logits
  std::vector<int32_t> layer_windows;   // per layer: sliding window (0 = none); empty = none anywhere
  bool fused_qkv = false;               // one attn_qkv matrix [q | k | v] (phi3)
  bool fused_gate_up = false;           // ffn_up holds [gate | up] (2 d_ff rows), no ffn_gate (phi3)
  bool release_packed_sources = false;  // weights are a file mapping: drop a tensor's pages once packed
  // RoPE base of the sliding-window layers, which rotate without linear scaling (gemma3); 0 = rope_theta
  float rope_theta_local = 0.0f;
  // Mixture of experts: n_experts > 0 replaces each layer's FFN by its router's top n_experts_used experts
  // (each a gated FFN d_ff_expert wide), weighted by their softmax probabilities, renormalized over the
  // chosen ones when moe_norm_topk.
  int32_t n_experts = 0;
  int32_t n_experts_used = 0;
  int32_t d_ff_expert = 0;
  bool moe_norm_topk = true;
  int32_t d_ff_shared = 0;          // a shared expert every token runs, this wide (0 = none)
  bool shared_expert_gate = false;  // its output scaled by sigmoid(x · ffn_gate_inp_shexp)
  // YaRN scaling of the global layers' RoPE (see RopeParams); ext_factor 0 = none
  float rope_ext_factor = 0.0f;
  float rope_attn_factor = 1.0f;
  float rope_corr_low = 0.0f;
  float rope_corr_high = 0.0f;

  int32_t q_dim() const { return n_heads * head_dim; }
  int32_t kv_dim() const { return n_kv_heads * head_dim; }
};

// A named tensor handed over by the caller: GGUF layout, `rows` × `cols` (cols = GGUF ne[0]).
struct TensorRef {
  std::string name;
  DType type;
  int64_t rows;
  int64_t cols;
  const void* data;
};

// Several weight matrices applied to the same input, their outputs side by side in one row.
struct Projection {
  std::vector<Matrix> parts;  // each [rows_i, d_in]; output columns of part i start at Σ rows_<i
  int64_t out_dim() const;
};

struct Layer {
  const float* attn_norm;       // [d_model]
  Projection qkv;               // -> [q_dim | kv_dim | kv_dim]
  const float* bqkv;            // [q_dim + 2 kv_dim] or nullptr (qwen2 has Q/K/V biases)
  const float* q_norm;          // [head_dim] or nullptr: RMSNorm weights of every query head (qwen3)
  const float* k_norm;          // [head_dim] or nullptr: the same for key heads
  Matrix wo;                    // [d_model, q_dim]
  const float* post_attn_norm;  // [d_model] or nullptr: RMSNorm of the attention output (gemma2)
  const float* ffn_norm;        // [d_model]
  Projection gate_up;           // -> [d_ff | d_ff]
  Matrix wdown;                 // [d_model, d_ff]
  const float* post_ffn_norm;   // [d_model] or nullptr: RMSNorm of the FFN output (gemma2)
  // Mixture of experts (n_experts > 0; then gate_up and wdown are empty):
  Matrix router;                           // [n_experts, d_model]
  std::vector<Projection> expert_gate_up;  // per expert -> [d_ff_expert | d_ff_expert]
  std::vector<Matrix> expert_down;         // per expert [d_model, d_ff_expert]
  Projection shared_gate_up;               // -> [d_ff_shared | d_ff_shared], or no parts
  Matrix shared_down;                      // [d_model, d_ff_shared]
  const float* shared_gate = nullptr;      // [d_model] or nullptr
};

class Model {
 public:
  // Throws std::runtime_error naming the missing or malformed tensor.
  Model(const ModelConfig& cfg, const std::vector<TensorRef>& tensors);

  const ModelConfig& config() const { return cfg_; }
  const std::vector<Layer>& layers() const { return layers_; }
  const Matrix& token_embd() const { return token_embd_; }
  const Matrix& output() const { return output_; }
  const float* output_norm() const { return output_norm_; }
  const float* rope_freqs() const { return rope_freqs_; }
  // Bytes this model allocated for repacked weights.
  int64_t repacked_bytes() const;
  // Tensors whose products read only the packed copy: the caller may release their original pages
  // (a mapped file's pages can be dropped and would be read back if ever touched).
  const std::vector<std::string>& packed_names() const { return packed_names_; }

 private:
  ModelConfig cfg_;
  std::vector<Layer> layers_;
  Matrix token_embd_{};
  Matrix output_{};
  const float* output_norm_ = nullptr;
  const float* rope_freqs_ = nullptr;
  // Packed weights, f32 copies of small vectors. Uninitialized on allocation: the packed copies' pages are
  // first touched by the threads that write them. Large ones are their own mappings (Model::own).
  struct Unmap {
    size_t bytes;  // 0: from new[]
    void operator()(uint8_t* p) const;
  };
  std::vector<std::unique_ptr<uint8_t[], Unmap>> owned_;
  int64_t owned_bytes_ = 0;
  uint8_t* own(int64_t bytes);
  std::vector<std::string> packed_names_;
};

// The paged KV cache of every layer: n_blocks blocks of block_size tokens per layer, K and V.
class KVStore {
 public:
  KVStore(const ModelConfig& cfg, int32_t n_blocks, int32_t block_size, DType type);
  int32_t n_blocks() const { return n_blocks_; }
  int32_t block_size() const { return block_size_; }
  DType type() const { return type_; }
  // The layer's view for one sequence, with that sequence's block table.
  KVCache view(int32_t layer, const int32_t* block_table) const;
  int64_t bytes() const { return 2 * bytes_; }

 private:
  int32_t n_blocks_, block_size_, n_kv_heads_, head_dim_;
  DType type_;
  int64_t layer_stride_;  // bytes of one layer's pool
  int64_t bytes_;         // bytes of each pool (all layers)
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t[], Free> k_, v_;
};

// One sequence's share of a step: n_tokens new tokens at positions pos0 .. pos0 + n_tokens - 1, whose
// KV goes to the blocks in block_table (which must cover every position up to the last new one), and
// the logits of its last n_logits tokens wanted (0 .. n_tokens).
struct SeqStep {
  int32_t n_tokens;
  int32_t pos0;
  const int32_t* block_table;
  int32_t n_blocks;
  int32_t n_logits;
};

// Tokens one forward pass processes at most; a longer step runs as several passes. Bounds the activation
// scratch (about 25 KiB per token for SmolLM2) while keeping products wide enough to reuse weights.
constexpr int64_t kMaxPassTokens = 128;

// Runs the forward pass for a batch of sequences in one call: prefill chunks and decode tokens mixed.
// tokens: the new tokens of every sequence, concatenated in order. logits: [Σ n_logits × vocab_size].
class Forward {
 public:
  explicit Forward(const Model& model) : model_(model) {}
  // Throws std::invalid_argument on a malformed batch (token id out of range, block table too short...).
  // With hidden, the wanted rows' final hidden states ([n x d_model], after the final norm) instead of
  // logits.
  void step(KVStore& kv, const int32_t* tokens, const SeqStep* seqs, int32_t n_seqs, float* logits,
            bool hidden = false);

 private:
  const Model& model_;
  // Scratch, grown on demand and reused across steps. T = total new tokens in the step.
  std::vector<float> x_;      // [T × d_model]   residual stream
  std::vector<float> xn_;     // [T × d_model]   normalized input of a sub-layer
  std::vector<float> qkv_;    // [T × (q_dim + 2 kv_dim)]
  std::vector<float> q_;      // [T × q_dim]
  std::vector<float> k_;      // [T × kv_dim]
  std::vector<float> v_;      // [T × kv_dim]
  std::vector<float> att_;    // [T × q_dim]     attention output
  std::vector<float> gu_;     // [T × 2 d_ff]    gate | up
  std::vector<float> h_;      // [T × d_ff]      silu(gate) * up
  std::vector<float> proj_;   // [T × d_model]   output of wo / wdown before the residual add
  std::vector<int32_t> pos_;  // [T]
  std::vector<uint8_t> xq_;   // [T × act_row_bytes]  quantized activations shared by a projection's parts
  std::vector<DecodeQuery> decode_;  // this layer's decode tokens, for attention_decode
  // Mixture of experts: router output, then the (token, weight) routes grouped by expert.
  std::vector<float> route_;         // [T × n_experts]  router logits
  std::vector<int32_t> by_expert_;   // [T × n_experts_used]  token of each route, grouped by expert
  std::vector<float> route_w_;       // [T × n_experts_used]  its weight, in the same order
  std::vector<int64_t> expert_end_;  // [n_experts]  end of each expert's group in by_expert_
  std::vector<float> moe_x_;         // [n_e × d_model]  one expert's input rows (gathered from xn_)

  void project(const Projection& p, const float* X, int64_t T, float* Y);
  // One forward pass over a batch already checked by step(), at most kMaxPassTokens tokens: the layers.
  void pass(KVStore& kv, const int32_t* tokens, const SeqStep* seqs, int32_t n_seqs, float* logits,
            bool hidden);
  // The pass's batch bookkeeping. Sequence s's new tokens are rows t .. t + n_tokens - 1 of the batch, t the
  // earlier sequences' n_tokens summed. prepare: scratch for the batch's T tokens, their positions; returns
  // T.
  int64_t prepare(const SeqStep* seqs, int32_t n_seqs);
  // Layer l's new keys and values (k_, v_) into each sequence's blocks.
  void write_kv(KVStore& kv, int32_t l, const SeqStep* seqs, int32_t n_seqs);
  // Layer l's attention of every new token (q_) over its sequence's cache, into att_.
  void attend(const KVStore& kv, int32_t l, const SeqStep* seqs, int32_t n_seqs, int64_t T, float scale);
  // Layer l's view of one sequence's cache, with the layer's attention options (window, soft-cap).
  KVCache layer_view(const KVStore& kv, int32_t l, const int32_t* block_table) const;
  // proj_'s T rows normalized in place with weights w (a sub-layer's post-norm, before the residual add).
  void post_norm(const float* w, int64_t T);
  // The gated FFN of xn_'s T rows into proj_: the layer's dense gate/up/down, or its mixture of experts.
  void ffn(const Layer& L, int64_t T);
  void moe(const Layer& L, int64_t T);
  // Rows X[n × d] through one gated FFN (gate_up, down) into Y[n × d]; uses gu_ and h_.
  void gated_ffn(const Projection& gate_up, const Matrix& down, const float* X, int64_t n, float* Y);
  // The final norm of the rows whose logits are wanted, packed into xn_; returns their count.
  int64_t norm_logit_rows(const SeqStep* seqs, int32_t n_seqs);
};

}  // namespace cpullm

#endif  // CPULLM_MODEL_MODEL_H
