#pragma once
// ThreadSanitizer annotations for futex-based locks, no-ops outside TSan builds.
//
// TSan understands std::atomic but not a futex sleep, so a lock built on a futex must tell it
// where acquisition and release happen, or it reports races on the data the lock protects.
// The annotations follow TSan's __tsan_mutex_* interface (sanitizer/tsan_interface.h).

#if defined(XPROC_TSAN) || defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define XPROC_TSAN_ENABLED 1
#else
#define XPROC_TSAN_ENABLED 0
#endif

namespace xproc::sync::detail {

#if XPROC_TSAN_ENABLED
inline constexpr unsigned kTsanTryLock = __tsan_mutex_try_lock;
inline constexpr unsigned kTsanTryLockFailed = __tsan_mutex_try_lock_failed;
inline constexpr unsigned kTsanReadLock = __tsan_mutex_read_lock;
// Recursive locks released or restored all levels at once (a condition-variable wait):
// pre_unlock with kTsanRecursiveUnlock returns the number of levels TSan held; post_lock with
// kTsanRecursiveLock takes the number of levels to restore.
inline constexpr unsigned kTsanRecursiveUnlock = __tsan_mutex_recursive_unlock;
inline constexpr unsigned kTsanRecursiveLock = __tsan_mutex_recursive_lock;
inline void tsan_create(void* lock, unsigned flags) noexcept {
  __tsan_mutex_create(lock, flags);
}
inline void tsan_destroy(void* lock) noexcept {
  __tsan_mutex_destroy(lock, 0);
}
inline void tsan_pre_lock(void* lock, unsigned flags) noexcept {
  __tsan_mutex_pre_lock(lock, flags);
}
inline void tsan_post_lock(void* lock, unsigned flags) noexcept {
  __tsan_mutex_post_lock(lock, flags, 0);
}
inline void tsan_pre_unlock(void* lock, unsigned flags) noexcept {
  (void)__tsan_mutex_pre_unlock(lock, flags);
}
// Announces a release of every recursion level; returns the levels TSan counted.
inline int tsan_pre_unlock_all(void* lock) noexcept {
  return __tsan_mutex_pre_unlock(lock, __tsan_mutex_recursive_unlock);
}
// Acquisition of `levels` recursion levels at once (flags may add try-lock flags).
inline void tsan_post_lock_levels(void* lock, unsigned flags, int levels) noexcept {
  __tsan_mutex_post_lock(lock, flags | __tsan_mutex_recursive_lock, levels);
}
inline void tsan_post_unlock(void* lock, unsigned flags) noexcept {
  __tsan_mutex_post_unlock(lock, flags);
}
inline void tsan_pre_signal(void* lock) noexcept {
  __tsan_mutex_pre_signal(lock, 0);
}
inline void tsan_post_signal(void* lock) noexcept {
  __tsan_mutex_post_signal(lock, 0);
}
#else
inline constexpr unsigned kTsanTryLock = 0;
inline constexpr unsigned kTsanTryLockFailed = 0;
inline constexpr unsigned kTsanReadLock = 0;
inline constexpr unsigned kTsanRecursiveUnlock = 0;
inline constexpr unsigned kTsanRecursiveLock = 0;
inline void tsan_create(void*, unsigned) noexcept {}
inline void tsan_destroy(void*) noexcept {}
inline void tsan_pre_lock(void*, unsigned) noexcept {}
inline void tsan_post_lock(void*, unsigned) noexcept {}
inline void tsan_pre_unlock(void*, unsigned) noexcept {}
inline int tsan_pre_unlock_all(void*) noexcept {
  return 0;
}
inline void tsan_post_lock_levels(void*, unsigned, int) noexcept {}
inline void tsan_post_unlock(void*, unsigned) noexcept {}
inline void tsan_pre_signal(void*) noexcept {}
inline void tsan_post_signal(void*) noexcept {}
#endif

}  // namespace xproc::sync::detail
