// Named semaphores of the C API: xproc_sem_open / xproc_sem_close / xproc_sem_unlink.
//
// Each named semaphore is one POSIX shared-memory file, /dev/shm/xproc-sem.<name without '/'>,
// holding a NamedSemaphoreFile (below): a header that identifies the layout, then the
// xproc_sem_t. Creation fills an unnamed file and then links it under its name, so an opener
// sees either no file or a complete one; a creator that dies midway leaves nothing. An opener
// checks the file's type, size, magic, version and recorded size before using it and refuses a
// mismatch with EINVAL (a foreign or truncated file never causes an out-of-bounds access).

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <set>
#include <string>

#include "sync_internal.h"
#include "xproc/sys/shared_memory.h"

namespace xproc::c_api {
namespace {

// Layout of a named semaphore's file (a wire format: fixed size, no pointers).
//   offset  size  field
//        0     4  magic     kNamedSemaphoreMagic
//        4     4  version   kNamedSemaphoreVersion
//        8     4  size      sizeof(NamedSemaphoreFile), 48
//       12     4  reserved  0
//       16    32  semaphore xproc_sem_t, process-shared
struct NamedSemaphoreFile {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint32_t size;
  std::uint32_t reserved;
  xproc_sem_t semaphore;
};
static_assert(std::is_standard_layout_v<NamedSemaphoreFile>);
static_assert(offsetof(NamedSemaphoreFile, semaphore) == 16);
static_assert(sizeof(NamedSemaphoreFile) == 48);

constexpr std::uint32_t kNamedSemaphoreMagic = 0x6d657378u;  // "xsem" read little-endian
constexpr std::uint32_t kNamedSemaphoreVersion = 1;
constexpr const char* kNamePrefix = "/xproc-sem.";
// How often open-or-create retries when the name keeps vanishing between its two steps.
constexpr int kOpenAttempts = 64;

// errno for a failed sem_open-family call; -1 or XPROC_SEM_FAILED is returned alongside.
int fail_errno(std::error_code error) noexcept {
  const int code = to_errno(error);
  return code != 0 ? code : EINVAL;
}

// Validates a semaphore name and gives its shm name. 0, EINVAL or ENAMETOOLONG.
int shm_name_of(const char* name, std::string& shm_name) {
  if (name == nullptr || name[0] != '/') return EINVAL;
  const char* file = name + 1;
  const std::size_t length = strnlen(file, XPROC_SEM_NAME_MAX);
  if (length >= XPROC_SEM_NAME_MAX) return ENAMETOOLONG;
  if (length == 0 || std::strchr(file, '/') != nullptr) return EINVAL;
  if (std::strcmp(file, ".") == 0 || std::strcmp(file, "..") == 0) return EINVAL;
  shm_name = kNamePrefix;
  shm_name += file;
  return 0;
}

// Maps an opened semaphore file after checking that it is one. Sets errno on failure.
xproc_sem_t* attach(int fd) {
  auto info = sys::file_info(fd);
  if (!info) {
    errno = fail_errno(info.error());
    return XPROC_SEM_FAILED;
  }
  if (!info->regular || info->size != sizeof(NamedSemaphoreFile)) {
    errno = EINVAL;
    return XPROC_SEM_FAILED;
  }
  auto mapped = sys::map_shared(fd, sizeof(NamedSemaphoreFile));
  if (!mapped) {
    errno = fail_errno(mapped.error());
    return XPROC_SEM_FAILED;
  }
  auto* file = static_cast<NamedSemaphoreFile*>(*mapped);
  // The header is written before the file is published and never changes afterwards; a peer
  // that scribbles on it anyway only makes this check fail.
  if (file->magic != kNamedSemaphoreMagic || file->version != kNamedSemaphoreVersion ||
      file->size != sizeof(NamedSemaphoreFile)) {
    sys::unmap_shared(file, sizeof(NamedSemaphoreFile));
    errno = EINVAL;
    return XPROC_SEM_FAILED;
  }
  return &file->semaphore;
}

// Creates and initializes an unnamed semaphore file and publishes it as `shm_name`.
// Returns the mapped semaphore, or XPROC_SEM_FAILED with errno set (EEXIST: the name is taken).
xproc_sem_t* create(const std::string& shm_name, mode_t mode, unsigned int value) {
  auto fd = sys::create_unpublished_shared_memory(mode & 07777);
  if (!fd) {
    errno = fail_errno(fd.error());
    return XPROC_SEM_FAILED;
  }
  if (auto error = sys::resize_file(fd->get(), sizeof(NamedSemaphoreFile))) {
    errno = fail_errno(error);
    return XPROC_SEM_FAILED;
  }
  auto mapped = sys::map_shared(fd->get(), sizeof(NamedSemaphoreFile));
  if (!mapped) {
    errno = fail_errno(mapped.error());
    return XPROC_SEM_FAILED;
  }
  auto* file = static_cast<NamedSemaphoreFile*>(*mapped);
  file->magic = kNamedSemaphoreMagic;
  file->version = kNamedSemaphoreVersion;
  file->size = sizeof(NamedSemaphoreFile);
  file->reserved = 0;
  if (xproc_sem_init(&file->semaphore, 1, value) != 0) {
    const int saved = errno;
    sys::unmap_shared(file, sizeof(NamedSemaphoreFile));
    errno = saved;
    return XPROC_SEM_FAILED;
  }
  // Publishing is a system call that makes the file visible by name; the stores above reached
  // the shared page first, and every opener's own open/mmap system calls order its reads after.
  if (auto error = sys::publish_shared_memory(fd->get(), shm_name)) {
    sys::unmap_shared(file, sizeof(NamedSemaphoreFile));
    errno = fail_errno(error);
    return XPROC_SEM_FAILED;
  }
  return &file->semaphore;
}

// The semaphores this process opened and has not closed: xproc_sem_close unmaps only those.
// (Guessing from the address, e.g. "page-aligned minus the header", would unmap a stack or heap
// page whenever an unnamed semaphore happens to sit at that offset.) Never destroyed, so a
// close from another static destructor still finds it. Like glibc's sem_open/sem_close, the
// lock makes these calls unsafe in a fork child of a multi-threaded parent before exec.
struct OpenSemaphores {
  std::mutex mutex;
  std::set<const xproc_sem_t*> open;
};
OpenSemaphores& open_semaphores() {
  static auto* registry = new OpenSemaphores;
  return *registry;
}

xproc_sem_t* open_named(const char* name, int oflag, mode_t mode, unsigned int value) {
  std::string shm_name;
  if (int code = shm_name_of(name, shm_name)) {
    errno = code;
    return XPROC_SEM_FAILED;
  }
  const bool may_create = (oflag & O_CREAT) != 0;
  const bool exclusive = may_create && (oflag & O_EXCL) != 0;
  if (may_create && value > static_cast<unsigned int>(XPROC_SEM_VALUE_MAX)) {
    errno = EINVAL;
    return XPROC_SEM_FAILED;
  }
  for (int attempt = 0; attempt < kOpenAttempts; ++attempt) {
    if (!exclusive) {
      auto fd = sys::open_shared_memory(shm_name, O_RDWR);
      if (fd) return attach(fd->get());
      const int code = fail_errno(fd.error());
      if (code != ENOENT || !may_create) {
        errno = code;
        return XPROC_SEM_FAILED;
      }
    }
    xproc_sem_t* created = create(shm_name, mode, value);
    if (created != XPROC_SEM_FAILED || errno != EEXIST || exclusive) return created;
    // Somebody else created it between our open and our publish: open theirs.
  }
  errno = EAGAIN;  // the name was created and removed again on every attempt
  return XPROC_SEM_FAILED;
}

}  // namespace
}  // namespace xproc::c_api

extern "C" {

xproc_sem_t* xproc_sem_open(const char* name, int oflag, ...) {
  mode_t mode = 0;
  unsigned int value = 0;
  if ((oflag & O_CREAT) != 0) {
    va_list arguments;
    va_start(arguments, oflag);
    mode = va_arg(arguments, mode_t);
    value = va_arg(arguments, unsigned int);
    va_end(arguments);
  }
  xproc_sem_t* sem = XPROC_SEM_FAILED;
  try {
    sem = xproc::c_api::open_named(name, oflag, mode, value);
    if (sem == XPROC_SEM_FAILED) return sem;
    auto& registry = xproc::c_api::open_semaphores();
    const std::lock_guard<std::mutex> lock(registry.mutex);
    registry.open.insert(sem);
    return sem;
  } catch (...) {  // allocations (the name, the registry's node) are all that throws here
    if (sem != XPROC_SEM_FAILED) {
      xproc::sys::unmap_shared(reinterpret_cast<unsigned char*>(sem) -
                                   offsetof(xproc::c_api::NamedSemaphoreFile, semaphore),
                               sizeof(xproc::c_api::NamedSemaphoreFile));
    }
    errno = ENOMEM;
    return XPROC_SEM_FAILED;
  }
}

int xproc_sem_close(xproc_sem_t* sem) {
  using xproc::c_api::NamedSemaphoreFile;
  if (sem == nullptr) {
    errno = EINVAL;
    return -1;
  }
  {
    // Only a pointer xproc_sem_open returned and nobody closed yet is unmapped; anything else
    // (an unnamed semaphore, a second close) is refused.
    auto& registry = xproc::c_api::open_semaphores();
    const std::lock_guard<std::mutex> lock(registry.mutex);
    if (registry.open.erase(sem) == 0) {
      errno = EINVAL;
      return -1;
    }
  }
  auto* file = reinterpret_cast<unsigned char*>(sem) - offsetof(NamedSemaphoreFile, semaphore);
  xproc::sys::unmap_shared(file, sizeof(NamedSemaphoreFile));
  return 0;
}

int xproc_sem_unlink(const char* name) {
  try {
    std::string shm_name;
    if (int code = xproc::c_api::shm_name_of(name, shm_name)) {
      errno = code;
      return -1;
    }
    if (auto error = xproc::sys::unlink_shared_memory(shm_name)) {
      errno = xproc::c_api::fail_errno(error);
      return -1;
    }
    return 0;
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
}

}  // extern "C"
