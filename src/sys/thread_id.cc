#include "xproc/sys/thread_id.h"

#include <pthread.h>
#include <sys/random.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

namespace xproc::sys {
namespace {

struct ThreadIdentity {
  pid_t tid = 0;
  std::uint64_t token = 0;
};

thread_local ThreadIdentity this_thread;

std::uint64_t random_token() noexcept {
  std::uint64_t token = 0;
  for (;;) {
    ssize_t n = getrandom(&token, sizeof token, 0);
    if (n == static_cast<ssize_t>(sizeof token) && token != 0) return token;
    // getrandom blocks only until the entropy pool is initialized at boot and may return early
    // on a signal; retry until it delivers all 8 bytes of a nonzero token.
  }
}

void reset_in_fork_child() noexcept {
  this_thread = ThreadIdentity{};
}

void register_fork_handler() noexcept {
  static std::atomic<bool> registered{false};
  // relaxed: only ensures one registration; the handler itself needs no ordering.
  if (!registered.exchange(true, std::memory_order_relaxed)) {
    if (pthread_atfork(nullptr, nullptr, reset_in_fork_child) != 0) std::abort();
  }
}

}  // namespace

pid_t this_thread_id() noexcept {
  if (this_thread.tid == 0) {
    register_fork_handler();
    this_thread.tid = gettid();
  }
  return this_thread.tid;
}

void refresh_thread_id() noexcept {
  reset_in_fork_child();
}

std::uint64_t this_thread_token() noexcept {
  if (this_thread.token == 0) {
    register_fork_handler();
    this_thread.token = random_token();
  }
  return this_thread.token;
}

}  // namespace xproc::sys
