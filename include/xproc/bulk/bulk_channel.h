#pragma once
// xproc::bulk::BulkChannel: the bulk front end for bytes that live in the caller's private
// memory. send() / post() take a span; the channel picks the path by the payload's size and by
// what this process may do, and receive() copies the payload into the caller's buffer:
//   inline     the payload travels inside the channel record (small payloads: one copy in, one out)
//   pool_copy  the producer copies into a buffer of the shared pool, a 48-byte record names it,
//              the consumer copies out and gives the buffer back (two copies; in a stream the
//              producer's copy of payload i+1 overlaps the consumer's copy of payload i). Above
//              BulkProcessOptions::stream_chunk the payload is streamed: the record goes first
//              and the consumer copies each chunk as soon as the producer published it, so the
//              two copies of one payload overlap too (docs/layout/bulk_channel.md, "Streams");
//              the producer is paced: never more than BulkProcessOptions::stream_window chunks
//              ahead of the consumer that copies the stream, so both copies stay in cache.
//              From BulkProcessOptions::stream_ring_min up, send()'s stream goes through a ring
//              of stream_window chunks instead of a payload-sized buffer ("Ring streams")
//   pull       the producer registers its memory in the transfer table, a 48-byte record names
//              the transfer, the consumer copies it with process_vm_readv (one copy); the
//              producer's send()/Completion waits until the copy is done
// Everything lives in ONE segment (kind raw; docs/layout/bulk_channel.md): the transfer table
// (transfer.h) at offset 0 of the body, then a header, a channel of records (endpoint.h) and a
// buffer pool (pool.h). Why this shape, the thresholds and the measurements behind them:
// docs/decisions/0042-bulk-channel.md.
//
// Thresholds (BulkChannelConfig, fixed at create, the same for every process): payloads of at
// most inline_max bytes go inline; payloads of at least pull_min bytes are pulled when this
// process may use pull; the rest (and every payload when pull is off) go through the pool.
// path_for(size) says which path a payload takes now; path_report() says which paths are in use
// and why (e.g. "pull off: this process is not dumpable ...; using pool_copy").
// Pull permission (this process is the one read): checked at create/open (options, the config's
// pull_min, the segment creator's uid, dumpable, Yama ptrace_scope) and again before each pull
// (dumpable). Run-time safety net: when a consumer's pull is refused (permission_denied), the
// producer's completion sees it, re-sends the payload through the pool, and this process stops
// using pull (the reason goes into path_report()).
//
// Semantics: a bounded MPMC queue of payloads of 0..max_payload bytes; every payload sent is
// delivered to exactly one consumer while consumers live (a consumer that dies mid-receive:
// the record is put back for another consumer, the channel's redelivery), per producer thread
// in send order. send()/send_until()/try_send() have copy semantics: when they return {} the
// caller's buffer may be reused. Order after a failed pull: send() waits for the pull to finish
// before it returns, so the re-sent payload is still the last one this thread sent: order is
// kept. post() returns before the copy; a payload re-sent by its Completion is delivered after
// the payloads this thread posted in between (post() trades order for pipelining then).
// The pull path is used only by send() and post(): try_send() and send_until() use inline /
// pool_copy (a pull's completion is bounded by the consumers' progress, not by a deadline).
// Receive into a span smaller than the next payload: errc::message_too_large, and the payload
// is KEPT: this BulkChannel object holds the claimed record and the next receive on it (from any
// thread) returns that payload first; receive(std::vector&) never gives message_too_large. While
// held, the record is claimed by this process (if it dies, the record goes to another consumer).
//
// Thread- and process-safety: every member may be called concurrently from any thread of any
// process that created, opened or adopted the segment. A Completion is owned by one thread at a
// time and must not outlive its BulkChannel.
// Blocking: send/receive (and _until/_for) block while the channel is full / empty or the pool
// has no fitting buffer (spin, then park; endpoint.h / pool.h). send() of a pulled payload
// blocks until a consumer copied it (bounded by the claimer's liveness, and by consumers_gone()
// while nobody claimed it). send()/send_until() of a streamed payload wait while the producer is
// stream_window chunks ahead of the stream's claimer (of nobody, before a claim): bounded by the
// claimer's liveness, by consumers_gone() while no live consumer holds the stream, and by
// send_until's deadline; so a streamed payload larger than the window returns only once a
// consumer is copying it. try_* never park (a try_send stream that would wait past a short spin
// goes on unpaced).
// Failures (xproc::errc): send: message_too_large (> max_payload), would_block, timed_out,
// peer_dead (every consumer is gone), corrupt_segment; with would_block, timed_out and peer_dead
// the payload was NOT delivered (a stream paced past the deadline or with every consumer gone is
// aborted: its record stays queued, consumers skip it, its buffer is back in the pool);
// receive: message_too_large (payload kept, see above; receive_sized tells its size),
// would_block, timed_out, peer_dead (empty and every producer gone), bad_descriptor (a record
// that names no payload: a hostile producer; the record is consumed, call receive again),
// corrupt_segment. create/open/adopt: the segment's errors (segment.h), wrong_kind (the body
// holds no transfer table), layout_mismatch (no BulkChannel header, or another layout version),
// corrupt_segment (offsets or sizes that do not fit), invalid_argument (a config out of range).
//
// Deaths (no survivor waits for the dead; the layers' own mechanisms):
//   * producer dies before its record is committed: the channel aborts the record; a pool buffer
//     it loaned is freed by the reclaim pass; a transfer it registered is reclaimed by the table.
//     Consumers never see the payload.
//   * producer dies after commit, payload inline or in the pool: the payload is intact and is
//     delivered. Pulled: the consumer's pull fails (peer_dead: the owner died before or during
//     the copy; the bytes copied are discarded) and the consumer skips the record: the payload
//     is never returned, no torn payload is ever returned, nobody hangs.
//   * consumer dies mid-pull: the producer's wait sees the claimer dead within liveness_period;
//     send() (and Completion::wait) then RE-SENDS the payload through the pool (the dead
//     consumer never returned it to anyone) and returns {} once that is sent; the redelivered
//     record's pull is refused (already_returned) and skipped, so the payload arrives once.
//   * consumer dies while copying out of the pool: the record is redelivered and the next
//     consumer takes the buffer over (LoanChannel's rule, loan_channel.h), or, streamed, starts
//     the stream over. A producer paced on a stream whose claimer died sees it dead within
//     8 x channel::kPeerCheckPeriod of stalling, runs the channel's sweep (the record is put back)
//     and paces against the next claimer; with no live consumer left: peer_dead (aborted). A ring
//     stream whose first chunks were overwritten cannot start over: the producer aborts it
//     (consumers skip its record) and sends the payload again as a new record.
//   * producer dies while streaming (after its record, before the last chunk): its loan is
//     reclaimed; the consumer sees it dead (or the buffer reused: the stream id changed) and skips
//     the record: never a torn payload. A consumer waiting for a chunk checks the producer's
//     liveness every channel::kPeerCheckPeriod.
//   * pool buffers of dead processes are freed by the reclaim pass (loan_channel.h).
// fork(): the child's copy is detached (the segment's rule): open or adopt again in the child.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "xproc/channel/endpoint.h"
#include "xproc/shm/segment.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/file.h"
#include "xproc/sys/result.h"

namespace xproc::bulk {

enum class BulkPath : std::uint32_t { inline_record = 1, pool_copy = 2, pull = 3 };
// "inline", "pool_copy", "pull".
std::string_view path_name(BulkPath path) noexcept;

inline constexpr std::uint64_t kPullNever = ~std::uint64_t{0};
inline constexpr std::uint32_t kMaxInline = 64u << 10;
inline constexpr std::uint64_t kRingNever = ~std::uint64_t{0};

struct BulkChannelConfig {
  // Largest payload, 0..1 GiB (the pool's largest buffer).
  std::uint64_t max_payload = std::uint64_t{64} << 20;
  // Payloads of at most this many bytes travel inside the record (0..kMaxInline).
  std::uint32_t inline_max = 4096;
  // Payloads of at least this many bytes are pulled when this process may use pull; kPullNever:
  // never (the default: on the host it was measured on, a copy through the pool beat one
  // process_vm_readv at every size; decision 0042).
  std::uint64_t pull_min = kPullNever;
  // The channel's ring bytes (a power of two, at least 4 records of inline_max).
  std::uint32_t channel_bytes = 1u << 20;
  // Pool: classes of 64 KiB, 1 MiB, 16 MiB, 256 MiB (those below max_payload) and max_payload,
  // each `pool_buffers` buffers (1..1024). Pool memory is touched only when a buffer is used.
  std::uint32_t pool_buffers = 4;
  // Transfers open at once in the whole group (pull path), 1..65536.
  std::uint32_t transfer_slots = 64;
};

// This process's choices (not shared): given at create/open/adopt.
struct BulkProcessOptions {
  bool allow_pull = true;  // false: this process never sends by pull
  // Under Yama ptrace_scope 1: PR_SET_PTRACER_ANY for this process (transfer.h). Off by default.
  bool allow_any_reader = false;
  std::chrono::milliseconds liveness_period{10};  // how often a pull's owner checks the claimer
  // pool_copy payloads above this many bytes are streamed: the record is committed before the
  // copy and the consumer copies each chunk of this size as soon as it is in (the two copies
  // overlap, cache-hot); 0: never (copy all, then commit). 4096..1 GiB otherwise.
  std::uint32_t stream_chunk = 256u << 10;
  // Pacing of this process's streams: the producer never runs more than this many chunks ahead
  // of the consumer that copies the stream (8 x 256 KiB = 2 MiB: both copies stay in cache;
  // decision 0048), nor, before a consumer claimed the stream, more than this many chunks ahead
  // of nobody. 0: no pacing (the producer copies the whole payload at once).
  std::uint32_t stream_window = 8;
  // send()/send_until() stream payloads of at least this many bytes (and more than
  // stream_window chunks) through a ring: chunk k goes to slot k mod stream_window of a
  // window-sized buffer, so the producer writes memory the consumer just read instead of a
  // payload-sized buffer (docs/layout/bulk_channel.md, "Ring streams"; decision 0058). Such a
  // send returns only once a consumer took the whole payload; if its consumer dies mid-copy the
  // producer sends the payload again from its own bytes. try_send() never uses a ring.
  // 0: every stream that spans more than stream_window chunks; kRingNever: never.
  std::uint64_t stream_ring_min = std::uint64_t{16} << 20;
};

// Which paths this process uses, and why (path_report()).
struct PathReport {
  std::uint32_t inline_max = 0;
  std::uint64_t pull_min = 0;  // the config's (kPullNever: never)
  std::uint64_t max_payload = 0;
  bool pull_enabled = false;  // this process's send()/post() may pull now
  std::string pull_reason;    // why pull is off ("" when on)
  // Payloads this process sent by each path (fallbacks: pulls re-sent through the pool).
  std::uint64_t sent_inline = 0;
  std::uint64_t sent_pool = 0;
  std::uint64_t sent_pull = 0;
  std::uint64_t pull_fallbacks = 0;
  std::uint64_t sent_ring = 0;  // of sent_pool: streamed through a ring (stream_ring_min)
  // Ring streams this process sent again because their consumer died mid-copy (or found its
  // copy overwritten): the payload is delivered once, by the later send.
  std::uint64_t ring_restarts = 0;
  // One line: "inline <= 4096 B; pool_copy above; pull off: <reason>; using pool_copy".
  std::string to_string() const;
};

class BulkChannel;

namespace detail {
struct PendingPull;  // src/bulk/bulk_channel_pull.cc (owns a Transfer)
struct PendingPullDelete {
  void operator()(PendingPull* pending) const noexcept;
};
}  // namespace detail

class Completion;

struct BulkChannelStatistics {
  channel::Statistics channel;
  std::uint32_t pool_buffers = 0;  // in every class
  std::uint32_t pool_free = 0;
  std::uint64_t pool_reclaimed_dead = 0;
  std::uint64_t pool_reclaimed_posted = 0;
};

class BulkChannel {
 public:
  static Result<BulkChannel> create(std::string_view name, const BulkChannelConfig& config,
                                    const shm::SegmentOptions& options = {},
                                    const BulkProcessOptions& process = {});
  static Result<BulkChannel> open(std::string_view name, const shm::SegmentOptions& options = {},
                                  const BulkProcessOptions& process = {});
  static Result<BulkChannel> create_anonymous(const BulkChannelConfig& config,
                                              const shm::SegmentOptions& options = {},
                                              const BulkProcessOptions& process = {});
  static Result<BulkChannel> adopt(sys::FileDescriptor fd, const shm::SegmentOptions& options = {},
                                   const BulkProcessOptions& process = {});

  BulkChannel() noexcept;
  BulkChannel(BulkChannel&&) noexcept;
  BulkChannel& operator=(BulkChannel&&) noexcept;
  ~BulkChannel();

  bool valid() const noexcept { return state_ != nullptr; }

  // --- sending (copy semantics: {} means the caller's buffer may be reused).
  [[nodiscard]] std::error_code send(std::span<const std::byte> payload) const noexcept;
  [[nodiscard]] std::error_code try_send(std::span<const std::byte> payload) const noexcept;
  [[nodiscard]] std::error_code send_until(std::span<const std::byte> payload,
                                           sync::Deadline deadline) const noexcept;
  template <class Rep, class Period>
  [[nodiscard]] std::error_code send_for(
      std::span<const std::byte> payload,
      std::chrono::duration<Rep, Period> timeout) const noexcept {
    return send_until(payload, to_deadline(timeout));
  }
  // Sends `payload` (waiting for channel space and pool buffers as send()) without waiting for a
  // pull's copy: keep the buffer unchanged until the Completion is done.
  Result<Completion> post(std::span<const std::byte> payload) const noexcept;

  // --- receiving: the payload's size.
  Result<std::size_t> receive(std::span<std::byte> into) const noexcept;
  Result<std::size_t> try_receive(std::span<std::byte> into) const noexcept;
  Result<std::size_t> receive_until(std::span<std::byte> into,
                                    sync::Deadline deadline) const noexcept;
  template <class Rep, class Period>
  Result<std::size_t> receive_for(std::span<std::byte> into,
                                  std::chrono::duration<Rep, Period> timeout) const noexcept {
    return receive_until(into, to_deadline(timeout));
  }
  // The three above in one (deadline nullptr: try once); on message_too_large *needed (when not
  // null) is the size of the payload kept for the next receive.
  Result<std::size_t> receive_sized(std::span<std::byte> into, const sync::Deadline* deadline,
                                    std::size_t* needed) const noexcept;
  // Into a container resized to the payload: never message_too_large. std::bad_alloc from the
  // resize propagates; the payload is kept as for message_too_large.
  [[nodiscard]] std::error_code receive(std::vector<std::byte>& out) const;
  [[nodiscard]] std::error_code try_receive(std::vector<std::byte>& out) const;
  [[nodiscard]] std::error_code receive_until(std::vector<std::byte>& out,
                                              sync::Deadline deadline) const;

  // --- paths
  BulkPath path_for(std::size_t size) const noexcept;
  PathReport path_report() const;
  // Turns pull off for this process (a caller's own policy), with the reason shown in the report.
  void disable_pull(std::string_view reason) const;

  // The reclaim pass (channel sweep, then pool buffers of dead owners and of lost records): the
  // buffers freed, or corrupt_segment. Waiters run it themselves.
  Result<std::uint32_t> recover() const noexcept;
  BulkChannelStatistics statistics() const noexcept;
  const channel::Endpoint& endpoint() const noexcept;
  shm::Segment& segment() const noexcept;

  struct State;  // src/bulk/bulk_channel.cc (heap: stable addresses for the Participant)

 private:
  template <class Rep, class Period>
  static sync::Deadline to_deadline(std::chrono::duration<Rep, Period> timeout) noexcept {
    return sync::Clock::now() + std::chrono::ceil<sync::Clock::duration>(timeout);
  }
  static Result<BulkChannel> wrap(Result<shm::Segment> segment, const BulkProcessOptions& process);
  std::error_code send_impl(std::span<const std::byte> payload, const sync::Deadline* deadline,
                            Completion* posted) const noexcept;
  template <class Sink>
  Result<std::size_t> receive_impl(const sync::Deadline* deadline, Sink& sink) const;

  std::unique_ptr<State> state_;
};

// The producer's handle on a posted payload: done when the caller's buffer may be reused.
// Inline and pool payloads are done at once (copied by post()). A pulled one is done when a
// consumer copied it; if the pull failed with permission_denied or its consumer died, wait/poll
// re-send it through the pool (the buffer is read again then) and report {} once sent.
// Destroyed before done: a pull nobody claimed is withdrawn (the payload is then NOT delivered;
// consumers skip its record); one being copied is waited for (bounded by the claimer's liveness).
class Completion {
 public:
  Completion() noexcept = default;
  Completion(Completion&&) noexcept = default;
  Completion& operator=(Completion&&) noexcept = default;
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;
  ~Completion() = default;

  BulkPath path() const noexcept { return path_; }
  bool done() const noexcept { return pending_ == nullptr; }
  // {} done; would_block (poll) / timed_out (wait_until) not yet; peer_dead (every consumer is
  // gone and nobody claimed the payload: withdrawn, not delivered); the re-send's errors; an
  // error from the pull that no re-send cures (bad_descriptor, corrupt_segment).
  [[nodiscard]] std::error_code poll() noexcept;
  [[nodiscard]] std::error_code wait_until(sync::Deadline deadline) noexcept;
  template <class Rep, class Period>
  [[nodiscard]] std::error_code wait_for(std::chrono::duration<Rep, Period> timeout) noexcept {
    return wait_until(sync::Clock::now() + std::chrono::ceil<sync::Clock::duration>(timeout));
  }
  [[nodiscard]] std::error_code wait() noexcept { return wait_until(sync::Deadline::max()); }

 private:
  friend class BulkChannel;
  std::error_code step(sync::Deadline deadline) noexcept;

  BulkChannel::State* state_ = nullptr;  // heap: stays put when the BulkChannel moves
  std::span<const std::byte> payload_{};
  BulkPath path_ = BulkPath::inline_record;
  std::unique_ptr<detail::PendingPull, detail::PendingPullDelete> pending_;
};

}  // namespace xproc::bulk
