#pragma once
// The benchmark scenarios, as templates over any type with the members they use, so glibc's and
// xproc's primitives run exactly the same code. Each returns one Sample.

#include <atomic>
#include <cstdint>

#include "harness.h"

namespace xproc::bench {

// Uncontended lock + unlock, with a second thread alive (glibc takes a cheaper path in a
// single-threaded process, see notes/sync-facts.md).
template <class Lock>
Sample uncontended(Lock& lock, long iterations) {
  std::atomic<bool> stop{false};
  std::thread idle([&] {
    // acquire: pairs with the release store below; the thread only exists to be alive.
    while (!stop.load(std::memory_order_acquire))
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  long switches = context_switches();
  auto start = Clock::now();
  for (long i = 0; i < iterations; ++i) {
    lock.lock();
    lock.unlock();
  }
  auto elapsed = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
  switches = context_switches() - switches;
  stop.store(true, std::memory_order_release);
  idle.join();
  return {elapsed / static_cast<double>(iterations),
          static_cast<double>(switches) / static_cast<double>(iterations)};
}

template <class Lock>
struct Counted {
  template <class... Args>
  explicit Counted(Args&&... args) : lock(std::forward<Args>(args)...) {}
  Lock lock;
  alignas(64) std::uint64_t counter = 0;
};

// `workers` threads or processes each take the lock `per_worker` times and increment a shared
// counter inside; result in million lock acquisitions per second (all workers together).
template <class Lock, class... Args>
Sample contended(bool processes, int workers, long per_worker, Args&&... args) {
  Shared<Counted<Lock>> shared(std::forward<Args>(args)...);
  auto body = [&](int) {
    for (long i = 0; i < per_worker; ++i) {
      shared->lock.lock();
      ++shared->counter;
      shared->lock.unlock();
    }
  };
  long switches = processes ? 0 : context_switches();
  auto start = Clock::now();
  if (processes) {
    switches = run_processes(workers, body);
  } else {
    run_threads(workers, body);
    switches = context_switches() - switches;
  }
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  long total = per_worker * workers;
  if (shared->counter != static_cast<std::uint64_t>(total)) {
    std::fprintf(stderr, "xproc-sync-bench: lost updates: %llu of %ld\n",
                 static_cast<unsigned long long>(shared->counter), total);
    std::abort();
  }
  return {static_cast<double>(total) / seconds / 1e6,
          static_cast<double>(switches) / static_cast<double>(total)};
}

template <class Mutex, class Cond>
struct PingPong {
  template <class MutexArg, class CondArg>
  PingPong(MutexArg mutex_arg, CondArg cond_arg) : mutex(mutex_arg), cond(cond_arg) {}
  Mutex mutex;
  Cond cond;
  std::uint32_t turn = 0;
};

// Two processes hand a turn back and forth under a mutex + condition variable; result in
// microseconds per round trip (two hand-offs).
template <class Mutex, class Cond, class MutexArg, class CondArg>
Sample condvar_ping_pong(long round_trips, MutexArg mutex_arg, CondArg cond_arg) {
  Shared<PingPong<Mutex, Cond>> shared(mutex_arg, cond_arg);
  auto start = Clock::now();
  long switches = run_processes(2, [&](int side) {
    for (long i = 0; i < round_trips; ++i) {
      shared->mutex.lock();
      while (shared->turn != static_cast<std::uint32_t>(side)) shared->cond.wait(shared->mutex);
      shared->turn = 1 - static_cast<std::uint32_t>(side);
      shared->cond.notify_one();
      shared->mutex.unlock();
    }
  });
  double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  return {us / static_cast<double>(round_trips),
          static_cast<double>(switches) / static_cast<double>(round_trips)};
}

template <class Mutex, class Cond>
struct Broadcast {
  template <class MutexArg, class CondArg>
  Broadcast(MutexArg mutex_arg, CondArg cond_arg)
      : mutex(mutex_arg), cond(cond_arg), done_mutex(mutex_arg), done(cond_arg) {}
  Mutex mutex;
  Cond cond;
  Mutex done_mutex;
  Cond done;
  std::uint64_t generation = 0;
  std::uint32_t acknowledged = 0;
  bool stop = false;
};

// `waiters` processes wait on one condition variable; each round the main process bumps a
// generation and broadcasts, then waits until every waiter has woken, taken the mutex and
// acknowledged. Result in microseconds per round; context switches per round, all processes.
template <class Mutex, class Cond, class MutexArg, class CondArg>
Sample broadcast(int waiters, long rounds, MutexArg mutex_arg, CondArg cond_arg) {
  Shared<Broadcast<Mutex, Cond>> shared(mutex_arg, cond_arg);
  auto& s = *shared;
  long own_switches = context_switches();
  std::chrono::steady_clock::time_point start;
  long child_switches = 0;
  std::thread driver([&] {
    child_switches = run_processes(waiters, [&](int) {
      std::uint64_t seen = 0;
      for (;;) {
        s.mutex.lock();
        while (s.generation == seen && !s.stop) s.cond.wait(s.mutex);
        if (s.stop) {
          s.mutex.unlock();
          return;
        }
        seen = s.generation;
        s.mutex.unlock();
        s.done_mutex.lock();
        if (++s.acknowledged == static_cast<std::uint32_t>(waiters)) s.done.notify_one();
        s.done_mutex.unlock();
      }
    });
  });
  // Let every waiter reach its first wait before timing (the first round is not counted).
  start = Clock::now();
  for (long round = 0; round <= rounds; ++round) {
    if (round == 1) {
      start = Clock::now();
      own_switches = context_switches();
    }
    s.done_mutex.lock();
    s.acknowledged = 0;
    s.done_mutex.unlock();
    s.mutex.lock();
    ++s.generation;
    s.cond.notify_all(s.mutex);
    s.mutex.unlock();
    s.done_mutex.lock();
    while (s.acknowledged != static_cast<std::uint32_t>(waiters)) s.done.wait(s.done_mutex);
    s.done_mutex.unlock();
  }
  double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  own_switches = context_switches() - own_switches;
  s.mutex.lock();
  s.stop = true;
  s.cond.notify_all(s.mutex);
  s.mutex.unlock();
  driver.join();
  return {us / static_cast<double>(rounds),
          static_cast<double>(own_switches + child_switches) / static_cast<double>(rounds)};
}

template <class RwLock>
struct ReadMostly {
  template <class... Args>
  explicit ReadMostly(Args&&... args) : lock(std::forward<Args>(args)...) {}
  RwLock lock;
  std::uint64_t values[8] = {};
};

// `threads` threads; one operation in `write_every` is a write (all values incremented), the
// others read all values and check they are equal. Result in million operations per second.
template <class RwLock, class... Args>
Sample read_mostly(int threads, long per_thread, int write_every, Args&&... args) {
  Shared<ReadMostly<RwLock>> shared(std::forward<Args>(args)...);
  std::atomic<long> torn{0};
  long switches = context_switches();
  auto start = Clock::now();
  run_threads(threads, [&](int) {
    for (long i = 0; i < per_thread; ++i) {
      if (i % write_every == 0) {
        shared->lock.lock();
        for (auto& v : shared->values) ++v;
        shared->lock.unlock();
      } else {
        shared->lock.lock_shared();
        for (auto v : shared->values) {
          if (v != shared->values[0]) torn.fetch_add(1, std::memory_order_relaxed);
        }
        shared->lock.unlock_shared();
      }
    }
  });
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  switches = context_switches() - switches;
  if (torn.load() != 0) {
    std::fprintf(stderr, "xproc-sync-bench: a reader saw a torn write\n");
    std::abort();
  }
  double total = static_cast<double>(per_thread) * threads;
  return {total / seconds / 1e6, static_cast<double>(switches) / total};
}

}  // namespace xproc::bench
