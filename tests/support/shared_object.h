#pragma once
// A T constructed in anonymous MAP_SHARED memory, visible to fork() children: how
// multi-process tests place a primitive where several processes use it.

#include <new>
#include <stdexcept>
#include <utility>

#include "xproc/sys/memory.h"

namespace xproc::test {

template <class T>
class SharedObject {
 public:
  template <class... Args>
  explicit SharedObject(Args&&... args)
      : mapping_(sys::SharedMapping::anonymous(sizeof(T)).value()) {
    object_ = new (mapping_.data()) T(std::forward<Args>(args)...);
  }
  SharedObject(const SharedObject&) = delete;
  SharedObject& operator=(const SharedObject&) = delete;
  ~SharedObject() { object_->~T(); }

  T& operator*() const { return *object_; }
  T* operator->() const { return object_; }
  T* get() const { return object_; }

 private:
  sys::SharedMapping mapping_;
  T* object_;
};

}  // namespace xproc::test
