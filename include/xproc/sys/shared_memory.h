#pragma once
// POSIX shared memory by name (shm_open and friends), for objects that processes find by name
// (the C API's named semaphores; later, named segments).
//
// Names are shm_open names: "/" followed by a file name without '/'; the files live in
// kSharedMemoryDirectory. A named object must appear to other processes only once it is fully
// initialized, so creation is two steps: create_unpublished_shared_memory() gives an unnamed
// file (O_TMPFILE) to size, map and fill; publish_shared_memory() then gives it its name
// atomically (link), failing with std::errc::file_exists when the name is taken. A creator that
// dies before publishing leaves nothing behind.
// Errors are the operating system's (std::system_category); EINTR is retried inside.
// Thread- and process-safe: these are system calls.

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <system_error>

#include "xproc/sys/file.h"
#include "xproc/sys/result.h"

namespace xproc::sys {

inline constexpr const char* kSharedMemoryDirectory = "/dev/shm";

// shm_open(name, flags | O_CLOEXEC, mode).
Result<FileDescriptor> open_shared_memory(const std::string& name, int flags,
                                          mode_t mode = 0600) noexcept;

// A new, empty, unnamed read-write file in kSharedMemoryDirectory with permissions `mode`
// (minus the umask), close-on-exec.
Result<FileDescriptor> create_unpublished_shared_memory(mode_t mode) noexcept;

// Gives the unnamed file `fd` (from create_unpublished_shared_memory) the shm name `name`.
// std::errc::file_exists when that name exists already (nothing changes then).
[[nodiscard]] std::error_code publish_shared_memory(int fd, const std::string& name) noexcept;

// shm_unlink(name).
[[nodiscard]] std::error_code unlink_shared_memory(const std::string& name) noexcept;

// ftruncate(fd, size).
[[nodiscard]] std::error_code resize_file(int fd, std::size_t size) noexcept;

struct FileInfo {
  bool regular = false;  // a regular file (not a directory, socket, device...)
  std::size_t size = 0;
  uid_t owner = 0;
};
Result<FileInfo> file_info(int fd) noexcept;

// mmap(nullptr, size, read|write, MAP_SHARED, fd, 0) for mappings whose owner is a C handle
// (SharedMapping is the owning type for C++ code); release with unmap_shared(data, size).
Result<void*> map_shared(int fd, std::size_t size) noexcept;
void unmap_shared(void* data, std::size_t size) noexcept;

}  // namespace xproc::sys
