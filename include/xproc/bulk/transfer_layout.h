#pragma once
// The transfer table's shared layout (a wire format): header, peer records, transfer slots, and
// the slot state word. docs/layout/transfer.md is the reference; it and this file change together.
// Used by bulk/transfer.h; nothing here is meant for applications.
//
// A table lives in the body of a segment shared by a group of processes (decision 0041): any
// member may register transfers and pull/push any other member's. Every field is written only
// through std::atomic (peers run concurrently) and every value read from it is validated before
// it sizes or addresses anything: a peer is untrusted input.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "xproc/shm/segment_header.h"
#include "xproc/sync/event_count.h"
#include "xproc/sync/participant_table.h"

namespace xproc::bulk::detail {

inline constexpr std::uint32_t kMaxRanges = 64;  // ranges registered inline per transfer

// Slot state word (64 bits, one CAS per transition):
//   bits  0..31  value: a packed ParticipantId (registering/open: the owner; claimed/complete: the
//                claimer) or an xproc::errc value (failed); retired/withdrawn keep the last value
//   bits 32..35  state, below
//   bits 36..63  generation: bumped by every registration (1..2^28-1, 0 only before the first)
// States and who moves them (docs/layout/transfer.md has the full table):
//   free 0        never used
//   registering 1 the owner is writing the ranges (a dead owner's slot is reclaimable)
//   open 2        registered, descriptor may be out; a counterpart may claim it
//   claimed 3     a counterpart is copying (value = its id)
//   complete 4    copied (value = claimer id); `transferred` holds the byte count
//   failed 5      the copy failed (value = errc)
//   withdrawn 6   the owner dropped its handle before any claim
//   retired 7     the owner has seen complete/failed and let go; a new registration may take it
//   8..15         impossible: errc::corrupt_segment
enum class SlotState : std::uint32_t {
  free = 0,
  registering = 1,
  open = 2,
  claimed = 3,
  complete = 4,
  failed = 5,
  withdrawn = 6,
  retired = 7,
};
inline constexpr std::uint32_t kGenerationBits = 28;
inline constexpr std::uint32_t kMaxGeneration = (1u << kGenerationBits) - 1;

constexpr std::uint64_t make_state(std::uint32_t generation, SlotState state,
                                   std::uint32_t value) noexcept {
  return std::uint64_t{generation} << 36 | std::uint64_t{static_cast<std::uint32_t>(state)} << 32 |
         value;
}
constexpr std::uint32_t state_generation(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>(word >> 36);
}
constexpr std::uint32_t state_bits(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>(word >> 32) & 0xf;
}
constexpr bool state_valid(std::uint64_t word) noexcept {
  return state_bits(word) <= static_cast<std::uint32_t>(SlotState::retired);
}
constexpr SlotState state_of(std::uint64_t word) noexcept {
  return static_cast<SlotState>(state_bits(word));
}
constexpr std::uint32_t state_value(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>(word);
}
// States a new registration may take without asking anyone's liveness.
constexpr bool state_reusable(std::uint64_t word) noexcept {
  SlotState state = state_of(word);
  return state == SlotState::free || state == SlotState::withdrawn || state == SlotState::retired;
}
constexpr std::uint32_t next_generation(std::uint32_t generation) noexcept {
  return generation >= kMaxGeneration ? 1 : generation + 1;
}

// Which side registered the ranges.
enum class Direction : std::uint32_t {
  source = 1,       // the owner's memory is read by pull()
  destination = 2,  // the owner's memory is written by push()
};

struct RangeRecord {
  std::atomic<std::uint64_t> address;
  std::atomic<std::uint64_t> length;
};
static_assert(sizeof(RangeRecord) == 16);

// One transfer. Fields other than state/done are written by the owner while `registering` and
// read by others only after they saw `open` (acquire), except `transferred`, written by the
// claimer before complete (release).
struct alignas(64) TransferSlot {
  std::atomic<std::uint64_t> state;      // +0   see the bit table above
  sync::EventCount done;                 // +8   notified after complete/failed (owner waits on it)
  std::atomic<std::uint32_t> owner;      // +24  packed ParticipantId of the registering process
  std::atomic<std::uint32_t> pid;        // +28  its pid (for process_vm_*; pinned by a pidfd)
  std::atomic<std::uint32_t> direction;  // +32 Direction
  std::atomic<std::uint32_t> range_count;   // +36 1..kMaxRanges
  std::atomic<std::uint64_t> total_length;  // +40 sum of the range lengths
  std::atomic<std::uint64_t> transferred;   // +48 bytes the claimer moved
  std::uint64_t reserved;                   // +56 0
  RangeRecord ranges[kMaxRanges];           // +64
};
static_assert(std::is_standard_layout_v<TransferSlot>);
static_assert(offsetof(TransferSlot, done) == 8);
static_assert(offsetof(TransferSlot, owner) == 24);
static_assert(offsetof(TransferSlot, total_length) == 40);
static_assert(offsetof(TransferSlot, ranges) == 64);
static_assert(sizeof(TransferSlot) == 64 + 16 * kMaxRanges);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// What a process publishes about itself for permission probes, one record per participant slot
// of the segment (indexed by ParticipantId::slot). Written only by the participant holding that
// slot: pid, probe address and value first, then `id` (release).
struct PeerRecord {
  std::atomic<std::uint32_t> id;             // +0  packed ParticipantId; 0 = never published
  std::atomic<std::uint32_t> pid;            // +4
  std::atomic<std::uint64_t> probe_address;  // +8  address of an 8-byte word in that process
  std::atomic<std::uint64_t> probe_value;    // +16 the word's value (random per endpoint)
  std::uint64_t reserved;                    // +24 0
};
static_assert(std::is_standard_layout_v<PeerRecord>);
static_assert(sizeof(PeerRecord) == 32);

// Table header at offset 0 of the segment body. Written once at format, before the segment's
// ready flag publishes it; never changed afterwards.
struct TableHeader {
  static constexpr std::uint64_t kMagic = 0x524658434f525058;  // "XPROCXFR" in memory order
  static constexpr std::uint32_t kLayoutVersion = 1;

  std::uint64_t magic;           // +0
  std::uint32_t layout_version;  // +8
  std::uint32_t signature;       // +12 kSignature
  std::uint32_t tag;             // +16 random, nonzero; every descriptor of this table carries it
  std::uint32_t slot_count;      // +20 transfer slots, 1..kMaxSlots
  std::uint32_t peer_count;      // +24 peer records = the segment's participant capacity
  std::uint32_t max_ranges;      // +28 kMaxRanges
  std::uint64_t peers_offset;    // +32 kHeaderBytes
  std::uint64_t slots_offset;    // +40 peers_offset + peer_count * 32, rounded up to 64
  std::uint64_t total_size;      // +48 slots_offset + slot_count * sizeof(TransferSlot)
  std::uint64_t reserved;        // +56 0
};
static_assert(std::is_standard_layout_v<TableHeader>);
static_assert(sizeof(TableHeader) == 64);

inline constexpr std::size_t kHeaderBytes = 64;
inline constexpr std::uint32_t kMaxSlots = 1u << 16;

constexpr std::uint64_t slots_offset_for(std::uint32_t peer_count) noexcept {
  return (kHeaderBytes + std::uint64_t{peer_count} * sizeof(PeerRecord) + 63) / 64 * 64;
}
constexpr std::uint64_t table_size_for(std::uint32_t slot_count,
                                       std::uint32_t peer_count) noexcept {
  return slots_offset_for(peer_count) + std::uint64_t{slot_count} * sizeof(TransferSlot);
}

// FNV-1a (shm::detail::fold, the segment header's) over the sizes and constants this layout
// depends on: builds that disagree refuse each other (errc::layout_mismatch).
constexpr std::uint32_t layout_signature() noexcept {
  std::uint32_t hash = 2166136261u;
  for (std::uint64_t value :
       {std::uint64_t{sizeof(TableHeader)}, std::uint64_t{sizeof(PeerRecord)},
        std::uint64_t{sizeof(TransferSlot)}, std::uint64_t{alignof(TransferSlot)},
        std::uint64_t{kMaxRanges}, std::uint64_t{kGenerationBits},
        std::uint64_t{sizeof(sync::EventCount)}, std::uint64_t{offsetof(TransferSlot, ranges)},
        std::uint64_t{sizeof(void*)}}) {
    hash = shm::detail::fold(hash, value);
  }
  return hash;
}
inline constexpr std::uint32_t kSignature = layout_signature();

}  // namespace xproc::bulk::detail
