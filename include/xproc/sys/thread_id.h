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

// The calling thread's TID; never 0, always below 2^30 (the kernel's PID_MAX_LIMIT is 2^22).
pid_t this_thread_id() noexcept;

// Re-reads the TID from the kernel (after a fork that skipped pthread_atfork handlers).
void refresh_thread_id() noexcept;

// A 64-bit identity of the calling thread, unique among all threads of all processes on this
// host for the life of the boot with overwhelming probability (random, from getrandom), renewed
// in a fork child. TIDs are not such identities: they are reused and differ across PID
// namespaces, so two threads that share a lock may see the same TID.
std::uint64_t this_thread_token() noexcept;

}  // namespace xproc::sys
