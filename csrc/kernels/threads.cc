// The persistent thread pool: workers wait for a new "generation" (spin, then yield, then sleep on a
// condition variable so an idle server burns no CPU), run their part, and count down.
#include <algorithm>
#include <atomic>
#include <chrono>
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
constexpr int kSpins = 20000;  // ~ tens of microseconds of pause before yielding
constexpr int kYields = 2000;  // then yield this many times before sleeping
}  // namespace

// Each job's chunks are dealt out as contiguous home ranges, one per thread. A thread runs its own
// range front to back (so a matrix-vector product streams its rows as one run, which the prefetchers
// follow), then takes chunks from the front of the others' ranges: a thread the OS descheduled holds up
// the job by at most the one chunk it is running.
struct alignas(64) Slot {
  // (generation << 32) | next unclaimed chunk of this home range. Claims are compare-exchanges, which
  // also prove the chunk belongs to the job the claimer read (a stale claim fails on the generation).
  std::atomic<uint64_t> next{0};
  std::atomic<int64_t> end{0};  // one past the range's last chunk (written before `next` is published)
};

struct ThreadPool::Impl {
  int n_threads = 1;
  std::vector<std::thread> workers;
  std::unique_ptr<Slot[]> slots;        // one home range per thread
  std::atomic<uint64_t> generation{0};  // bumped once per job; workers wait for it to change
  std::atomic<int64_t> chunks{0};       // chunks of the current job
  std::atomic<int64_t> done{0};         // chunks of the current job finished
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::condition_variable cv;
  // The current job (written before its generation is published, read after a chunk of it is claimed).
  RangeFn fn = nullptr;
  void* ctx = nullptr;
  int64_t n = 0, grain = 1, units = 0;
  uint32_t last_generation = 0;  // the caller's side only

  // Claims the next chunk of job `gen` from `slot`'s range; -1 when none is left there.
  int64_t claim(Slot& slot, uint32_t gen) {
    uint64_t v = slot.next.load(std::memory_order_acquire);
    for (;;) {
      if (static_cast<uint32_t>(v >> 32) != gen) return -1;
      const auto c = static_cast<int64_t>(v & 0xFFFFFFFFu);
      if (c >= slot.end.load(std::memory_order_relaxed)) return -1;
      if (slot.next.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) return c;
    }
  }

  // Run chunks of job `gen`: this thread's home range first, then the others', until none are left.
  void run_chunks(uint32_t gen, int thread) {
    for (int k = 0; k < n_threads; ++k) {
      Slot& slot = slots[(thread + k) % n_threads];
      for (int64_t c; (c = claim(slot, gen)) >= 0;) {
        const int64_t nc = chunks.load(std::memory_order_relaxed);
        const int64_t u0 = units * c / nc, u1 = units * (c + 1) / nc;
        const int64_t begin = u0 * grain, end = std::min(n, u1 * grain);
        if (begin < end) fn(ctx, begin, end, thread);
        done.fetch_add(1, std::memory_order_release);
      }
    }
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
          // wait_for, not wait: gcc 12's condition_variable::wait(unique_lock&) is versioned GLIBCXX_3.4.30,
          // which alone would raise the wheel's manylinux tag from 2_34 to 2_35. The loop re-checks.
          cv.wait_for(lock, std::chrono::seconds(1), [&] {
            return generation.load(std::memory_order_acquire) != seen || stop.load(std::memory_order_acquire);
          });
        }
      }
      if (stop.load(std::memory_order_acquire)) return;
      seen = generation.load(std::memory_order_acquire);
      run_chunks(static_cast<uint32_t>(seen), index);
    }
  }
};

ThreadPool::ThreadPool(int n_threads) : impl_(new Impl) {
  impl_->n_threads = std::max(1, n_threads);
  impl_->slots = std::make_unique<Slot[]>(static_cast<size_t>(impl_->n_threads));
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

// A few chunks per thread (see Slot): which thread runs a chunk never changes its result, and chunk
// boundaries are multiples of `grain`.
void ThreadPool::parallel_for(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t units = (n + grain - 1) / grain;
  Impl& s = *impl_;
  if (s.n_threads == 1 || units == 1) {
    fn(ctx, 0, n, 0);
    return;
  }
  const int nt = s.n_threads;
  const int64_t chunks = std::min<int64_t>(units, 4 * static_cast<int64_t>(nt));
  // Close the previous job before rewriting the job's fields: a worker still looping in run_chunks for
  // it must not claim a chunk against half-written fields (a server once hung that way). With every
  // range exhausted under the old generation, such a stale compare-exchange fails.
  for (int t = 0; t < nt; ++t) {
    s.slots[t].next.store((static_cast<uint64_t>(s.last_generation) << 32) | 0xFFFFFFFFu,
                          std::memory_order_release);
  }
  s.fn = fn;
  s.ctx = ctx;
  s.n = n;
  s.grain = grain;
  s.units = units;
  s.chunks.store(chunks, std::memory_order_relaxed);
  s.done.store(0, std::memory_order_relaxed);
  const uint32_t gen = ++s.last_generation;
  for (int t = 0; t < nt; ++t) s.slots[t].end.store(chunks * (t + 1) / nt, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    // Release: a claim that reads this generation also sees the job's fields written above.
    for (int t = 0; t < nt; ++t) {
      s.slots[t].next.store((static_cast<uint64_t>(gen) << 32) | static_cast<uint64_t>(chunks * t / nt),
                            std::memory_order_release);
    }
    s.generation.store(gen, std::memory_order_release);
  }
  s.cv.notify_all();
  s.run_chunks(gen, 0);
  int spins = 0;
  while (s.done.load(std::memory_order_acquire) != chunks) {
    if (++spins < kSpins)
      CPULLM_CPU_RELAX();
    else
      std::this_thread::yield();
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
