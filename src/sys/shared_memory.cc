#include "xproc/sys/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "xproc/sys/error.h"

namespace xproc::sys {
namespace {

std::error_code last_error() {
  return {errno, std::system_category()};
}

}  // namespace

Result<FileDescriptor> open_shared_memory(const std::string& name, int flags,
                                          mode_t mode) noexcept {
  for (;;) {
    FileDescriptor fd(shm_open(name.c_str(), flags | O_CLOEXEC, mode));
    if (fd.valid()) return fd;
    if (errno != EINTR) return last_error();
  }
}

Result<FileDescriptor> create_unpublished_shared_memory(mode_t mode) noexcept {
  for (;;) {
    FileDescriptor fd(open(kSharedMemoryDirectory, O_TMPFILE | O_RDWR | O_CLOEXEC, mode));
    if (fd.valid()) return fd;
    if (errno != EINTR) return last_error();
  }
}

std::error_code publish_shared_memory(int fd, const std::string& name) noexcept {
  // A shm name is "/<file>"; the caller validated it, the directory check is belt and braces.
  if (name.size() < 2 || name[0] != '/' || name.find('/', 1) != std::string::npos) {
    return std::error_code(EINVAL, std::system_category());
  }
  std::string source = "/proc/self/fd/" + std::to_string(fd);
  std::string target = std::string(kSharedMemoryDirectory) + name;
  // linkat of /proc/self/fd/N with AT_SYMLINK_FOLLOW names an O_TMPFILE file without needing
  // CAP_DAC_READ_SEARCH (which AT_EMPTY_PATH would); it fails with EEXIST, never replaces.
  while (linkat(AT_FDCWD, source.c_str(), AT_FDCWD, target.c_str(), AT_SYMLINK_FOLLOW) != 0) {
    if (errno != EINTR) return last_error();
  }
  return {};
}

std::error_code unlink_shared_memory(const std::string& name) noexcept {
  if (shm_unlink(name.c_str()) != 0) return last_error();
  return {};
}

std::error_code resize_file(int fd, std::size_t size) noexcept {
  while (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    if (errno != EINTR) return last_error();
  }
  return {};
}

Result<FileInfo> file_info(int fd) noexcept {
  struct stat status {};
  if (fstat(fd, &status) != 0) return last_error();
  FileInfo info;
  info.regular = S_ISREG(status.st_mode);
  info.size = status.st_size < 0 ? 0 : static_cast<std::size_t>(status.st_size);
  info.owner = status.st_uid;
  info.device = static_cast<std::uint64_t>(status.st_dev);
  info.inode = static_cast<std::uint64_t>(status.st_ino);
  return info;
}

Result<FileInfo> path_info(const std::string& path) noexcept {
  struct stat status {};
  if (stat(path.c_str(), &status) != 0) return last_error();
  FileInfo info;
  info.regular = S_ISREG(status.st_mode);
  info.size = status.st_size < 0 ? 0 : static_cast<std::size_t>(status.st_size);
  info.owner = status.st_uid;
  info.device = static_cast<std::uint64_t>(status.st_dev);
  info.inode = static_cast<std::uint64_t>(status.st_ino);
  return info;
}

Result<void*> map_shared(int fd, std::size_t size) noexcept {
  if (size == 0) return std::error_code(errc::invalid_argument);
  void* data = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) return last_error();
  return data;
}

void unmap_shared(void* data, std::size_t size) noexcept {
  if (data != nullptr) munmap(data, size);
}

Result<void*> map_shared(int fd, std::size_t size, bool populate) noexcept {
  if (size == 0) return std::error_code(errc::invalid_argument);
  int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  void* data = mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (data == MAP_FAILED) return last_error();
  return data;
}

std::error_code set_mode(int fd, mode_t mode) noexcept {
  while (fchmod(fd, mode) != 0) {
    if (errno != EINTR) return last_error();
  }
  return {};
}

Result<FileDescriptor> create_sealable_memory_file(const std::string& name) noexcept {
  FileDescriptor fd(memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return last_error();
  return fd;
}

std::error_code seal_size(int fd) noexcept {
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) return last_error();
  return {};
}

Result<bool> size_sealed(int fd) noexcept {
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) {
    if (errno == EINVAL) return false;  // the file does not support seals
    return last_error();
  }
  return (seals & F_SEAL_SHRINK) != 0;
}

std::error_code advise_huge_pages(void* data, std::size_t size) noexcept {
  if (madvise(data, size, MADV_HUGEPAGE) != 0) return last_error();
  return {};
}

std::error_code lock_memory(const void* data, std::size_t size) noexcept {
  if (mlock(data, size) != 0) return last_error();
  return {};
}

}  // namespace xproc::sys
