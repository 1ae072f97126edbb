#pragma once
// The hand-off scenario, shared by examples/handoff_demo.cc and tests/sync/handoff_process_test.cc
// (header-only, one implementation).
//
// A receiver process and a sender process share a bounded ring of 64-bit values in anonymous
// MAP_SHARED memory, guarded by one process-shared xproc::sync::Mutex and two CondVars
// (not_full, not_empty). The sender runs `threads` threads; thread t pushes `per_thread` values
// (t << 32 | sequence), in order. The receiver drains the ring and checks that every value
// arrives exactly once: a known thread id, and per thread the sequence numbers 0, 1, 2, ...
// with no gap, duplicate or reordering (a FIFO ring keeps each thread's order), and the total.
//
// Batching keeps it fast: each side moves as many values as fit per critical section, and
// notifies only when the other side announced (under the mutex) that it waits. The receiver
// wakes waiting senders with notify_all(mutex): they are requeued onto the mutex word and run
// one after the other instead of stampeding.
//
// Every wait is bounded by the scenario's deadline; when one child fails (crash, kill, error)
// the parent kills the other at once, and both once the deadline passes: never a hang.

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "xproc/sync/cond_var.h"
#include "xproc/sync/mutex.h"
#include "xproc/sys/memory.h"

namespace xproc::examples {

struct HandoffConfig {
  int threads = 30;
  long per_thread = 200000;
  std::chrono::seconds timeout{300};
  // Crash injection (tests): SIGKILL the sender process this long after the start; 0 = never.
  std::chrono::milliseconds kill_sender_after{0};
};

struct HandoffResult {
  bool ok = false;
  std::string failure;  // empty when ok
  std::uint64_t received = 0;
  double seconds = 0;
  long voluntary_switches = 0;  // both children (RUSAGE_CHILDREN difference)
  long involuntary_switches = 0;
  std::uint64_t sender_waits = 0;    // times a sender thread parked on not_full
  std::uint64_t receiver_waits = 0;  // times the receiver parked on not_empty
};

namespace detail {

inline constexpr std::uint32_t kRingSlots = 4096;
inline constexpr std::uint32_t kSenderBatch = 256;  // values a sender thread moves per lock

// Status the children report through shared memory.
enum class HandoffStatus : std::uint32_t { running = 0, ok = 1, failed = 2 };

struct HandoffRing {
  sync::Mutex mutex{sync::Scope::process};
  sync::CondVar not_full{sync::Scope::process};
  sync::CondVar not_empty{sync::Scope::process};
  // Protected by mutex:
  std::uint64_t head = 0;  // next position to read (only grows)
  std::uint64_t tail = 0;  // next position to write (only grows)
  std::uint32_t senders_waiting = 0;
  std::uint32_t receiver_waiting = 0;
  std::uint32_t senders_done = 0;
  std::uint32_t sender_failed = 0;
  std::uint64_t sender_waits = 0;
  std::uint64_t receiver_waits = 0;
  std::uint64_t slots[kRingSlots] = {};
  // Written once by each child at its end (release), read by the parent after reaping it.
  std::atomic<std::uint32_t> receiver_status{0};
  std::atomic<std::uint32_t> sender_status{0};
  std::uint64_t received = 0;
  char failure[200] = {};
};

// Locks the mutex; an owner_died (a process died holding it) fails the scenario (the mutex is
// then released, which makes it not_recoverable for everybody: the scenario stops).
inline bool lock_ring(HandoffRing& ring) {
  const std::error_code ec = ring.mutex.acquire();
  if (ec == errc::owner_died) (void)ring.mutex.release();
  return !ec;
}

// After a failed wait: the mutex is held again only on owner_died; give it up.
inline void abandon(HandoffRing& ring, std::error_code ec) {
  if (ec == errc::owner_died) (void)ring.mutex.release();
}

inline void sender_thread(HandoffRing& ring, std::uint64_t thread_id, long per_thread,
                          sync::Deadline deadline) {
  std::uint64_t values[kSenderBatch];
  long next = 0;
  while (next < per_thread) {
    const auto count = static_cast<std::uint32_t>(std::min<long>(kSenderBatch, per_thread - next));
    for (std::uint32_t i = 0; i < count; ++i) {
      values[i] = thread_id << 32 | static_cast<std::uint64_t>(next + i);
    }
    std::uint32_t pushed = 0;
    if (!lock_ring(ring)) {
      ring.sender_failed = 1;  // unsynchronized best effort: we are failing anyway
      return;
    }
    while (pushed < count) {
      while (ring.tail - ring.head == kRingSlots) {
        ++ring.senders_waiting;
        ++ring.sender_waits;
        const std::error_code ec = ring.not_full.wait_until(ring.mutex, deadline);
        --ring.senders_waiting;
        if (ec && ec != errc::timed_out) {
          ring.sender_failed = 1;  // owner_died / not_recoverable: a process died holding it
          abandon(ring, ec);
          return;
        }
        if (ec == errc::timed_out && ring.tail - ring.head == kRingSlots) {
          ring.sender_failed = 1;
          (void)ring.mutex.release();
          return;
        }
      }
      const auto space = static_cast<std::uint32_t>(kRingSlots - (ring.tail - ring.head));
      const std::uint32_t n = std::min(space, count - pushed);
      for (std::uint32_t i = 0; i < n; ++i) {
        ring.slots[(ring.tail + i) % kRingSlots] = values[pushed + i];
      }
      ring.tail += n;
      pushed += n;
      if (ring.receiver_waiting != 0) ring.not_empty.notify_one();
    }
    (void)ring.mutex.release();
    next += count;
  }
}

inline int run_sender(HandoffRing& ring, int threads, long per_thread, sync::Deadline deadline) {
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back(sender_thread, std::ref(ring), static_cast<std::uint64_t>(t), per_thread,
                      deadline);
  }
  for (auto& thread : pool) thread.join();
  bool failed = false;
  if (lock_ring(ring)) {
    ring.senders_done = 1;
    failed = ring.sender_failed != 0;
    if (ring.receiver_waiting != 0) ring.not_empty.notify_one();
    (void)ring.mutex.release();
  } else {
    failed = true;
  }
  // release: publishes nothing else; pairs with the parent's acquire load after waitpid.
  ring.sender_status.store(
      static_cast<std::uint32_t>(failed ? HandoffStatus::failed : HandoffStatus::ok),
      std::memory_order_release);
  return failed ? 1 : 0;
}

inline int run_receiver(HandoffRing& ring, int threads, long per_thread, sync::Deadline deadline) {
  std::vector<std::uint64_t> next(static_cast<std::size_t>(threads), 0);
  std::unique_ptr<std::uint64_t[]> batch(new std::uint64_t[kRingSlots]);
  const std::uint64_t expected =
      static_cast<std::uint64_t>(threads) * static_cast<std::uint64_t>(per_thread);
  std::uint64_t received = 0;
  std::string failure;
  while (failure.empty()) {
    if (!lock_ring(ring)) {
      failure = "the ring's mutex failed (a sender died holding it?)";
      break;
    }
    while (ring.tail == ring.head && ring.senders_done == 0) {
      ring.receiver_waiting = 1;
      ++ring.receiver_waits;
      const std::error_code ec = ring.not_empty.wait_until(ring.mutex, deadline);
      ring.receiver_waiting = 0;
      if (ec && ec != errc::timed_out) {
        failure = "waiting for values failed: " + ec.message();
        abandon(ring, ec);
        break;
      }
      if (ec == errc::timed_out && ring.tail == ring.head && ring.senders_done == 0) {
        failure = "timed out waiting for values";
        (void)ring.mutex.release();
        break;
      }
    }
    if (!failure.empty()) break;
    const auto n = static_cast<std::uint32_t>(ring.tail - ring.head);
    const bool done = n == 0;  // and senders_done
    for (std::uint32_t i = 0; i < n; ++i) batch[i] = ring.slots[(ring.head + i) % kRingSlots];
    ring.head += n;
    if (ring.senders_waiting != 0) ring.not_full.notify_all(ring.mutex);  // requeue onto mutex
    (void)ring.mutex.release();
    if (done) break;
    for (std::uint32_t i = 0; i < n && failure.empty(); ++i) {
      const std::uint64_t value = batch[i];
      const std::uint64_t thread_id = value >> 32;
      const std::uint64_t sequence = value & 0xffffffffu;
      if (thread_id >= static_cast<std::uint64_t>(threads)) {
        failure = "value from unknown thread " + std::to_string(thread_id);
      } else if (sequence != next[thread_id]) {
        failure = "thread " + std::to_string(thread_id) + ": expected sequence " +
                  std::to_string(next[thread_id]) + ", got " + std::to_string(sequence);
      } else {
        ++next[thread_id];
        ++received;
      }
    }
  }
  if (failure.empty()) {
    for (int t = 0; t < threads && failure.empty(); ++t) {
      if (next[static_cast<std::size_t>(t)] != static_cast<std::uint64_t>(per_thread)) {
        failure = "thread " + std::to_string(t) + ": only " +
                  std::to_string(next[static_cast<std::size_t>(t)]) + " values arrived";
      }
    }
    if (failure.empty() && received != expected) failure = "wrong total";
  }
  ring.received = received;
  std::snprintf(ring.failure, sizeof ring.failure, "%s", failure.c_str());
  // release: publishes received/failure; pairs with the parent's acquire load after waitpid.
  ring.receiver_status.store(
      static_cast<std::uint32_t>(failure.empty() ? HandoffStatus::ok : HandoffStatus::failed),
      std::memory_order_release);
  return failure.empty() ? 0 : 1;
}

template <class Body>
pid_t fork_child(Body body) {
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    int code = 1;
    try {
      code = body();
    } catch (...) {
      code = 2;
    }
    _exit(code);
  }
  return pid;
}

// Whether a wait status (-1: unknown) says the child failed (killed, or a non-zero exit).
inline bool failed(int status) {
  return status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}
inline std::string describe(int status) {
  if (status == -1) return "was lost (waitpid failed)";
  if (WIFSIGNALED(status)) {
    return "was killed by signal " + std::to_string(WTERMSIG(status)) +
           (WTERMSIG(status) == SIGKILL ? " (a crash, or killed when its peer failed or the "
                                          "deadline passed)"
                                        : "");
  }
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

// Reaps both children. When one fails (a crash, a kill, an error) the other is killed at once:
// it could wait for its dead peer until the deadline. A child that outlives `deadline` is
// killed. statuses[i] = the wait status, or -1 when the parent had to kill it.
inline void reap_both(const pid_t (&pids)[2], int (&statuses)[2], sync::Deadline deadline,
                      sync::Deadline kill_first_at) {
  bool reaped[2] = {pids[0] <= 0, pids[1] <= 0};
  statuses[0] = statuses[1] = -1;
  bool killed_first = false;
  while (!reaped[0] || !reaped[1]) {
    for (int i = 0; i < 2; ++i) {
      if (reaped[i]) continue;
      int status = 0;
      const pid_t done = waitpid(pids[i], &status, WNOHANG);
      if (done == pids[i] || (done < 0 && errno != EINTR)) {
        reaped[i] = true;
        statuses[i] = done == pids[i] ? status : -1;
        if ((done < 0 || failed(status)) && !reaped[1 - i]) kill(pids[1 - i], SIGKILL);
      }
    }
    const auto now = sync::Clock::now();
    if (!killed_first && now >= kill_first_at && !reaped[0]) {
      kill(pids[0], SIGKILL);  // crash injection (HandoffConfig::kill_sender_after)
      killed_first = true;
    }
    if (now > deadline) {
      for (int i = 0; i < 2; ++i) {
        if (!reaped[i]) kill(pids[i], SIGKILL);
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

}  // namespace detail

// Runs the scenario with two forked children (receiver, sender). Call from a process that has
// no other threads running (it forks).
inline HandoffResult run_handoff(const HandoffConfig& config) {
  HandoffResult result;
  if (config.threads <= 0 || config.threads > 4096 || config.per_thread <= 0 ||
      config.per_thread > 0xffffffffL) {
    result.failure = "invalid configuration";
    return result;
  }
  auto mapping = sys::SharedMapping::anonymous(sizeof(detail::HandoffRing));
  if (!mapping) {
    result.failure = "mapping shared memory failed: " + mapping.error().message();
    return result;
  }
  auto* ring = new (mapping.value().data()) detail::HandoffRing();

  rusage before{};
  getrusage(RUSAGE_CHILDREN, &before);
  const auto start = sync::Clock::now();
  const sync::Deadline deadline = start + config.timeout;
  const pid_t receiver = detail::fork_child(
      [&] { return detail::run_receiver(*ring, config.threads, config.per_thread, deadline); });
  const pid_t sender = detail::fork_child(
      [&] { return detail::run_sender(*ring, config.threads, config.per_thread, deadline); });
  if (receiver < 0 || sender < 0) {
    if (receiver > 0) kill(receiver, SIGKILL);
    if (sender > 0) kill(sender, SIGKILL);
  }
  // A little slack past the children's own deadline, so they can report a timeout themselves.
  const pid_t pids[2] = {sender, receiver};
  int statuses[2] = {-1, -1};
  detail::reap_both(pids, statuses, deadline + std::chrono::seconds(5),
                    config.kill_sender_after.count() > 0 ? start + config.kill_sender_after
                                                         : sync::Deadline::max());
  const int sender_status = statuses[0];
  const int receiver_status = statuses[1];
  result.seconds = std::chrono::duration<double>(sync::Clock::now() - start).count();
  rusage after{};
  getrusage(RUSAGE_CHILDREN, &after);
  result.voluntary_switches = after.ru_nvcsw - before.ru_nvcsw;
  result.involuntary_switches = after.ru_nivcsw - before.ru_nivcsw;

  // acquire: pairs with the children's release stores (and waitpid orders them anyway).
  const auto receiver_state =
      static_cast<detail::HandoffStatus>(ring->receiver_status.load(std::memory_order_acquire));
  const auto sender_state =
      static_cast<detail::HandoffStatus>(ring->sender_status.load(std::memory_order_acquire));
  result.received = ring->received;
  result.sender_waits = ring->sender_waits;
  result.receiver_waits = ring->receiver_waits;
  // Every reason, the processes' fates first (a killed sender explains a receiver's timeout).
  std::string reasons;
  auto add = [&reasons](const std::string& reason) {
    reasons += reasons.empty() ? reason : "; " + reason;
  };
  if (receiver < 0 || sender < 0) add("fork failed");
  if (sender > 0 && detail::failed(sender_status)) {
    add("sender process " + detail::describe(sender_status));
  }
  if (receiver > 0 && detail::failed(receiver_status)) {
    add("receiver process " + detail::describe(receiver_status));
  }
  if (sender_state == detail::HandoffStatus::failed) {
    add("sender: a thread failed (timed out or the mutex broke)");
  }
  if (receiver_state == detail::HandoffStatus::failed) {
    add(std::string("receiver: ") + ring->failure);
  }
  if (reasons.empty() &&
      (receiver_state != detail::HandoffStatus::ok || sender_state != detail::HandoffStatus::ok)) {
    add("a child ended without reporting");
  }
  result.failure = reasons;
  result.ok = reasons.empty();
  ring->~HandoffRing();
  return result;
}

}  // namespace xproc::examples
