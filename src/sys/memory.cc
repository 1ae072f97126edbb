#include "xproc/sys/memory.h"

#include <sys/mman.h>

#include <cerrno>

#include "xproc/sys/error.h"

namespace xproc::sys {

SharedMapping::SharedMapping(SharedMapping&& other) noexcept
    : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

SharedMapping& SharedMapping::operator=(SharedMapping&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) munmap(data_, size_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

SharedMapping::~SharedMapping() {
  if (data_ != nullptr) munmap(data_, size_);
}

Result<SharedMapping> SharedMapping::anonymous(std::size_t size) noexcept {
  if (size == 0) return std::error_code(errc::invalid_argument);
  void* data = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) return std::error_code(errno, std::system_category());
  return SharedMapping(data, size);
}

Result<SharedMapping> SharedMapping::of_file(int fd, std::size_t size) noexcept {
  if (size == 0) return std::error_code(errc::invalid_argument);
  void* data = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) return std::error_code(errno, std::system_category());
  return SharedMapping(data, size);
}

}  // namespace xproc::sys
