// The model C ABI (cpullm/model_api.h) over csrc/model/: exceptions become -1/NULL plus cpullm_last_error().
#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "api/last_error.h"
#include "cpullm/model_api.h"
#include "model/model.h"

struct cpullm_model {
  std::unique_ptr<cpullm::Model> model;
  std::unique_ptr<cpullm::Forward> forward;
};

struct cpullm_kv {
  std::unique_ptr<cpullm::KVStore> store;
};

namespace {

template <class F>
auto guarded(F&& fn, decltype(fn()) on_error) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    cpullm::set_last_error("out of memory");
  } catch (const std::exception& e) { cpullm::set_last_error(e.what()); }
  return on_error;
}

}  // namespace

// The step with logits (cpullm_model_step) or hidden states (cpullm_model_hidden) as its output.
static int model_step(const char* who, cpullm_model* model, cpullm_kv* kv, const int32_t* tokens,
                      const cpullm_seq* seqs, int32_t n_seqs, float* out, bool hidden) {
  return guarded(
      [&]() -> int {
        if (model == nullptr || kv == nullptr || tokens == nullptr || seqs == nullptr) {
          cpullm::set_last_error(std::string(who) + ": model, kv, tokens and seqs must not be NULL");
          return -1;
        }
        static_assert(sizeof(cpullm_seq) == sizeof(cpullm::SeqStep), "cpullm_seq mirrors SeqStep");
        const auto* steps = reinterpret_cast<const cpullm::SeqStep*>(seqs);
        int64_t n_rows = 0;
        for (int32_t s = 0; s < n_seqs; ++s) n_rows += seqs[s].n_logits;
        if (n_rows > 0 && out == nullptr) {
          cpullm::set_last_error(std::string(who) + ": output rows wanted but the output buffer is NULL");
          return -1;
        }
        model->forward->step(*kv->store, tokens, steps, n_seqs, out, hidden);
        return 0;
      },
      -1);
}

extern "C" {

cpullm_model* cpullm_model_create(const cpullm_model_config* config, const cpullm_tensor* tensors,
                                  int32_t n_tensors) {
  return guarded(
      [&]() -> cpullm_model* {
        if (config == nullptr || (tensors == nullptr && n_tensors > 0) || n_tensors < 0) {
          cpullm::set_last_error("cpullm_model_create: config and tensors must not be NULL");
          return nullptr;
        }
        cpullm::ModelConfig c;
        c.n_layers = config->n_layers;
        c.d_model = config->d_model;
        c.n_heads = config->n_heads;
        c.n_kv_heads = config->n_kv_heads;
        c.head_dim = config->head_dim;
        c.d_ff = config->d_ff;
        c.vocab_size = config->vocab_size;
        c.rms_eps = config->rms_eps;
        if (config->rope_mode != 0 && config->rope_mode != 2) {
          cpullm::set_last_error("rope_mode must be 0 (interleaved) or 2 (neox)");
          return nullptr;
        }
        c.rope_mode = static_cast<cpullm::RopeMode>(config->rope_mode);
        c.rope_dims = config->rope_dims;
        c.rope_theta = config->rope_theta;
        c.rope_freq_scale = config->rope_freq_scale;
        c.release_packed_sources = config->release_packed_sources != 0;
        c.qk_norm = config->qk_norm != 0;
        if (config->activation != 0 && config->activation != 1) {
          cpullm::set_last_error("activation must be 0 (SiLU) or 1 (GELU, tanh approximation)");
          return nullptr;
        }
        c.activation = static_cast<cpullm::Activation>(config->activation);
        c.post_norms = config->post_norms != 0;
        c.embed_scale = config->embed_scale == 0.0f ? 1.0f : config->embed_scale;
        c.attn_scale = config->attn_scale;
        c.attn_softcap = config->attn_softcap;
        c.final_softcap = config->final_softcap;
        c.fused_qkv = config->fused_qkv != 0;
        c.fused_gate_up = config->fused_gate_up != 0;
        c.rope_theta_local = config->rope_theta_local;
        c.n_experts = config->n_experts;
        c.n_experts_used = config->n_experts_used;
        c.d_ff_expert = config->d_ff_expert;
        c.moe_norm_topk = config->moe_norm_topk != 0;
        c.d_ff_shared = config->d_ff_shared;
        c.shared_expert_gate = config->shared_expert_gate != 0;
        c.rope_ext_factor = config->rope_ext_factor;
        c.rope_attn_factor = config->rope_attn_factor == 0.0f ? 1.0f : config->rope_attn_factor;
        c.rope_corr_low = config->rope_corr_low;
        c.rope_corr_high = config->rope_corr_high;
        if (config->layer_windows != nullptr && config->n_layers > 0) {
          c.layer_windows.assign(config->layer_windows, config->layer_windows + config->n_layers);
        }
        std::vector<cpullm::TensorRef> refs;
        refs.reserve(static_cast<size_t>(n_tensors));
        for (int32_t i = 0; i < n_tensors; ++i) {
          const cpullm_tensor& t = tensors[i];
          if (t.name == nullptr || t.data == nullptr) {
            cpullm::set_last_error("cpullm_model_create: a tensor has no name or no data");
            return nullptr;
          }
          if (!cpullm::dtype_supported(t.type)) {
            cpullm::set_last_error(std::string("tensor '") + t.name + "' has unsupported ggml type " +
                                   std::to_string(t.type));
            return nullptr;
          }
          refs.push_back({t.name, static_cast<cpullm::DType>(t.type), t.rows, t.cols, t.data});
        }
        auto out = std::make_unique<cpullm_model>();
        out->model = std::make_unique<cpullm::Model>(c, refs);
        out->forward = std::make_unique<cpullm::Forward>(*out->model);
        return out.release();
      },
      nullptr);
}

void cpullm_model_free(cpullm_model* model) { delete model; }

int64_t cpullm_model_repacked_bytes(const cpullm_model* model) {
  return model ? model->model->repacked_bytes() : -1;
}

size_t cpullm_model_packed_names(const cpullm_model* model, char* buf, size_t n) {
  std::string names;
  if (model != nullptr) {
    for (const std::string& name : model->model->packed_names()) names += (names.empty() ? "" : ",") + name;
  }
  if (buf != nullptr && n > 0) {
    const size_t k = std::min(names.size(), n - 1);
    std::memcpy(buf, names.data(), k);
    buf[k] = '\0';
  }
  return names.size();
}

cpullm_kv* cpullm_kv_create(const cpullm_model* model, int32_t n_blocks, int32_t block_size,
                            int32_t kv_type) {
  return guarded(
      [&]() -> cpullm_kv* {
        if (model == nullptr) {
          cpullm::set_last_error("cpullm_kv_create: model is NULL");
          return nullptr;
        }
        if (kv_type != 0 && kv_type != 1 && kv_type != 8) {
          cpullm::set_last_error("KV cache type must be 0 (F32), 1 (F16) or 8 (Q8_0)");
          return nullptr;
        }
        auto out = std::make_unique<cpullm_kv>();
        out->store = std::make_unique<cpullm::KVStore>(model->model->config(), n_blocks, block_size,
                                                       static_cast<cpullm::DType>(kv_type));
        return out.release();
      },
      nullptr);
}

void cpullm_kv_free(cpullm_kv* kv) { delete kv; }

int64_t cpullm_kv_bytes(const cpullm_kv* kv) { return kv ? kv->store->bytes() : -1; }

int cpullm_model_step(cpullm_model* model, cpullm_kv* kv, const int32_t* tokens, const cpullm_seq* seqs,
                      int32_t n_seqs, float* logits) {
  return model_step("cpullm_model_step", model, kv, tokens, seqs, n_seqs, logits, false);
}

int cpullm_model_hidden(cpullm_model* model, cpullm_kv* kv, const int32_t* tokens, const cpullm_seq* seqs,
                        int32_t n_seqs, float* hidden) {
  return model_step("cpullm_model_hidden", model, kv, tokens, seqs, n_seqs, hidden, true);
}

}  // extern "C"
