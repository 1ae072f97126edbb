#pragma once
// Cross-memory copies between this process and a peer (process_vm_readv / process_vm_writev),
// pidfds that pin a peer's identity across such a copy, and the ptrace permission knobs they
// depend on (Yama's ptrace_scope, prctl(PR_SET_PTRACER)). The only place in xproc that calls
// process_vm_readv/writev or pidfd_open.
//
// read_from / write_to move bytes between this process's iovecs and a peer's iovecs: they loop
// over partial transfers and split the vectors at IOV_MAX entries, so any number of ranges of any
// length works. They report how far they got, also on failure (CrossMemoryResult::bytes):
//   {}                 every byte moved (bytes == min(sum of local, sum of remote lengths))
//   errc::peer_dead          ESRCH: no process with that pid (exited and reaped)
//   errc::permission_denied  EPERM/EACCES: no ptrace-level access (other uid, not dumpable, Yama)
//   errc::bad_descriptor     EFAULT: a range is not mapped (in the peer: it lied about the range
//                            or unmapped it; the kernel does not say which side faulted)
//   errc::not_supported      ENOSYS: a kernel without cross-memory attach
//   errc::invalid_argument   EINVAL: a pid <= 0, or a vector the kernel refuses
//   the OS error             ENOMEM and anything else (std::system_category)
// The kernel copies iovec element by element and never splits one element on a fault, so after a
// fault `bytes` counts exactly the bytes that landed in the destination.
//
// pid safety: a pid names a process only until that process is reaped; then it can be reused.
// A pidfd refers to one process for good (it reads as exited once that process ends). The safe
// copy is: pidfd_open(pid) while the pid is known to be the intended process (the caller proves
// that, e.g. through the participant table), copy by pid, then pidfd_exited(): if the process
// has not exited after the copy, it had not been reaped during it, so the pid named it
// throughout and the bytes are its bytes; if it has exited, the copy may have reached a
// successor with the same pid and its bytes must be discarded (bulk/transfer.h does this).
//
// Thread- and process-safety: system calls only, no shared state. Blocking: the copies block only
// on page faults in either process; nothing here waits for a peer. fork(): nothing to say (no
// state); a child's pidfds are inherited (close-on-exec).

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <span>
#include <string>
#include <system_error>

#include "xproc/sys/file.h"
#include "xproc/sys/result.h"

namespace xproc::sys {

// IOV_MAX on Linux (UIO_MAXIOV): the most elements one process_vm_* call accepts on each side.
inline constexpr std::size_t kIovMax = 1024;

struct CrossMemoryResult {
  std::size_t bytes = 0;  // bytes moved before `error` (all of them when error is {})
  std::error_code error;
};

// Copies from the peer `pid`'s `remote` ranges into this process's `local` ranges, in order, until
// either side's ranges are exhausted.
CrossMemoryResult read_from(pid_t pid, std::span<const iovec> local,
                            std::span<const iovec> remote) noexcept;
// Copies this process's `local` ranges into the peer `pid`'s `remote` ranges, likewise.
CrossMemoryResult write_to(pid_t pid, std::span<const iovec> local,
                           std::span<const iovec> remote) noexcept;

// pidfd_open(pid, 0), close-on-exec. errc::peer_dead: no such process (ESRCH);
// errc::not_supported: the kernel lacks pidfds (before 5.3); errc::invalid_argument: pid <= 0.
Result<FileDescriptor> pidfd_open(pid_t pid) noexcept;
// True once the process `pidfd` refers to has exited (zombies included): one poll(), no wait.
Result<bool> pidfd_exited(int pidfd) noexcept;

// /proc/sys/kernel/yama/ptrace_scope: 0 classic (same uid may read), 1 restricted (only
// descendants and processes a target named with PR_SET_PTRACER), 2 admin only, 3 nobody.
// errc::not_supported when Yama is absent (then the classic rule applies).
Result<int> yama_ptrace_scope() noexcept;

// prctl(PR_SET_PTRACER, pid): lets `pid` (and its descendants) read this process under Yama
// scope 1. allow_any_ptracer(): PR_SET_PTRACER_ANY, any process with the classic permission.
// errc::not_supported when Yama is absent (nothing to allow: the classic rule applies anyway).
[[nodiscard]] std::error_code allow_ptracer(pid_t pid) noexcept;
[[nodiscard]] std::error_code allow_any_ptracer() noexcept;

// Whether this process is dumpable (prctl(PR_GET_DUMPABLE)): a non-dumpable process can be read
// only by a process with CAP_SYS_PTRACE.
bool dumpable() noexcept;

// A one-line explanation of why reading `pid` may be refused (uids, dumpability where visible,
// Yama scope), for permission_denied reports. Never fails; unknown facts read "unknown".
std::string describe_ptrace_permission(pid_t pid);

}  // namespace xproc::sys
