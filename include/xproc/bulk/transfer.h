#pragma once
// Cross-memory transfers with completion (one copy): a process registers ranges of its private
// memory in a transfer table and sends the small TransferDescriptor through a channel; the
// counterpart pulls the bytes straight into its own buffer with process_vm_readv (or, in push mode,
// writes into ranges the other side registered with process_vm_writev); the registering side waits
// on its Transfer handle until the copy is done, so it knows when the memory may be reused. Layout:
// bulk/transfer_layout.h, docs/layout/transfer.md. Why this shape:
// docs/decisions/0041-cross-memory.md.
//
// Setup: one table per group of processes, in the body of a segment they share:
//   body size:   transfer_table_size(options, capacity)   (capacity: participant slots)
//   create:      shm::Segment::create(name, SegmentKind::raw, size, segment_options,
//                                     transfer_table_init(options, capacity))
//   every member: TransferEndpoint::open(segment)
// Protocol of one transfer (pull mode; push mode swaps who registers):
//   sender:   Transfer t = endpoint.register_source(ranges); send t.descriptor(); t.wait_until(d)
//   receiver: endpoint.pull(descriptor, buffer)   // validates, claims (one CAS), copies, completes
// Each transfer is copied at most once: the claim is a CAS from `open`; a second pull of the same
// descriptor gets errc::already_returned, a pull of a withdrawn one errc::not_found.
//
// Thread- and process-safety: any thread of any member may register, pull, push and probe
// concurrently. A Transfer handle is a value owned by one thread at a time (like any object).
// Blocking: only Transfer::wait/wait_until and the destructor of a claimed-but-unfinished
// Transfer block. Once claimed, only while the claimer is alive: the waiting owner checks the
// claimer's liveness one `liveness_period` into the wait and every period after, so a dead
// claimer is noticed within one period. While still open (no counterpart has claimed it: the
// descriptor may sit in a channel, or be lost with a dead consumer) nobody is known to wait for,
// so wait_until lasts until its deadline (give one); the destructor withdraws an open transfer
// at once. pull/push never wait for anyone: they copy (page faults only) and return. A wait
// spins on loads for some tens of microseconds, then yields a few times, before it parks; a
// parked owner costs the claimer a futex wake, a spinning one or poll() does not (why:
// docs/decisions/0045-bulk-performance.md).
// Failures (Result / std::error_code of xproc::errc):
//   register_*:  invalid_argument (no ranges, a zero-length total, an address range that wraps, a
//                fork child's endpoint), limit_reached (more than kMaxTransferRanges ranges, or
//                every slot busy with a live transfer)
//   pull/push:   bad_descriptor (a descriptor this table never issued: wrong tag, slot out of
//                range, another generation, owner or length that does not match the slot, the
//                wrong direction; or the owner's memory is not mapped at a registered range:
//                EFAULT), invalid_argument (the local buffer is too small: nothing is claimed),
//                already_returned (claimed or completed already), not_found (withdrawn by its
//                owner), peer_dead (the owner died: before or during the copy; its data is
//                discarded), permission_denied (no ptrace-level access: see probe()),
//                corrupt_segment (a slot holding values no correct member writes)
//   wait:        {} complete; peer_dead (the claimer died mid-copy); timed_out; or the error the
//                claimer hit (permission_denied, bad_descriptor, peer_dead) so the owner can fall
//                back to another path; corrupt_segment (the slot holds what no member writes);
//                invalid_argument (an empty handle, or a fork child's copy)
// Deaths (numbered as the protocol in docs/layout/transfer.md):
//   owner dies while registering or while open: its slot reads registering/open with a dead
//     owner; the next registration that finds no free slot reclaims it (one CAS). A pull of its
//     descriptor finds the owner dead and fails with peer_dead (bad_descriptor once the slot has
//     been taken over: the descriptor then names a registration that is gone).
//   owner dies while claimed: the claimer's copy fails (ESRCH, or the pidfd reads exited after the
//     copy: data discarded) -> failed(peer_dead); the slot is reclaimable.
//   claimer dies while claimed: the owner's wait sees the claimer dead within one period, moves
//     the slot to failed(peer_dead) by CAS and returns peer_dead.
//   claimer dies after complete: nothing is lost (the owner sees complete).
// pid safety: the copy goes by pid; the claimer opens a pidfd, then checks the owner is alive in
//   the participant table (so the pidfd is the owner's: a reused pid needs the owner reaped, and a
//   reaped owner reads dead), copies, then checks the pidfd has not exited (so the pid still named
//   the owner throughout the copy). Each endpoint keeps the pidfds of up to 32 recent owners
//   (opening and closing one costs more than a small copy); ids are unique per attachment, so a
//   cached pidfd of (owner id, pid) is that owner's process for good. Members trust the pid a
//   member publishes (they share the segment); a member that lies about its pid can only make
//   others read memory they could read anyway, into their own buffers.
// fork(): a child's copy of an endpoint is unusable (every call returns invalid_argument): the
//   child is not a participant of the segment until it opens it again; open a new endpoint then.
//   A child's copy of a Transfer handle does nothing on destruction (the parent's handle owns it).
// Memory ordering for push mode: the claimer's process_vm_writev returns before its release CAS
//   to complete, and the owner acquires complete before reading its buffer.

#include <sys/types.h>
#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <type_traits>

#include "xproc/bulk/transfer_layout.h"
#include "xproc/shm/segment.h"
#include "xproc/sync/participant_table.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/result.h"

namespace xproc::bulk {

inline constexpr std::uint32_t kMaxTransferRanges = detail::kMaxRanges;

struct TransferTableOptions {
  std::uint32_t slots = 256;  // transfers open at once in the whole group, 1..65536
};

// Body bytes a table needs in a segment with `participant_capacity` slots.
std::size_t transfer_table_size(const TransferTableOptions& options,
                                std::uint32_t participant_capacity) noexcept;
// An Init for shm::Segment::create/create_anonymous that formats the table in the body.
shm::Segment::Init transfer_table_init(const TransferTableOptions& options,
                                       std::uint32_t participant_capacity);

// What travels through a channel: names one transfer of one table. Untrusted on receipt.
struct TransferDescriptor {
  std::uint32_t table_tag = 0;   // the table's random tag
  std::uint32_t slot = 0;        // transfer slot index
  std::uint32_t generation = 0;  // the slot's generation at registration
  std::uint32_t owner = 0;       // packed ParticipantId of the registering process
  std::uint64_t total_length = 0;
  std::uint32_t direction = 0;  // detail::Direction
  std::uint32_t reserved = 0;   // 0
};
static_assert(std::is_trivially_copyable_v<TransferDescriptor>);
static_assert(std::is_standard_layout_v<TransferDescriptor>);
static_assert(sizeof(TransferDescriptor) == 32);

// The result of a permission probe: error {} when this process may copy from/to the peer;
// otherwise permission_denied (with `reason` saying why, for logs and the fallback report),
// peer_dead, bad_descriptor (the peer's published pid does not hold its probe word),
// not_found (the peer never opened an endpoint), invalid_argument.
struct ProbeResult {
  std::error_code error;
  std::string reason;  // empty when permitted
  explicit operator bool() const noexcept { return !error; }
};

namespace detail {
struct EndpointState;  // src/bulk/transfer_internal.h
}  // namespace detail

// A pull split across threads (the overloads of pull() taking PullSplit): the transfer's bytes
// are cut into `threads` contiguous shares of at least `min_share` bytes (fewer shares when the
// transfer is smaller: a 1 MiB pull with the defaults is one share), the calling thread copies
// the first share and one std::thread per other share copies the rest; the transfer is claimed
// once before and completed once after all of them (the same protocol, results and errors as
// pull()). The helper threads inherit the caller's CPU affinity: they can only help where that
// allows another CPU. Measured on a 2-vCPU VM (docs/decisions/0045-bulk-performance.md): two
// shares copy 16-256 MiB about 1.3x faster when the other CPU is partly idle (a producer waiting
// for completions); below a few MiB the thread start costs more than it saves.
inline constexpr std::uint32_t kMaxPullThreads = 16;
struct PullSplit {
  std::uint32_t threads = 2;                     // 1..kMaxPullThreads, the caller's included
  std::size_t min_share = std::size_t{4} << 20;  // bytes, >= 1
};

struct TransferEndpointOptions {
  // How often a waiting owner checks that the claimer of its transfer is alive.
  std::chrono::milliseconds liveness_period{10};
  // Under Yama ptrace_scope 1, let any process of this uid read/write this process
  // (prctl(PR_SET_PTRACER_ANY), process-wide). Off by default: it widens access to this process.
  bool allow_any_reader = false;
};

// The registering side's handle of one transfer. Move-only. Must not outlive its endpoint.
class Transfer {
 public:
  Transfer() noexcept = default;
  Transfer(Transfer&& other) noexcept;
  Transfer& operator=(Transfer&& other) noexcept;
  Transfer(const Transfer&) = delete;
  Transfer& operator=(const Transfer&) = delete;
  // Not finished: withdraws it if nobody claimed it yet (a later pull gets not_found); if a
  // counterpart is copying, waits until it finishes or is seen dead (never frees memory that is
  // being read). Does nothing in a fork child (the parent's handle owns the transfer).
  ~Transfer();

  bool valid() const noexcept { return endpoint_ != nullptr; }
  const TransferDescriptor& descriptor() const noexcept { return descriptor_; }

  // One look, no wait: {} complete, errc::would_block still open or being copied, or the final
  // error (see the file banner). Checks a claimer's liveness (one F_OFD_GETLK) at most once per
  // liveness_period, so polling in a loop costs loads, not system calls.
  [[nodiscard]] std::error_code poll() noexcept;
  [[nodiscard]] std::error_code wait_until(sync::Deadline deadline) noexcept;
  template <class Rep, class Period>
  [[nodiscard]] std::error_code wait_for(std::chrono::duration<Rep, Period> timeout) noexcept {
    return wait_until(sync::Clock::now() + std::chrono::ceil<sync::Clock::duration>(timeout));
  }
  [[nodiscard]] std::error_code wait() noexcept { return wait_until(sync::Deadline::max()); }
  // Bytes the counterpart moved (valid after wait/poll returned {}).
  std::size_t transferred() const noexcept { return transferred_; }

 private:
  friend class TransferEndpoint;
  std::error_code check(bool check_liveness) noexcept;
  void finish(std::uint64_t word, std::error_code result) noexcept;
  void release() noexcept;

  detail::EndpointState* endpoint_ = nullptr;
  TransferDescriptor descriptor_{};
  bool finished_ = false;
  std::error_code result_;
  std::size_t transferred_ = 0;
  sync::Clock::time_point next_liveness_check_{};  // rate limit of the claimer's liveness check
};

// This process's access to one table. Move-only (transfers keep working across a move); refers
// to `segment` (keep it alive and unmoved) and must outlive its Transfers.
class TransferEndpoint {
 public:
  TransferEndpoint() noexcept;
  TransferEndpoint(TransferEndpoint&&) noexcept;
  TransferEndpoint& operator=(TransferEndpoint&&) noexcept;
  TransferEndpoint(const TransferEndpoint&) = delete;
  TransferEndpoint& operator=(const TransferEndpoint&) = delete;
  ~TransferEndpoint();

  // Validates the table in segment.body() and publishes this process's probe record.
  // wrong_kind: the body holds no transfer table (magic); layout_mismatch: another layout version
  // or signature (an incompatible build); corrupt_segment: sizes and offsets that do not fit;
  // invalid_argument: an empty or detached segment (a fork child's copy).
  static Result<TransferEndpoint> open(const shm::Segment& segment,
                                       const TransferEndpointOptions& options = {});

  // Pull mode: registers this process's `ranges` for a counterpart to read.
  Result<Transfer> register_source(std::span<const iovec> ranges);
  Result<Transfer> register_source(std::span<const std::byte> bytes);
  // Push mode: registers this process's `ranges` for a counterpart to write.
  Result<Transfer> register_destination(std::span<const iovec> ranges);
  Result<Transfer> register_destination(std::span<std::byte> bytes);

  // Copies the transfer `descriptor` names into `into` (at least total_length bytes) and
  // completes it. Returns the bytes copied (== descriptor.total_length).
  Result<std::size_t> pull(const TransferDescriptor& descriptor, std::span<std::byte> into);
  Result<std::size_t> pull(const TransferDescriptor& descriptor, std::span<const iovec> into);
  // As pull(), split across threads (PullSplit above). invalid_argument also for threads outside
  // 1..kMaxPullThreads or a zero min_share (nothing is claimed); a helper thread that cannot
  // start leaves its share to the calling thread.
  Result<std::size_t> pull(const TransferDescriptor& descriptor, std::span<std::byte> into,
                           const PullSplit& split);
  Result<std::size_t> pull(const TransferDescriptor& descriptor, std::span<const iovec> into,
                           const PullSplit& split);
  // Copies `from` (at most total_length bytes) into the destination `descriptor` names and
  // completes it. Returns the bytes copied (== from's size).
  Result<std::size_t> push(const TransferDescriptor& descriptor, std::span<const std::byte> from);
  Result<std::size_t> push(const TransferDescriptor& descriptor, std::span<const iovec> from);

  // Whether this process may copy from/to `peer` (a member that opened an endpoint): reads the
  // peer's probe word through a pidfd (some microseconds). The reason says why not.
  ProbeResult probe(sync::ParticipantId peer) const;
  bool permitted(sync::ParticipantId peer) const { return static_cast<bool>(probe(peer)); }

  bool valid() const noexcept { return state_ != nullptr; }
  sync::ParticipantId self() const noexcept;
  std::uint32_t slot_count() const noexcept;
  std::uint32_t table_tag() const noexcept;

 private:
  Result<Transfer> register_ranges(std::span<const iovec> ranges, detail::Direction direction);
  Result<std::size_t> copy(const TransferDescriptor& descriptor, std::span<const iovec> local,
                           detail::Direction direction, const PullSplit& split);

  std::unique_ptr<detail::EndpointState> state_;
};

}  // namespace xproc::bulk
