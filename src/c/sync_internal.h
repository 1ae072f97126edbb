#pragma once
// Private helpers of the C API (src/c/sync_*.cc): storage of C++ objects in the C unions,
// error-code translation, deadlines from timespecs, attribute records, and the guard that keeps
// C++ exceptions from crossing into C.

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <new>
#include <system_error>
#include <thread>
#include <type_traits>

#include "xproc/c/sync.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/error.h"

namespace xproc::c_api {

// The C++ object of type T that lives in the C union `storage` (constructed by *_init, or the
// all-zero default state for statically initialized objects: every primitive documents that a
// zero-filled object is a valid default Scope::thread object).
template <class T, class Storage>
T* object(Storage* storage) noexcept {
  static_assert(sizeof(T) <= sizeof(Storage), "the C type is too small for the C++ object");
  static_assert(alignof(T) <= alignof(Storage), "the C type is less aligned than the C++ object");
  static_assert(std::is_standard_layout_v<T>, "shared objects are standard layout");
  return std::launder(reinterpret_cast<T*>(storage->xproc_opaque_));
}

// Constructs T in `storage`, zero-filling the headroom first so that the bytes past the C++
// object are deterministic (two processes comparing layouts see the same bytes).
template <class T, class Storage, class... Args>
T* construct(Storage* storage, Args&&... args) {
  static_cast<void>(object<T>(storage));  // the static_asserts
  for (auto& byte : storage->xproc_opaque_) byte = 0;
  return new (storage->xproc_opaque_) T(static_cast<Args&&>(args)...);
}

// errno value for an xproc (or system) error code, for the pthread-style functions.
// would_block is EBUSY for locks; semaphores translate it to EAGAIN themselves.
int to_errno(std::error_code error) noexcept;

// Runs `body` (returning an errno-style int) and turns any escaping exception into a code:
// std::system_error -> its code, std::bad_alloc -> ENOMEM, anything else -> EINVAL.
template <class Body>
int guarded(Body&& body) noexcept {
  try {
    return body();
  } catch (const std::system_error& error) {
    const int code = to_errno(error.code());
    return code != 0 ? code : EINVAL;
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  } catch (...) {
    return EINVAL;
  }
}

// The deadline an absolute CLOCK_MONOTONIC timespec names. EINVAL for a null pointer or tv_nsec
// outside [0, 1e9); a negative tv_sec is a deadline long past (clamped to the clock's epoch),
// one too far to represent is clamped to the largest representable deadline.
int to_deadline(const struct timespec* abstime, sync::Deadline& deadline) noexcept;

// Scope of a pshared argument: XPROC_PROCESS_PRIVATE / _SHARED, anything else EINVAL.
int to_scope(int pshared, sync::Scope& scope) noexcept;

// Attribute objects: word 0 holds kAttrMagic once *_init has run (so an uninitialized or
// destroyed attribute is refused with EINVAL), words 1..3 hold settings.
inline constexpr std::uint32_t kAttrMagic = 0x78617474u;  // "xatt"

template <class Attr>
int attr_init(Attr* attr, std::uint32_t word1, std::uint32_t word2, std::uint32_t word3) noexcept {
  if (attr == nullptr) return EINVAL;
  attr->xproc_opaque_[0] = kAttrMagic;
  attr->xproc_opaque_[1] = word1;
  attr->xproc_opaque_[2] = word2;
  attr->xproc_opaque_[3] = word3;
  return 0;
}

template <class Attr>
bool attr_valid(const Attr* attr) noexcept {
  return attr != nullptr && attr->xproc_opaque_[0] == kAttrMagic;
}

template <class Attr>
int attr_destroy(Attr* attr) noexcept {
  if (!attr_valid(attr)) return EINVAL;
  attr->xproc_opaque_[0] = 0;
  return 0;
}

// Setter/getter of one settings word, with the value check `accepts`.
template <class Attr, class Accepts>
int attr_set(Attr* attr, int index, int value, Accepts&& accepts) noexcept {
  if (!attr_valid(attr) || !accepts(value)) return EINVAL;
  attr->xproc_opaque_[index] = static_cast<std::uint32_t>(value);
  return 0;
}

template <class Attr>
int attr_get(const Attr* attr, int index, int* value) noexcept {
  if (!attr_valid(attr) || value == nullptr) return EINVAL;
  *value = static_cast<int>(attr->xproc_opaque_[index]);
  return 0;
}

inline bool is_pshared(int value) noexcept {
  return value == XPROC_PROCESS_PRIVATE || value == XPROC_PROCESS_SHARED;
}

}  // namespace xproc::c_api
