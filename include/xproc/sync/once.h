#pragma once
// xproc::sync::Once: std::call_once for threads of one process (Scope::thread) or processes
// sharing MAP_SHARED memory (Scope::process). A zero-filled Once is "not yet run" (Scope::thread).
//
// call(f): exactly one caller runs f; concurrent callers wait (bounded spin, then futex) until it
// finishes; every caller returns after f's effects happen-before its return. If f throws, the
// exception propagates to the caller that ran it, the Once returns to "not run" and one of the
// waiters (or a later caller) runs f again, as std::call_once does.
// call_until(f, deadline): the same, but a caller that is still waiting for another's f at the
// deadline returns errc::timed_out without running f (it may call again later).
//
// Thread- and process-safety: call members may be called concurrently by any thread of any
// process that maps the object. Blocking: a caller waits while another runs f.
// Failures: {} = f has run (by this caller or another); errc::timed_out (call_until only);
//   errc::deadlock = f itself called this Once (the caller is the runner: std would deadlock);
//   errc::corrupt_state = state_ holds an impossible value. Exceptions thrown by f propagate.
// Deaths (the choice made here: bounded waits, no takeover). A runner killed inside f leaves
//   state_ "running" for good: nothing in a Once can tell a dead runner from a slow one (the
//   runner's sys::this_thread_token() is recorded, for deadlock detection and diagnostics, but a
//   token says nothing about liveness). call() then waits for good; call_until() returns
//   timed_out at its deadline, and the application decides (a process registry can tell whether
//   the runner's process died; the object must then be re-created, since f may have half run).
//   A runner killed after publishing "done" or "not run" but before its wake-up: Scope::process
//   waiters park in slices of kDeathRecheck and see the new state within that period.
//   A waiter killed while waiting leaves nothing behind but the waiters flag (one spare wake).
// fork(): a Scope::process Once keeps working. The child's copy of a Scope::thread Once keeps the
//   state of the moment: "done" stays done; "running" in another parent thread stays running
//   for good in the child (as with pthread_once).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <system_error>
#include <type_traits>
#include <utility>

#include "xproc/sync/scope.h"
#include "xproc/sys/error.h"

namespace xproc::sync {

inline constexpr std::uint32_t kOnceDefaultSpinRounds = 4;

class Once {
 public:
  static constexpr std::chrono::milliseconds kDeathRecheck{100};

  // Scope::thread, not run: the state of zero-filled memory.
  constexpr Once() noexcept = default;
  explicit constexpr Once(Scope scope, std::uint32_t spin_rounds = kOnceDefaultSpinRounds) noexcept
      : scope_(static_cast<std::uint32_t>(scope)), spin_rounds_(spin_rounds) {}
  Once(const Once&) = delete;
  Once& operator=(const Once&) = delete;

  template <class F>
  [[nodiscard]] std::error_code call(F&& f) {
    if (is_done()) return {};
    return call_impl(std::forward<F>(f), nullptr);
  }
  template <class F>
  [[nodiscard]] std::error_code call_until(F&& f, Deadline deadline) {
    if (is_done()) return {};
    return call_impl(std::forward<F>(f), &deadline);
  }
  template <class F, class Rep, class Period>
  [[nodiscard]] std::error_code call_for(F&& f, std::chrono::duration<Rep, Period> timeout) {
    return call_until(std::forward<F>(f),
                      Clock::now() + std::chrono::ceil<Clock::duration>(timeout));
  }

  // Whether f has completed. acquire: pairs with the release exchange that publishes "done",
  // so f's effects are visible once this returns true.
  bool is_done() const noexcept { return state_.load(std::memory_order_acquire) == kDone; }
  // The sys::this_thread_token() of the caller running f now, 0 if none (a snapshot).
  std::uint64_t runner_token() const noexcept;
  Scope scope() const noexcept { return static_cast<Scope>(scope_); }

 private:
  // state_ values (the futex word):
  static constexpr std::uint32_t kNotRun = 0;         // nobody ran f to completion (zero-fill)
  static constexpr std::uint32_t kRunning = 1;        // a caller runs f; nobody waits
  static constexpr std::uint32_t kRunningWaited = 2;  // a caller runs f; waiters announced
  static constexpr std::uint32_t kDone = 3;           // f completed; final
  // Anything else: corrupt_state.

  enum class Step : std::uint8_t { run, done, retry, timed_out, deadlock, corrupt };
  // Takes the runner role (run), reports done, or waits for the runner (retry after a change).
  Step begin(const Deadline* deadline) noexcept;
  // Publishes `next` (kDone or kNotRun), clears the token, wakes waiters if announced.
  void finish(std::uint32_t next) noexcept;

  template <class F>
  std::error_code call_impl(F&& f, const Deadline* deadline) {
    for (;;) {
      switch (begin(deadline)) {
        case Step::run:
          break;
        case Step::done:
          return {};
        case Step::retry:
          continue;
        case Step::timed_out:
          return make_error_code(errc::timed_out);
        case Step::deadlock:
          return make_error_code(errc::deadlock);
        case Step::corrupt:
          return make_error_code(errc::corrupt_state);
      }
      try {
        std::forward<F>(f)();
      } catch (...) {
        finish(kNotRun);
        throw;
      }
      finish(kDone);
      return {};
    }
  }

  // Layout (a wire format):
  // +0  state_ (above)
  std::atomic<std::uint32_t> state_{kNotRun};
  // +4, +8 the runner's token (low, high halves), 0 when nobody runs f. Written and read
  //    relaxed: diagnostics and deadlock detection only (a thread sees its own writes).
  std::atomic<std::uint32_t> token_low_{0};
  std::atomic<std::uint32_t> token_high_{0};
  // +12 scope_: Scope (0 thread; anything else treated as process).
  std::uint32_t scope_ = 0;
  // +16 spin_rounds_: detail::spin_until rounds before parking.
  std::uint32_t spin_rounds_ = 0;

  sys::FutexScope futex_scope() const noexcept {
    return scope_ == 0 ? sys::FutexScope::process_private : sys::FutexScope::process_shared;
  }
};

static_assert(sizeof(Once) == 20);
static_assert(alignof(Once) == 4);
static_assert(std::is_standard_layout_v<Once>);

}  // namespace xproc::sync
