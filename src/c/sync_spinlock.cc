// xproc_spin_*: the C face of xproc::sync::Spinlock. pshared is validated and otherwise
// irrelevant (the lock never touches a futex). xproc_spin_destroy returns EBUSY while held.

#include "sync_internal.h"
#include "xproc/sync/spinlock.h"

namespace xproc::c_api {
namespace {

using sync::Spinlock;

static_assert(sizeof(Spinlock) <= sizeof(xproc_spinlock_t), "the C type must hold the C++ object");
static_assert(alignof(Spinlock) <= alignof(xproc_spinlock_t), "and be at least as aligned");

Spinlock* spinlock_of(xproc_spinlock_t* lock) noexcept {
  return object<Spinlock>(lock);
}

}  // namespace
}  // namespace xproc::c_api

using namespace xproc::c_api;  // NOLINT(google-build-using-namespace): this file's own helpers

extern "C" {

int xproc_spin_init(xproc_spinlock_t* lock, int pshared) {
  xproc::sync::Scope scope = xproc::sync::Scope::thread;
  if (lock == nullptr || to_scope(pshared, scope) != 0) return EINVAL;
  construct<Spinlock>(lock, scope);  // noexcept constructor
  return 0;
}

int xproc_spin_destroy(xproc_spinlock_t* lock) {
  if (lock == nullptr) return EINVAL;
  if (spinlock_of(lock)->is_locked()) return EBUSY;
  spinlock_of(lock)->~Spinlock();
  return 0;
}

int xproc_spin_lock(xproc_spinlock_t* lock) {
  if (lock == nullptr) return EINVAL;
  spinlock_of(lock)->lock();
  return 0;
}

int xproc_spin_trylock(xproc_spinlock_t* lock) {
  if (lock == nullptr) return EINVAL;
  return spinlock_of(lock)->try_lock() ? 0 : EBUSY;
}

int xproc_spin_unlock(xproc_spinlock_t* lock) {
  if (lock == nullptr) return EINVAL;
  spinlock_of(lock)->unlock();
  return 0;
}

}  // extern "C"
