#pragma once
// The calling thread's kernel thread id (TID), cached per thread.
//
// Robust lock words hold the owner's TID in the kernel's format, so every lock reads it; a
// gettid() system call each time would cost ~1 us on these VMs. The cache lives in a
// thread_local and is refreshed in a fork() child by a pthread_atfork handler (the child's only
// thread is the one that called fork). A process cloned by a raw clone()/vfork() that skips
// glibc's fork handlers must call refresh_thread_id() before using xproc.
// The value is in the caller's PID namespace.

#include <sys/types.h>
#include <cstdint>

namespace xproc::sys {

namespace detail {
// The per-thread cache behind the inline accessors below (0 = not read yet). constinit: no
// dynamic initialization, so an access from another translation unit is a plain TLS load
// with no wrapper call. Written only by its thread (and reset in a fork child, whose only
// thread is the forking one, by a pthread_atfork handler in thread_id.cc).
struct ThreadIdentity {
  pid_t tid = 0;
  std::uint64_t token = 0;
};
extern constinit thread_local ThreadIdentity this_thread_identity;
pid_t this_thread_id_slow() noexcept;
std::uint64_t this_thread_token_slow() noexcept;
}  // namespace detail

// The calling thread's TID; never 0, always below 2^30 (the kernel's PID_MAX_LIMIT is 2^22).
inline pid_t this_thread_id() noexcept {
  const pid_t tid = detail::this_thread_identity.tid;
  if (tid != 0) [[likely]]
    return tid;
  return detail::this_thread_id_slow();
}

// Re-reads the TID from the kernel (after a fork that skipped pthread_atfork handlers).
void refresh_thread_id() noexcept;

// A 64-bit identity of the calling thread, unique among all threads of all processes on this
// host for the life of the boot with overwhelming probability (random, from getrandom), renewed
// in a fork child. TIDs are not such identities: they are reused and differ across PID
// namespaces, so two threads that share a lock may see the same TID.
inline std::uint64_t this_thread_token() noexcept {
  const std::uint64_t token = detail::this_thread_identity.token;
  if (token != 0) [[likely]]
    return token;
  return detail::this_thread_token_slow();
}

}  // namespace xproc::sys
