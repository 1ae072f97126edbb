#pragma once
// Access to the calling thread's kernel robust-futex list (see the kernel's
// Documentation/locking/robust-futex-ABI.rst).
//
// glibc registers one list head per thread before main() (and again in a fork child). xproc
// never replaces it: a second set_robust_list() would silently drop glibc's own robust mutexes.
// Instead xproc's robust locks link their nodes into glibc's list using glibc's node protocol,
// which this header describes in types; the sync layer's mutex does the linking.
//
// The kernel's ABI: the head holds `list` (pointer to the first entry; the head itself when
// empty), `futex_offset` (added to an entry's address gives its lock word) and
// `list_op_pending` (an entry being locked or unlocked). glibc's entries are the `next` field
// of a {prev, next} pair; `prev` sits one pointer before `next`. When a thread dies, the
// kernel walks at most 2048 entries and, for every lock word that holds the dead thread's TID,
// sets kFutexOwnerDiedBit, clears the TID, and wakes one waiter if kFutexWaitersBit was set.

#include <cstddef>

namespace xproc::sys {

// The kernel's struct robust_list / robust_list_head, as glibc uses them.
struct RobustListEntry {
  RobustListEntry* next;
};
struct RobustListHead {
  RobustListEntry list;
  long futex_offset;
  RobustListEntry* list_op_pending;
};

// glibc's per-entry pair. `prev` of the first entry points at the head (glibc places a
// `robust_prev` pointer just before its head, so `head - 1 pointer` is a valid pair too).
struct RobustListPair {
  void* prev;
  RobustListEntry next;
};
inline constexpr std::ptrdiff_t kRobustPairNextOffset = offsetof(RobustListPair, next);

// The calling thread's robust-list head (cached per thread, refreshed after fork), or nullptr
// when the kernel has no robust-futex support. The head belongs to glibc; only the calling
// thread may modify the list.
// Inline: a lock's fast path reads the per-thread cache with no call.
namespace detail {
struct RobustListCache {
  RobustListHead* head = nullptr;
  bool cached = false;  // looked up (head may be nullptr: no support); reset in a fork child
};
extern constinit thread_local RobustListCache this_thread_robust_list_cache;
RobustListHead* this_thread_robust_list_slow() noexcept;
}  // namespace detail
inline RobustListHead* this_thread_robust_list() noexcept {
  const detail::RobustListCache& cache = detail::this_thread_robust_list_cache;
  if (cache.cached) [[likely]]
    return cache.head;
  return detail::this_thread_robust_list_slow();
}

// The futex_offset glibc registered: the lock word is at `entry + offset`. -32 on x86-64.
inline constexpr long kGlibcRobustFutexOffset = -32;

}  // namespace xproc::sys
