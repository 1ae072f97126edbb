#include "children.h"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

// glibc 2.36's <sys/pidfd.h> lacks __BEGIN_DECLS, so C++ would mangle pidfd_open's name.
extern "C" {
#include <sys/pidfd.h>
}

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>

#include "xproc/sys/futex.h"

namespace xproc::bench {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::int64_t switches_now() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_nvcsw + usage.ru_nivcsw;
}

void announce_ready_and_wait(std::atomic<std::uint32_t>& ready, std::atomic<std::uint32_t>& go) {
  // acq_rel: our set-up (open ends) happened before the parent starts the run; the increment is
  // one RMW the parent's acquire load in supervise() pairs with.
  ready.fetch_add(1, std::memory_order_acq_rel);
  (void)sys::futex_wake(ready, 1, sys::FutexScope::process_shared);
  // acquire: pairs with supervise()'s release store of go.
  while (go.load(std::memory_order_acquire) == 0)
    (void)sys::futex_wait(go, 0, sys::FutexScope::process_shared);
}

void pin_to(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<std::size_t>(cpu), &set);
  sched_setaffinity(0, sizeof set, &set);  // best effort: an unpinned row is still valid
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

std::string supervise(const Supervision& run, std::string failure) {
  using Clock = std::chrono::steady_clock;
  const std::vector<pid_t>& pids = run.pids;
  std::vector<int> pidfds;
  for (pid_t pid : pids) pidfds.push_back(pidfd_open(pid, 0));  // a zombie has one too
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(run.timeout_seconds));
  std::vector<bool> running(pids.size(), true);
  std::size_t alive = pids.size();
  bool started = false;
  auto reap = [&](std::size_t i, int options) {
    int status = 0;
    if (waitpid(pids[i], &status, options) != pids[i]) return;
    running[i] = false;
    --alive;
    if (pidfds[i] >= 0) close(pidfds[i]);
    if (failure.empty() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      const std::string error = run.error_of(i);
      failure = run.name_of(i) + ": " + (error.empty() ? describe_status(status) : error);
    }
  };
  while (alive > 0 && failure.empty()) {
    if (!started && run.ready->load(std::memory_order_acquire) == pids.size()) {
      // release: pairs with the children's acquire load of go.
      run.go->store(1, std::memory_order_release);
      (void)sys::futex_wake(*run.go, INT_MAX, sys::FutexScope::process_shared);
      started = true;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      char seconds[32];
      std::snprintf(seconds, sizeof seconds, "%g", run.timeout_seconds);
      failure = std::string("timed out after ") + seconds + " s (" +
                (started ? "running" : "setting up") + "): killed " + std::to_string(alive) +
                " process(es)";
      break;
    }
    std::vector<pollfd> fds;
    std::vector<std::size_t> which;
    for (std::size_t i = 0; i < pids.size(); ++i) {
      if (!running[i]) continue;
      fds.push_back({pidfds[i], POLLIN, 0});
      which.push_back(i);
    }
    // Before the start: wake up every few ms to see whether all children are ready. Without
    // pidfds (kernels before 5.3) poll ignores the -1 entries: sweep with WNOHANG every 10 ms.
    const bool sweep = std::any_of(pidfds.begin(), pidfds.end(), [](int fd) { return fd < 0; });
    const int wait_ms = !started ? 2
                        : sweep  ? 10
                                 : static_cast<int>(std::min<long>(left.count(), 1000));
    const int ready = poll(fds.data(), fds.size(), wait_ms);
    for (std::size_t k = 0; ready > 0 && k < fds.size(); ++k)
      if (fds[k].revents != 0) reap(which[k], 0);
    for (std::size_t i = 0; sweep && i < pids.size(); ++i)
      if (running[i] && pidfds[i] < 0) reap(i, WNOHANG);
  }
  for (std::size_t i = 0; i < pids.size(); ++i) {
    if (!running[i]) continue;
    kill(pids[i], SIGKILL);
    reap(i, 0);
  }
  return failure;
}

}  // namespace xproc::bench
