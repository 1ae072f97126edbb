#include "xproc/sys/ofd_lock.h"

#include <fcntl.h>

#include <cerrno>

#include "xproc/sys/error.h"

namespace xproc::sys {
namespace {

struct flock make_range(short type, off_t offset, off_t length) {
  struct flock range {};
  range.l_type = type;
  range.l_whence = SEEK_SET;
  range.l_start = offset;
  range.l_len = length;
  range.l_pid = 0;  // must be 0 for OFD locks
  return range;
}

std::error_code fcntl_lock(int fd, int command, struct flock* range) noexcept {
  for (;;) {
    if (fcntl(fd, command, range) == 0) return {};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EACCES) return errc::would_block;
    return {errno, std::system_category()};
  }
}

}  // namespace

std::error_code ofd_try_lock(int fd, off_t offset, off_t length, OfdLockKind kind) noexcept {
  if (offset < 0 || length <= 0) return errc::invalid_argument;
  struct flock range = make_range(kind == OfdLockKind::write ? F_WRLCK : F_RDLCK, offset, length);
  return fcntl_lock(fd, F_OFD_SETLK, &range);
}

std::error_code ofd_unlock(int fd, off_t offset, off_t length) noexcept {
  if (offset < 0 || length <= 0) return errc::invalid_argument;
  struct flock range = make_range(F_UNLCK, offset, length);
  return fcntl_lock(fd, F_OFD_SETLK, &range);
}

Result<bool> ofd_locked_by_other(int fd, off_t offset, off_t length) noexcept {
  if (offset < 0 || length <= 0) return std::error_code(errc::invalid_argument);
  struct flock range = make_range(F_WRLCK, offset, length);
  if (std::error_code error = fcntl_lock(fd, F_OFD_GETLK, &range)) return error;
  return range.l_type != F_UNLCK;
}

}  // namespace xproc::sys
