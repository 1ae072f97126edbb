// xproc_barrier_* and xproc_barrierattr_*: the C face of xproc::sync::Barrier.
//
// Attribute words: 1 = pshared. xproc_barrier_destroy waits (bounded: kDestroyWaitBound) until
// every participant has left xproc_barrier_wait, else EBUSY. xproc_barrier_wait returns
// XPROC_BARRIER_SERIAL_THREAD for Arrival::serial, 0 for Arrival::ordinary, else an errno value
// (EINVAL for a barrier never initialized or holding impossible state).

#include <atomic>
#include <cstddef>
#include <new>

#include "sync_internal.h"
#include "xproc/sync/barrier.h"

namespace xproc::c_api {
namespace {

using sync::Arrival;
using sync::Barrier;

static_assert(sizeof(Barrier) <= sizeof(xproc_barrier_t), "the C type must hold the C++ object");
static_assert(alignof(Barrier) <= alignof(xproc_barrier_t), "and be at least as aligned");

constexpr int kPsharedWord = 1;

// Threads inside xproc_barrier_wait, kept in the union's headroom after the Barrier (a 32-bit
// atomic at +24; zero in a zero-filled or freshly initialized barrier). xproc_barrier_destroy
// waits until it is 0 so that a barrier destroyed and re-initialized by the serial thread
// (allowed by POSIX) is never re-initialized under a participant still leaving it.
constexpr std::size_t kInsideOffset = 24;
static_assert(sizeof(Barrier) <= kInsideOffset, "the inside count must not overlap the Barrier");
static_assert(kInsideOffset + sizeof(std::atomic<std::uint32_t>) <= sizeof(xproc_barrier_t));
static_assert(kInsideOffset % alignof(std::atomic<std::uint32_t>) == 0);

Barrier* barrier_of(xproc_barrier_t* barrier) noexcept {
  return object<Barrier>(barrier);
}

std::atomic<std::uint32_t>& inside_of(xproc_barrier_t* barrier) noexcept {
  return *std::launder(
      reinterpret_cast<std::atomic<std::uint32_t>*>(barrier->xproc_opaque_ + kInsideOffset));
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
    // acquire: pairs with the release decrement in xproc_barrier_wait(): everything a leaving
    // participant read of the barrier happens-before its destruction and re-initialization.
    auto& inside = inside_of(barrier);
    if (!wait_until_done([&] { return inside.load(std::memory_order_acquire) == 0; })) {
      return EBUSY;
    }
    object->~Barrier();
    return 0;
  });
}

int xproc_barrier_wait(xproc_barrier_t* barrier) {
  if (barrier == nullptr) return EINVAL;
  auto& inside = inside_of(barrier);
  // seq_cst: the increment must be visible to whoever completes this generation and then
  // destroys the barrier; it is sequenced before our arrival, which that thread reads.
  inside.fetch_add(1, std::memory_order_seq_cst);
  const int result = guarded([&] {
    const xproc::Result<Arrival> arrival = barrier_of(barrier)->arrive_and_wait();
    if (!arrival) return to_errno(arrival.error());
    return *arrival == Arrival::serial ? XPROC_BARRIER_SERIAL_THREAD : 0;
  });
  // release: our last reads of the barrier happen-before a destroyer's acquire load of 0.
  inside.fetch_sub(1, std::memory_order_release);
  return result;
}

}  // extern "C"
