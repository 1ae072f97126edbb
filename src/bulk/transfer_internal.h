#pragma once
// The process-local state behind a TransferEndpoint (heap-allocated, so Transfers keep a stable
// address when the endpoint object moves), and helpers shared by
// transfer.cc (register/pull/push/completion) and transfer_table.cc (format/open/probe).

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <system_error>
#include <vector>

#include "xproc/bulk/transfer.h"
#include "xproc/bulk/transfer_layout.h"
#include "xproc/shm/segment.h"
#include "xproc/sys/file.h"

namespace xproc::bulk::detail {

struct EndpointState {
  const shm::Segment* segment = nullptr;
  std::byte* table = nullptr;  // segment body: TableHeader, then PeerRecords, then TransferSlots
  std::uint32_t tag = 0;
  std::uint32_t slot_count = 0;  // validated at open; never re-read from the shared header
  std::uint32_t peer_count = 0;  // likewise (== the segment's participant capacity)
  std::uint64_t slots_offset = 0;
  // This process's pid, read once at open: a registration stores it in its slot, and getpid()
  // is a system call (~1.2 us here). Valid wherever the endpoint is usable (not in a fork child).
  pid_t self_pid = 0;
  std::atomic<std::uint32_t> next_slot{0};  // where this process's next registration looks first
  TransferEndpointOptions options;

  // pidfds of owners this process copied from, keyed by (owner id, pid): opening and closing a
  // pidfd costs more than a small copy. An entry is made only after the owner was seen alive in
  // the participant table with the pidfd already open (so the pidfd is the owner's process), and
  // dropped once it reads exited. Ids are unique per attachment, so a hit names the same process.
  struct CachedPidfd {
    std::uint32_t owner = 0;
    pid_t pid = 0;
    std::uint64_t last_use = 0;
    std::shared_ptr<const sys::FileDescriptor> fd;
  };
  static constexpr std::size_t kPidfdCacheSize = 32;
  std::mutex pidfd_mutex;
  std::vector<CachedPidfd> pidfds;  // guarded by pidfd_mutex
  std::uint64_t pidfd_clock = 0;    // guarded by pidfd_mutex

  // A pidfd for the live owner `owner` at `pid` (see above). errc::peer_dead when the owner is
  // dead or the pid gone; corrupt_segment for an impossible owner id.
  Result<std::shared_ptr<const sys::FileDescriptor>> owner_pidfd(std::uint32_t owner, pid_t pid);
  // Forgets the pidfd of `owner` (it read exited).
  void forget_pidfd(std::uint32_t owner) noexcept;

  // Whether this process may use the endpoint: false in a fork child (the segment's attachment
  // is detached there).
  bool usable() const noexcept { return segment != nullptr && segment->self().attached(); }
  std::uint32_t self_id() const noexcept { return segment->self().id().pack(); }

  TransferSlot& slot(std::uint32_t index) const noexcept {
    return reinterpret_cast<TransferSlot*>(table + slots_offset)[index];
  }
  PeerRecord& peer(std::uint32_t index) const noexcept {
    return reinterpret_cast<PeerRecord*>(table + kHeaderBytes)[index];
  }
  // Liveness of a packed id read from shared memory (untrusted): errc::corrupt_segment for an id
  // this segment cannot have issued.
  Result<bool> alive(std::uint32_t packed) const noexcept {
    sync::ParticipantId id = sync::ParticipantId::unpack(packed);
    if (!id.valid() || id.slot >= peer_count) return make_error_code(errc::corrupt_segment);
    Result<bool> result = segment->self().is_alive(id);
    if (!result && result.error() == errc::invalid_argument) {
      return make_error_code(errc::corrupt_segment);
    }
    return result;
  }
};

// A failed slot's value: an xproc::errc value, or bit 31 | errno for an operating-system error.
inline constexpr std::uint32_t kSystemErrorBit = 0x80000000u;
std::uint32_t encode_error(std::error_code error) noexcept;
std::error_code decode_error(std::uint32_t value) noexcept;

}  // namespace xproc::bulk::detail
