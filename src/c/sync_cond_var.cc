// xproc_cond_* and xproc_condattr_*: the C face of xproc::sync::CondVar (its Mutex path).
//
// Attribute words: 1 = pshared, 2 = clock (always CLOCK_MONOTONIC: the only one accepted).
// xproc_cond_destroy waits (bounded: detail::kQuiesceBound) until no thread is inside a wait,
// else EBUSY. xproc_cond_broadcast has no mutex argument, so it wakes every waiter
// (CondVar::notify_all()); the C++ notify_all(Mutex&) requeue is not reachable from pthread's
// signature.

#include <time.h>

#include "sync_internal.h"
#include "xproc/sync/cond_var.h"
#include "xproc/sync/detail/quiesce.h"
#include "xproc/sync/mutex.h"

namespace xproc::c_api {
namespace {

using sync::CondVar;
using sync::Mutex;

static_assert(sizeof(CondVar) <= sizeof(xproc_cond_t), "the C type must hold the C++ object");
static_assert(alignof(CondVar) <= alignof(xproc_cond_t), "and be at least as aligned");

constexpr int kPsharedWord = 1;
constexpr int kClockWord = 2;

bool is_monotonic(int clock) noexcept {
  return clock == CLOCK_MONOTONIC;
}

CondVar* cond_of(xproc_cond_t* cond) noexcept {
  return object<CondVar>(cond);
}

}  // namespace
}  // namespace xproc::c_api

using namespace xproc::c_api;  // NOLINT(google-build-using-namespace): this file's own helpers

extern "C" {

int xproc_condattr_init(xproc_condattr_t* attr) {
  return attr_init(attr, XPROC_PROCESS_PRIVATE, static_cast<std::uint32_t>(CLOCK_MONOTONIC), 0);
}
int xproc_condattr_destroy(xproc_condattr_t* attr) {
  return attr_destroy(attr);
}
int xproc_condattr_setpshared(xproc_condattr_t* attr, int pshared) {
  return attr_set(attr, kPsharedWord, pshared, is_pshared);
}
int xproc_condattr_getpshared(const xproc_condattr_t* attr, int* pshared) {
  return attr_get(attr, kPsharedWord, pshared);
}
int xproc_condattr_setclock(xproc_condattr_t* attr, clockid_t clock_id) {
  return attr_set(attr, kClockWord, static_cast<int>(clock_id), is_monotonic);
}
int xproc_condattr_getclock(const xproc_condattr_t* attr, clockid_t* clock_id) {
  if (clock_id == nullptr) return EINVAL;
  int clock = 0;
  if (int code = attr_get(attr, kClockWord, &clock)) return code;
  *clock_id = static_cast<clockid_t>(clock);
  return 0;
}

int xproc_cond_init(xproc_cond_t* cond, const xproc_condattr_t* attr) {
  if (cond == nullptr || (attr != nullptr && !attr_valid(attr))) return EINVAL;
  xproc::sync::Scope scope = xproc::sync::Scope::thread;
  if (attr != nullptr &&
      to_scope(static_cast<int>(attr->xproc_opaque_[kPsharedWord]), scope) != 0) {
    return EINVAL;
  }
  return guarded([&] {
    construct<CondVar>(cond, scope);
    return 0;
  });
}

int xproc_cond_destroy(xproc_cond_t* cond) {
  if (cond == nullptr) return EINVAL;
  // POSIX allows destroying a condvar as soon as its waiters were woken, though they may not
  // have left CondVar::wait yet: wait until none is inside, as ~CondVar() does, but answer
  // EBUSY when one stays (never woken, or dead) instead of destroying it under them.
  return guarded([&] {
    CondVar* object = cond_of(cond);
    if (!xproc::sync::detail::quiesce([&] { return object->waiter_count() == 0; })) return EBUSY;
    object->~CondVar();
    return 0;
  });
}

int xproc_cond_wait(xproc_cond_t* cond, xproc_mutex_t* mutex) {
  if (cond == nullptr || mutex == nullptr) return EINVAL;
  return guarded([&] { return to_errno(cond_of(cond)->wait(*object<Mutex>(mutex))); });
}

int xproc_cond_timedwait(xproc_cond_t* cond, xproc_mutex_t* mutex, const struct timespec* abstime) {
  if (cond == nullptr || mutex == nullptr) return EINVAL;
  xproc::sync::Deadline deadline;
  if (int code = to_deadline(abstime, deadline)) return code;
  return guarded(
      [&] { return to_errno(cond_of(cond)->wait_until(*object<Mutex>(mutex), deadline)); });
}

int xproc_cond_signal(xproc_cond_t* cond) {
  if (cond == nullptr) return EINVAL;
  return guarded([&] {
    cond_of(cond)->notify_one();
    return 0;
  });
}

int xproc_cond_broadcast(xproc_cond_t* cond) {
  if (cond == nullptr) return EINVAL;
  return guarded([&] {
    cond_of(cond)->notify_all();
    return 0;
  });
}

}  // extern "C"
