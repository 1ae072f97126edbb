#pragma once
// Mappings of memory shared between processes, for primitives placed in shared memory.
// A SharedMapping owns one mmap'ed range and unmaps it on destruction. Move-only.

#include <cstddef>

#include "xproc/sys/result.h"

namespace xproc::sys {

class SharedMapping {
 public:
  SharedMapping() = default;
  SharedMapping(SharedMapping&& other) noexcept;
  SharedMapping& operator=(SharedMapping&& other) noexcept;
  SharedMapping(const SharedMapping&) = delete;
  SharedMapping& operator=(const SharedMapping&) = delete;
  ~SharedMapping();

  // Anonymous MAP_SHARED memory, zero-filled, inherited by fork() children.
  static Result<SharedMapping> anonymous(std::size_t size) noexcept;
  // MAP_SHARED mapping of `size` bytes of the file `fd` from offset 0.
  static Result<SharedMapping> of_file(int fd, std::size_t size) noexcept;

  void* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  SharedMapping(void* data, std::size_t size) noexcept : data_(data), size_(size) {}
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace xproc::sys
