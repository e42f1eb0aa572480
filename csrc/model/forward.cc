// The forward pass: one call runs every layer for a whole batch of sequences (prefill chunks and decode
// tokens mixed), reading the KV cache through each sequence's block table. Reads top to bottom like
// llama2.c's run.c; T is the number of new tokens in the step, summed over the batch.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "model/model.h"

namespace cpullm {
namespace {

// Weight rows per work unit: a multiple of the kernels' row tiles, so thread boundaries fall on tiles.
constexpr int64_t kRowGrain = 16;

template <class V>
void grow(V& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

// Rows [0, rows) of a row-wise operation split over the pool in parts of whole multiples of `grain` rows;
// on the calling thread alone when that makes fewer than two parts.
template <class F>
void for_rows(ThreadPool* pool, int64_t rows, F&& fn, int64_t grain = 1) {
  if (pool == nullptr || pool->size() == 1 || rows < 2 * grain) {
    fn(0, rows);
    return;
  }
  pool->parallel_for(rows, grain, fn);
}

// x[T × d] += y, rows over the pool from kRowGrain rows.
void residual_add(ThreadPool* pool, float* x, const float* y, int64_t T, int64_t d) {
  for_rows(
      pool, T, [&](int64_t t0, int64_t t1) { add(x + t0 * d, y + t0 * d, x + t0 * d, (t1 - t0) * d); },
      kRowGrain / 2);
}

void check_batch(const Model& model, const KVStore& kv, const int32_t* tokens, const SeqStep* seqs,
                 int32_t n_seqs) {
  const ModelConfig& c = model.config();
  if (n_seqs <= 0) throw std::invalid_argument("a step needs at least one sequence");
  int64_t t = 0;
  for (int32_t s = 0; s < n_seqs; ++s) {
    const SeqStep& q = seqs[s];
    const std::string who = "sequence " + std::to_string(s) + ": ";
    if (q.n_tokens <= 0) throw std::invalid_argument(who + "needs at least one new token");
    if (q.pos0 < 0) throw std::invalid_argument(who + "negative start position");
    if (q.n_logits < 0 || q.n_logits > q.n_tokens) throw std::invalid_argument(who + "n_logits out of range");
    const int64_t need_blocks =
        (static_cast<int64_t>(q.pos0) + q.n_tokens + kv.block_size() - 1) / kv.block_size();
    if (q.block_table == nullptr || q.n_blocks < need_blocks) {
      throw std::invalid_argument(who + "block table has " + std::to_string(q.n_blocks) +
                                  " blocks, positions up to " + std::to_string(q.pos0 + q.n_tokens) +
                                  " need " + std::to_string(need_blocks));
    }
    for (int64_t b = 0; b < need_blocks; ++b) {
      if (q.block_table[b] < 0 || q.block_table[b] >= kv.n_blocks()) {
        throw std::invalid_argument(who + "block id " + std::to_string(q.block_table[b]) +
                                    " is outside the cache");
      }
    }
    for (int32_t i = 0; i < q.n_tokens; ++i, ++t) {
      if (tokens[t] < 0 || tokens[t] >= c.vocab_size) {
        throw std::invalid_argument(who + "token id " + std::to_string(tokens[t]) +
                                    " is outside the vocabulary of " + std::to_string(c.vocab_size));
      }
    }
  }
}

}  // namespace

void Forward::project(const Projection& p, const float* X, int64_t T, float* Y) {
  // Quantize X once for all parts (every quantized type takes the same ActBlocks); float parts read X.
  const void* Xq = X;
  for (const Matrix& W : p.parts) {
    if (uses_act_blocks(W.type)) {
      grow(xq_, act_row_bytes(W.type, W.cols) * T);
      prepare_act(W.type, X, T, W.cols, xq_.data(), global_pool());
      Xq = xq_.data();
      break;
    }
  }
  // One threaded loop over the rows of all parts together: one barrier for Q, K and V.
  const int64_t ldy = p.out_dim();
  auto rows = [&](int64_t r0, int64_t r1) {
    int64_t first = 0;
    for (const Matrix& W : p.parts) {
      const int64_t lo = std::max(r0, first), hi = std::min(r1, first + W.rows);
      if (lo < hi) {
        matmul_rows(W, uses_act_blocks(W.type) ? Xq : X, T, Y + first, ldy, lo - first, hi - first);
      }
      first += W.rows;
    }
  };
  ThreadPool* pool = global_pool();
  if (pool == nullptr || pool->size() == 1) {
    rows(0, ldy);
  } else {
    pool->parallel_for(ldy, kRowGrain, rows);
  }
}

void Forward::step(KVStore& kv, const int32_t* tokens, const SeqStep* seqs, int32_t n_seqs, float* logits,
                   bool hidden) {
  check_batch(model_, kv, tokens, seqs, n_seqs);
  int64_t total = 0;
  for (int32_t s = 0; s < n_seqs; ++s) total += seqs[s].n_tokens;
  if (total <= kMaxPassTokens) {
    pass(kv, tokens, seqs, n_seqs, logits, hidden);
    return;
  }
  // A long step (a big prefill) runs as consecutive passes of at most kMaxPassTokens tokens, cut
  // anywhere in the concatenated token order: each pass writes its KV before the next reads it, and
  // logits come out in the same order as from one pass. Keeps the activation scratch small.
  const int64_t width = hidden ? model_.config().d_model : model_.config().vocab_size;  // of an output row
  std::vector<SeqStep> part;
  int64_t emitted = 0;
  for (int64_t g0 = 0; g0 < total; g0 += kMaxPassTokens) {
    const int64_t g1 = std::min(total, g0 + kMaxPassTokens);
    part.clear();
    int64_t first = 0;  // global index of sequence s's first token
    for (int32_t s = 0; s < n_seqs; first += seqs[s].n_tokens, ++s) {
      const int64_t a = std::max<int64_t>(g0 - first, 0), b = std::min<int64_t>(g1 - first, seqs[s].n_tokens);
      if (a >= b) continue;
      const int64_t wanted_from = seqs[s].n_tokens - seqs[s].n_logits;  // local index of the first logits row
      const auto n_logits = static_cast<int32_t>(std::max<int64_t>(0, b - std::max(a, wanted_from)));
      part.push_back({static_cast<int32_t>(b - a), static_cast<int32_t>(seqs[s].pos0 + a),
                      seqs[s].block_table, seqs[s].n_blocks, n_logits});
    }
    pass(kv, tokens + g0, part.data(), static_cast<int32_t>(part.size()), logits + emitted * width, hidden);
    for (const SeqStep& p : part) emitted += p.n_logits;
  }
}

int64_t Forward::prepare(const SeqStep* seqs, int32_t n_seqs) {
  const ModelConfig& c = model_.config();
  const int64_t d = c.d_model, qd = c.q_dim(), kvd = c.kv_dim(), qkvd = qd + 2 * kvd;
  int64_t T = 0;
  for (int32_t s = 0; s < n_seqs; ++s) T += seqs[s].n_tokens;
  grow(x_, T * d), grow(xn_, T * d), grow(qkv_, T * qkvd), grow(q_, T * qd), grow(k_, T * kvd);
  grow(v_, T * kvd), grow(att_, T * qd), grow(proj_, T * d);
  grow(pos_, T);
  for (int32_t s = 0, t = 0; s < n_seqs; ++s) {
    for (int32_t i = 0; i < seqs[s].n_tokens; ++i) pos_[t++] = seqs[s].pos0 + i;
  }
  return T;
}

void Forward::write_kv(KVStore& kv, int32_t l, const SeqStep* seqs, int32_t n_seqs) {
  const int64_t kvd = model_.config().kv_dim();
  for (int32_t s = 0, t = 0; s < n_seqs; t += seqs[s].n_tokens, ++s) {
    const KVCache view = kv.view(l, seqs[s].block_table);
    const float* k = k_.data() + t * kvd;
    const float* v = v_.data() + t * kvd;
    const auto write = [&](int64_t t0, int64_t t1) {
      kv_write(view, k + t0 * kvd, v + t0 * kvd, seqs[s].pos0 + t0, t1 - t0);
    };
    // A prompt's tokens over the pool, whole KV blocks apart (each token writes only its own slots; K is
    // stored dimension-major, so tokens of one block share cache lines); a decode token alone.
    for_rows(global_pool(), seqs[s].n_tokens, write, kv.block_size());
  }
}

KVCache Forward::layer_view(const KVStore& kv, int32_t l, const int32_t* block_table) const {
  const ModelConfig& c = model_.config();
  KVCache view = kv.view(l, block_table);
  view.window = c.layer_windows.empty() ? 0 : c.layer_windows[static_cast<size_t>(l)];
  view.softcap = c.attn_softcap;
  return view;
}

void Forward::attend(const KVStore& kv, int32_t l, const SeqStep* seqs, int32_t n_seqs, int64_t T,
                     float scale) {
  const ModelConfig& c = model_.config();
  ThreadPool* pool = global_pool();
  const int64_t qd = c.q_dim();
  // Decode tokens (sequences with one new token) go to attention_decode, split along their keys so a
  // long context keeps every thread busy; the other tokens run as (token, head) items in one loop.
  decode_.clear();
  for (int32_t s = 0, t = 0; s < n_seqs; t += seqs[s].n_tokens, ++s) {
    if (seqs[s].n_tokens == 1) {
      decode_.push_back(
          {q_.data() + t * qd, seqs[s].pos0, layer_view(kv, l, seqs[s].block_table), att_.data() + t * qd});
    }
  }
  const bool split =
      !decode_.empty() &&
      attention_decode(decode_.data(), static_cast<int64_t>(decode_.size()), c.n_heads, scale, pool);
  const int64_t item_tokens = split ? T - static_cast<int64_t>(decode_.size()) : T;
  if (item_tokens == 0) return;
  // Item i belongs to the sequence whose token range holds i, counting only the sequences in this loop.
  pool->parallel_for(item_tokens * c.n_heads, 1, [&](int64_t i0, int64_t i1) {
    int64_t first = 0;  // first item of sequence s
    for (int32_t s = 0, t = 0; s < n_seqs && i0 < i1; t += seqs[s].n_tokens, ++s) {
      if (split && seqs[s].n_tokens == 1) continue;
      const int64_t items = static_cast<int64_t>(seqs[s].n_tokens) * c.n_heads;
      const int64_t lo = std::max(i0, first), hi = std::min(i1, first + items);
      if (lo < hi) {
        attention_items(q_.data() + t * qd, seqs[s].n_tokens, seqs[s].pos0, c.n_heads,
                        layer_view(kv, l, seqs[s].block_table), scale, att_.data() + t * qd, lo - first,
                        hi - first);
      }
      first += items;
    }
  });
}

void Forward::gated_ffn(const Projection& gate_up, const Matrix& down, const float* X, int64_t n, float* Y) {
  const ModelConfig& c = model_.config();
  const int64_t ff = down.cols;
  grow(gu_, n * 2 * ff), grow(h_, n * ff);
  project(gate_up, X, n, gu_.data());  // [n × (ff | ff)]
  for_rows(global_pool(), n, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* g = gu_.data() + t * 2 * ff;
      if (c.activation == Activation::GeluTanh) {
        gelu_tanh_mul(g, g + ff, h_.data() + t * ff, ff);
      } else {
        silu_mul(g, g + ff, h_.data() + t * ff, ff);
      }
    }
  });
  matmul(down, h_.data(), n, Y, global_pool());  // [n × d]
}

void Forward::moe(const Layer& L, int64_t T) {
  const ModelConfig& c = model_.config();
  const int64_t d = c.d_model, n_exp = c.n_experts, k = c.n_experts_used;
  grow(route_, T * n_exp), grow(by_expert_, T * k), grow(route_w_, T * k), grow(expert_end_, n_exp);
  matmul(L.router, xn_.data(), T, route_.data(), global_pool());  // [T × n_exp]
  // Each token's top k experts (ties to the lower index) with their softmax weights. Then a counting sort
  // by expert, so that each expert runs once over all its tokens; tokens stay in order within an expert.
  std::vector<int32_t> chosen(static_cast<size_t>(T * k));
  std::vector<float> weight(static_cast<size_t>(T * k));
  std::vector<int64_t> count(static_cast<size_t>(n_exp), 0);
  std::vector<int32_t> order(static_cast<size_t>(n_exp));
  for (int64_t t = 0; t < T; ++t) {
    const float* r = route_.data() + t * n_exp;
    for (int32_t e = 0; e < n_exp; ++e) order[e] = e;
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [r](int32_t a, int32_t b) { return r[a] > r[b] || (r[a] == r[b] && a < b); });
    const float top = r[order[0]];
    double all = 0.0, picked = 0.0;  // softmax denominators over every expert and over the chosen ones
    for (int64_t e = 0; e < n_exp; ++e) all += std::exp(static_cast<double>(r[e] - top));
    for (int64_t j = 0; j < k; ++j) picked += std::exp(static_cast<double>(r[order[j]] - top));
    const double denom = c.moe_norm_topk ? picked : all;
    for (int64_t j = 0; j < k; ++j) {
      chosen[t * k + j] = order[j];
      weight[t * k + j] = static_cast<float>(std::exp(static_cast<double>(r[order[j]] - top)) / denom);
      ++count[order[j]];
    }
  }
  int64_t end = 0;
  for (int64_t e = 0; e < n_exp; ++e) expert_end_[e] = end += count[e];
  std::vector<int64_t> next(static_cast<size_t>(n_exp));
  for (int64_t e = 0; e < n_exp; ++e) next[e] = expert_end_[e] - count[e];
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t slot = next[chosen[t * k + j]]++;
      by_expert_[slot] = static_cast<int32_t>(t);
      route_w_[slot] = weight[t * k + j];
    }
  }
  // Each used expert over its tokens' rows, added into proj_ with the route's weight.
  float* y = proj_.data();
  std::fill(y, y + T * d, 0.0f);
  for (int64_t e = 0, begin = 0; e < n_exp; begin = expert_end_[e], ++e) {
    const int64_t n = expert_end_[e] - begin;
    if (n == 0) continue;
    grow(moe_x_, 2 * n * d);
    float* xe = moe_x_.data();          // [n × d] the expert's input rows
    float* ye = moe_x_.data() + n * d;  // [n × d] its output rows
    for (int64_t i = 0; i < n; ++i) std::copy_n(xn_.data() + by_expert_[begin + i] * d, d, xe + i * d);
    gated_ffn(L.expert_gate_up[e], L.expert_down[e], xe, n, ye);
    for (int64_t i = 0; i < n; ++i) {
      float* dst = y + by_expert_[begin + i] * d;
      const float w = route_w_[begin + i];
      for (int64_t j = 0; j < d; ++j) dst[j] += w * ye[i * d + j];
    }
  }
  // The shared expert runs on every token, scaled by its sigmoid gate if it has one.
  if (c.d_ff_shared > 0) {
    grow(moe_x_, T * d);
    float* ys = moe_x_.data();  // [T × d]
    gated_ffn(L.shared_gate_up, L.shared_down, xn_.data(), T, ys);
    for (int64_t t = 0; t < T; ++t) {
      float g = 1.0f;
      if (L.shared_gate) {
        double z = 0.0;
        for (int64_t j = 0; j < d; ++j) z += static_cast<double>(xn_[t * d + j]) * L.shared_gate[j];
        g = static_cast<float>(1.0 / (1.0 + std::exp(-z)));
      }
      for (int64_t j = 0; j < d; ++j) y[t * d + j] += g * ys[t * d + j];
    }
  }
}

void Forward::post_norm(const float* w, int64_t T) {
  const ModelConfig& c = model_.config();
  const int64_t d = c.d_model;
  float* y = proj_.data();
  for_rows(global_pool(), T,
           [&](int64_t t0, int64_t t1) { rmsnorm(y + t0 * d, w, y + t0 * d, t1 - t0, d, c.rms_eps); });
}

int64_t Forward::norm_logit_rows(const SeqStep* seqs, int32_t n_seqs) {
  const ModelConfig& c = model_.config();
  const int64_t d = c.d_model;
  int64_t n_out = 0;
  for (int32_t s = 0, t = 0; s < n_seqs; t += seqs[s].n_tokens, ++s) {
    const int64_t first = t + seqs[s].n_tokens - seqs[s].n_logits;
    for (int64_t r = first; r < t + seqs[s].n_tokens; ++r, ++n_out) {
      rmsnorm(x_.data() + r * d, model_.output_norm(), xn_.data() + n_out * d, 1, d, c.rms_eps);
    }
  }
  return n_out;
}

void Forward::pass(KVStore& kv, const int32_t* tokens, const SeqStep* seqs, int32_t n_seqs, float* logits,
                   bool hidden) {
  const ModelConfig& c = model_.config();
  ThreadPool* pool = global_pool();
  const int64_t d = c.d_model, qd = c.q_dim(), kvd = c.kv_dim(), qkvd = qd + 2 * kvd;
  const int64_t T = prepare(seqs, n_seqs);
  float* x = x_.data();    // [T × d]
  float* xn = xn_.data();  // [T × d]

  for_rows(pool, T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      dequant_row(model_.token_embd(), tokens[t], x + t * d);
      if (c.embed_scale != 1.0f) {
        for (int64_t i = 0; i < d; ++i) x[t * d + i] *= c.embed_scale;
      }
    }
  });

  const RopeParams rope_global{c.rope_mode,        c.rope_dims,         c.rope_theta,
                               c.rope_freq_scale,  model_.rope_freqs(), c.rope_ext_factor,
                               c.rope_attn_factor, c.rope_corr_low,     c.rope_corr_high};
  const RopeParams rope_local{c.rope_mode, c.rope_dims, c.rope_theta_local, 1.0f, model_.rope_freqs()};
  const float scale = c.attn_scale > 0.0f ? c.attn_scale : 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  for (int32_t l = 0; l < c.n_layers; ++l) {
    const Layer& L = model_.layers()[static_cast<size_t>(l)];
    const bool local = c.rope_theta_local > 0.0f && !c.layer_windows.empty() && c.layer_windows[l] > 0;
    const RopeParams& rope_p = local ? rope_local : rope_global;

    // ---- attention ----
    for_rows(pool, T, [&](int64_t t0, int64_t t1) {
      rmsnorm(x + t0 * d, L.attn_norm, xn + t0 * d, t1 - t0, d, c.rms_eps);
    });
    project(L.qkv, xn, T, qkv_.data());  // [T × (qd | kvd | kvd)]
    for_rows(pool, T, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        float* row = qkv_.data() + t * qkvd;
        if (L.bqkv) add(row, L.bqkv, row, qkvd);
        std::copy(row, row + qd, q_.data() + t * qd);
        std::copy(row + qd, row + qd + kvd, k_.data() + t * kvd);
        std::copy(row + qd + kvd, row + qkvd, v_.data() + t * kvd);
      }
      if (L.q_norm) {  // each head is one row of head_dim values
        rmsnorm(q_.data() + t0 * qd, L.q_norm, q_.data() + t0 * qd, (t1 - t0) * c.n_heads, c.head_dim,
                c.rms_eps);
        rmsnorm(k_.data() + t0 * kvd, L.k_norm, k_.data() + t0 * kvd, (t1 - t0) * c.n_kv_heads, c.head_dim,
                c.rms_eps);
      }
      rope(q_.data() + t0 * qd, t1 - t0, c.n_heads, c.head_dim, pos_.data() + t0, rope_p);
      rope(k_.data() + t0 * kvd, t1 - t0, c.n_kv_heads, c.head_dim, pos_.data() + t0, rope_p);
    });
    write_kv(kv, l, seqs, n_seqs);                     // k_, v_ -> the cache
    attend(kv, l, seqs, n_seqs, T, scale);             // q_ -> att_ [T × qd]
    matmul(L.wo, att_.data(), T, proj_.data(), pool);  // [T × d]
    if (L.post_attn_norm) post_norm(L.post_attn_norm, T);
    residual_add(pool, x, proj_.data(), T, d);

    // ---- feed-forward (SwiGLU or GeGLU; dense or a mixture of experts) ----
    for_rows(pool, T, [&](int64_t t0, int64_t t1) {
      rmsnorm(x + t0 * d, L.ffn_norm, xn + t0 * d, t1 - t0, d, c.rms_eps);
    });
    if (c.n_experts > 0) {
      moe(L, T);  // xn -> proj_ [T × d]
    } else {
      gated_ffn(L.gate_up, L.wdown, xn, T, proj_.data());  // [T × d]
    }
    if (L.post_ffn_norm) post_norm(L.post_ffn_norm, T);
    residual_add(pool, x, proj_.data(), T, d);
  }

  // ---- the requested rows: final norm, then the output projection (logits) unless hidden ----
  const int64_t n_out = norm_logit_rows(seqs, n_seqs);  // xn [n_out × d]
  if (hidden) {
    std::copy(xn, xn + n_out * d, logits);  // the final hidden states, for embeddings
    return;
  }
  if (n_out > 0) matmul(model_.output(), xn, n_out, logits, pool);  // [n_out × vocab]
  if (n_out > 0 && c.final_softcap > 0.0f) {
    const int64_t vocab = c.vocab_size;
    for_rows(pool, n_out, [&](int64_t r0, int64_t r1) {
      softcap(logits + r0 * vocab, (r1 - r0) * vocab, c.final_softcap);
    });
  }
}

}  // namespace cpullm
