#include "xproc/sys/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace xproc::sys {
namespace {
std::error_code last_error() {
  return {errno, std::system_category()};
}
}  // namespace

FileDescriptor& FileDescriptor::operator=(FileDescriptor&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.release();
  }
  return *this;
}

FileDescriptor::~FileDescriptor() {
  // close() is not retried on EINTR: on Linux the descriptor is released either way.
  if (fd_ >= 0) close(fd_);
}

Result<FileDescriptor> create_memory_file(const std::string& name, std::size_t size) noexcept {
  FileDescriptor fd(memfd_create(name.c_str(), MFD_CLOEXEC));
  if (!fd.valid()) return last_error();
  while (ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    if (errno != EINTR) return last_error();
  }
  return fd;
}

Result<FileDescriptor> reopen(int fd) noexcept {
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  for (;;) {
    FileDescriptor reopened(open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (reopened.valid()) return reopened;
    if (errno != EINTR) return last_error();
  }
}

}  // namespace xproc::sys
