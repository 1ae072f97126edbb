#pragma once
// xproc::bulk::LoanChannel: a buffer pool (pool.h) and a channel of Descriptors (channel/
// endpoint.h) in ONE shared-memory segment of kind `pool`: producers loan a buffer, write the
// payload in place and send() it (a 32-byte descriptor travels through the channel); consumers
// receive() a Held, read in place and give it back. The payload never moves.
// Layout: docs/layout/pool.md ("LoanChannel segment"). Decision: docs/decisions/0040-pool.md.
//
// Semantics: the channel's (endpoint.h): bounded, every sent buffer delivered to exactly one
// consumer while consumers live (at-least-once with redelivery on), per producer thread in
// order. The pool's: loan takes the smallest fitting class, a larger one when it is empty
// (pool.h).
// Lifetime: Loans and Helds point into the segment: destroy them before the LoanChannel.
// Thread- and process-safety: every member may be called concurrently from any thread of any
// process that created, opened or adopted the segment. Handles (Loan, Held): as pool.h.
// Blocking: loan/send/receive (and _until/_for) block: loan as PoolView's (pool.h), with the
// reclaim pass below; send while the channel is full, receive while it is empty (spin briefly,
// then park on the channel's not_full / not_empty). try_* never park.
// Failures: loan: PoolView's (pool.h), and peer_dead (below); send: would_block, timed_out,
// peer_dead (the channel is full and every consumer is dead), already_returned (the buffer's word
// no longer names this loan: a peer wrote it; the loan is then gone), invalid_argument (an inactive
// or foreign loan); on every other send error the loan stays with the caller, untouched. receive:
// would_block, timed_out, peer_dead (empty and every producer dead), bad_descriptor (a record that
// is no descriptor this pool issued: a hostile producer; the record is consumed, call receive
// again), corrupt_segment. Segment errors as segment.h.
//
// The protocol (numbered steps; what survivors see after a death at each):
//   send:  S1) reserve a channel record (position p). S2) write the descriptor into it. S3) store
//          p in the buffer's position word, CAS loaned -> posted (one step). S4) commit.
//          Death before S3: the record is reserved by a dead producer (the channel aborts it) and
//          the buffer is loaned by a dead owner (recover() frees it). Death between S3 and S4:
//          the record is aborted and reclaimed, so p falls below the channel's reclaim position
//          while the buffer is still posted at p: the reclaim pass frees it.
//   receive: K1) peek (claim) the record. K2) accept: CAS posted -> held by me, BEFORE K3)
//          release the record. Death between K1 and K2: the claimed record of a dead consumer is
//          reclaimed by the channel's sweep (or, with redelivery, put back and accepted by the
//          next consumer); once reclaimed, p < reclaim position with the buffer still posted at
//          p: the reclaim pass frees it. Death between K2 and K3: the buffer is held by a dead
//          owner (freed by recover()); with redelivery the record goes to the next consumer,
//          which takes the buffer over if no survivor freed it yet, else skips the record (that
//          payload is lost with the dead consumer, as the channel's at-least-once promises
//          nothing more for a death after delivery).
//   Why this is exact: a live consumer accepts before it releases, so a posted buffer whose
//   record lies below the reclaim position (every record there is released or reclaimed for
//   good, Endpoint::reclaim_position) can never be accepted any more.
// The reclaim pass (recover(); run by every loaner that would wait, before parking and while
// parked, as pool.h says): the channel's recover() (dead consumers' records),
// then frees posted buffers below the reclaim position and loaned/held buffers of dead owners.
// Deaths, in short: loaned by a dead producer -> free; held by a dead consumer -> free; posted
// and lost with its record -> free; posted and still queued -> delivered to a later consumer.
// peer_dead from loan: the pool is exhausted, every buffer is posted (queued in the channel) and
// no live participant can receive any more (Endpoint::consumers_gone(): somebody received, and
// every live participant only sends): nobody will give a buffer back. A consumer that comes later
// revives the channel; loan may be retried. While a live producer holds a loan, a waiting loaner
// keeps waiting (that loan may come back). fork(): the child's copy is detached (the segment's
// rule): adopt(sys::reopen(segment().fd())) or open() again in the child.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string_view>
#include <system_error>

#include "xproc/bulk/pool.h"
#include "xproc/channel/endpoint.h"
#include "xproc/shm/segment.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/file.h"
#include "xproc/sys/result.h"

namespace xproc::bulk {

struct LoanChannelConfig {
  // capacity_bytes, spsc, redelivery, start_position are used; max_message is set to
  // sizeof(Descriptor) and role_slots to the segment's participant capacity.
  channel::ChannelConfig channel;
  PoolConfig pool;
};

struct LoanChannelStatistics {
  PoolStatistics pool;
  channel::Statistics channel;
};

class LoanChannel {
 public:
  static Result<LoanChannel> create(std::string_view name, const LoanChannelConfig& config,
                                    const shm::SegmentOptions& options = {});
  static Result<LoanChannel> open(std::string_view name, const shm::SegmentOptions& options = {});
  static Result<LoanChannel> create_anonymous(const LoanChannelConfig& config,
                                              const shm::SegmentOptions& options = {});
  static Result<LoanChannel> adopt(sys::FileDescriptor fd, const shm::SegmentOptions& options = {});

  LoanChannel() noexcept;
  LoanChannel(LoanChannel&&) noexcept;
  LoanChannel& operator=(LoanChannel&&) noexcept;
  ~LoanChannel();

  bool valid() const noexcept { return state_ != nullptr; }

  // --- loaning (pool.h), with the reclaim pass and peer_dead of the banner while waiting.
  Result<Loan> loan(std::size_t size) const noexcept;
  Result<Loan> try_loan(std::size_t size) const noexcept;
  Result<Loan> loan_until(std::size_t size, sync::Deadline deadline) const noexcept;
  template <class Rep, class Period>
  Result<Loan> loan_for(std::size_t size,
                        std::chrono::duration<Rep, Period> timeout) const noexcept {
    return loan_until(size, to_deadline(timeout));
  }

  // --- sending: {} (the loan is consumed) or an error (the loan stays with the caller).
  [[nodiscard]] std::error_code send(Loan&& loan) const noexcept;
  [[nodiscard]] std::error_code try_send(Loan&& loan) const noexcept;
  [[nodiscard]] std::error_code send_until(Loan&& loan, sync::Deadline deadline) const noexcept;
  template <class Rep, class Period>
  [[nodiscard]] std::error_code send_for(
      Loan&& loan, std::chrono::duration<Rep, Period> timeout) const noexcept {
    return send_until(std::move(loan), to_deadline(timeout));
  }

  // --- receiving: the next buffer, held by this process until the Held is destroyed.
  Result<Held> receive() const noexcept;
  Result<Held> try_receive() const noexcept;
  Result<Held> receive_until(sync::Deadline deadline) const noexcept;
  template <class Rep, class Period>
  Result<Held> receive_for(std::chrono::duration<Rep, Period> timeout) const noexcept {
    return receive_until(to_deadline(timeout));
  }

  // The reclaim pass of the banner, now: the buffers freed, or corrupt_segment.
  Result<std::uint32_t> recover() const noexcept;

  LoanChannelStatistics statistics() const noexcept;

  // The views inside (statistics, tools, tests). Do not post() through pool() on a LoanChannel:
  // a buffer posted without its record position may be freed by the reclaim pass.
  const PoolView& pool() const noexcept;
  const channel::Endpoint& endpoint() const noexcept;
  shm::Segment& segment() const noexcept;

  struct State;  // the segment and the views on it (heap: stable addresses for the Participant)

 private:
  template <class Rep, class Period>
  static sync::Deadline to_deadline(std::chrono::duration<Rep, Period> timeout) noexcept {
    return sync::Clock::now() + std::chrono::ceil<sync::Clock::duration>(timeout);
  }
  static Result<LoanChannel> wrap(Result<shm::Segment> segment);
  Result<Loan> loan_impl(std::size_t size, const sync::Deadline* deadline) const noexcept;
  std::error_code send_impl(Loan& loan, const sync::Deadline* deadline) const noexcept;
  Result<Held> receive_impl(const sync::Deadline* deadline) const noexcept;

  std::unique_ptr<State> state_;
};

}  // namespace xproc::bulk
