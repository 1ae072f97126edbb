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
#include <cstdint>
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
  std::uint64_t device = 0;  // st_dev and st_ino: the file's identity (same file <=> both equal)
  std::uint64_t inode = 0;
};
Result<FileInfo> file_info(int fd) noexcept;
// stat(path): the same facts for a path (the file a name refers to now).
Result<FileInfo> path_info(const std::string& path) noexcept;

// mmap(nullptr, size, read|write, MAP_SHARED, fd, 0) for mappings whose owner is a C handle
// (SharedMapping is the owning type for C++ code); release with unmap_shared(data, size).
Result<void*> map_shared(int fd, std::size_t size) noexcept;
void unmap_shared(void* data, std::size_t size) noexcept;

// --- for the shm layer's segments ---

// The same with MAP_POPULATE when `populate` (prefault every page now; best effort).
Result<void*> map_shared(int fd, std::size_t size, bool populate) noexcept;

// fchmod(fd, mode): permissions exactly `mode`, whatever the umask was at creation.
[[nodiscard]] std::error_code set_mode(int fd, mode_t mode) noexcept;

// A new anonymous memory file (memfd_create, close-on-exec) that accepts seals; size 0.
Result<FileDescriptor> create_sealable_memory_file(const std::string& name) noexcept;

// Seals the file's size (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL): nobody can truncate it
// afterwards, so a mapping of it can never fault with SIGBUS for lack of backing file.
[[nodiscard]] std::error_code seal_size(int fd) noexcept;
// True when the file's size is sealed against shrinking (F_GET_SEALS has F_SEAL_SHRINK); false
// for files that do not support seals (a /dev/shm file).
Result<bool> size_sealed(int fd) noexcept;

// madvise(MADV_HUGEPAGE) on a mapping (transparent huge pages for shmem, where enabled).
[[nodiscard]] std::error_code advise_huge_pages(void* data, std::size_t size) noexcept;
// mlock(data, size). RLIMIT_MEMLOCK refusals come back as the OS error (ENOMEM, EPERM, EAGAIN).
[[nodiscard]] std::error_code lock_memory(const void* data, std::size_t size) noexcept;

}  // namespace xproc::sys
