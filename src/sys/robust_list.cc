#include "xproc/sys/robust_list.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

namespace xproc::sys {

// A fork child re-reads the head (same address in practice, but the kernel re-registers it,
// so xproc does not assume).
constinit thread_local detail::RobustListCache detail::this_thread_robust_list_cache{};

namespace {

void forget_in_fork_child() noexcept {
  detail::this_thread_robust_list_cache = detail::RobustListCache{};
}

RobustListHead* query_head() noexcept {
  void* head = nullptr;
  std::size_t length = 0;
  if (syscall(SYS_get_robust_list, 0, &head, &length) != 0) return nullptr;
  if (length != sizeof(RobustListHead) || head == nullptr) return nullptr;
  auto* robust_head = static_cast<RobustListHead*>(head);
  // xproc's nodes use glibc's layout; a head registered with another offset is someone else's
  // protocol, and joining it would be wrong.
  if (robust_head->futex_offset != kGlibcRobustFutexOffset) return nullptr;
  return robust_head;
}

}  // namespace

RobustListHead* detail::this_thread_robust_list_slow() noexcept {
  detail::RobustListCache& cache = detail::this_thread_robust_list_cache;
  if (!cache.cached) {
    static std::atomic<bool> registered{false};
    // relaxed: only ensures a single registration of the fork handler.
    if (!registered.exchange(true, std::memory_order_relaxed)) {
      if (pthread_atfork(nullptr, nullptr, forget_in_fork_child) != 0) std::abort();
    }
    cache.head = query_head();
    cache.cached = true;
  }
  return cache.head;
}

}  // namespace xproc::sys
