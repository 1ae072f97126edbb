// xproc_rwlock_* and xproc_rwlockattr_*: the C face of xproc::sync::RwLock.
//
// Attribute words: 1 = pshared (XPROC_PROCESS_*), 2 = kind (XPROC_RWLOCK_*, as set).
// xproc_rwlock_unlock releases the caller's read hold if it has one (RwLock tracks read holds
// per thread), else the write lock.

#include "sync_internal.h"
#include "xproc/sync/rw_lock.h"

namespace xproc::c_api {
namespace {

using sync::RwLock;
using sync::RwPolicy;

static_assert(sizeof(RwLock) <= sizeof(xproc_rwlock_t), "the C type must hold the C++ object");
static_assert(alignof(RwLock) <= alignof(xproc_rwlock_t), "and be at least as aligned");
// XPROC_RWLOCK_INITIALIZER (all zero) must be RwLock's zero state: phase-fair, Scope::thread.
static_assert(RwLock::kDefaultPolicy == RwPolicy::phase_fair);

constexpr int kPsharedWord = 1;
constexpr int kKindWord = 2;

bool is_kind(int kind) noexcept {
  return kind == XPROC_RWLOCK_PREFER_READER || kind == XPROC_RWLOCK_PREFER_WRITER ||
         kind == XPROC_RWLOCK_PREFER_WRITER_NONRECURSIVE || kind == XPROC_RWLOCK_PHASE_FAIR;
}

RwPolicy to_policy(int kind) noexcept {
  switch (kind) {
    case XPROC_RWLOCK_PREFER_READER:
      return RwPolicy::prefer_reader;
    case XPROC_RWLOCK_PREFER_WRITER:
    case XPROC_RWLOCK_PREFER_WRITER_NONRECURSIVE:
      return RwPolicy::prefer_writer;
    default:
      return RwPolicy::phase_fair;
  }
}

RwLock* lock_of(xproc_rwlock_t* rwlock) noexcept {
  return object<RwLock>(rwlock);
}

template <class Operation>
int call(xproc_rwlock_t* rwlock, Operation operation) noexcept {
  if (rwlock == nullptr) return EINVAL;
  return guarded([&] { return to_errno(operation(*lock_of(rwlock))); });
}

template <class Operation>
int timed(xproc_rwlock_t* rwlock, const struct timespec* abstime, Operation operation) noexcept {
  sync::Deadline deadline;
  if (int code = to_deadline(abstime, deadline)) return code;
  return call(rwlock, [&](RwLock& lock) { return operation(lock, deadline); });
}

}  // namespace
}  // namespace xproc::c_api

using namespace xproc::c_api;  // NOLINT(google-build-using-namespace): this file's own helpers

extern "C" {

int xproc_rwlockattr_init(xproc_rwlockattr_t* attr) {
  return attr_init(attr, XPROC_PROCESS_PRIVATE, XPROC_RWLOCK_DEFAULT, 0);
}
int xproc_rwlockattr_destroy(xproc_rwlockattr_t* attr) {
  return attr_destroy(attr);
}
int xproc_rwlockattr_setpshared(xproc_rwlockattr_t* attr, int pshared) {
  return attr_set(attr, kPsharedWord, pshared, is_pshared);
}
int xproc_rwlockattr_getpshared(const xproc_rwlockattr_t* attr, int* pshared) {
  return attr_get(attr, kPsharedWord, pshared);
}
int xproc_rwlockattr_setkind(xproc_rwlockattr_t* attr, int kind) {
  return attr_set(attr, kKindWord, kind, is_kind);
}
int xproc_rwlockattr_getkind(const xproc_rwlockattr_t* attr, int* kind) {
  return attr_get(attr, kKindWord, kind);
}

int xproc_rwlock_init(xproc_rwlock_t* rwlock, const xproc_rwlockattr_t* attr) {
  if (rwlock == nullptr || (attr != nullptr && !attr_valid(attr))) return EINVAL;
  xproc::sync::Scope scope = xproc::sync::Scope::thread;
  int kind = XPROC_RWLOCK_DEFAULT;
  if (attr != nullptr) {
    if (to_scope(static_cast<int>(attr->xproc_opaque_[kPsharedWord]), scope) != 0) return EINVAL;
    kind = static_cast<int>(attr->xproc_opaque_[kKindWord]);
    if (!is_kind(kind)) return EINVAL;
  }
  return guarded([&] {
    construct<RwLock>(rwlock, scope, to_policy(kind));
    return 0;
  });
}

int xproc_rwlock_destroy(xproc_rwlock_t* rwlock) {
  if (rwlock == nullptr) return EINVAL;
  return guarded([&] {
    RwLock* lock = lock_of(rwlock);
    const auto state = lock->snapshot();
    if (state.readers != 0 || state.writer_staged || state.queued_readers != 0 ||
        state.queued_writers != 0) {
      return EBUSY;
    }
    lock->~RwLock();
    return 0;
  });
}

int xproc_rwlock_rdlock(xproc_rwlock_t* rwlock) {
  return call(rwlock, [](RwLock& lock) { return lock.acquire_shared(); });
}
int xproc_rwlock_tryrdlock(xproc_rwlock_t* rwlock) {
  return call(rwlock, [](RwLock& lock) { return lock.try_acquire_shared(); });
}
int xproc_rwlock_timedrdlock(xproc_rwlock_t* rwlock, const struct timespec* abstime) {
  return timed(rwlock, abstime, [](RwLock& lock, xproc::sync::Deadline deadline) {
    return lock.acquire_shared_until(deadline);
  });
}
int xproc_rwlock_wrlock(xproc_rwlock_t* rwlock) {
  return call(rwlock, [](RwLock& lock) { return lock.acquire(); });
}
int xproc_rwlock_trywrlock(xproc_rwlock_t* rwlock) {
  return call(rwlock, [](RwLock& lock) { return lock.try_acquire(); });
}
int xproc_rwlock_timedwrlock(xproc_rwlock_t* rwlock, const struct timespec* abstime) {
  return timed(rwlock, abstime, [](RwLock& lock, xproc::sync::Deadline deadline) {
    return lock.acquire_until(deadline);
  });
}
int xproc_rwlock_unlock(xproc_rwlock_t* rwlock) {
  return call(rwlock, [](RwLock& lock) {
    // The caller's read hold, if it has one (a per-thread record: no shared state is read
    // when it has none); otherwise the write lock.
    std::error_code error = lock.release_shared();
    if (error == xproc::errc::not_owner) error = lock.release();
    return error;
  });
}

}  // extern "C"
