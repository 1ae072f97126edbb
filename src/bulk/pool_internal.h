#pragma once
// The wire format of a pool (docs/layout/pool.md draws it): the shared header, the per-buffer
// state and position words, and the layout computation format() and open() share. Standard
// layout, fixed size, pointer-free. The protocol is in pool_loan.cc (numbered steps there).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "xproc/bulk/pool.h"
#include "xproc/sync/event_count.h"

namespace xproc::bulk::detail {

inline constexpr std::uint32_t kMagic = 0x4c505058;  // "XPPL" in memory order
inline constexpr std::uint32_t kLayoutVersion = 1;
inline constexpr std::size_t kLine = 128;
inline constexpr std::size_t kAlign = 64;
inline constexpr std::size_t kPage = 4096;
inline constexpr std::size_t kStatesOffset = 1024;  // the state words start here

// Buffer state word (64 bits, one per buffer, changed only by CAS):
//   bits  0..31  owner: packed ParticipantId of the loaner (loaned, posted) or of the consumer
//                (held); kNoOwner when free; kLocalOwner for a view opened without Participant
//   bits 32..55  generation: +1 (mod 2^24) at each free -> loaned; kept through the cycle
//   bits 56..63  state (BufferState); values above held are impossible (corrupt)
// The zero word is a free buffer of generation 0: a zero-filled pool is all free.
enum class BufferState : std::uint8_t { free = 0, loaned = 1, posted = 2, held = 3 };
inline constexpr std::uint32_t kNoOwner = 0;
inline constexpr std::uint32_t kLocalOwner = 0xfff;  // generation 0: never issued, never dead
inline constexpr std::uint32_t kGenerationMask = 0xffffff;
inline constexpr std::uint32_t kGenerationShift = 32;
inline constexpr std::uint32_t kStateShift = 56;

constexpr std::uint64_t make_word(BufferState state, std::uint32_t generation,
                                  std::uint32_t owner) noexcept {
  return std::uint64_t{static_cast<std::uint8_t>(state)} << kStateShift |
         std::uint64_t{generation & kGenerationMask} << kGenerationShift | owner;
}
constexpr std::uint32_t word_state_bits(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>(word >> kStateShift);
}
constexpr bool word_valid(std::uint64_t word) noexcept {
  return word_state_bits(word) <= 3;
}
constexpr BufferState word_state(std::uint64_t word) noexcept {
  return static_cast<BufferState>(word >> kStateShift);
}
constexpr std::uint32_t word_generation(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>(word >> kGenerationShift) & kGenerationMask;
}
constexpr std::uint32_t word_owner(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>(word);
}
constexpr bool is_free(std::uint64_t word) noexcept {
  return word_state_bits(word) == 0;
}

// Offset 0: identity, written by format() and never changed (magic last, release).
struct alignas(kAlign) Identity {
  std::atomic<std::uint32_t> magic;  // +0  kMagic once formatted
  std::uint32_t version;             // +4  kLayoutVersion
  std::uint32_t signature;           // +8  kSignature
  std::uint32_t tag;                 // +12 random, nonzero: names this pool in descriptors
  std::uint32_t class_count;         // +16 1..kMaxClasses
  std::uint32_t total;               // +20 buffers in all classes
  std::uint32_t flags;               // +24 0 (none defined)
  std::uint32_t unused;              // +28
  std::uint64_t positions_offset;    // +32 the position words
  std::uint64_t region_size;         // +40 bytes the layout uses from the region's start
  std::uint8_t padding[kLine - 48];
};

// Offset 128: kMaxClasses entries of 32 bytes (unused entries zero).
struct ClassInfo {
  std::uint32_t buffer_size;  // +0
  std::uint32_t count;        // +4
  std::uint32_t first;        // +8  global index of the class's first buffer
  std::uint32_t unused;       // +12
  std::uint64_t stride;       // +16 bytes between buffers (64- or 4096-multiple)
  std::uint64_t data_offset;  // +24 first buffer, from the region's start
};

// Offset 640: the rotating search hint of each class (any value is valid: taken modulo count).
struct alignas(kAlign) HintLine {
  std::atomic<std::uint32_t> hint[kMaxClasses];
  std::uint8_t padding[kLine - 4 * kMaxClasses];
};

// Offset 768: loaners wait here for a returned buffer.
struct alignas(kAlign) WaitLine {
  sync::EventCount returned;
  std::uint8_t padding[kLine - 16];
};

// Offset 896: counters (fetch_add, relaxed: statistics only).
struct alignas(kAlign) CounterLine {
  std::atomic<std::uint64_t> loans_total;
  std::atomic<std::uint64_t> reclaimed_dead;
  std::atomic<std::uint64_t> reclaimed_posted;
  std::uint8_t padding[kLine - 24];
};

struct PoolHeader {
  Identity identity;
  ClassInfo classes[kMaxClasses];
  HintLine hints;
  WaitLine wait;
  CounterLine counters;
};

static_assert(std::is_standard_layout_v<PoolHeader>);
static_assert(sizeof(ClassInfo) == 32);
static_assert(sizeof(PoolHeader) == kStatesOffset);
static_assert(alignof(PoolHeader) == kAlign);
static_assert(offsetof(PoolHeader, classes) == 128);
static_assert(offsetof(PoolHeader, hints) == 640);
static_assert(offsetof(PoolHeader, wait) == 768);
static_assert(offsetof(PoolHeader, counters) == 896);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint64_t>) == 8);

inline constexpr std::uint32_t kSignature = static_cast<std::uint32_t>(sizeof(PoolHeader)) << 16 ^
                                            static_cast<std::uint32_t>(sizeof(Descriptor)) << 8 ^
                                            kMaxClasses ^ kGenerationShift << 24 ^ kStateShift << 2;

// The layout of `config` in a region whose address is `misalignment` bytes past a page
// boundary: fills `out` (classes, counts) and returns the bytes used, or 0 for a bad config.
std::uint64_t compute_layout(const SizeClass* classes, std::uint32_t class_count,
                             std::uint64_t misalignment, PoolRef& out) noexcept;

// Offset of the position words: after the state words, 64-aligned.
std::uint64_t positions_offset_for(std::uint32_t total) noexcept;

// The descriptor's check field.
std::uint32_t descriptor_check(const Descriptor& descriptor) noexcept;

}  // namespace xproc::bulk::detail
