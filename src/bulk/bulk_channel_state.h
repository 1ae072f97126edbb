#pragma once
// BulkChannel's internals shared by its two record files: bulk_channel.cc (the segment, the
// paths, receive) and bulk_stream.cc (streamed pool copies). The per-process State, the record
// header every payload sends, and the helpers both use.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "bulk_channel_internal.h"
#include "xproc/bulk/bulk_channel.h"
#include "xproc/bulk/pool.h"
#include "xproc/channel/endpoint.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/error.h"
#include "xproc/sys/result.h"

namespace xproc::bulk {

struct BulkChannel::State {
  shm::Segment segment;
  channel::Endpoint endpoint;
  PoolView pool;
  detail::PullSidePtr pull;
  std::uint32_t inline_max = 0;
  std::uint64_t max_payload = 0;
  std::uint64_t pull_min = kPullNever;
  std::chrono::milliseconds liveness_period{10};
  std::uint32_t stream_chunk = 0;              // BulkProcessOptions::stream_chunk
  std::uint32_t stream_window = 0;             // BulkProcessOptions::stream_window
  std::uint64_t stream_ring_min = kRingNever;  // BulkProcessOptions::stream_ring_min

  // relaxed (all below): process-local flags and counters; pull_reason is guarded by mutex and
  // written before pull_on is cleared, read under the mutex.
  std::atomic<bool> pull_on{false};
  std::atomic<std::uint64_t> sent_inline{0};
  std::atomic<std::uint64_t> sent_pool{0};
  std::atomic<std::uint64_t> sent_pull{0};
  std::atomic<std::uint64_t> pull_fallbacks{0};
  std::atomic<std::uint64_t> sent_ring{0};
  std::atomic<std::uint64_t> ring_restarts{0};
  std::mutex mutex;
  std::string pull_reason;                // guarded by mutex
  std::optional<channel::Message> stash;  // guarded by mutex: a record kept by message_too_large

  void disable_pull(std::string reason) {
    std::lock_guard<std::mutex> lock(mutex);
    // relaxed: the mutex orders the reason with the flag for path_report(); path_for() reads the
    // flag alone and needs no ordering (a late pull is caught by the safety net).
    if (pull_on.exchange(false, std::memory_order_relaxed) || pull_reason.empty()) {
      pull_reason = std::move(reason);
    }
  }
};

namespace detail {

// The record every payload sends through the channel: this header, then the inline payload
// (kind inline), a pool Descriptor (pool_copy) or a transfer Descriptor (pull), 32 bytes each.
struct RecordHeader {
  std::uint32_t kind = 0;      // +0 BulkPath
  std::uint32_t reserved = 0;  // +4 0
  std::uint64_t length = 0;    // +8 payload bytes
};
static_assert(sizeof(RecordHeader) == 16);
inline constexpr std::size_t kDescriptorRecord = sizeof(RecordHeader) + sizeof(Descriptor);

inline std::error_code code(errc e) noexcept {
  return make_error_code(e);
}

inline bool is(std::error_code error, errc e) noexcept {
  return error == make_error_code(e);
}

// reserve, try_reserve or reserve_until by the deadline (nullptr: try).
Result<channel::Reservation> reserve_record(const channel::Endpoint& endpoint, std::size_t size,
                                            const sync::Deadline* deadline) noexcept;

// The pool's wait hook (PoolView::loan_with): LoanChannel's reclaim pass over the channel and
// pool of the BulkChannel::State that `context` points to.
std::error_code reclaim_hook(const void* context) noexcept;

}  // namespace detail
}  // namespace xproc::bulk
