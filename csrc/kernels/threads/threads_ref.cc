// The persistent thread pool: workers wait for a new "generation" (spin, then yield, then sleep on a
// condition variable so an idle server burns no CPU), run their part, and count down.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define CPULLM_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPULLM_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPULLM_CPU_RELAX() ((void)0)
#endif

namespace cpullm {

namespace {
constexpr int kSpins = 20000;   // ~ tens of microseconds of pause before yielding
constexpr int kYields = 2000;   // then yield this many times before sleeping
}  // namespace

struct ThreadPool::Impl {
  int n_threads = 1;
  std::vector<std::thread> workers;
  std::atomic<uint64_t> generation{0};
  std::atomic<int> remaining{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::condition_variable cv;
  // The current job (written before generation is bumped, read after it is seen).
  RangeFn fn = nullptr;
  void* ctx = nullptr;
  int64_t n = 0, grain = 1, units = 0;
  int parts = 0;

  void run_part(int part) const {
    if (part >= parts) return;
    const int64_t u0 = units * part / parts, u1 = units * (part + 1) / parts;
    const int64_t begin = u0 * grain, end = std::min(n, u1 * grain);
    if (begin < end) fn(ctx, begin, end, part);
  }

  void worker(int index) {
    uint64_t seen = 0;
    for (;;) {
      int spins = 0;
      while (generation.load(std::memory_order_acquire) == seen && !stop.load(std::memory_order_acquire)) {
        if (++spins < kSpins) {
          CPULLM_CPU_RELAX();
        } else if (spins < kSpins + kYields) {
          std::this_thread::yield();
        } else {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait(lock, [&] {
            return generation.load(std::memory_order_acquire) != seen || stop.load(std::memory_order_acquire);
          });
        }
      }
      if (stop.load(std::memory_order_acquire)) return;
      seen = generation.load(std::memory_order_acquire);
      run_part(index);
      remaining.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
};

ThreadPool::ThreadPool(int n_threads) : impl_(new Impl) {
  impl_->n_threads = std::max(1, n_threads);
  for (int i = 1; i < impl_->n_threads; ++i) impl_->workers.emplace_back([this, i] { impl_->worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop.store(true, std::memory_order_release);
  }
  impl_->cv.notify_all();
  for (auto& t : impl_->workers) t.join();
  delete impl_;
}

int ThreadPool::size() const { return impl_->n_threads; }

void ThreadPool::parallel_for(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t units = (n + grain - 1) / grain;
  Impl& s = *impl_;
  if (s.n_threads == 1 || units == 1) {
    fn(ctx, 0, n, 0);
    return;
  }
  s.fn = fn;
  s.ctx = ctx;
  s.n = n;
  s.grain = grain;
  s.units = units;
  s.parts = static_cast<int>(std::min<int64_t>(units, s.n_threads));
  s.remaining.store(s.n_threads - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.generation.fetch_add(1, std::memory_order_acq_rel);
  }
  s.cv.notify_all();
  s.run_part(0);
  int spins = 0;
  while (s.remaining.load(std::memory_order_acquire) != 0) {
    if (++spins < kSpins) CPULLM_CPU_RELAX();
    else std::this_thread::yield();
  }
}

namespace {
std::mutex g_pool_mu;
std::unique_ptr<ThreadPool> g_pool;
int g_threads = 1;
}  // namespace

ThreadPool* global_pool() {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  if (!g_pool) g_pool = std::make_unique<ThreadPool>(g_threads);
  return g_pool.get();
}

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  n = std::max(1, n);
  if (g_pool && g_pool->size() == n) return;
  g_pool.reset();
  g_threads = n;
}

int num_threads() {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  return g_threads;
}

}  // namespace cpullm
