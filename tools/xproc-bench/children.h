#pragma once
// The parent's side of a run, shared by every mode (runner.cc, bulk_runner.cc): pinning a child,
// describing how it ended, and supervising the forked children of one run until they end.

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace xproc::bench {

// steady_clock now, in nanoseconds (timestamps children report to the parent).
std::int64_t now_ns();
// Context switches of the calling process so far (voluntary + involuntary).
std::int64_t switches_now();
// A child's start: counts itself in `ready` (waking the parent), then sleeps until `go` is 1.
void announce_ready_and_wait(std::atomic<std::uint32_t>& ready, std::atomic<std::uint32_t>& go);

// Pins the calling process to `cpu` (negative: leaves it unpinned). Best effort.
void pin_to(int cpu);

// "exit 3", "signal Killed", ... for a waitpid status.
std::string describe_status(int status);

struct Supervision {
  std::vector<pid_t> pids;            // the run's children, forked already
  std::atomic<std::uint32_t>* ready;  // each child adds 1 when set up (futex word in shared memory)
  std::atomic<std::uint32_t>* go;     // the parent stores 1 (and wakes) when all are ready
  double timeout_seconds = 30;
  // Names child i in a failure ("producer 0") and gives its own error text ("" for none).
  std::function<std::string(std::size_t)> name_of;
  std::function<std::string(std::size_t)> error_of;
};

// Releases the children together once all are ready, reaps each as it ends (pidfds; without
// them, WNOHANG sweeps every 10 ms), and at the first child that fails or at the timeout kills
// the rest and reaps them. Returns "" when every child exited 0, else why the run failed.
// `failure` non-empty (a fork that failed): only kills and reaps, and returns it.
std::string supervise(const Supervision& run, std::string failure = {});

}  // namespace xproc::bench
