#pragma once
// Crash injection into the channel protocol, for tests: a process installs a hook, and the
// protocol (src/channel/ring.cc) calls it right after each numbered step that leaves a state a
// death can expose. A test's hook SIGKILLs the process at the step it wants to examine, so every
// death point is exercised deterministically instead of by chance.
//
// Thread- and process-safety: the hook is per process (a fork child inherits it); install it
// before the threads that should see it start. With no hook installed a step costs one relaxed
// load and a predicted branch. Deaths and fork(): nothing of its own.

#include <cstdint>

namespace xproc::channel::detail {

enum class Step : std::uint8_t {
  reserve_locked,      // R1 done: the reserve lock is held, nothing else written
  reserve_journaled,   // Rj: the journal (pending_end, pending_count) written
  reserve_padded,      // R4: a padding record published at tail (only when the record pads)
  reserve_published,   // R6: the record's header published, reserved(self)
  reserve_tail_moved,  // R7: tail moved past the record, reserve_count not yet
  reserve_counted,     // R7: reserve_count written, the lock still held
  claim_locked,        // K1 done: the claim lock is held
  claim_journaled,     // Kj: the journal (pending_head, pending_claims) written
  claim_marked,        // K3: the record is claimed(self), head not moved
  claim_head_moved,    // K4: head moved past it, claim_count not yet
  claim_counted,       // K4: claim_count written, the lock still held
  sweep_locked,        // S1 done: the sweep lock is held
  sweep_advanced,      // S2: reclaim moved over one record
};

using StepHook = void (*)(Step) noexcept;

// Installs `hook` for this process (nullptr: none).
void set_step_hook(StepHook hook) noexcept;

}  // namespace xproc::channel::detail
