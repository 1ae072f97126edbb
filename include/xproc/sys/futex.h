#pragma once
// Futex system calls on 32-bit words: the only blocking mechanism under every xproc primitive.
//
// Each call takes the word as std::atomic<uint32_t> (the kernel reads it as a plain 32-bit
// integer; std::atomic<uint32_t> is guaranteed lock-free and has the same size) and a
// FutexScope: `process_private` for words only one process touches (cheaper hashing in the
// kernel), `process_shared` for words in MAP_SHARED memory.
// Deadlines are absolute CLOCK_MONOTONIC (std::chrono::steady_clock) time points, passed to
// FUTEX_WAIT_BITSET unchanged, so wall-clock changes never move them.
// EINTR is retried inside (with an absolute deadline a retry never waits longer than asked).
// Thread- and process-safe: these are system calls.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <system_error>

#include "xproc/sys/result.h"

namespace xproc::sys {

enum class FutexScope : std::uint8_t { process_private, process_shared };

using Deadline = std::chrono::steady_clock::time_point;

inline constexpr std::uint32_t kFutexBitsetAny = 0xffffffffu;

// Sleeps while *word == expected, until woken, the deadline passes, or a spurious wake-up.
// Returns {} after a wake-up (possibly spurious: callers re-check their condition),
// errc::would_block when *word != expected at the call, errc::timed_out when the deadline passed.
[[nodiscard]] std::error_code futex_wait(const std::atomic<std::uint32_t>& word,
                                         std::uint32_t expected, FutexScope scope,
                                         std::optional<Deadline> deadline = std::nullopt,
                                         std::uint32_t bitset = kFutexBitsetAny) noexcept;

// Wakes up to `count` waiters whose bitset intersects `bitset`. Returns how many were woken.
Result<int> futex_wake(const std::atomic<std::uint32_t>& word, int count, FutexScope scope,
                       std::uint32_t bitset = kFutexBitsetAny) noexcept;

// If *word == expected: wakes up to `wake_count` waiters of `word` and moves up to
// `requeue_count` others to wait on `target` instead. Returns woken + requeued;
// errc::would_block when *word != expected.
Result<int> futex_cmp_requeue(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                              int wake_count, int requeue_count,
                              const std::atomic<std::uint32_t>& target, FutexScope scope) noexcept;

// FUTEX_WAKE_OP: atomically `old = *word2; *word2 = old <op> argument`, wakes up to `count1`
// waiters on word1, and, if `old <compare> compare_argument`, up to `count2` on word2.
enum class FutexOp : std::uint32_t { set = 0, add = 1, bit_or = 2, and_not = 3, bit_xor = 4 };
enum class FutexCompare : std::uint32_t { eq = 0, ne = 1, lt = 2, le = 3, gt = 4, ge = 5 };
struct FutexWakeOp {
  FutexOp op;
  std::uint32_t argument;  // 12 bits
  FutexCompare compare;
  std::uint32_t compare_argument;  // 12 bits
};
Result<int> futex_wake_op(const std::atomic<std::uint32_t>& word1,
                          std::atomic<std::uint32_t>& word2, int count1, int count2,
                          FutexWakeOp operation, FutexScope scope) noexcept;

// Bits of a lock word in the kernel's robust-futex format (linux/futex.h), for the sync layer,
// which must not include that header.
inline constexpr std::uint32_t kFutexWaitersBit = 0x80000000u;
inline constexpr std::uint32_t kFutexOwnerDiedBit = 0x40000000u;
inline constexpr std::uint32_t kFutexTidMask = 0x3fffffffu;

}  // namespace xproc::sys
