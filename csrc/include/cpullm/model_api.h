/* cpullm model C ABI: load a Llama-family model over borrowed weights, keep a paged KV cache, and run
 * one forward step for a whole batch of sequences per call. Plain C types only; errors return NULL or
 * -1 and cpullm_last_error() (cpullm.h) says what was wrong. */
#ifndef CPULLM_MODEL_API_H
#define CPULLM_MODEL_API_H

#include <stddef.h>
#include <stdint.h>

#include "cpullm/cpullm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int32_t n_layers, d_model, n_heads, n_kv_heads, head_dim, d_ff, vocab_size;
  float rms_eps;
  int32_t rope_mode; /* 0 = interleaved pairs (llama, mistral), 2 = neox half-split (qwen2) */
  int32_t rope_dims;
  float rope_theta;
  float rope_freq_scale; /* 1 / linear scaling factor */
  /* 1 when the tensors' bytes are a read-only file mapping: after repacking a tensor, its pages are
   * dropped from memory (madvise DONTNEED; a stray read pages them back in from the file), so the
   * weights are not held twice. Must be 0 for any other memory, which DONTNEED would zero. */
  int32_t release_packed_sources;
  int32_t qk_norm; /* 1: per-head RMSNorm of queries and keys before RoPE (tensors blk.N.attn_q_norm.weight,
                    * blk.N.attn_k_norm.weight, [head_dim] each; qwen3) */
  int32_t activation;  /* the FFN gate's: 0 = SiLU (SwiGLU), 1 = tanh-approximated GELU (GeGLU; gemma2) */
  int32_t post_norms;  /* 1: RMSNorm of each sub-layer's output before the residual add (tensors
                        * blk.N.post_attention_norm.weight, blk.N.post_ffw_norm.weight; gemma2) */
  float embed_scale;   /* token embeddings are multiplied by it; 0 = 1 */
  float attn_scale;    /* attention scores are q.k times it; 0 = 1 / sqrt(head_dim) */
  float attn_softcap;  /* scores -> cap * tanh(score / cap) before the softmax; 0 = none */
  float final_softcap; /* the same for the logits; 0 = none */
  /* n_layers values (read during cpullm_model_create only): layer i's queries see the last
   * layer_windows[i] positions up to their own (0 = all); NULL = no sliding window anywhere. */
  const int32_t* layer_windows;
  int32_t fused_qkv;     /* 1: blk.N.attn_qkv.weight ([q | k | v] rows) instead of attn_q/k/v (phi3) */
  int32_t fused_gate_up; /* 1: blk.N.ffn_up.weight holds [gate | up] (2 d_ff rows), no ffn_gate (phi3) */
  /* RoPE base of the sliding-window layers, which then rotate without linear scaling (gemma3: 10000);
   * 0 = every layer uses rope_theta and rope_freq_scale. */
  float rope_theta_local;
  /* Mixture of experts (n_experts > 0): each layer's FFN is its router's (blk.N.ffn_gate_inp.weight,
   * n_experts x d_model) top n_experts_used experts, weighted by their softmax probabilities (renormalized
   * over the chosen ones when moe_norm_topk); the experts are stacked in blk.N.ffn_{gate,up}_exps.weight
   * (n_experts x d_ff_expert rows of d_model) and blk.N.ffn_down_exps.weight (n_experts x d_model rows of
   * d_ff_expert). 0 = a dense FFN. */
  int32_t n_experts, n_experts_used, d_ff_expert, moe_norm_topk;
  /* With experts: a shared expert d_ff_shared wide (blk.N.ffn_{gate,up,down}_shexp.weight) that every token
   * also runs, scaled by sigmoid(x . blk.N.ffn_gate_inp_shexp.weight) when shared_expert_gate (qwen2moe);
   * 0 = none. */
  int32_t d_ff_shared, shared_expert_gate;
  /* YaRN RoPE scaling of the global layers (rope_ext_factor 1; 0 = none): pairs below rope_corr_low keep
   * their unscaled angle, pairs above rope_corr_high take the scaled one, a linear blend between; cos and
   * sin are scaled by rope_attn_factor * (1 + 0.1 ln(1 / rope_freq_scale)). rope_attn_factor 0 = 1. */
  float rope_ext_factor, rope_attn_factor, rope_corr_low, rope_corr_high;
} cpullm_model_config;

/* A tensor by GGUF name ("blk.0.attn_q.weight"), ggml type id, rows x cols (cols = GGUF ne[0]) and its
 * bytes, which must stay valid (e.g. the mapped file) for the model's lifetime. */
typedef struct {
  const char* name;
  int32_t type;
  int64_t rows;
  int64_t cols;
  const void* data;
} cpullm_tensor;

typedef struct cpullm_model cpullm_model;
typedef struct cpullm_kv cpullm_kv;

CPULLM_API cpullm_model* cpullm_model_create(const cpullm_model_config* config, const cpullm_tensor* tensors,
                                             int32_t n_tensors);
CPULLM_API void cpullm_model_free(cpullm_model* model);
/* Bytes the model allocated for repacked weights. */
CPULLM_API int64_t cpullm_model_repacked_bytes(const cpullm_model* model);
/* Names of the tensors whose products read a packed copy, comma separated. Buffer convention of
 * cpullm_probe_usable: writes at most n bytes including the NUL, returns the full length. */
CPULLM_API size_t cpullm_model_packed_names(const cpullm_model* model, char* buf, size_t n);

/* The KV cache: n_blocks blocks of block_size tokens, in every layer; kv_type 0 = F32, 1 = F16, 8 = Q8_0
   (int8 with an f16 scale per 32 values of a head, head_dim a multiple of 32). */
CPULLM_API cpullm_kv* cpullm_kv_create(const cpullm_model* model, int32_t n_blocks, int32_t block_size,
                                       int32_t kv_type);
CPULLM_API void cpullm_kv_free(cpullm_kv* kv);
CPULLM_API int64_t cpullm_kv_bytes(const cpullm_kv* kv);

/* One sequence's share of a step (see csrc/model/model.h SeqStep). */
typedef struct {
  int32_t n_tokens;
  int32_t pos0;
  const int32_t* block_table;
  int32_t n_blocks;
  int32_t n_logits;
} cpullm_seq;

/* tokens: every sequence's new tokens, concatenated. logits: [sum of n_logits x vocab_size] floats. */
CPULLM_API int cpullm_model_step(cpullm_model* model, cpullm_kv* kv, const int32_t* tokens,
                                 const cpullm_seq* seqs, int32_t n_seqs, float* logits);

/* The same step, but for the rows whose logits it would compute it writes their final hidden states
 * (after the final norm, before the output projection): hidden is [sum of n_logits x d_model] floats.
 * For embeddings. */
CPULLM_API int cpullm_model_hidden(cpullm_model* model, cpullm_kv* kv, const int32_t* tokens,
                                   const cpullm_seq* seqs, int32_t n_seqs, float* hidden);

#ifdef __cplusplus
}
#endif

#endif /* CPULLM_MODEL_API_H */
