#pragma once
// SegmentHeader: the first 128 bytes of every xproc segment, and the fixed places of a segment's
// file (docs/layout/segment.md is the reference; it and this file change together).
//
// A segment file is: [header 128 B][participant table][padding to 64][body][end of file].
// Its OFD byte-range locks live in a region past any real segment's end (locks do not need the
// bytes to exist): kLockRegion + 0 the "gc" byte, + 1 the "init" byte, + 64... one byte per
// participant slot (the ParticipantTable's lock_base).
// Thread- and process-safety: the header is written once by the creator before `ready` is
// published (release) and never changes afterwards, except `ready` itself (see its bit table).
// A reader copies each field once and validates the copy (a peer is untrusted input).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "xproc/sync/participant_table.h"

namespace xproc::shm {

inline constexpr std::size_t kBodyAlignment = 64;                     // one cache line
inline constexpr std::uint64_t kLockRegion = std::uint64_t{1} << 40;  // 1 TiB: past any segment
inline constexpr std::uint64_t kGcLockByte = kLockRegion + 0;         // see segment.h: gc protocol
inline constexpr std::uint64_t kInitLockByte = kLockRegion + 1;  // held by a creator until ready
inline constexpr std::uint64_t kParticipantLockBase = kLockRegion + 64;  // + slot

// Header flags.
inline constexpr std::uint32_t kFlagUnlinkWhenLastDetaches = 1u << 0;
inline constexpr std::uint32_t kFlagAnonymous = 1u << 1;  // memfd: no name
inline constexpr std::uint32_t kKnownFlags = kFlagUnlinkWhenLastDetaches | kFlagAnonymous;

// Layout (layout version 1; native byte order; offsets in bytes):
//   0   magic              "XPROCSEG" (8 bytes)
//   8   layout_version     kLayoutVersion
//   12  signature          kSignature: folds sizes and constants of this layout (see below)
//   16  kind               SegmentKind (1..4)
//   20  flags              kFlag* bits
//   24  total_size         bytes of the file the creator made: body_offset + body_size
//   32  body_offset        align_up(table_offset + ParticipantTable::size_for(capacity), 64)
//   40  body_size          bytes of the body
//   48  table_offset       kHeaderSize (the participant table follows the header)
//   56  table_capacity     participant slots, 1..ParticipantTable::kMaxCapacity
//   60  creator_uid        effective uid of the creator
//   64  creator_pid        pid of the creator in its PID namespace (informational only)
//   68  creator            ParticipantId::pack() of the creator's attachment
//   72  created_at_ns      CLOCK_REALTIME nanoseconds since the epoch (informational only)
//   80  ready              futex word, see below; published last
//   84  reserved0          0
//   88  lock_region        kLockRegion
//   96  reserved[32]       0
struct SegmentHeader {
  static constexpr std::uint64_t kMagic = 0x474553434f525058;  // "XPROCSEG" in memory order
  static constexpr std::uint32_t kLayoutVersion = 1;

  // `ready` bit table:
  //   0            the creator is still initializing
  //   kWaiting     still initializing, and an opener sleeps on the word (the creator must wake)
  //   kReady       initialized: everything else in the segment was written before it (release)
  //   other        impossible: errc::corrupt_segment
  static constexpr std::uint32_t kWaiting = 1;
  static constexpr std::uint32_t kReady = 0x59444552;  // "REDY"
  static constexpr bool is_ready(std::uint32_t word) noexcept { return word == kReady; }
  static constexpr bool is_initializing(std::uint32_t word) noexcept {
    return word == 0 || word == kWaiting;
  }

  std::uint64_t magic;
  std::uint32_t layout_version;
  std::uint32_t signature;
  std::uint32_t kind;
  std::uint32_t flags;
  std::uint64_t total_size;
  std::uint64_t body_offset;
  std::uint64_t body_size;
  std::uint64_t table_offset;
  std::uint32_t table_capacity;
  std::uint32_t creator_uid;
  std::uint32_t creator_pid;
  std::uint32_t creator;
  std::int64_t created_at_ns;
  std::atomic<std::uint32_t> ready;
  std::uint32_t reserved0;
  std::uint64_t lock_region;
  std::uint8_t reserved[32];
};

inline constexpr std::size_t kHeaderSize = 128;

static_assert(std::is_standard_layout_v<SegmentHeader>);
static_assert(sizeof(SegmentHeader) == kHeaderSize);
static_assert(alignof(SegmentHeader) == 8);
static_assert(offsetof(SegmentHeader, kind) == 16);
static_assert(offsetof(SegmentHeader, total_size) == 24);
static_assert(offsetof(SegmentHeader, table_capacity) == 56);
static_assert(offsetof(SegmentHeader, created_at_ns) == 72);
static_assert(offsetof(SegmentHeader, ready) == 80);
static_assert(offsetof(SegmentHeader, lock_region) == 88);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(kHeaderSize % alignof(sync::ParticipantTable) == 0);

namespace detail {

// FNV-1a over 32-bit values: the signature of this build's layout.
constexpr std::uint32_t fold(std::uint32_t hash, std::uint64_t value) noexcept {
  for (int byte = 0; byte < 8; ++byte) {
    hash ^= static_cast<std::uint32_t>((value >> (8 * byte)) & 0xff);
    hash *= 16777619u;
  }
  return hash;
}

constexpr std::uint32_t layout_signature() noexcept {
  std::uint32_t hash = 2166136261u;
  for (std::uint64_t value :
       {std::uint64_t{sizeof(SegmentHeader)}, std::uint64_t{alignof(SegmentHeader)},
        std::uint64_t{offsetof(SegmentHeader, ready)}, std::uint64_t{kBodyAlignment}, kLockRegion,
        kParticipantLockBase, std::uint64_t{sizeof(sync::ParticipantTable)},
        std::uint64_t{sync::ParticipantTable::kLayoutVersion},
        std::uint64_t{sync::ParticipantTable::size_for(1)}, std::uint64_t{sizeof(void*)}}) {
    hash = fold(hash, value);
  }
  return hash;
}

}  // namespace detail

inline constexpr std::uint32_t kSignature = detail::layout_signature();

// Where the body of a segment with `capacity` participant slots starts.
constexpr std::uint64_t body_offset_for(std::uint32_t capacity) noexcept {
  std::uint64_t end = kHeaderSize + sync::ParticipantTable::size_for(capacity);
  return (end + kBodyAlignment - 1) / kBodyAlignment * kBodyAlignment;
}

}  // namespace xproc::shm
