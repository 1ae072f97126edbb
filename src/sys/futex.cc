#include "xproc/sys/futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "xproc/sys/error.h"

namespace xproc::sys {
namespace {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(kFutexWaitersBit == FUTEX_WAITERS && kFutexOwnerDiedBit == FUTEX_OWNER_DIED &&
              kFutexTidMask == FUTEX_TID_MASK);

int with_scope(int op, FutexScope scope) {
  return scope == FutexScope::process_private ? (op | FUTEX_PRIVATE_FLAG) : op;
}

// The kernel reads and compares the word; it never writes through these pointers except for
// FUTEX_WAKE_OP's second word.
std::uint32_t* address(const std::atomic<std::uint32_t>& word) {
  return const_cast<std::uint32_t*>(reinterpret_cast<const std::uint32_t*>(&word));
}

long futex(std::uint32_t* uaddr, int op, std::uint32_t val, const timespec* timeout,
           std::uint32_t* uaddr2, std::uint32_t val3) {
  return syscall(SYS_futex, uaddr, op, val, timeout, uaddr2, val3);
}

// For the requeue and wake-op forms the kernel reads the 4th argument as an integer (val2).
long futex_val2(std::uint32_t* uaddr, int op, std::uint32_t val, std::uint32_t val2,
                std::uint32_t* uaddr2, std::uint32_t val3) {
  return syscall(SYS_futex, uaddr, op, val, static_cast<unsigned long>(val2), uaddr2, val3);
}

std::error_code from_errno(int error) {
  return {error, std::system_category()};
}

}  // namespace

std::error_code futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                           FutexScope scope, std::optional<Deadline> deadline,
                           std::uint32_t bitset) noexcept {
  timespec absolute{};
  if (deadline) {
    auto since_epoch = deadline->time_since_epoch();
    if (since_epoch.count() < 0) return errc::timed_out;
    auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
    absolute.tv_sec = static_cast<time_t>(seconds.count());
    absolute.tv_nsec = static_cast<long>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - seconds).count());
  }
  // FUTEX_WAIT_BITSET without FUTEX_CLOCK_REALTIME measures an absolute CLOCK_MONOTONIC time.
  const int op = with_scope(FUTEX_WAIT_BITSET, scope);
  for (;;) {
    long rc = futex(address(word), op, expected, deadline ? &absolute : nullptr, nullptr, bitset);
    if (rc == 0) return {};
    switch (errno) {
      case EINTR:
        continue;  // the deadline is absolute: retrying never extends the wait
      case EAGAIN:
        return errc::would_block;
      case ETIMEDOUT:
        return errc::timed_out;
      default:
        return from_errno(errno);
    }
  }
}

Result<int> futex_wake(const std::atomic<std::uint32_t>& word, int count, FutexScope scope,
                       std::uint32_t bitset) noexcept {
  long rc = futex(address(word), with_scope(FUTEX_WAKE_BITSET, scope),
                  static_cast<std::uint32_t>(count), nullptr, nullptr, bitset);
  if (rc < 0) return from_errno(errno);
  return static_cast<int>(rc);
}

Result<int> futex_cmp_requeue(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                              int wake_count, int requeue_count,
                              const std::atomic<std::uint32_t>& target, FutexScope scope) noexcept {
  for (;;) {
    long rc = futex_val2(address(word), with_scope(FUTEX_CMP_REQUEUE, scope),
                         static_cast<std::uint32_t>(wake_count),
                         static_cast<std::uint32_t>(requeue_count), address(target), expected);
    if (rc >= 0) return static_cast<int>(rc);
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return std::error_code(errc::would_block);
    return from_errno(errno);
  }
}

Result<int> futex_wake_op(const std::atomic<std::uint32_t>& word1,
                          std::atomic<std::uint32_t>& word2, int count1, int count2,
                          FutexWakeOp operation, FutexScope scope) noexcept {
  if (operation.argument > 0xfff || operation.compare_argument > 0xfff) {
    return std::error_code(errc::invalid_argument);
  }
  const std::uint32_t encoded = (static_cast<std::uint32_t>(operation.op) << 28) |
                                (static_cast<std::uint32_t>(operation.compare) << 24) |
                                (operation.argument << 12) | operation.compare_argument;
  // FUTEX_WAKE_OP never sleeps, so it cannot fail with EINTR; it is not retried because a
  // retry would apply the operation on word2 twice.
  long rc = futex_val2(address(word1), with_scope(FUTEX_WAKE_OP, scope),
                       static_cast<std::uint32_t>(count1), static_cast<std::uint32_t>(count2),
                       address(word2), encoded);
  if (rc < 0) return from_errno(errno);
  return static_cast<int>(rc);
}

}  // namespace xproc::sys
