// xproc_sem_init ... xproc_sem_getvalue: the C face of xproc::sync::Semaphore, with sem_*'s
// conventions (0, or -1 and errno). Named semaphores: src/c/sync_named_semaphore.cc.
//
// errno values: would_block -> EAGAIN, timed_out -> ETIMEDOUT, limit_reached -> EOVERFLOW (as
// sem_post), invalid_argument -> EINVAL, corrupt_state (a peer wrote an impossible value) ->
// EINVAL.

#include "sync_internal.h"
#include "xproc/sync/semaphore.h"

namespace xproc::c_api {
namespace {

using sync::Semaphore;

static_assert(sizeof(Semaphore) <= sizeof(xproc_sem_t), "the C type must hold the C++ object");
static_assert(alignof(Semaphore) <= alignof(xproc_sem_t), "and be at least as aligned");
static_assert(Semaphore::kMaxValue == static_cast<std::uint32_t>(XPROC_SEM_VALUE_MAX));

Semaphore* semaphore_of(xproc_sem_t* sem) noexcept {
  return object<Semaphore>(sem);
}

// sem_* convention: 0, or -1 with errno set to the code.
int sem_result(int code) noexcept {
  if (code == 0) return 0;
  errno = code;
  return -1;
}

int sem_errno(std::error_code error) noexcept {
  if (error == errc::would_block) return EAGAIN;
  if (error == errc::limit_reached) return EOVERFLOW;
  return to_errno(error);
}

template <class Operation>
int call(xproc_sem_t* sem, Operation operation) noexcept {
  if (sem == nullptr) return sem_result(EINVAL);
  return sem_result(guarded([&] { return sem_errno(operation(*semaphore_of(sem))); }));
}

}  // namespace
}  // namespace xproc::c_api

using namespace xproc::c_api;  // NOLINT(google-build-using-namespace): this file's own helpers

extern "C" {

int xproc_sem_init(xproc_sem_t* sem, int pshared, unsigned int value) {
  if (sem == nullptr || value > Semaphore::kMaxValue) return sem_result(EINVAL);
  const auto scope = pshared != 0 ? xproc::sync::Scope::process : xproc::sync::Scope::thread;
  return sem_result(guarded([&] {
    construct<Semaphore>(sem, scope, value);
    return 0;
  }));
}

int xproc_sem_destroy(xproc_sem_t* sem) {
  if (sem == nullptr) return sem_result(EINVAL);
  semaphore_of(sem)->~Semaphore();
  return 0;
}

int xproc_sem_wait(xproc_sem_t* sem) {
  return call(sem, [](Semaphore& semaphore) { return semaphore.wait(); });
}

int xproc_sem_trywait(xproc_sem_t* sem) {
  return call(sem, [](Semaphore& semaphore) { return semaphore.try_wait(); });
}

int xproc_sem_timedwait(xproc_sem_t* sem, const struct timespec* abstime) {
  xproc::sync::Deadline deadline;
  if (int code = to_deadline(abstime, deadline)) return sem_result(code);
  return call(sem, [&](Semaphore& semaphore) { return semaphore.wait_until(deadline); });
}

int xproc_sem_post(xproc_sem_t* sem) {
  return call(sem, [](Semaphore& semaphore) { return semaphore.post(1); });
}

int xproc_sem_post_multiple(xproc_sem_t* sem, unsigned int count) {
  if (count == 0) return sem == nullptr ? sem_result(EINVAL) : 0;
  if (count > Semaphore::kMaxValue) return sem_result(EOVERFLOW);
  return call(sem, [&](Semaphore& semaphore) { return semaphore.post(count); });
}

int xproc_sem_getvalue(xproc_sem_t* sem, int* value) {
  if (sem == nullptr || value == nullptr) return sem_result(EINVAL);
  const std::uint32_t current = semaphore_of(sem)->value();
  if (current > Semaphore::kMaxValue) return sem_result(EINVAL);  // corrupt: never negative
  *value = static_cast<int>(current);
  return 0;
}

}  // extern "C"
