// The C API's shared plumbing: error translation, deadlines, scopes (see src/c/sync_internal.h).
// The primitives' wrappers live in src/c/sync_<primitive>.cc.

#include <chrono>

#include "sync_internal.h"

namespace xproc::c_api {

int to_errno(std::error_code error) noexcept {
  if (!error) return 0;
  if (error.category() == xproc::error_category()) {
    switch (static_cast<xproc::errc>(error.value())) {
      case errc::ok:
        return 0;
      case errc::owner_died:
      case errc::peer_dead:
        return EOWNERDEAD;
      case errc::not_recoverable:
        return ENOTRECOVERABLE;
      case errc::timed_out:
        return ETIMEDOUT;
      case errc::would_block:
        return EBUSY;
      case errc::deadlock:
        return EDEADLK;
      case errc::not_owner:
        return EPERM;
      case errc::limit_reached:
        return EAGAIN;
      case errc::permission_denied:
        return EACCES;
      case errc::not_supported:
        return ENOSYS;
      case errc::message_too_large:
        return EMSGSIZE;
      case errc::not_found:
        return ENOENT;
      case errc::already_exists:
        return EEXIST;
      case errc::already_returned:
        return EALREADY;
      case errc::cancelled:
        return ECANCELED;
      case errc::bad_descriptor:
      case errc::wrong_kind:
      case errc::invalid_argument:
      case errc::corrupt_state:  // a peer scribbled on shared state: refused, never UB
      case errc::layout_mismatch:
      case errc::corrupt_segment:
        return EINVAL;
    }
    return EINVAL;
  }
  // System and generic categories carry errno values already.
  if (error.category() == std::system_category() || error.category() == std::generic_category()) {
    return error.value();
  }
  return EINVAL;
}

int to_deadline(const struct timespec* abstime, sync::Deadline& deadline) noexcept {
  if (abstime == nullptr) return EINVAL;
  if (abstime->tv_nsec < 0 || abstime->tv_nsec >= 1'000'000'000L) return EINVAL;
  using std::chrono::nanoseconds;
  using std::chrono::seconds;
  if (abstime->tv_sec < 0) {
    deadline = sync::Deadline{};  // the clock's epoch: long past
    return 0;
  }
  // Largest whole second a steady_clock time point (nanoseconds in 64 bits) can hold.
  constexpr auto kMaxSeconds =
      std::chrono::duration_cast<seconds>(sync::Deadline::duration::max()).count() - 1;
  if (abstime->tv_sec >= kMaxSeconds) {
    deadline = sync::Deadline::max();
    return 0;
  }
  deadline = sync::Deadline{std::chrono::duration_cast<sync::Deadline::duration>(
      seconds(abstime->tv_sec) + nanoseconds(abstime->tv_nsec))};
  return 0;
}

int to_scope(int pshared, sync::Scope& scope) noexcept {
  switch (pshared) {
    case XPROC_PROCESS_PRIVATE:
      scope = sync::Scope::thread;
      return 0;
    case XPROC_PROCESS_SHARED:
      scope = sync::Scope::process;
      return 0;
    default:
      return EINVAL;
  }
}

}  // namespace xproc::c_api
