#pragma once
// Linking a robust lock's {prev, next} node into the calling thread's glibc robust list, with
// glibc's node protocol (sys/robust_list.h; docs/decisions/0001-robust-ownership.md has the
// numbered crash protocol). Only the thread that owns the list calls these; the kernel reads
// the list when that thread dies, so every store that the kernel may follow is ordered before
// the store that makes it reachable by a compiler barrier (the kernel reads the list on this
// same thread, after it stopped: program order plus a compiler barrier is enough).
//
// Bit 0 of a list pointer marks a glibc PI-mutex entry: masked before dereferencing, kept when
// a pointer is copied.

#include <atomic>
#include <cstdint>

#include "xproc/sys/robust_list.h"

namespace xproc::sync::detail {

inline constexpr std::uintptr_t kRobustPiBit = 1;

inline void compiler_barrier() noexcept {
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

// The {prev, next} pair whose `next` field an entry pointer (possibly PI-tagged) points at.
inline sys::RobustListPair* pair_of(const void* entry) noexcept {
  const std::uintptr_t address = reinterpret_cast<std::uintptr_t>(entry) & ~kRobustPiBit;
  return reinterpret_cast<sys::RobustListPair*>(address - sys::kRobustPairNextOffset);
}

// A node: two pointer fields, `prev` directly before `next` (RobustListPair's layout).
struct RobustNode {
  void** prev;  // the node's prev field
  void** next;  // the node's next field (the entry the kernel sees)
  sys::RobustListEntry* entry() const noexcept {
    return reinterpret_cast<sys::RobustListEntry*>(next);
  }
};

// Step 1 of lock and of unlock: announce the entry being operated on.
inline void set_pending(sys::RobustListHead* head, RobustNode node) noexcept {
  head->list_op_pending = node.entry();
  compiler_barrier();  // the kernel must see the pending entry before the word changes
}

inline void clear_pending(sys::RobustListHead* head) noexcept {
  compiler_barrier();  // after the link/unlink and the word's change
  head->list_op_pending = nullptr;
}

// Links the node at the head of the list (after the lock word holds our TID).
inline void link_at_head(sys::RobustListHead* head, RobustNode node) noexcept {
  void* const old_first = head->list.next;  // possibly PI-tagged; the head itself when empty
  // The old first entry's pair (or glibc's robust_prev just before the head, when the list is
  // empty) gets its prev pointed at our entry.
  pair_of(old_first)->prev = node.entry();
  *node.next = old_first;  // copy keeps the PI bit of the old first entry
  *node.prev = &head->list;
  compiler_barrier();  // the node is complete before the head makes it reachable
  head->list.next = node.entry();
}

// Unlinks the node (before the lock word is released).
inline void unlink(RobustNode node) noexcept {
  void* const next = *node.next;
  void* const prev = *node.prev;
  pair_of(next)->prev = prev;  // next pair's prev (robust_prev when we are last)
  // The previous entry's next field (the head's list field when we are first).
  *reinterpret_cast<void**>(reinterpret_cast<std::uintptr_t>(prev) & ~kRobustPiBit) = next;
  compiler_barrier();  // out of the list before our own fields change
  *node.prev = nullptr;
  *node.next = nullptr;
}

}  // namespace xproc::sync::detail
