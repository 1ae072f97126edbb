#pragma once
// Helpers for the segment tests: unique names that clean up after themselves, and raw access to
// a segment's file to damage it on purpose.

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "xproc/shm/segment.h"

namespace xproc::shm::test {

// A segment name unique to this process and call; unlinks the name (if any) on destruction.
class UniqueName {
 public:
  explicit UniqueName(const char* what) {
    static std::atomic<int> counter{0};
    name_ = std::string("test.") + what + "." + std::to_string(getpid()) + "." +
            std::to_string(counter.fetch_add(1));
  }
  UniqueName(const UniqueName&) = delete;
  UniqueName& operator=(const UniqueName&) = delete;
  ~UniqueName() { shm_unlink(("/xproc." + name_).c_str()); }
  const std::string& str() const { return name_; }
  operator std::string_view() const { return name_; }  // NOLINT(google-explicit-constructor)
  std::string path() const { return "/dev/shm/xproc." + name_; }

 private:
  std::string name_;
};

// Writes `value` at `offset` of the named segment's file (bypassing every check).
template <class T>
bool poke(const UniqueName& name, off_t offset, T value) {
  int fd = open(name.path().c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = pwrite(fd, &value, sizeof(value), offset) == static_cast<ssize_t>(sizeof(value));
  close(fd);
  return ok;
}

inline bool truncate_to(const UniqueName& name, off_t size) {
  return ::truncate(name.path().c_str(), size) == 0;
}

}  // namespace xproc::shm::test
