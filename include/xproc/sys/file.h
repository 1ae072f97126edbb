#pragma once
// Owned file descriptors and memory-backed files (memfd), for the participant table and tests.
// Thread-safety: a FileDescriptor is a value type; distinct objects may be used concurrently.

#include <string>

#include "xproc/sys/result.h"

namespace xproc::sys {

// Owns one file descriptor and closes it on destruction. Move-only.
class FileDescriptor {
 public:
  FileDescriptor() = default;
  explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(other.release()) {}
  FileDescriptor& operator=(FileDescriptor&& other) noexcept;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor();

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// A new anonymous memory file of `size` bytes (memfd_create, close-on-exec).
Result<FileDescriptor> create_memory_file(const std::string& name, std::size_t size) noexcept;

// Opens the file `fd` refers to again, as a new open file description (via /proc/self/fd), so
// that OFD locks taken through it are distinct from those of `fd`'s description. Used by a fork
// child that inherited `fd`.
Result<FileDescriptor> reopen(int fd) noexcept;

}  // namespace xproc::sys
