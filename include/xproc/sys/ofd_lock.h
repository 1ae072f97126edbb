#pragma once
// Open-file-description (OFD) byte-range locks: the liveness signal of xproc's participant table.
//
// An OFD lock belongs to the open file description, not to a process id, and the kernel drops it
// when the last descriptor referring to that description closes, which happens when the holder
// dies (zombies included, before anyone reaps them). A survivor learns whether a peer is alive
// with one F_OFD_GETLK on the byte the peer locked: no PIDs (which are reused and differ across
// PID namespaces), no /proc, no daemon.
// A descriptor inherited across fork() shares the description, and so the locks: a fork child
// must open the file again (a new description) before it registers itself.
// Thread- and process-safe: these are system calls; none blocks (F_OFD_SETLK, never SETLKW).

#include <sys/types.h>

#include <system_error>

#include "xproc/sys/result.h"

namespace xproc::sys {

enum class OfdLockKind { read, write };

// Takes a lock on [offset, offset + length) without waiting. errc::would_block when a lock held
// through another open file description conflicts.
[[nodiscard]] std::error_code ofd_try_lock(int fd, off_t offset, off_t length,
                                           OfdLockKind kind = OfdLockKind::write) noexcept;

// Releases this description's lock on [offset, offset + length).
[[nodiscard]] std::error_code ofd_unlock(int fd, off_t offset, off_t length) noexcept;

// True when another open file description holds a lock that conflicts with a write lock on
// [offset, offset + length). Locks held through `fd`'s own description never count.
Result<bool> ofd_locked_by_other(int fd, off_t offset, off_t length) noexcept;

}  // namespace xproc::sys
