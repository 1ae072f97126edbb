#include "xproc/sys/cross_memory.h"

#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <fstream>
#include <sstream>

#include "xproc/sys/error.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434  // the same number on every architecture (Linux 5.3)
#endif
#ifndef PR_SET_PTRACER
#define PR_SET_PTRACER 0x59616d61
#endif
#ifndef PR_SET_PTRACER_ANY
#define PR_SET_PTRACER_ANY (static_cast<unsigned long>(-1))
#endif

namespace xproc::sys {
namespace {

std::error_code map_errno(int error) noexcept {
  switch (error) {
    case ESRCH:
      return errc::peer_dead;
    case EPERM:
    case EACCES:
      return errc::permission_denied;
    case EFAULT:
      return errc::bad_descriptor;
    case ENOSYS:
      return errc::not_supported;
    case EINVAL:
      return errc::invalid_argument;
    default:
      return {error, std::system_category()};
  }
}

// A position in a vector of iovecs: element `index`, `offset` bytes into it.
struct Cursor {
  std::span<const iovec> vector;
  std::size_t index = 0;
  std::size_t offset = 0;

  // Skips exhausted and empty elements; false when nothing is left.
  bool normalize() noexcept {
    while (index < vector.size() && offset >= vector[index].iov_len) {
      ++index;
      offset = 0;
    }
    return index < vector.size();
  }
  // Fills `chunk` with up to kIovMax elements from here (the first one trimmed by `offset`),
  // at most `budget` bytes in all; returns the element count.
  std::size_t fill(std::array<iovec, kIovMax>& chunk, std::size_t budget) const noexcept {
    std::size_t count = 0;
    for (std::size_t i = index; i < vector.size() && count < kIovMax && budget > 0; ++i) {
      std::size_t skip = i == index ? offset : 0;
      std::size_t length = vector[i].iov_len - skip;
      if (length == 0) continue;
      if (length > budget) length = budget;
      chunk[count++] = iovec{static_cast<char*>(vector[i].iov_base) + skip, length};
      budget -= length;
    }
    return count;
  }
  void advance(std::size_t bytes) noexcept {
    while (bytes > 0 && index < vector.size()) {
      std::size_t left = vector[index].iov_len - offset;
      if (bytes < left) {
        offset += bytes;
        return;
      }
      bytes -= left;
      ++index;
      offset = 0;
    }
  }
};

// The kernel refuses (EINVAL) a call whose vector lengths add up past SSIZE_MAX; stay well below.
constexpr std::size_t kBytesPerCall = std::size_t{1} << 40;

using VmCall = ssize_t (*)(pid_t, const iovec*, unsigned long, const iovec*, unsigned long,
                           unsigned long);

CrossMemoryResult copy(VmCall call, pid_t pid, std::span<const iovec> local,
                       std::span<const iovec> remote) noexcept {
  CrossMemoryResult result;
  if (pid <= 0) {
    result.error = errc::invalid_argument;
    return result;
  }
  Cursor here{local};
  Cursor there{remote};
  std::array<iovec, kIovMax> local_chunk;
  std::array<iovec, kIovMax> remote_chunk;
  while (here.normalize() && there.normalize()) {
    std::size_t local_count = here.fill(local_chunk, kBytesPerCall);
    std::size_t remote_count = there.fill(remote_chunk, kBytesPerCall);
    ssize_t moved =
        call(pid, local_chunk.data(), local_count, remote_chunk.data(), remote_count, 0);
    if (moved < 0) {
      if (errno == EINTR) continue;
      result.error = map_errno(errno);
      return result;
    }
    if (moved == 0) {
      // Both sides had bytes to move, yet none moved: a fault on the first element (kernels
      // report it as EFAULT; treat a zero the same rather than loop).
      result.error = errc::bad_descriptor;
      return result;
    }
    std::size_t bytes = static_cast<std::size_t>(moved);
    result.bytes += bytes;
    here.advance(bytes);
    there.advance(bytes);
  }
  return result;
}

}  // namespace

CrossMemoryResult read_from(pid_t pid, std::span<const iovec> local,
                            std::span<const iovec> remote) noexcept {
  return copy(&process_vm_readv, pid, local, remote);
}

CrossMemoryResult write_to(pid_t pid, std::span<const iovec> local,
                           std::span<const iovec> remote) noexcept {
  return copy(&process_vm_writev, pid, local, remote);
}

Result<FileDescriptor> pidfd_open(pid_t pid) noexcept {
  if (pid <= 0) return make_error_code(errc::invalid_argument);
  long fd = syscall(SYS_pidfd_open, pid, 0);  // pidfds are always close-on-exec
  if (fd < 0) return map_errno(errno);
  return FileDescriptor(static_cast<int>(fd));
}

Result<bool> pidfd_exited(int pidfd) noexcept {
  if (pidfd < 0) return make_error_code(errc::invalid_argument);
  pollfd entry{pidfd, POLLIN, 0};
  for (;;) {
    int ready = poll(&entry, 1, 0);
    if (ready >= 0) return ready > 0 && (entry.revents & (POLLIN | POLLHUP)) != 0;
    if (errno != EINTR) return std::error_code(errno, std::system_category());
  }
}

Result<int> yama_ptrace_scope() noexcept {
  try {
    std::ifstream file("/proc/sys/kernel/yama/ptrace_scope");
    int scope = -1;
    if (!(file >> scope) || scope < 0) return make_error_code(errc::not_supported);
    return scope;
  } catch (...) {
    return make_error_code(errc::not_supported);
  }
}

namespace {

std::error_code set_ptracer(unsigned long pid) noexcept {
  if (prctl(PR_SET_PTRACER, pid, 0, 0, 0) == 0) return {};
  // EINVAL: Yama is not built in or not enabled, so there is no restriction to lift.
  if (errno == EINVAL) return errc::not_supported;
  return map_errno(errno);
}

}  // namespace

std::error_code allow_ptracer(pid_t pid) noexcept {
  if (pid <= 0) return errc::invalid_argument;
  return set_ptracer(static_cast<unsigned long>(pid));
}

std::error_code allow_any_ptracer() noexcept {
  return set_ptracer(PR_SET_PTRACER_ANY);
}

bool dumpable() noexcept {
  return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1;
}

std::string describe_ptrace_permission(pid_t pid) {
  std::ostringstream out;
  out << "reader euid " << geteuid() << (dumpable() ? "" : " (not dumpable)") << ", target pid "
      << pid;
  std::string target_uid = "unknown";
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Uid:", 0) == 0) {
      std::istringstream fields(line.substr(4));
      std::string real;
      std::string effective;
      fields >> real >> effective;
      target_uid = effective;
      break;
    }
  }
  out << " euid " << target_uid;
  Result<int> scope = yama_ptrace_scope();
  if (scope) {
    out << ", yama ptrace_scope " << *scope;
  } else {
    out << ", no yama";
  }
  out << " (cross-memory access needs the same uid and a dumpable target, or CAP_SYS_PTRACE;"
         " yama scope 1 also needs PR_SET_PTRACER by the target)";
  return out.str();
}

}  // namespace xproc::sys
