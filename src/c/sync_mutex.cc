// xproc_mutex_* and xproc_mutexattr_*: the C face of xproc::sync::Mutex.
//
// Attribute words: 1 = type (XPROC_MUTEX_*) | kTypeSet once settype ran, 2 = robustness
// (XPROC_MUTEX_STALLED / _ROBUST), 3 = pshared.
// Type mapping: NORMAL set explicitly -> MutexKind::normal parking at once (no spin, as glibc's
// normal mutex); ADAPTIVE, and a type never set (NULL attribute, fresh attribute, static
// initializer) -> MutexKind::normal with the C++ default adaptive spin (kMutexDefaultSpinRounds);
// ERRORCHECK -> error_checking; RECURSIVE -> recursive (both with the default spin).
// Robustness: STALLED -> Robustness::not_robust, ROBUST -> Robustness::robust (pthread's
// semantics: no robustness unless asked for, in either scope).

#include "sync_internal.h"
#include "xproc/sync/mutex.h"

namespace xproc::c_api {
namespace {

using sync::Mutex;
using sync::MutexKind;
using sync::MutexOptions;
using sync::Robustness;

static_assert(sizeof(Mutex) <= sizeof(xproc_mutex_t), "the C type must hold the C++ object");
static_assert(alignof(Mutex) <= alignof(xproc_mutex_t), "and be at least as aligned");

constexpr int kTypeWord = 1;
constexpr int kRobustWord = 2;
constexpr int kPsharedWord = 3;
constexpr std::uint32_t kTypeSet = 0x100;  // in the type word: settype was called

bool is_type(int type) noexcept {
  return type == XPROC_MUTEX_NORMAL || type == XPROC_MUTEX_RECURSIVE ||
         type == XPROC_MUTEX_ERRORCHECK || type == XPROC_MUTEX_ADAPTIVE;
}

bool is_robustness(int robust) noexcept {
  return robust == XPROC_MUTEX_STALLED || robust == XPROC_MUTEX_ROBUST;
}

Mutex* mutex_of(xproc_mutex_t* mutex) noexcept {
  return object<Mutex>(mutex);
}

template <class Operation>
int call(xproc_mutex_t* mutex, Operation operation) noexcept {
  if (mutex == nullptr) return EINVAL;
  return guarded([&] { return to_errno(operation(*mutex_of(mutex))); });
}

}  // namespace
}  // namespace xproc::c_api

using namespace xproc::c_api;  // NOLINT(google-build-using-namespace): this file's own helpers

extern "C" {

int xproc_mutexattr_init(xproc_mutexattr_t* attr) {
  return attr_init(attr, XPROC_MUTEX_DEFAULT, XPROC_MUTEX_STALLED, XPROC_PROCESS_PRIVATE);
}
int xproc_mutexattr_destroy(xproc_mutexattr_t* attr) {
  return attr_destroy(attr);
}
int xproc_mutexattr_settype(xproc_mutexattr_t* attr, int type) {
  if (!attr_valid(attr) || !is_type(type)) return EINVAL;
  attr->xproc_opaque_[kTypeWord] = static_cast<std::uint32_t>(type) | kTypeSet;
  return 0;
}
int xproc_mutexattr_gettype(const xproc_mutexattr_t* attr, int* type) {
  if (!attr_valid(attr) || type == nullptr) return EINVAL;
  *type = static_cast<int>(attr->xproc_opaque_[kTypeWord] & ~kTypeSet);
  return 0;
}
int xproc_mutexattr_setpshared(xproc_mutexattr_t* attr, int pshared) {
  return attr_set(attr, kPsharedWord, pshared, is_pshared);
}
int xproc_mutexattr_getpshared(const xproc_mutexattr_t* attr, int* pshared) {
  return attr_get(attr, kPsharedWord, pshared);
}
int xproc_mutexattr_setrobust(xproc_mutexattr_t* attr, int robustness) {
  return attr_set(attr, kRobustWord, robustness, is_robustness);
}
int xproc_mutexattr_getrobust(const xproc_mutexattr_t* attr, int* robustness) {
  return attr_get(attr, kRobustWord, robustness);
}

int xproc_mutex_init(xproc_mutex_t* mutex, const xproc_mutexattr_t* attr) {
  if (mutex == nullptr || (attr != nullptr && !attr_valid(attr))) return EINVAL;
  xproc::sync::Scope scope = xproc::sync::Scope::thread;
  MutexOptions options;
  options.robustness = Robustness::not_robust;
  if (attr != nullptr) {
    if (to_scope(static_cast<int>(attr->xproc_opaque_[kPsharedWord]), scope) != 0) return EINVAL;
    const std::uint32_t type_word = attr->xproc_opaque_[kTypeWord];
    const int type = static_cast<int>(type_word & ~kTypeSet);
    const int robust = static_cast<int>(attr->xproc_opaque_[kRobustWord]);
    if (!is_type(type) || !is_robustness(robust)) return EINVAL;
    switch (type) {
      case XPROC_MUTEX_RECURSIVE:
        options.kind = MutexKind::recursive;
        break;
      case XPROC_MUTEX_ERRORCHECK:
        options.kind = MutexKind::error_checking;
        break;
      case XPROC_MUTEX_NORMAL:
        if ((type_word & kTypeSet) != 0) options.spin_rounds = 0;
        break;
      default:
        break;  // ADAPTIVE: normal kind, default spin
    }
    if (robust == XPROC_MUTEX_ROBUST) options.robustness = Robustness::robust;
  }
  return guarded([&] {
    construct<Mutex>(mutex, scope, options);
    return 0;
  });
}

int xproc_mutex_destroy(xproc_mutex_t* mutex) {
  if (mutex == nullptr) return EINVAL;
  return guarded([&] {
    Mutex* held = mutex_of(mutex);
    if (held->is_locked_by_caller()) return EBUSY;
    // Held by someone else: busy. Free (or owner-died, or not recoverable): destroyable.
    const std::error_code error = held->try_acquire();
    if (error == xproc::errc::would_block) return EBUSY;
    if (!error || error == xproc::errc::owner_died) static_cast<void>(held->release());
    held->~Mutex();
    return 0;
  });
}

int xproc_mutex_lock(xproc_mutex_t* mutex) {
  return call(mutex, [](Mutex& held) { return held.acquire(); });
}
int xproc_mutex_trylock(xproc_mutex_t* mutex) {
  return call(mutex, [](Mutex& held) { return held.try_acquire(); });
}
int xproc_mutex_timedlock(xproc_mutex_t* mutex, const struct timespec* abstime) {
  xproc::sync::Deadline deadline;
  if (int code = to_deadline(abstime, deadline)) return code;
  return call(mutex, [&](Mutex& held) { return held.acquire_until(deadline); });
}
int xproc_mutex_unlock(xproc_mutex_t* mutex) {
  return call(mutex, [](Mutex& held) { return held.release(); });
}
int xproc_mutex_consistent(xproc_mutex_t* mutex) {
  return call(mutex, [](Mutex& held) { return held.make_consistent(); });
}

}  // extern "C"
