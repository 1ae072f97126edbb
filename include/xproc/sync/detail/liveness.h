#pragma once
// Process-wide liveness registry: who this process is, and whether a recorded owner is dead.
//
// Defines the "owner record" that lock words and other shared records may carry to name the
// process holding them, and the query a survivor uses to decide that the holder is gone.
//
// - OwnerRecord identifies a participant of one participant table (sync/participant_table.h):
//   the table's random 32-bit tag and the participant's packed id (ParticipantId::pack(),
//   never 0). {0, 0} means "unknown": this process is attached to no table.
// - The owner record of this process is the id of its first live attachment (the Participant
//   attached first; when it detaches, the next one still attached, if any).
//
// Thread-safety: both functions may be called from any thread at any time, concurrently with
// attach/detach. Process-safety: owner_known_dead() reads the table in shared memory and asks
// the kernel about a byte-range lock (F_OFD_GETLK): it never blocks and never trusts the peer.
// Failures: none are reported; when liveness cannot be established the answer is "not known
// dead" (false), so a caller keeps its usual (non-recovering) behaviour.
// Deaths: a participant that dies is reported dead from the moment the kernel releases its
// lock (process exit, zombies included) - see participant_table.h.
// fork(): the child starts with no attachments (its record is {0, 0}); it must attach itself.

#include <atomic>
#include <cstdint>

namespace xproc::sync::detail {

// The identity of a participant, small enough to be stored in shared records.
// table_tag: ParticipantTable::tag() of the table; participant: ParticipantId::pack().
struct OwnerRecord {
  std::uint32_t table_tag;
  std::uint32_t participant;
};

// This process's owner record, encoded as table_tag << 32 | participant (0: unknown). Written
// only by the registry (src/sync/liveness.cc) under its mutex; read through the function below.
extern std::atomic<std::uint64_t> process_owner_record_word;

// This process's owner record, or {0, 0} when it is attached to no table.
// Cheap: one relaxed atomic load (inline), safe on every lock fast path.
[[nodiscard]] inline OwnerRecord this_process_owner_record() noexcept {
  // relaxed: the record is an identity, not a publication of other data. A thread that attached
  // reads its own store (sequenced before); another thread may see {0, 0} for a moment after a
  // concurrent first attach, which means "unknown" and is always allowed.
  std::uint64_t word = process_owner_record_word.load(std::memory_order_relaxed);
  return OwnerRecord{static_cast<std::uint32_t>(word >> 32), static_cast<std::uint32_t>(word)};
}

// True only if this process is attached (through a live Participant) to the table whose tag is
// record.table_tag, and the participant record.participant of that table is known to be dead
// (its slot generation moved on, or nobody holds its liveness lock). False for an unknown record
// ({0, 0}), a table this process is not attached to, a live participant, or any error.
[[nodiscard]] bool owner_known_dead(OwnerRecord record) noexcept;

}  // namespace xproc::sync::detail
