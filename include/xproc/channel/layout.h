#pragma once
// The wire format of a channel: the shared header and the record header that live in a region of
// shared memory (docs/layout/channel.md draws it). Everything here is standard layout, fixed size,
// pointer-free; positions are 64-bit byte counts that only grow (a record at position p lives at
// ring offset p & (capacity - 1)). After the ring: the role table (below).
//
// Thread- and process-safety: these are plain layout types; the protocol that reads and writes
// them is in src/channel/ring.cc (numbered steps there and in docs/decisions/0031-channel-ring.md).
// Nothing here blocks or fails. Deaths and fork(): see endpoint.h.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "xproc/sync/event_count.h"
#include "xproc/sync/participant_table.h"

namespace xproc::channel::detail {

inline constexpr std::uint32_t kMagic = 0x48435058;  // "XPCH" in memory order
// 2: role table, Identity::role_slots; 3: the reserve and claim journals (ProducerLine,
// ConsumerLine) that keep the counters exact across a lock holder's death.
inline constexpr std::uint32_t kLayoutVersion = 3;
inline constexpr std::size_t kLine = 128;  // two cache lines: no false sharing with the prefetcher
inline constexpr std::size_t kAlign = 64;  // segment bodies are 64-byte aligned
inline constexpr std::size_t kDataOffset = 1024;  // the ring starts here (64-byte aligned region)
inline constexpr std::uint32_t kRecordHeader = 16;
inline constexpr std::uint32_t kRecordAlign = 16;
inline constexpr std::uint32_t kMinCapacity = 256;
inline constexpr std::uint32_t kMaxCapacity = 1u << 30;

inline constexpr std::uint32_t kFlagSpsc = 1;
inline constexpr std::uint32_t kFlagRedelivery = 2;
inline constexpr std::uint32_t kKnownFlags = kFlagSpsc | kFlagRedelivery;

// Owner id used by an endpoint opened without a Participant (threads of one process): a packed
// ParticipantId with generation 0, which no table issues; never checked for liveness.
inline constexpr std::uint32_t kLocalOwner = 0xfff;

// Record control word (64 bits, at record offset +0, accessed with std::atomic_ref):
//   bits  0..31  owner: packed ParticipantId of the producer (reserved, committed) or of the
//                consumer (claimed, consumed); of whoever wrote it (padding, aborted)
//   bits 32..55  check: (position >> 4) & 0xffffff, the record's own position (validation)
//   bits 56..63  state (RecordState)
// The whole word 0 is the free marker: the word at the tail position always holds it (or a newer
// header), so a consumer never mistakes stale bytes for a record.
enum class RecordState : std::uint8_t {
  free = 0,       // no record here (yet)
  reserved = 1,   // a producer is writing the body; owner = producer
  committed = 2,  // ready for a consumer
  claimed = 3,    // a consumer is reading it; owner = consumer
  consumed = 4,   // released; space reclaimable
  padding = 5,    // fills the ring's end; size = bytes after the header up to the end
  aborted = 6,    // never delivered: reservation abandoned, or its producer died
};
inline constexpr std::uint32_t kStateShift = 56;
inline constexpr std::uint32_t kCheckShift = 32;
inline constexpr std::uint64_t kCheckMask = 0xffffff;

constexpr std::uint64_t position_check(std::uint64_t position) noexcept {
  return (position >> 4) & kCheckMask;
}
constexpr std::uint64_t make_control(RecordState state, std::uint64_t position,
                                     std::uint32_t owner) noexcept {
  return std::uint64_t{static_cast<std::uint8_t>(state)} << kStateShift |
         position_check(position) << kCheckShift | owner;
}
constexpr RecordState control_state(std::uint64_t control) noexcept {
  return static_cast<RecordState>(control >> kStateShift);
}
constexpr std::uint32_t control_owner(std::uint64_t control) noexcept {
  return static_cast<std::uint32_t>(control);
}
// True when `control` is a header written for `position` with a state no correct writer
// exceeds.
constexpr bool control_valid_for(std::uint64_t control, std::uint64_t position) noexcept {
  return (control >> kStateShift) >= 1 && (control >> kStateShift) <= 6 &&
         ((control >> kCheckShift) & kCheckMask) == position_check(position);
}
// Bytes a record with `size` payload bytes occupies (header + payload rounded up to 16).
constexpr std::uint64_t record_length(std::uint64_t size) noexcept {
  return kRecordHeader + ((size + kRecordAlign - 1) & ~std::uint64_t{kRecordAlign - 1});
}

// Record header, 16 bytes at a 16-aligned ring offset:
//   +0  u64 control (above)       +8 u32 size (payload bytes)     +12 u32 producer (packed id)
// followed by the payload. Records never cross the ring's end (padding fills it).

// Offset 0: identity and configuration, written by format() and never changed afterwards
// (magic last, with release).
struct alignas(kAlign) Identity {
  std::atomic<std::uint32_t> magic;  // +0  kMagic once formatted
  std::uint32_t version;             // +4  kLayoutVersion
  std::uint32_t signature;           // +8  kSignature (sizes this build uses)
  std::uint32_t flags;               // +12 kFlag*
  std::uint32_t capacity;            // +16 ring bytes, a power of two
  std::uint32_t max_message;         // +20 largest payload
  std::uint64_t start_position;      // +24 first position (tests start near wrap points)
  std::uint32_t role_slots;          // +32 entries per role in the role table; 0: no role table
  std::uint8_t padding[kLine - 36];
};

// Offset 128: the producers' line. lock: 0 or the packed id of the producer inside steps R1-R8
// (MPMC only). tail: next position to reserve (written under the lock). reserve_count: records
// reserved ever. reclaim_seen: the producers' cached reclaim position. pending_end and
// pending_count: the journal of the reservation in progress (tail and reserve_count once it is
// done), written before its first visible step, so that a taker of a dead holder's lock can
// finish the counting exactly (ring.cc, R1').
struct alignas(kAlign) ProducerLine {
  std::atomic<std::uint32_t> lock;
  std::uint32_t unused;
  std::atomic<std::uint64_t> tail;
  std::atomic<std::uint64_t> reserve_count;
  std::atomic<std::uint64_t> reclaim_seen;
  std::atomic<std::uint64_t> pending_end;
  std::atomic<std::uint64_t> pending_count;
  std::uint8_t padding[kLine - 48];
};

// Offset 256: the consumers' line. lock: 0 or the packed id of the consumer inside K1-K4 (MPMC
// only). head: first record not yet claimed or skipped. claim_count: claims ever.
// pending_head and pending_claims: the journal of the claim in progress (head and claim_count
// once it is done), for a taker of a dead holder's lock (ring.cc, K1').
struct alignas(kAlign) ConsumerLine {
  std::atomic<std::uint32_t> lock;
  std::uint32_t unused;
  std::atomic<std::uint64_t> head;
  std::atomic<std::uint64_t> claim_count;
  std::atomic<std::uint64_t> pending_head;
  std::atomic<std::uint64_t> pending_claims;
  std::uint8_t padding[kLine - 40];
};

// Offset 384: reclaim: every byte before it is free for producers (reclaim <= head <= tail);
// written only by the holder of lock (0 or the packed id of the sweeper), so a sweeper never
// reads ring bytes a producer may be reusing.
struct alignas(kAlign) ReclaimLine {
  std::atomic<std::uint64_t> reclaim;
  std::atomic<std::uint32_t> lock;
  std::uint8_t padding[kLine - 12];
};

// Offsets 512 / 640: wake-ups (not-empty for consumers, not-full for producers).
struct alignas(kAlign) WaitLine {
  sync::EventCount event;
  std::uint8_t padding[kLine - 16];
};

// Offset 768: rare-event counters (fetch_add, relaxed: statistics only).
struct alignas(kAlign) CounterLine {
  std::atomic<std::uint64_t> abandoned;       // reservations destroyed without commit
  std::atomic<std::uint64_t> producer_died;   // reserved records of dead producers, skipped
  std::atomic<std::uint64_t> consumer_died;   // claimed records of dead consumers, reclaimed
  std::atomic<std::uint64_t> redelivered;     // ... of which put back for another consumer
  std::atomic<std::uint64_t> lock_takeovers;  // locks taken from dead holders
  // Role registrations ever (an entry of the role table taken by a new id): a hint that lets
  // an idle consumer sleep without periodic checks while no producer has ever registered.
  std::atomic<std::uint32_t> producer_registrations;
  std::atomic<std::uint32_t> consumer_registrations;
  std::uint8_t padding[kLine - 48];
};

// The role table follows the ring (at kDataOffset + capacity): role_slots words for producers,
// then role_slots words for consumers. Entry i holds 0 or the packed ParticipantId of the latest
// participant of table slot i that sent (producers) or received (consumers) on this channel; an
// entry left by a dead participant reads dead (its slot's generation moved on or its lock is
// free), so the table answers "is any producer / consumer of this channel alive?" with the
// participant table's one liveness test. Written only by the participant of that slot.
enum class Role : std::uint32_t { producer = 0, consumer = 1 };
inline constexpr std::uint32_t kMaxRoleSlots = sync::ParticipantTable::kMaxCapacity;
constexpr std::uint64_t role_table_bytes(std::uint32_t role_slots) noexcept {
  return std::uint64_t{role_slots} * 2 * sizeof(std::uint32_t);
}

struct ChannelHeader {
  Identity identity;
  ProducerLine producer;
  ConsumerLine consumer;
  ReclaimLine reclaim;
  WaitLine not_empty;
  WaitLine not_full;
  CounterLine counters;
};

static_assert(std::is_standard_layout_v<ChannelHeader>);
static_assert(sizeof(ChannelHeader) == 7 * kLine);
static_assert(alignof(ChannelHeader) == kAlign);
static_assert(sizeof(ChannelHeader) <= kDataOffset);
static_assert(offsetof(ChannelHeader, producer) == 128);
static_assert(offsetof(ChannelHeader, consumer) == 256);
static_assert(offsetof(ChannelHeader, reclaim) == 384);
static_assert(offsetof(ChannelHeader, not_empty) == 512);
static_assert(offsetof(ChannelHeader, not_full) == 640);
static_assert(offsetof(ChannelHeader, counters) == 768);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint64_t>) == 8);

// Folds the sizes this build uses; a build that disagrees refuses the region (layout_mismatch).
inline constexpr std::uint32_t kSignature =
    static_cast<std::uint32_t>(sizeof(ChannelHeader)) << 16 ^ kRecordHeader << 8 ^ kRecordAlign ^
    static_cast<std::uint32_t>(kDataOffset) << 20 ^ static_cast<std::uint32_t>(kLine) << 4;

}  // namespace xproc::channel::detail
