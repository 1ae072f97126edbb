// xproc_barrier_* and xproc_barrierattr_*: the C face of xproc::sync::Barrier.
//
// Attribute words: 1 = pshared. xproc_barrier_destroy waits (bounded: detail::kQuiesceBound) until
// every participant has left xproc_barrier_wait, else EBUSY. xproc_barrier_wait returns
// XPROC_BARRIER_SERIAL_THREAD for Arrival::serial, 0 for Arrival::ordinary, else an errno value
// (EINVAL for a barrier never initialized or holding impossible state).

#include "sync_internal.h"
#include "xproc/sync/barrier.h"
#include "xproc/sync/detail/quiesce.h"

namespace xproc::c_api {
namespace {

using sync::Arrival;
using sync::Barrier;

static_assert(sizeof(Barrier) <= sizeof(xproc_barrier_t), "the C type must hold the C++ object");
static_assert(alignof(Barrier) <= alignof(xproc_barrier_t), "and be at least as aligned");

constexpr int kPsharedWord = 1;

Barrier* barrier_of(xproc_barrier_t* barrier) noexcept {
  return object<Barrier>(barrier);
}

}  // namespace
}  // namespace xproc::c_api

using namespace xproc::c_api;  // NOLINT(google-build-using-namespace): this file's own helpers

extern "C" {

int xproc_barrierattr_init(xproc_barrierattr_t* attr) {
  return attr_init(attr, XPROC_PROCESS_PRIVATE, 0, 0);
}
int xproc_barrierattr_destroy(xproc_barrierattr_t* attr) {
  return attr_destroy(attr);
}
int xproc_barrierattr_setpshared(xproc_barrierattr_t* attr, int pshared) {
  return attr_set(attr, kPsharedWord, pshared, is_pshared);
}
int xproc_barrierattr_getpshared(const xproc_barrierattr_t* attr, int* pshared) {
  return attr_get(attr, kPsharedWord, pshared);
}

int xproc_barrier_init(xproc_barrier_t* barrier, const xproc_barrierattr_t* attr,
                       unsigned int count) {
  if (barrier == nullptr || (attr != nullptr && !attr_valid(attr))) return EINVAL;
  if (count == 0 || count > Barrier::kMaxCount) return EINVAL;
  xproc::sync::Scope scope = xproc::sync::Scope::thread;
  if (attr != nullptr &&
      to_scope(static_cast<int>(attr->xproc_opaque_[kPsharedWord]), scope) != 0) {
    return EINVAL;
  }
  return guarded([&] {
    construct<Barrier>(barrier, scope, count);
    return 0;
  });
}

int xproc_barrier_destroy(xproc_barrier_t* barrier) {
  if (barrier == nullptr) return EINVAL;
  return guarded([&] {
    Barrier* object = barrier_of(barrier);
    // pthread: EBUSY while participants wait in the current generation.
    if (object->arrived() != 0) return EBUSY;
    // Participants released by the last generation may still be leaving (Barrier's
    // "Lifetime"): wait for them as ~Barrier() would, but answer EBUSY when one stays.
    if (!xproc::sync::detail::quiesce([&] { return object->inside() == 0; })) return EBUSY;
    object->~Barrier();
    return 0;
  });
}

int xproc_barrier_wait(xproc_barrier_t* barrier) {
  if (barrier == nullptr) return EINVAL;
  return guarded([&] {
    const xproc::Result<Arrival> arrival = barrier_of(barrier)->arrive_and_wait();
    if (!arrival) return to_errno(arrival.error());
    return *arrival == Arrival::serial ? XPROC_BARRIER_SERIAL_THREAD : 0;
  });
}

}  // extern "C"
