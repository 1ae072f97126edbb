#pragma once
// xproc::channel: a bounded multi-producer multi-consumer queue of variable-length messages in a
// region of shared memory, and Endpoint, the process-local handle that sends and receives.
//
// format(region, config) lays a channel out in zero-filled shared memory (the wire format of
// layout.h, docs/layout/channel.md); Endpoint::open(region, self) validates it and gives a handle.
// Every process (and thread) that uses the channel opens its own Endpoint; Endpoints are cheap
// values (pointers into the region plus validated sizes) and may be copied.
//
// Semantics (DESIGN.md "Semantics of a channel"):
//   * bounded by bytes (capacity, a power of two); a message is 0..max_message bytes, a larger
//     one is refused with errc::message_too_large, never truncated;
//   * every committed message is delivered to exactly one consumer while consumers live; per
//     producer thread, in the order reserved (reserve order = commit order for send());
//   * full: send blocks / try_send returns would_block / send_until returns timed_out; a message
//     is never overwritten. Empty: receive blocks / try_* would_block / *_until timed_out.
//   * receive into a buffer smaller than the next message returns errc::message_too_large and
//     leaves the message queued (not claimed): receive it into a std::vector/std::string or peek.
//
// Thread- and process-safety: every Endpoint member may be called concurrently from any thread of
// any process that opened the region, except in a channel formatted with spsc = true, where at
// most one thread sends and one thread receives at a time (not checked).
// Blocking: send/reserve/receive/peek (and _until/_for) block; try_* never park but wait for a
// reserve/claim lock held by a peer: a few microseconds for a running one, until its death is
// seen for a dead one. A live peer that holds a lock without end (hostile, or stopped) stalls
// try_* as long, as it would stall every other user of the channel (docs/design/fuzzing.md).
// Waits spin briefly, then park on the channel's EventCounts (not_empty, not_full); a notifier
// makes a futex call only when somebody parks.
//
// Deaths (a participant SIGKILLed at any instant; `self` must be attached to the table the other
// participants use, or liveness is never established and dead peers are waited for like live
// ones). The numbered steps are in src/channel/ring.cc and docs/decisions/0031-channel-ring.md.
//   * producer dies holding the reserve lock: the next producer that waits for the lock sees its
//     holder dead, takes the lock over, and repairs the tail (a header already published is
//     kept, a reservation of the dead one is aborted) and the counters, from the holder's
//     journal (docs/decisions/0053). Counted in lock_takeovers.
//   * producer dies between reserve and commit: the record stays `reserved`; the consumer that
//     reaches it checks the producer's liveness (after a short spin, then every kPeerCheckPeriod
//     while parked), marks it aborted, and skips it: never delivered, space reclaimed, counted in
//     producer_died.
//   * consumer dies holding the claim lock: as for producers (takeover; a claim it had marked
//     but not finished is finished, so the record counts as claimed by the dead consumer).
//   * consumer dies between claim/peek and release: the record stays `claimed`; once it is the
//     oldest record, the next sweep that checks liveness (a producer short of space, a consumer
//     about to park, recover()) marks it consumed (counted in consumer_died) or, with
//     redelivery on, puts it back for another consumer (counted in redelivered too; delivery is
//     then at-least-once).
//   * a sweeper dies holding the sweep lock: the next waiting sweeper takes it over (reclaim is
//     always at a record boundary).
//   * a parked waiter is never the only one who could see a death: a waiter that waits on a
//     specific peer wakes every kPeerCheckPeriod to check it.
//   * the other side is gone: a blocking send/reserve on a channel that stays full returns
//     errc::peer_dead once somebody has received on the channel and no live participant could
//     still receive: every live one is a producer that never received (like a pipe's EPIPE).
//     Symmetrically, a blocking receive/peek on an empty channel returns errc::peer_dead once
//     somebody has sent and every live participant is a consumer that never sent (end of
//     stream, like a pipe's EOF), after everything committed has been received. A live
//     participant that has not used the channel yet counts as a possible peer, so a peer still
//     starting up never looks like the end. A full sender looks every kPeerCheckPeriod; an idle
//     receiver at growing intervals (kPeerCheckPeriod doubling up to kIdlePeerCheckPeriod), and
//     while nobody has ever sent it sleeps with no timer at all. try_* answer would_block. A
//     message that fits is still queued, for a consumer that comes later.
//   Roles: a process becomes a producer at its first send/reserve (try_* included) or
//   declare_producer(), a consumer at its first receive/peek or declare_consumer(), and keeps
//   the role while it lives (the role table, layout.h; docs/decisions/0034-channel-roles.md).
//   Needs ChannelConfig::role_slots (Channel sets it) and a `self`; otherwise PeerState::untracked
//   and never peer_dead for this reason.
// fork(): an Endpoint copied into a fork child points at the same mapping (if it is MAP_SHARED)
// but its `self` Participant is detached in the child (participant_table.h): such an Endpoint
// never declares a peer dead and still names the parent in the records it writes. Open a new
// Endpoint with the child's own Participant.
// Failures: errc::invalid_argument (bad config/region), layout_mismatch (not a channel of this
// layout: magic, version, signature), corrupt_segment (sizes or a record no correct writer
// produces: every length and index read from the region is checked before use),
// message_too_large, would_block, timed_out, peer_dead (every peer on the other side is dead).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include "xproc/channel/layout.h"
#include "xproc/sync/participant_table.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/error.h"
#include "xproc/sys/result.h"

namespace xproc::channel {

struct ChannelConfig {
  std::uint32_t capacity_bytes = 1u << 20;  // ring bytes: a power of two in 256..2^30
  std::uint32_t max_message = 64u << 10;    // largest payload; record_length(max) + 16 <= capacity
  bool spsc = false;        // one sender thread and one receiver thread at a time: no lock CAS
  bool redelivery = false;  // a dead consumer's claimed record goes back to the queue
  std::uint64_t start_position = 0;  // first position, a multiple of 16 (tests: wrap points)
  // Entries per role in the role table (the capacity of the participant table the endpoints
  // attach to; Channel sets it). 0: no role table: senders and receivers are never told that
  // every peer on the other side is dead (errc::peer_dead), they wait for a new one.
  std::uint32_t role_slots = 0;
};

// How a blocking call of this Endpoint waits before it parks on a futex (process-local): spin
// `spin_rounds` rounds (each re-checks, then pauses 1, 2, then 4 times), then yield the CPU
// up to `yield_rounds` times. The default (~10 us of spinning here) catches a peer that answers
// within microseconds without a sleep; {0, 0} parks at once: no CPU burnt while waiting, every
// hand-off to a waiting peer pays a futex wake-up (the "sleeping peers" latency).
struct WaitPolicy {
  static constexpr std::uint32_t kMaxPausesPerRound = 4;
  std::uint32_t spin_rounds = 128;
  std::uint32_t yield_rounds = 4;
};

// Who is on the other side, as the role table knows it (Endpoint::producers()/consumers()).
enum class PeerState {
  untracked,  // the channel has no role table, or this Endpoint has no Participant
  none_yet,   // nobody has sent (producers) / received (consumers) on the channel yet
  alive,      // at least one of them is alive (this process counts when it has that role)
  all_dead,   // some did, and every one of them is dead
};

// Bytes of shared memory a channel with `config` needs (header + ring); 0 for an invalid config.
std::size_t region_size_for(const ChannelConfig& config) noexcept;

// Lays out a channel in `region` (shared memory, zero-filled, 64-byte aligned, at least
// region_size_for(config) bytes, used by nobody yet). Publishes the magic last (release).
// errc::invalid_argument: config out of range, region too small or misaligned.
[[nodiscard]] std::error_code format(std::span<std::byte> region, const ChannelConfig& config);

// How long a waiter that waits on a specific peer parks before it checks the peer's liveness.
inline constexpr std::chrono::milliseconds kPeerCheckPeriod{2};
// The longest an idle receiver sleeps between checks that some producer still lives.
inline constexpr std::chrono::milliseconds kIdlePeerCheckPeriod{128};

struct Statistics {
  std::uint64_t depth_messages = 0;   // reserved or committed, not yet claimed or skipped
  std::uint64_t depth_bytes = 0;      // tail - head (records in flight, headers and padding)
  std::uint64_t claimed_bytes = 0;    // head - reclaim (claimed or released, not reclaimed yet)
  std::uint32_t senders_waiting = 0;  // announced on not_full (may count dead waiters)
  std::uint32_t receivers_waiting = 0;
  std::uint64_t reserved_total = 0;  // reservations ever (messages sent + abandoned + aborted)
  std::uint64_t claimed_total = 0;   // claims ever (redeliveries claim again)
  std::uint64_t abandoned = 0;       // reservations dropped without commit by a live producer
  std::uint64_t producer_died = 0;   // records of dead producers skipped (never delivered)
  std::uint64_t consumer_died = 0;   // records claimed by dead consumers, reclaimed
  std::uint64_t redelivered = 0;     // ... of which put back in the queue
  std::uint64_t lock_takeovers = 0;  // reserve/claim locks taken from dead holders
};

namespace detail {
// The process-local view of a channel: validated sizes and pointers (copied into handles).
struct Ring {
  ChannelHeader* header = nullptr;
  std::byte* data = nullptr;
  std::uint64_t mask = 0;  // capacity - 1
  std::uint32_t capacity = 0;
  std::uint32_t max_message = 0;
  std::uint32_t flags = 0;
  std::uint32_t self_id = kLocalOwner;
  // Entries per role of the role table after the ring; 0: roles untracked by this endpoint (no
  // table, or no attached self). Small on purpose: Reservation and Message embed a Ring, and the
  // C API reserves a fixed size for them.
  std::uint32_t role_slots = 0;
  const sync::Participant* self = nullptr;

  bool spsc() const noexcept { return (flags & kFlagSpsc) != 0; }
};
}  // namespace detail

class Endpoint;
class ReadinessFd;

namespace detail {
// A hold on one record, finished exactly once: by the Endpoint call that completes it (commit,
// release), or else by the destructor (kWritable: abandon; otherwise: release). Move-only.
template <bool kWritable>
class RecordHandle {
 public:
  using Byte = std::conditional_t<kWritable, std::byte, const std::byte>;

  RecordHandle() noexcept = default;
  RecordHandle(RecordHandle&& other) noexcept
      : ring_(other.ring_), position_(other.position_), data_(other.data_) {
    other.ring_.header = nullptr;
  }
  RecordHandle& operator=(RecordHandle&& other) noexcept {
    if (this != &other) {
      finish();
      ring_ = other.ring_;
      position_ = other.position_;
      data_ = other.data_;
      other.ring_.header = nullptr;
    }
    return *this;
  }
  RecordHandle(const RecordHandle&) = delete;
  RecordHandle& operator=(const RecordHandle&) = delete;
  ~RecordHandle() { finish(); }

  std::span<Byte> data() const noexcept { return data_; }
  bool active() const noexcept { return ring_.header != nullptr; }
  // The record's position: unique in the channel's life, growing in reserve order (a Message
  // has the position its Reservation had).
  std::uint64_t position() const noexcept { return position_; }

 protected:
  void finish() noexcept;  // abandon / release when active (endpoint.cc)

  Ring ring_{};
  std::uint64_t position_ = 0;
  std::span<Byte> data_{};
};
extern template class RecordHandle<true>;
extern template class RecordHandle<false>;
}  // namespace detail

// A record reserved for writing in place: fill data(), then Endpoint::commit(). Destroying it
// uncommitted abandons it (never delivered; counted in Statistics::abandoned).
class Reservation : public detail::RecordHandle<true> {
  friend class Endpoint;
};

// A record claimed for reading in place: read data(), then Endpoint::release(). Destroying it
// unreleased releases it.
class Message : public detail::RecordHandle<false> {
  friend class Endpoint;
};

class Endpoint {
 public:
  // Validates the channel in `region` (see Failures in the banner). `self`: this process's
  // attachment to the participant table every user of the channel attaches to (nullptr: threads
  // of one process only; peers are then never considered dead). Keep `self` and the mapping alive
  // while the Endpoint (and its Reservations/Messages) are used.
  static Result<Endpoint> open(std::span<std::byte> region,
                               const sync::Participant* self = nullptr) noexcept;

  Endpoint() noexcept = default;

  std::uint32_t max_message() const noexcept { return ring_.max_message; }

  // This Endpoint's waiting (WaitPolicy); copies made afterwards inherit it.
  void set_wait_policy(const WaitPolicy& policy) noexcept { wait_policy_ = policy; }
  const WaitPolicy& wait_policy() const noexcept { return wait_policy_; }
  std::uint32_t capacity() const noexcept { return ring_.capacity; }

  // --- sending: {} or errc::message_too_large / would_block / timed_out / peer_dead /
  // corrupt_segment.
  [[nodiscard]] std::error_code send(std::span<const std::byte> message) const noexcept;
  [[nodiscard]] std::error_code try_send(std::span<const std::byte> message) const noexcept;
  [[nodiscard]] std::error_code send_until(std::span<const std::byte> message,
                                           sync::Deadline deadline) const noexcept;
  template <class Rep, class Period>
  [[nodiscard]] std::error_code send_for(
      std::span<const std::byte> message,
      std::chrono::duration<Rep, Period> timeout) const noexcept {
    return send_until(message, to_deadline(timeout));
  }
  // Sends messages in order until one cannot be sent without waiting (or is too large); the
  // count sent (all of them when it equals messages.size()), or the error of the first message
  // when none was sent. Takes the reserve lock once per 64 messages, not once per message.
  Result<std::size_t> try_send_batch(
      std::span<const std::span<const std::byte>> messages) const noexcept;

  // --- zero-copy sending: reserve `size` bytes in place, write data(), commit().
  Result<Reservation> reserve(std::size_t size) const noexcept;
  Result<Reservation> try_reserve(std::size_t size) const noexcept;
  Result<Reservation> reserve_until(std::size_t size, sync::Deadline deadline) const noexcept;
  // Publishes the record to consumers. errc::invalid_argument: not an active reservation.
  [[nodiscard]] std::error_code commit(Reservation& reservation) const noexcept;

  // --- receiving into a caller buffer: the message size, or errc::message_too_large (buffer too
  // small; the message stays queued) / would_block / timed_out / peer_dead / corrupt_segment.
  Result<std::size_t> receive(std::span<std::byte> buffer) const noexcept;
  Result<std::size_t> try_receive(std::span<std::byte> buffer) const noexcept;
  Result<std::size_t> receive_until(std::span<std::byte> buffer,
                                    sync::Deadline deadline) const noexcept;
  template <class Rep, class Period>
  Result<std::size_t> receive_for(std::span<std::byte> buffer,
                                  std::chrono::duration<Rep, Period> timeout) const noexcept {
    return receive_until(buffer, to_deadline(timeout));
  }
  // The three above in one (deadline nullptr: try once; Deadline::max(): no deadline); on
  // message_too_large, *needed (when not null) is set to the size of the message left queued.
  Result<std::size_t> receive_sized(std::span<std::byte> buffer, const sync::Deadline* deadline,
                                    std::size_t* needed) const noexcept;
  // Into a container (resized to the message): never message_too_large. std::bad_alloc may
  // propagate from the resize; the message is then put back in the queue first (no loss).
  [[nodiscard]] std::error_code receive(std::vector<std::byte>& out) const;
  [[nodiscard]] std::error_code try_receive(std::vector<std::byte>& out) const;
  [[nodiscard]] std::error_code receive_until(std::vector<std::byte>& out,
                                              sync::Deadline deadline) const;
  [[nodiscard]] std::error_code receive_until(std::string& out, sync::Deadline deadline) const;
  [[nodiscard]] std::error_code try_receive(std::string& out) const;
  // Receives up to out.size() messages that are ready now (one claim-lock acquisition per 64
  // messages); the count received, or would_block when none was ready. std::bad_alloc from a
  // resize propagates after the messages not yet copied went back in the queue.
  Result<std::size_t> try_receive_batch(std::span<std::vector<std::byte>> out) const;

  // --- zero-copy receiving: peek, read data() in place, release().
  Result<Message> peek() const noexcept;
  Result<Message> try_peek() const noexcept;
  Result<Message> peek_until(sync::Deadline deadline) const noexcept;
  // Marks the record consumed and reclaims space. errc::invalid_argument: not an active message.
  [[nodiscard]] std::error_code release(Message& message) const noexcept;

  // Reclaims now: advances the reclaim position over released records, and over records
  // claimed by dead consumers (counted; redelivered when on). Releases reclaim lazily (a quarter
  // ring at a time, or at once when a producer waits), and waiters do this before they park, so
  // calling it is never needed for progress; it makes statistics exact and recovery prompt.
  // {} or errc::corrupt_segment.
  [[nodiscard]] std::error_code recover() const noexcept;

  Statistics statistics() const noexcept;

  // Every record at a position below this one is released, skipped or reclaimed for good: it
  // will never be delivered (again). Grows; a snapshot (acquire: the record states behind it
  // are final).
  std::uint64_t reclaim_position() const noexcept;

  // Takes the producer / consumer role now, before the first send / receive (which take it
  // anyway): peers then count this process as a live producer / consumer from this call on
  // (a receiver does not see end of stream while a producer that declared itself lives).
  // Nothing happens without a role table.
  void declare_producer() const noexcept;
  void declare_consumer() const noexcept;

  // The producers / consumers of the channel by the role table (one F_OFD_GETLK per entry
  // looked at, up to the first live one).
  PeerState producers() const noexcept;
  PeerState consumers() const noexcept;
  // The rule that ends blocked waits with peer_dead (banner, Deaths): true when somebody has
  // sent (received) and no live participant could still send (receive). One F_OFD_GETLK per
  // used participant slot. False without a role table or a self.
  bool producers_gone() const noexcept;
  bool consumers_gone() const noexcept;

 private:
  template <class Rep, class Period>
  static sync::Deadline to_deadline(std::chrono::duration<Rep, Period> timeout) noexcept {
    return sync::Clock::now() + std::chrono::ceil<sync::Clock::duration>(timeout);
  }
  template <class Container>
  std::error_code receive_container(Container& out, const sync::Deadline* deadline,
                                    bool wait) const;
  Result<Reservation> reserve_impl(std::size_t size, const sync::Deadline* deadline) const noexcept;
  Result<Message> peek_impl(const sync::Deadline* deadline) const noexcept;

  friend class ReadinessFd;  // its waker reads the ring's wait hints (readiness.h)

  detail::Ring ring_{};
  WaitPolicy wait_policy_{};
};

}  // namespace xproc::channel
