#pragma once
// Helpers for the transfer tests (tests/bulk/transfer*_test.cc, crash/transfer_crash_test.cc):
// a transfer table in an anonymous segment, a fork child's own attachment to it, endpoints that
// any process may read, direct access to a slot (to forge or corrupt it), a deterministic byte
// pattern, and a bounded wait on a handshake flag in MAP_SHARED memory.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "xproc/bulk/transfer.h"
#include "xproc/bulk/transfer_layout.h"
#include "xproc/shm/segment.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/file.h"

namespace xproc::bulk::test {

// `size` bytes of xorshift output seeded by `seed` (the same bytes for the same arguments).
inline std::vector<std::byte> pattern(std::size_t size, std::uint64_t seed) {
  std::vector<std::byte> bytes(size);
  std::uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    std::memcpy(bytes.data() + i, &state, 8);
  }
  for (; i < size; ++i) bytes[i] = static_cast<std::byte>(i * 31 + seed);
  return bytes;
}

// A segment of kind raw holding a transfer table of `slots` slots, for `participants` processes.
inline shm::Segment make_segment(std::uint32_t slots, std::uint32_t participants = 16) {
  shm::SegmentOptions options;
  options.participant_capacity = participants;
  TransferTableOptions table{slots};
  return shm::Segment::create_anonymous(shm::SegmentKind::raw,
                                        transfer_table_size(table, participants), options,
                                        transfer_table_init(table, participants))
      .value();
}

// A fork child's own attachment to the parent's segment.
inline shm::Segment join(const shm::Segment& parent) {
  return shm::Segment::adopt(sys::reopen(parent.fd()).value(), shm::SegmentKind::raw).value();
}

// Under Yama ptrace_scope 1 (usual on desktops) a process may read a sibling only after the
// sibling allowed it (PR_SET_PTRACER): every test endpoint allows it; without Yama nothing changes.
inline TransferEndpoint open_endpoint(
    const shm::Segment& segment,
    std::chrono::milliseconds liveness_period = std::chrono::milliseconds(10)) {
  TransferEndpointOptions options;
  options.allow_any_reader = true;
  options.liveness_period = liveness_period;
  return TransferEndpoint::open(segment, options).value();
}

// In a fork child: its own attachment to the parent's segment and an endpoint on it (open_endpoint
// with the default period); own->pull(...) etc. Not movable: the endpoint refers to `segment`.
struct Joined {
  explicit Joined(const shm::Segment& parent)
      : segment(join(parent)), endpoint(open_endpoint(segment)) {}
  Joined(const Joined&) = delete;
  Joined& operator=(const Joined&) = delete;
  TransferEndpoint* operator->() { return &endpoint; }

  shm::Segment segment;
  TransferEndpoint endpoint;
};

// Slot `index` of the table in `segment` (the test trusts its own segment's header).
inline detail::TransferSlot& slot_of(const shm::Segment& segment, std::uint32_t index) {
  auto* header = reinterpret_cast<const detail::TableHeader*>(segment.body().data());
  return reinterpret_cast<detail::TransferSlot*>(segment.body().data() +
                                                 header->slots_offset)[index];
}

// Waits (yielding) until `flag` is non-zero (acquire: pairs with the poster's release store) or
// `deadline` passes; false on the deadline.
inline bool await_flag(const std::atomic<std::uint32_t>& flag, sync::Deadline deadline) {
  while (flag.load(std::memory_order_acquire) == 0) {
    if (sync::Clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace xproc::bulk::test
