// Small fork-join helpers shared by the library's threaded loops (private).
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#ifdef __linux__
#include <pthread.h>
#include <sched.h>

#include <cstdlib>
#include <fstream>
#include <string>
#endif

namespace protattn::detail {

// Names the calling thread (Linux: at most 15 characters shown) so that per-thread CPU time in
// /proc/PID/task, top and perf tells the threads apart; elsewhere nothing.
inline void name_this_thread(const char* name) {
#ifdef __linux__
  pthread_setname_np(pthread_self(), name);
#else
  (void)name;
#endif
}

// The CPUs the calling thread may run on: those of its affinity mask (taskset, a container's
// cpuset), fewer where the cgroup v2 quota in /sys/fs/cgroup/cpu.max allows less (a container's
// own under a cgroup namespace; a cgroup deeper in the host's tree is not looked up), at least 1;
// elsewhere hardware_concurrency(), which counts every CPU of the machine whatever the process
// may use.
inline int count_usable_cores() {
  int n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) n = std::max(1, CPU_COUNT(&set));
  std::ifstream f("/sys/fs/cgroup/cpu.max");  // "max 100000" or "<quota> <period>" in microseconds
  std::string quota;
  long long period = 0;
  if (f >> quota >> period && quota != "max" && period > 0) {
    const long long q = std::strtoll(quota.c_str(), nullptr, 10);
    if (q > 0) n = static_cast<int>(std::min<long long>(n, std::max(1LL, (q + period - 1) / period)));
  }
#endif
  return n;
}

// count_usable_cores() as it was at the first call in this process: "all cores" for every
// threaded step of the library (a thread count of 0 in the options) and the worker pool's size.
inline int usable_cores() {
  static const int cores = count_usable_cores();
  return cores;
}

// Threads to use for `threads` as options give it (0 or less: all usable cores), at most one per
// `grain` items of the `n` to share out, at least 1.
inline int resolve_threads(int threads, std::size_t n, std::size_t grain) {
  if (threads <= 0) threads = usable_cores();
  const std::size_t by_size = std::max<std::size_t>(1, n / std::max<std::size_t>(1, grain));
  return static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(threads), by_size));
}

// The process's worker threads for parallel_chunks: started on first use, as many as the usable
// cores less one, kept waiting between jobs. (Starting threads for every parallel step, as before, held
// the 1M-atom globule's layout on 16 cores at 20-24 ms; on the pool it takes 15 ms.) Left running
// at exit.
class WorkerPool {
 public:
  static WorkerPool& get() {
    static WorkerPool* pool = new WorkerPool();  // never destroyed: workers may outlive statics
    return *pool;
  }
  // Runs run(p) for every p in [0, parts): p = 0 and whatever the workers have not taken on the
  // calling thread, the rest on the workers; returns when all have run. The first exception (by
  // part) is rethrown here. Called from a worker itself, it runs the parts in order on that thread
  // (a worker never waits for others: no deadlock, the same parts either way).
  template <class Run>
  void run(int parts, Run&& run) {
    if (parts <= 1 || t_worker || workers_ == 0) {  // in order on this thread, every part all the same
      std::exception_ptr first;
      for (int p = 0; p < parts; ++p) {
        try {
          run(p);
        } catch (...) {
          if (!first) first = std::current_exception();
        }
      }
      if (first) std::rethrow_exception(first);
      return;
    }
    Job job;
    job.parts = parts;
    job.errors.resize(static_cast<std::size_t>(parts));
    job.run = [&run, &job](int p) {
      try {
        run(p);
      } catch (...) {
        job.errors[static_cast<std::size_t>(p)] = std::current_exception();
      }
    };
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(&job);
    }
    wake_.notify_all();
    job.run(0);
    for (int p; (p = job.next.fetch_add(1)) < parts;) finish_part(job, p);  // help with the rest
    {
      std::unique_lock<std::mutex> lock(mu_);
      jobs_.erase(std::find(jobs_.begin(), jobs_.end(), &job));
      job.all_done.wait(lock, [&] { return job.done == parts - 1; });
    }
    for (const auto& e : job.errors)
      if (e) std::rethrow_exception(e);
  }

 private:
  struct Job {
    int parts = 0;
    std::function<void(int)> run;
    std::atomic<int> next{1};  // the next part to take (part 0 is the caller's)
    int done = 0;              // parts of 1.. finished (under mu_)
    std::condition_variable all_done;
    std::vector<std::exception_ptr> errors;
  };

  WorkerPool() {
    workers_ = usable_cores() - 1;
    for (int i = 0; i < workers_; ++i)
      std::thread([this] {
        t_worker = true;
        name_this_thread("protattn-pool");
        work();
      }).detach();
  }

  void finish_part(Job& job, int p) {
    job.run(p);
    std::lock_guard<std::mutex> lock(mu_);
    if (++job.done == job.parts - 1) job.all_done.notify_all();
  }

  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      Job* job = nullptr;
      int p = 0;
      wake_.wait(lock, [&] {
        for (Job* j : jobs_)
          if (j->next.load() < j->parts) return true;
        return false;
      });
      for (Job* j : jobs_)
        if ((p = j->next.fetch_add(1)) < j->parts) {
          job = j;
          break;
        }
      if (!job) continue;
      lock.unlock();
      finish_part(*job, p);
      lock.lock();
    }
  }

  static inline thread_local bool t_worker = false;
  int workers_ = 0;
  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Job*> jobs_;  // jobs that may have parts left
};

// Calls fn(part, begin, end) for `parts` contiguous chunks of [0, n), part 0 on the calling
// thread, the others on WorkerPool's threads. Chunks depend only on n and parts, so results that
// depend on them are deterministic.
template <class F>
void parallel_chunks(std::size_t n, int parts, F&& fn) {
  if (parts <= 1) {
    fn(0, std::size_t{0}, n);
    return;
  }
  const std::size_t chunk = (n + static_cast<std::size_t>(parts) - 1) / static_cast<std::size_t>(parts);
  WorkerPool::get().run(parts, [&fn, chunk, n](int p) {
    const std::size_t b = std::min(n, static_cast<std::size_t>(p) * chunk), e = std::min(n, b + chunk);
    fn(p, b, e);
  });
}

// Cuts items [0, m) into `parts` contiguous ranges of about equal weight, given prefix[i] = the
// weight of items [0, i) (m + 1 non-negative, non-decreasing entries): range p is
// [first[p], first[p + 1]), first[p] being the first item whose prefix reaches total * p / parts.
template <typename T>
std::vector<std::size_t> weighted_ranges(const T* prefix, std::size_t m, int parts) {
  std::vector<std::size_t> first(static_cast<std::size_t>(parts) + 1, m);
  first[0] = 0;
  const auto total = static_cast<std::uint64_t>(prefix[m]);
  std::size_t i = 0;
  for (int p = 1; p < parts; ++p) {
    const std::uint64_t goal = total * static_cast<std::uint64_t>(p) / static_cast<std::uint64_t>(parts);
    while (i < m && static_cast<std::uint64_t>(prefix[i]) < goal) ++i;
    first[static_cast<std::size_t>(p)] = i;
  }
  return first;
}

// Calls fn(part, begin, end) for each range [first[part], first[part + 1]) of weighted_ranges(),
// each part on its own thread (part 0 on the calling thread).
template <class F>
void parallel_ranges(const std::vector<std::size_t>& first, F&& fn) {
  const int parts = static_cast<int>(first.size()) - 1;
  parallel_chunks(static_cast<std::size_t>(parts), parts, [&](int, std::size_t p0, std::size_t p1) {
    for (std::size_t p = p0; p < p1; ++p) fn(static_cast<int>(p), first[p], first[p + 1]);
  });
}

// Below this many atoms per thread, ordering and layout passes lose more to threads than they gain.
inline constexpr std::size_t kLayoutAtomsPerThread = 65536;

}  // namespace protattn::detail
