// Benchmark entry points: timing loops run natively so the per-call cost of ctypes does not pollute
// small-shape measurements. Used by benchmarks/kernels.py.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "cpullm/cpullm.h"
#include "kernels/kernels.h"

#if defined(__GNUC__) && !defined(__clang__)
// The 64-byte vectors below never cross a function boundary of another library.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

extern "C" {

CPULLM_API int cpullm_bench_matmul(int impl, int32_t type, const void* w, int64_t rows, int64_t cols,
                                   int64_t copies, const float* x, int64_t m, float* y, int64_t reps,
                                   double* seconds);
CPULLM_API int cpullm_bench_stream_read(const void* buf, int64_t bytes, int64_t reps, double* seconds,
                                        uint64_t* checksum);

// Times `reps` products Y[m × rows] = X · Wᵀ, call k using weight copy k % copies (copies matrices laid
// end to end, so a large `copies` defeats the caches). seconds[k] = wall time of call k.
int cpullm_bench_matmul(int impl, int32_t type, const void* w, int64_t rows, int64_t cols, int64_t copies,
                        const float* x, int64_t m, float* y, int64_t reps, double* seconds) {
  if (!cpullm::dtype_supported(type) || copies < 1 || reps < 1 || !w || !x || !y || !seconds) return -1;
  const auto t = static_cast<cpullm::DType>(type);
  const int64_t bytes = cpullm::row_bytes(t, cols) * rows;
  std::vector<uint8_t> xq(static_cast<size_t>(cpullm::act_row_bytes(t, cols) * m));
  // The production path: weights repacked once (as the engine does at load) when the library can.
  const int64_t pbytes = impl == CPULLM_IMPL_REF ? 0 : cpullm::packed_bytes(cpullm::Matrix{t, rows, cols, w});
  std::vector<uint8_t> packed(static_cast<size_t>(pbytes * copies));
  for (int64_t c = 0; c < copies && pbytes > 0; ++c) {
    cpullm::repack(cpullm::Matrix{t, rows, cols, static_cast<const uint8_t*>(w) + c * bytes},
                   packed.data() + c * pbytes);
  }
  for (int64_t k = 0; k < reps; ++k) {
    cpullm::Matrix W{t, rows, cols, static_cast<const uint8_t*>(w) + (k % copies) * bytes};
    if (pbytes > 0) W.packed = packed.data() + (k % copies) * pbytes;
    const double t0 = now();
    if (impl == CPULLM_IMPL_REF) {
      const void* act = x;
      if (cpullm::uses_act_blocks(t)) {
        for (int64_t i = 0; i < m; ++i) {
          cpullm::ref::quantize_act(x + i * cols, cols,
                                    reinterpret_cast<cpullm::ActBlock*>(xq.data()) + i * (cols / 32));
        }
        act = xq.data();
      }
      cpullm::ref::matmul_rows(W, act, m, y, rows, 0, rows);
    } else {
      cpullm::matmul(W, x, m, y, cpullm::global_pool());
    }
    seconds[k] = now() - t0;
  }
  return 0;
}

// Reads `bytes` (a multiple of 64) of buf `reps` times over the library's thread pool; seconds[k] per pass.
// A plain streaming read: the DRAM read bandwidth the matvec benchmarks are compared with.
int cpullm_bench_stream_read(const void* buf, int64_t bytes, int64_t reps, double* seconds,
                             uint64_t* checksum) {
  if (!buf || bytes < 64 || bytes % 64 != 0 || reps < 1 || !seconds) return -1;
  struct Job {
    const uint64_t* p;
    uint64_t partial[1024];
  } job{static_cast<const uint64_t*>(buf), {}};
  const int64_t lines = bytes / 64;
  uint64_t total = 0;
  cpullm::ThreadPool* pool = cpullm::global_pool();
  for (int64_t k = 0; k < reps; ++k) {
    std::fill(std::begin(job.partial), std::end(job.partial), 0);
    const double t0 = now();
    pool->parallel_for(
        lines, 1024,
        [](void* ctx, int64_t l0, int64_t l1, int thread) {
          auto* jb = static_cast<Job*>(ctx);
          // Four independent 64-byte accumulators (vector extensions: the widest registers the variant has)
          // and a software prefetch 4 KiB ahead: the fastest plain read we found on this machine.
          typedef uint64_t line __attribute__((vector_size(64)));
          line a0{}, a1{}, a2{}, a3{};
          const auto* base = reinterpret_cast<const char*>(jb->p);
          auto at = [&](int64_t l) {
            line v;
            std::memcpy(&v, base + l * 64, 64);
            return v;
          };
          int64_t l = l0;
          for (; l + 4 <= l1; l += 4) {
            for (int q = 0; q < 4; ++q) __builtin_prefetch(base + (l + q) * 64 + 4096);
            a0 ^= at(l);
            a1 ^= at(l + 1);
            a2 ^= at(l + 2);
            a3 ^= at(l + 3);
          }
          for (; l < l1; ++l) a0 ^= at(l);
          const line a = a0 ^ a1 ^ a2 ^ a3;
          uint64_t s = 0;
          for (int j = 0; j < 8; ++j) s ^= a[j];
          jb->partial[thread % 1024] ^= s;  // a thread may run several chunks
        },
        &job);
    seconds[k] = now() - t0;
    for (int t = 0; t < std::min(pool->size(), 1024); ++t) total ^= job.partial[t];
  }
  if (checksum) *checksum = total;
  return 0;
}

}  // extern "C"
