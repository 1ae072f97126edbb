#pragma once
// ParticipantTable and Participant: xproc's process registry, its one liveness mechanism.
//
// A ParticipantTable lives in shared memory (every segment embeds one). It holds `capacity`
// slots; a process takes part by attaching a Participant, which takes a free slot and holds an
// open-file-description (OFD) write lock on byte `lock_base + slot` of the file the table is
// bound to (a memfd or a /dev/shm file; the caller passes a descriptor of it). The kernel drops
// that lock when the holder's description closes: at detach, and when the process dies (zombies
// included, before anyone reaps them). Any survivor then tells a participant's liveness with one
// F_OFD_GETLK: no PIDs (reused, and different across PID namespaces), no /proc, no daemon.
//
// Identity: ParticipantId = {slot, generation}. Each attach bumps the slot's generation, so a
// reused slot is never confused with its previous owner. pack() gives one 32-bit word (slot in
// bits 0..11, generation in bits 12..31), never 0, that shared records (lock words) can carry.
//
// Liveness of an id (Participant::is_alive, detail::owner_known_dead):
//   dead  if nobody else holds the slot's lock byte (the owner detached or died), or if the slot's
//         generation has moved past id.generation (a later attach took the slot, which it can
//         only do after the owner let go of the lock);
//   alive otherwise, and always for the caller's own id.
// Transient states are reported alive (conservative): between a new attacher's lock and its
// generation bump, the previous (dead) id of that slot reads alive for a few instructions; a
// generation read that lags a just-published id (the id is "ahead" of the word) reads alive.
// A live id is never reported dead. A dead id is reported alive only in such a window, or after
// wrap-around: generations wrap after 2^20 - 1 attaches of one slot and an id is compared with
// its slot's generation on a ring, so while a later participant holds the slot, an id it
// replaced reads dead only if fewer than 2^19 attaches of that slot separate them (ids are not
// meant to be kept across half a million reuses of a slot). A free slot's ids always read dead.
//
// Thread-safety: ParticipantTable methods and Participant's const methods may run concurrently
// from any thread. A Participant object itself is not synchronized (like any value): do not
// detach or move it while another thread uses it. Attach/detach of different Participants are
// thread-safe (a process-wide registry serializes them).
// Process-safety: any number of processes may attach to one table concurrently; slots are
// arbitrated by the kernel's byte-range locks, so two live participants never share a slot.
// Blocking: nothing blocks; attach costs up to `capacity` F_OFD_SETLK calls, is_alive one
// F_OFD_GETLK, for_each_participant one per used slot.
// Failures: create/open report a bad argument as errc::invalid_argument and a header that no
// correct creator writes (magic, version, capacity vs memory size) as errc::corrupt_state, never
// UB; attach returns errc::limit_reached when every slot is held by a live participant, the OS
// error when the descriptor cannot be reopened or locked; is_alive returns errc::invalid_argument
// for an id this table cannot have issued and errc::corrupt_state for a slot word holding an
// impossible generation.
// Deaths: a participant that dies inside attach either holds no lock yet (nothing happened) or
// holds the lock (its slot reads as held until the kernel closes its descriptions at death, then
// free). The generation bump is one atomic RMW: a death before it leaves the old generation, after
// it the new one; either way the next attacher bumps from whatever is there. Dying inside detach
// or attached is the same as dying: the kernel releases the lock, the id reads dead.
// fork(): a child inherits the descriptors of its parent's attachments, which would keep a dead
// parent looking alive. A pthread_atfork child handler closes them all in the child and turns the
// child's copies of the Participant objects into detached ones (attached() false, id() zero;
// their destructors close nothing). The child must attach itself. exec(): the descriptors are
// O_CLOEXEC, which also covers vfork()/posix_spawn() children (they exec or exit at once). A
// process created by a raw clone() that bypasses atfork handlers is not supported, and a program
// that closes descriptors it does not own (closefrom) ends its attachments (they then read dead).
// Lifetime: a Participant refers to the table's memory; keep the mapping alive while attached.

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <system_error>
#include <type_traits>

#include "xproc/sys/result.h"

namespace xproc::sync {

// A participant of one table: its slot and the slot's generation when it attached.
struct ParticipantId {
  static constexpr std::uint32_t kSlotBits = 12;
  static constexpr std::uint32_t kSlotMask = (1u << kSlotBits) - 1;              // bits 0..11
  static constexpr std::uint32_t kMaxGeneration = (1u << (32 - kSlotBits)) - 1;  // 20 bits

  std::uint32_t slot = 0;
  std::uint32_t generation = 0;  // 0: no participant (never issued)

  // True for an id some table can issue: generation in 1..kMaxGeneration, slot below 4096.
  constexpr bool valid() const noexcept {
    return generation != 0 && generation <= kMaxGeneration && slot <= kSlotMask;
  }
  // One word: generation << 12 | slot. Never 0 for a valid id.
  constexpr std::uint32_t pack() const noexcept { return generation << kSlotBits | slot; }
  static constexpr ParticipantId unpack(std::uint32_t packed) noexcept {
    return ParticipantId{packed & kSlotMask, packed >> kSlotBits};
  }
  friend constexpr bool operator==(ParticipantId, ParticipantId) noexcept = default;
};

// The shared part: a header and `capacity` slot words, placed in shared memory by create().
//
// Layout (layout version 1; all fields 32-bit, native byte order):
//   offset 0  magic     kMagic once initialized; stored last by create() (release)
//   offset 4  version   kLayoutVersion
//   offset 8  capacity  number of slots, 1..kMaxCapacity
//   offset 12 tag       random, nonzero; names this table in owner records
//   offset 16 slot[capacity]  each: the slot's generation (0 = never used, 1..kMaxGeneration)
// Header fields are written once by create() and never change. A slot word changes only by the
// atomic increment of an attacher that holds the slot's lock byte.
class ParticipantTable {
 public:
  static constexpr std::uint32_t kMagic = 0x54505058;  // "XPPT" in memory order
  static constexpr std::uint32_t kLayoutVersion = 1;
  static constexpr std::uint32_t kMaxCapacity = ParticipantId::kSlotMask + 1;  // 4096

  // Bytes needed for a table of `capacity` slots.
  static constexpr std::size_t size_for(std::uint32_t capacity) noexcept {
    return sizeof(ParticipantTable) + std::size_t{capacity} * sizeof(std::atomic<std::uint32_t>);
  }

  // Initializes a table in place in `memory` (`size` bytes, 4-byte aligned) with a fresh random
  // tag and every slot unused. errc::invalid_argument: null or misaligned memory, capacity outside
  // 1..kMaxCapacity, size below size_for(capacity). Nobody may use the memory concurrently.
  static Result<ParticipantTable*> create(void* memory, std::size_t size,
                                          std::uint32_t capacity) noexcept;

  // Validates a table another process created in `memory` (`size` bytes mapped).
  // errc::invalid_argument: null or misaligned memory, size below the header.
  // errc::corrupt_state: wrong magic (not a table, or not yet initialized), another layout
  // version, capacity 0 or above kMaxCapacity, or more slots than `size` holds.
  static Result<ParticipantTable*> open(void* memory, std::size_t size) noexcept;

  ParticipantTable(const ParticipantTable&) = delete;
  ParticipantTable& operator=(const ParticipantTable&) = delete;

  std::uint32_t capacity() const noexcept { return capacity_; }
  std::uint32_t tag() const noexcept { return tag_; }

  // Liveness of `id` asked through `fd`, an open file description of the table's file holding
  // no lock in [lock_base, lock_base + capacity) (a Participant's own lock is excluded by
  // Participant::is_alive; this function knows nothing of "mine"). `capacity` bounds the slot
  // index: pass the value validated when the table was opened, not one re-read from a peer.
  // errc::invalid_argument: id.valid() false or id.slot >= capacity, bad lock_base.
  // errc::corrupt_state: the slot word holds an impossible generation.
  Result<bool> is_alive(int fd, off_t lock_base, std::uint32_t capacity,
                        ParticipantId id) const noexcept;

 private:
  friend class Participant;
  ParticipantTable(std::uint32_t capacity, std::uint32_t tag) noexcept;

  std::atomic<std::uint32_t>& slot_word(std::uint32_t slot) noexcept;
  const std::atomic<std::uint32_t>& slot_word(std::uint32_t slot) const noexcept;

  std::atomic<std::uint32_t> magic_;  // kMagic once the rest is initialized
  std::uint32_t version_;
  std::uint32_t capacity_;
  std::uint32_t tag_;
  // followed by std::atomic<std::uint32_t> slot[capacity_]
};

static_assert(std::is_standard_layout_v<ParticipantTable>);
static_assert(sizeof(ParticipantTable) == 16);
static_assert(alignof(ParticipantTable) == 4);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == 4);

// One attachment of this process to a table (process-local, move-only). Detaches on destruction.
class Participant {
 public:
  Participant() noexcept = default;  // detached
  Participant(Participant&& other) noexcept;
  Participant& operator=(Participant&& other) noexcept;
  Participant(const Participant&) = delete;
  Participant& operator=(const Participant&) = delete;
  ~Participant();

  // Attaches to `table`, bound to the file `fd` refers to (the table's segment file). `fd` is
  // reopened as this attachment's own open file description (close-on-exec), so its lock belongs
  // to this attachment alone, is not shared with `fd` nor with fork children, and `fd` may be
  // closed afterwards. Slot lock bytes are [lock_base, lock_base + capacity); every attachment
  // of one table must use the same lock_base (the table does not record it).
  // errc::limit_reached: every slot is held by a live participant. errc::invalid_argument: bad
  // fd or lock_base. errc::corrupt_state: the chosen slot word holds an impossible generation.
  // Other errors: from reopening or locking the file (e.g. /proc not mounted).
  static Result<Participant> attach(ParticipantTable& table, int fd, off_t lock_base = 0) noexcept;

  // Releases the slot (unlock, then close the description); the id reads dead from then on.
  // Idempotent: a detached Participant (also a fork child's copy) returns {} and does nothing.
  // Errors from the unlock are returned, but the Participant is detached in any case.
  [[nodiscard]] std::error_code detach() noexcept;

  // False after detach(), after a move from it, and in a fork child (see the file banner).
  bool attached() const noexcept;
  // This attachment's id; ParticipantId{} (generation 0) when not attached.
  ParticipantId id() const noexcept;
  // The tag of the table attached to; 0 when not attached.
  std::uint32_t table_tag() const noexcept;

  // Liveness of another participant of the same table, asked through this attachment's own
  // description (see the banner for the rule). is_alive(id()) is true. Errors: as
  // ParticipantTable::is_alive, and errc::invalid_argument when not attached.
  Result<bool> is_alive(ParticipantId other) const noexcept;

  // Calls visit(id, alive) for every slot ever used (generation != 0), in slot order, with the
  // id of its latest attach and that id's liveness (one F_OFD_GETLK per used slot). Returns the
  // first error (errc::invalid_argument when not attached, errc::corrupt_state for an impossible
  // slot word) and stops there. `visit` runs with no lock held; it may call anything.
  [[nodiscard]] std::error_code for_each_participant(
      const std::function<void(ParticipantId id, bool alive)>& visit) const;

 private:
  void forget() noexcept;

  ParticipantTable* table_ = nullptr;
  int fd_ = -1;  // this attachment's own open file description; holds the slot's lock byte
  off_t lock_base_ = 0;
  std::uint32_t capacity_ = 0;  // validated at attach; never re-read from the peer-writable table
  std::uint32_t tag_ = 0;
  ParticipantId id_{};
  std::uint64_t serial_ = 0;      // this attachment's key in the process registry
  std::uint64_t fork_epoch_ = 0;  // detail::fork_epoch() at attach; differs in a fork child
};

}  // namespace xproc::sync
