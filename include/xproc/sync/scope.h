#pragma once
// Scope: who may use a synchronization object, and the clock its deadlines use.
//
// Scope::thread   the object lives in ordinary memory of one process; it uses private futexes
//                 (cheaper in the kernel) and may be used by any of that process's threads.
// Scope::process  the object lives in MAP_SHARED memory mapped by several processes; it uses
//                 shared futexes. The object must not be moved or copied once in use; each
//                 process may map it at a different address.
// Every primitive encodes its scope in its own shared state, so a zero-filled object is
// Scope::thread unless documented otherwise.

#include <chrono>
#include <cstdint>

#include "xproc/sys/futex.h"

namespace xproc::sync {

enum class Scope : std::uint8_t { thread = 0, process = 1 };

// Every deadline in the sync layer: absolute, monotonic, unaffected by wall-clock changes.
using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

constexpr sys::FutexScope futex_scope(Scope scope) noexcept {
  return scope == Scope::process ? sys::FutexScope::process_shared
                                 : sys::FutexScope::process_private;
}

}  // namespace xproc::sync
