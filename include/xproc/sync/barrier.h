#pragma once
// xproc::sync::Barrier: a reusable barrier for a fixed number of participants, threads of one
// process (Scope::thread) or processes sharing MAP_SHARED memory (Scope::process).
//
// arrive_and_wait() blocks until `count` participants have arrived in the current generation;
// then all of them return and the barrier is at once ready for the next generation. Exactly one
// participant per generation (the last to arrive) gets Arrival::serial, as
// PTHREAD_BARRIER_SERIAL_THREAD; the others get Arrival::ordinary. Everything each participant
// wrote before arriving happens-before every participant's return from that generation.
// arrive_and_wait_until(deadline): on timeout the caller's arrival is withdrawn (as if it never
// arrived in that generation; it may arrive again later) and errc::timed_out returned, unless
// the generation completed first (then it returns the arrival as usual).
//
// Thread- and process-safety: every member may be called concurrently by any thread of any
// process that maps the object; at most `count` participants may be inside one generation
// (more is a caller bug, reported as errc::corrupt_state when seen). Blocking: the arrive
// members block (bounded spin, then futex park) except for the last arriver.
// Failures: Result<Arrival> holds errc::timed_out (withdrawn), errc::invalid_argument (count 0:
//   a zero-filled barrier, never constructed), errc::corrupt_state (state_ holds more arrivals
//   than count_: a peer wrote garbage or too many participants).
// Deaths (the barrier cannot know who is missing: it counts arrivals, it has no member list):
//   * a participant killed before arriving: the others wait for good in arrive_and_wait(), or
//     until their deadline in arrive_and_wait_until() (then withdrawn: the barrier stays
//     consistent and can be reused by a new set of `count` participants).
//   * a participant killed after arriving (while waiting): its arrival still counts, so that
//     generation completes normally; the next generation misses it, as above. Its entry in
//     waiters_ stays: each later completed generation makes one spare futex wake syscall.
//   * the last arriver killed inside its CAS: before it, nothing happened; after it, the
//     generation is complete: parked waiters would sleep until their deadline, so a
//     Scope::process waiter parks in slices of kDeathRecheck and re-checks state_.
//   Use arrive_and_wait_until() wherever a peer may die; a process registry tells who died.
// Lifetime: participants released by a generation may still be reading the barrier (spinning or
//   parked) after the serial one returns. Each arrive counts itself in inside_ from its start to
//   its last access, and the destructor waits (detail::quiesce, at most detail::kQuiesceBound)
//   for inside_ to reach 0; so destroying the barrier (and re-initializing it: POSIX allows the
//   serial thread to) is safe as soon as the generation completed. A participant still waiting
//   in an uncompleted generation (a caller bug) or killed inside arrive (Scope::process) costs
//   the destructor that bound; inside() shows it.
// fork(): a Scope::process barrier keeps working (the child may be a participant). The child's
//   copy of a Scope::thread barrier keeps the parent's arrival count of the moment.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <system_error>
#include <type_traits>

#include "xproc/sync/scope.h"
#include "xproc/sys/error.h"
#include "xproc/sys/result.h"

namespace xproc::sync {

inline constexpr std::uint32_t kBarrierDefaultSpinRounds = 4;

// What arrive_and_wait() tells a participant: serial = the one participant of its generation
// that may do the work to be done once per generation.
enum class Arrival : std::uint8_t { ordinary, serial };

class Barrier {
 public:
  static constexpr std::uint32_t kMaxCount = 0x7fffffff;
  static constexpr std::chrono::milliseconds kDeathRecheck{100};

  // A zero-filled barrier has count 0: arrive members report invalid_argument.
  constexpr Barrier() noexcept = default;
  // Throws std::system_error(errc::invalid_argument) when count is 0 or above kMaxCount.
  Barrier(Scope scope, std::uint32_t count, std::uint32_t spin_rounds = kBarrierDefaultSpinRounds);
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;
  // Waits (bounded) for participants still leaving a completed generation: see "Lifetime".
  ~Barrier();

  [[nodiscard]] Result<Arrival> arrive_and_wait() noexcept { return arrive(nullptr); }
  [[nodiscard]] Result<Arrival> arrive_and_wait_until(Deadline deadline) noexcept {
    return arrive(&deadline);
  }
  template <class Rep, class Period>
  [[nodiscard]] Result<Arrival> arrive_and_wait_for(
      std::chrono::duration<Rep, Period> timeout) noexcept {
    return arrive_and_wait_until(Clock::now() + std::chrono::ceil<Clock::duration>(timeout));
  }

  std::uint32_t count() const noexcept { return count_; }
  // Participants arrived in the current generation (a snapshot).
  std::uint32_t arrived() const noexcept {
    return state_.load(std::memory_order_relaxed) & kArrivedMask;
  }
  // Announced waiters, a snapshot including dead ones (diagnostics and tests).
  std::uint32_t waiters() const noexcept { return waiters_.load(std::memory_order_relaxed); }
  // Participants inside an arrive member now, dead ones included. acquire: once it reads 0,
  // every access a leaving participant made happens-before the caller's next step (pairs with
  // the release decrement at the end of arrive()).
  std::uint32_t inside() const noexcept { return inside_.load(std::memory_order_acquire); }
  Scope scope() const noexcept { return static_cast<Scope>(scope_); }

 private:
  Result<Arrival> arrive(const Deadline* deadline) noexcept;
  Result<Arrival> arrive_counted(const Deadline* deadline) noexcept;
  std::error_code wait_generation(std::uint32_t generation, const Deadline* deadline) noexcept;

  // state_ bits (the futex word):
  //   31     generation parity: flips when the last participant of a generation arrives.
  //   0..30  participants arrived in the current generation, 0 .. count_ - 1.
  // One parity bit suffices: a waiter of generation g waits for the bit to differ from g's, and
  // the bit cannot flip back without that waiter arriving again (generation g+1 needs it), so
  // a waiter never sees an ABA. Arrivals and the flip are one word, so a timed-out waiter can
  // withdraw with one CAS that fails if the generation completed meanwhile.
  static constexpr std::uint32_t kGenerationBit = 0x80000000u;
  static constexpr std::uint32_t kArrivedMask = 0x7fffffffu;
  static constexpr std::uint32_t generation_of(std::uint32_t state) noexcept {
    return state & kGenerationBit;
  }
  static constexpr std::uint32_t arrived_of(std::uint32_t state) noexcept {
    return state & kArrivedMask;
  }

  // Layout (a wire format):
  // +0  state_ (above)
  std::atomic<std::uint32_t> state_{0};
  // +4  waiters_: participants between announcing and leaving a park; any value is valid.
  std::atomic<std::uint32_t> waiters_{0};
  // +8  count_: participants per generation, 1 .. kMaxCount; written once at construction.
  std::uint32_t count_ = 0;
  // +12 scope_: Scope (0 thread; anything else treated as process).
  std::uint32_t scope_ = 0;
  // +16 spin_rounds_: detail::spin_until rounds before parking.
  std::uint32_t spin_rounds_ = 0;
  // +20 inside_: participants inside arrive(), from before their arrival to their last access;
  //     any value is valid (dead participants stay counted).
  std::atomic<std::uint32_t> inside_{0};

  sys::FutexScope futex_scope() const noexcept {
    return scope_ == 0 ? sys::FutexScope::process_private : sys::FutexScope::process_shared;
  }
};

static_assert(sizeof(Barrier) == 24);
static_assert(alignof(Barrier) == 4);
static_assert(std::is_standard_layout_v<Barrier>);

}  // namespace xproc::sync
