#include "xproc/sync/robust_rw_lock.h"

#include "xproc/sync/detail/liveness.h"

namespace xproc::sync {

std::uint32_t lock_owner_id() noexcept {
  const detail::OwnerRecord record = detail::this_process_owner_record();
  // A packed id equal to the reserved kRecovering cannot be recorded: anonymous.
  if (record.table_tag == 0 || record.participant == detail::RwOwners::kRecovering) return 0;
  return record.participant;
}

Result<RwRecovery> RobustRwLock::recover() noexcept {
  // The table of the segment is the one this process is attached to (banner precondition). Read
  // once: an owner is judged against one table even if this process attaches meanwhile.
  const std::uint32_t tag = detail::this_process_owner_record().table_tag;
  if (tag == 0) return RwRecovery{};  // attached to no table: nobody is known dead
  return recover([tag](std::uint32_t owner) {
    return detail::owner_known_dead(detail::OwnerRecord{tag, owner});
  });
}

namespace detail {

// Every RMW on slot_count is seq_cst, as are the lock word's release RMWs: a recoverer must see
// a dead process's slot and lock-word updates in the order the process made them (it learns of
// the death through the kernel, after the process's last store).
int RwOwners::begin_acquire(std::uint32_t owner) noexcept {
  if (owner == 0) return -1;
  int slot = -1;
  for (std::size_t i = 0; i < kSlots && slot < 0; ++i) {
    // relaxed: our own process wrote it (a slot stays ours while we live); a stale foreign value
    // only sends us to the next slot.
    if (slot_owner[i].load(std::memory_order_relaxed) == owner) slot = static_cast<int>(i);
  }
  for (std::size_t i = 0; i < kSlots && slot < 0; ++i) {
    std::uint32_t expected = 0;
    // acquire: pairs with the release that freed the slot after zeroing its count.
    if (slot_owner[i].compare_exchange_strong(expected, owner, std::memory_order_acquire,
                                              std::memory_order_relaxed)) {
      slot = static_cast<int>(i);
    }
  }
  if (slot < 0) return -1;  // table full: anonymous
  std::atomic<std::uint32_t>& count = slot_count[static_cast<std::size_t>(slot)];
  std::uint32_t value = count.load(std::memory_order_relaxed);  // relaxed: CAS re-validates
  for (;;) {
    if (pending(value) == (0xffffffffu >> kPendingShift) ||
        holds(value) + pending(value) >= kHoldsMask) {
      return -1;  // counters full: anonymous
    }
    // seq_cst: ordered before the lock word's RMW (see above).
    if (count.compare_exchange_weak(value, value + kPendingOne, std::memory_order_seq_cst,
                                    std::memory_order_relaxed)) {
      return slot;
    }
  }
}

void RwOwners::abort_acquire(int slot) noexcept {
  // seq_cst: see above.
  slot_count[static_cast<std::size_t>(slot)].fetch_sub(kPendingOne, std::memory_order_seq_cst);
}

void RwOwners::commit_acquire(int slot) noexcept {
  // seq_cst: see above. Adds one hold and removes one pending (modular arithmetic).
  slot_count[static_cast<std::size_t>(slot)].fetch_add(kHoldOne - kPendingOne,
                                                       std::memory_order_seq_cst);
}

void RwOwners::begin_release(int slot) noexcept {
  // seq_cst: see above. Turns one hold into one pending before the lock word drops it.
  slot_count[static_cast<std::size_t>(slot)].fetch_add(kPendingOne - kHoldOne,
                                                       std::memory_order_seq_cst);
}

void RwOwners::commit_release(int slot) noexcept {
  // seq_cst: see above.
  slot_count[static_cast<std::size_t>(slot)].fetch_sub(kPendingOne, std::memory_order_seq_cst);
}

}  // namespace detail

RobustRwLock::RobustRwLock(Scope scope, RwPolicy policy) noexcept : lock_(scope, policy) {
  // relaxed: the object is not shared yet (as in RwLock's constructor).
  owners_.stage_owner.store(0, std::memory_order_relaxed);
  for (std::size_t i = 0; i < kOwnerSlots; ++i) {
    owners_.slot_owner[i].store(0, std::memory_order_relaxed);
    owners_.slot_count[i].store(0, std::memory_order_relaxed);
  }
}

std::error_code RobustRwLock::recover_readers(std::size_t slot, std::uint32_t owner,
                                              RwRecovery& summary) noexcept {
  std::uint32_t expected = owner;
  // acquire: we then read the dead owner's counts; one survivor wins the claim.
  if (!owners_.slot_owner[slot].compare_exchange_strong(expected, detail::RwOwners::kRecovering,
                                                        std::memory_order_acquire,
                                                        std::memory_order_relaxed)) {
    return {};  // another survivor is recovering it, or it changed hands
  }
  // seq_cst: pairs with the dead owner's seq_cst RMWs (see robust_rw_lock.cc's detail notes).
  const std::uint32_t count = owners_.slot_count[slot].load(std::memory_order_seq_cst);
  const std::uint32_t holds = detail::RwOwners::holds(count);
  if (holds > 0) {
    // On corrupt_state the slot stays claimed: its holds are unaccounted for good.
    if (std::error_code error = lock_.drop_readers(holds)) return error;
  }
  summary.read_holds_released += holds;
  summary.read_holds_unresolved += detail::RwOwners::pending(count);
  owners_.slot_count[slot].store(0, std::memory_order_relaxed);  // relaxed: published below
  // release: the next process to claim the slot sees its count zeroed.
  owners_.slot_owner[slot].store(0, std::memory_order_release);
  return {};
}

std::error_code RobustRwLock::recover_writer(std::uint32_t owner, RwRecovery& summary) noexcept {
  std::uint32_t expected = owner;
  // acquire: pairs with the writer's release store of its id (the stage is taken).
  if (!owners_.stage_owner.compare_exchange_strong(expected, detail::RwOwners::kRecovering,
                                                   std::memory_order_acquire,
                                                   std::memory_order_relaxed)) {
    return {};
  }
  Result<bool> held = lock_.release_dead_writer();
  if (!held) return held.error();  // the entry stays claimed
  if (*held) {
    summary.write_lock_released = true;
  } else {
    summary.stage_released = true;
  }
  expected = detail::RwOwners::kRecovering;
  // relaxed: fails harmlessly when a new writer already recorded itself on the freed stage.
  owners_.stage_owner.compare_exchange_strong(expected, 0, std::memory_order_relaxed);
  return {};
}

}  // namespace xproc::sync
