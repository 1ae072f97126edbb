#include "xproc/sys/thread_id.h"

#include <pthread.h>
#include <sys/random.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

namespace xproc::sys {

constinit thread_local detail::ThreadIdentity detail::this_thread_identity{};

namespace {

using detail::this_thread_identity;

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
  this_thread_identity = detail::ThreadIdentity{};
}

void register_fork_handler() noexcept {
  static std::atomic<bool> registered{false};
  // relaxed: only ensures one registration; the handler itself needs no ordering.
  if (!registered.exchange(true, std::memory_order_relaxed)) {
    if (pthread_atfork(nullptr, nullptr, reset_in_fork_child) != 0) std::abort();
  }
}

}  // namespace

pid_t detail::this_thread_id_slow() noexcept {
  if (this_thread_identity.tid == 0) {
    register_fork_handler();
    this_thread_identity.tid = gettid();
  }
  return this_thread_identity.tid;
}

void refresh_thread_id() noexcept {
  reset_in_fork_child();
}

std::uint64_t detail::this_thread_token_slow() noexcept {
  if (this_thread_identity.token == 0) {
    register_fork_handler();
    this_thread_identity.token = random_token();
  }
  return this_thread_identity.token;
}

}  // namespace xproc::sys
