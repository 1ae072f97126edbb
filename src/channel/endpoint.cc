// Endpoint: format/open validation and the waiting loops around the protocol steps of ring.cc.
#include "xproc/channel/endpoint.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <new>

#include "ring_internal.h"
#include "xproc/sync/detail/spin.h"

namespace xproc::channel {
namespace {

using detail::Ring;

template <class Ready>
bool spin_then_yield(const WaitPolicy& policy, Ready&& ready) noexcept {
  if (sync::detail::spin_until(ready, policy.spin_rounds, WaitPolicy::kMaxPausesPerRound)) {
    return true;
  }
  return sync::detail::yield_until(ready, policy.yield_rounds);
}

bool config_valid(const ChannelConfig& config) noexcept {
  const std::uint32_t capacity = config.capacity_bytes;
  if (capacity < detail::kMinCapacity || capacity > detail::kMaxCapacity ||
      !std::has_single_bit(capacity)) {
    return false;
  }
  if (config.max_message > capacity) return false;
  if (config.role_slots > detail::kMaxRoleSlots) return false;
  if (detail::record_length(config.max_message) + detail::kRecordHeader > capacity) return false;
  return config.start_position % detail::kRecordAlign == 0;
}

std::error_code errc_code(errc e) noexcept {
  return make_error_code(e);
}

bool is(std::error_code error, errc e) noexcept {
  return error == make_error_code(e);
}

// Reserves, waiting (spin, then park on not_full) until `deadline`; deadline null: try once.
detail::ReserveOutcome reserve_wait(const Ring& ring, const WaitPolicy& policy, std::size_t size,
                                    const sync::Deadline* deadline) noexcept {
  if (size > ring.max_message) return {errc_code(errc::message_too_large), 0};
  detail::register_role(ring, detail::Role::producer);
  const auto size32 = static_cast<std::uint32_t>(size);
  bool check_liveness = false;
  for (;;) {
    detail::ReserveOutcome outcome = detail::try_reserve(ring, size32, check_liveness);
    if (!is(outcome.error, errc::would_block) || deadline == nullptr) return outcome;
    // Still full after a period: if no live participant can consume, nobody will make room.
    if (check_liveness && detail::side_ended(ring, detail::Role::consumer)) {
      return {errc_code(errc::peer_dead), 0};
    }
    // After a periodic wake-up that found nothing new, park again without spinning: a blocked
    // producer must not burn ~10 us of CPU every period.
    const bool woke_by_timer = check_liveness;
    check_liveness = false;
    if (sync::Clock::now() >= *deadline) return {errc_code(errc::timed_out), 0};
    if (!woke_by_timer &&
        spin_then_yield(policy, [&] { return detail::space_ready(ring, size32); })) {
      continue;
    }
    sync::EventCount& event = ring.header->not_full.event;
    const sync::EventCount::Key key = event.prepare_wait();
    // Re-check after announcing (EventCount protocol), sweeping ourselves in case the
    // consumers' sweeps stopped short.
    (void)detail::sweep(ring, false);
    if (detail::space_ready(ring, size32)) {
      event.cancel_wait();
      continue;
    }
    // Full: the consumers may be dead holding the oldest record; look again every period.
    const sync::Deadline wake = std::min(*deadline, sync::Clock::now() + kPeerCheckPeriod);
    if (is(event.wait_until(key, wake), errc::timed_out)) check_liveness = true;
  }
}

// Claims the next message of at most `limit` bytes, waiting until `deadline` (null: try once).
detail::ClaimOutcome claim_wait(const Ring& ring, const WaitPolicy& policy, std::uint64_t limit,
                                const sync::Deadline* deadline) noexcept {
  detail::register_role(ring, detail::Role::consumer);
  bool check_liveness = false;
  std::uint32_t checked_owner = 0;
  sync::Clock::duration idle_period = kPeerCheckPeriod;  // doubles while nothing arrives
  for (;;) {
    detail::ClaimOutcome outcome = detail::try_claim(ring, limit, check_liveness);
    if (!is(outcome.error, errc::would_block) || deadline == nullptr) return outcome;
    if (check_liveness && outcome.pending_owner == 0 &&
        detail::side_ended(ring, detail::Role::producer)) {
      // End of stream: no live participant can commit anything. One more claim, now that the
      // producers' deaths are seen (a record committed just before the last death, or one left
      // reserved, which this claim aborts and skips).
      outcome = detail::try_claim(ring, limit, true);
      if (!is(outcome.error, errc::would_block)) return outcome;
      if (outcome.pending_owner == 0) return {errc_code(errc::peer_dead), 0, 0, 0};
    }
    // As in reserve_wait: no spin after a periodic wake-up (an idle receiver wakes ~8 times a
    // second to look at its producers; each look must stay a few microseconds).
    const bool woke_by_timer = check_liveness;
    check_liveness = false;
    if (sync::Clock::now() >= *deadline) return {errc_code(errc::timed_out), 0, 0, 0};
    if (!woke_by_timer && spin_then_yield(policy, [&] { return detail::data_ready(ring); })) {
      continue;
    }
    if (outcome.pending_owner != 0 && outcome.pending_owner != checked_owner) {
      // A producer is writing the head record: check once that it lives before parking.
      checked_owner = outcome.pending_owner;
      check_liveness = true;
      continue;
    }
    sync::EventCount& event = ring.header->not_empty.event;
    const sync::EventCount::Key key = event.prepare_wait();
    if (detail::data_ready(ring)) {
      event.cancel_wait();
      continue;
    }
    // Idle moment: reclaim records of dead consumers (and redeliver them) before sleeping.
    (void)detail::sweep(ring, true);
    if (detail::data_ready(ring)) {
      event.cancel_wait();
      continue;
    }
    // Wait on a specific peer (a producer writing the head record; with redelivery, consumers
    // holding claimed records): wake every period to check it. Otherwise sleep to the deadline.
    bool peer = outcome.pending_owner != 0;
    if (!peer && (ring.flags & detail::kFlagRedelivery) != 0) {
      // relaxed: a hint.
      peer = ring.header->consumer.head.load(std::memory_order_relaxed) !=
             ring.header->reclaim.reclaim.load(std::memory_order_relaxed);
    }
    std::error_code waited;
    if (peer) {
      waited = event.wait_until(key, std::min(*deadline, sync::Clock::now() + kPeerCheckPeriod));
      if (is(waited, errc::timed_out)) check_liveness = true;
    } else if (detail::roles_registered(ring, detail::Role::producer)) {
      // Somebody has sent: wake now and then to see whether any producer still lives.
      waited = event.wait_until(key, std::min(*deadline, sync::Clock::now() + idle_period));
      if (is(waited, errc::timed_out)) {
        check_liveness = true;
        idle_period = std::min<sync::Clock::duration>(idle_period * 2, kIdlePeerCheckPeriod);
      }
    } else if (*deadline == sync::Deadline::max()) {
      waited = event.wait(key);
    } else {
      waited = event.wait_until(key, *deadline);
    }
    if (is(waited, errc::timed_out) && outcome.pending_owner != 0) checked_owner = 0;
  }
}

const sync::Deadline kForever = sync::Deadline::max();
// Batch calls take the reserve / claim lock once per this many messages.
constexpr std::size_t kBatchChunk = 64;

}  // namespace

std::size_t region_size_for(const ChannelConfig& config) noexcept {
  if (!config_valid(config)) return 0;
  return detail::kDataOffset + config.capacity_bytes + detail::role_table_bytes(config.role_slots);
}

std::error_code format(std::span<std::byte> region, const ChannelConfig& config) {
  if (!config_valid(config) || region.data() == nullptr ||
      reinterpret_cast<std::uintptr_t>(region.data()) % 64 != 0 ||
      region.size() < region_size_for(config)) {
    return errc_code(errc::invalid_argument);
  }
  auto* header = new (region.data()) detail::ChannelHeader{};
  detail::Identity& identity = header->identity;
  identity.version = detail::kLayoutVersion;
  identity.signature = detail::kSignature;
  identity.flags =
      (config.spsc ? detail::kFlagSpsc : 0) | (config.redelivery ? detail::kFlagRedelivery : 0);
  identity.capacity = config.capacity_bytes;
  identity.max_message = config.max_message;
  identity.start_position = config.start_position;
  identity.role_slots = config.role_slots;
  const std::uint64_t start = config.start_position;
  // relaxed: nobody uses the region before the magic's release store below.
  header->producer.tail.store(start, std::memory_order_relaxed);
  header->producer.reclaim_seen.store(start, std::memory_order_relaxed);
  header->producer.pending_end.store(start, std::memory_order_relaxed);
  header->consumer.head.store(start, std::memory_order_relaxed);
  header->consumer.pending_head.store(start, std::memory_order_relaxed);
  header->reclaim.reclaim.store(start, std::memory_order_relaxed);
  new (&header->not_empty.event) sync::EventCount(sync::Scope::process);
  new (&header->not_full.event) sync::EventCount(sync::Scope::process);
  std::byte* data = region.data() + detail::kDataOffset;
  // The free marker at the first position (the region should be zero already).
  std::memset(data + (start & (config.capacity_bytes - 1)), 0, detail::kRecordHeader);
  // release: publishes everything above; pairs with the acquire load in Endpoint::open().
  identity.magic.store(detail::kMagic, std::memory_order_release);
  return {};
}

Result<Endpoint> Endpoint::open(std::span<std::byte> region,
                                const sync::Participant* self) noexcept {
  if (region.data() == nullptr || reinterpret_cast<std::uintptr_t>(region.data()) % 64 != 0 ||
      region.size() < detail::kDataOffset) {
    return errc_code(errc::invalid_argument);
  }
  auto* header = reinterpret_cast<detail::ChannelHeader*>(region.data());
  const detail::Identity& identity = header->identity;
  // acquire: pairs with format()'s release store; the fields below are then initialized.
  if (identity.magic.load(std::memory_order_acquire) != detail::kMagic ||
      identity.version != detail::kLayoutVersion || identity.signature != detail::kSignature ||
      (identity.flags & ~detail::kKnownFlags) != 0) {
    return errc_code(errc::layout_mismatch);
  }
  ChannelConfig config;
  config.capacity_bytes = identity.capacity;
  config.max_message = identity.max_message;
  config.start_position = identity.start_position;
  config.role_slots = identity.role_slots;
  if (!config_valid(config) || region.size() < region_size_for(config)) {
    return errc_code(errc::corrupt_segment);
  }
  Endpoint endpoint;
  Ring& ring = endpoint.ring_;
  ring.header = header;
  ring.data = region.data() + detail::kDataOffset;
  ring.capacity = config.capacity_bytes;
  ring.mask = config.capacity_bytes - 1;
  ring.max_message = config.max_message;
  ring.flags = identity.flags;
  ring.self = self;
  if (self != nullptr && self->attached()) ring.self_id = self->id().pack();
  if (self != nullptr && !self->attached()) ring.self = nullptr;
  if (ring.self != nullptr && config.role_slots != 0) {
    // A participant that cannot register would let peers conclude that nobody is left.
    if (self->id().slot >= config.role_slots) return errc_code(errc::invalid_argument);
    ring.role_slots = config.role_slots;
  }
  return endpoint;
}

// ---- Reservation / Message handles ----

namespace detail {
template <bool kWritable>
void RecordHandle<kWritable>::finish() noexcept {
  if (!active()) return;
  if constexpr (kWritable) {
    abandon(ring_, position_);
  } else {
    release(ring_, position_);
  }
  ring_.header = nullptr;
}
template class RecordHandle<true>;
template class RecordHandle<false>;
}  // namespace detail

// ---- sending ----

namespace {
std::error_code send_impl(const Ring& ring, const WaitPolicy& policy,
                          std::span<const std::byte> message,
                          const sync::Deadline* deadline) noexcept {
  if (ring.header == nullptr) return errc_code(errc::invalid_argument);
  detail::ReserveOutcome outcome = reserve_wait(ring, policy, message.size(), deadline);
  if (outcome.error) return outcome.error;
  if (!message.empty()) {
    std::memcpy(detail::payload_at(ring, outcome.position), message.data(), message.size());
  }
  detail::commit(ring, outcome.position);
  return {};
}
}  // namespace

std::error_code Endpoint::send(std::span<const std::byte> message) const noexcept {
  return send_impl(ring_, wait_policy_, message, &kForever);
}
std::error_code Endpoint::try_send(std::span<const std::byte> message) const noexcept {
  return send_impl(ring_, wait_policy_, message, nullptr);
}
std::error_code Endpoint::send_until(std::span<const std::byte> message,
                                     sync::Deadline deadline) const noexcept {
  return send_impl(ring_, wait_policy_, message, &deadline);
}

Result<std::size_t> Endpoint::try_send_batch(
    std::span<const std::span<const std::byte>> messages) const noexcept {
  if (ring_.header == nullptr) return errc_code(errc::invalid_argument);
  detail::register_role(ring_, detail::Role::producer);
  std::size_t sent = 0;
  while (sent < messages.size()) {
    // One reserve-lock acquisition per chunk; copies and commits happen after it is released.
    const std::size_t count = std::min(kBatchChunk, messages.size() - sent);
    std::array<std::uint32_t, kBatchChunk> sizes;
    std::array<std::uint64_t, kBatchChunk> positions;
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t size = messages[sent + i].size();
      // Larger than max_message: try_reserve_batch stops there with message_too_large.
      sizes[i] = static_cast<std::uint32_t>(std::min<std::size_t>(size, ring_.max_message + 1u));
    }
    std::error_code error;
    const std::size_t reserved = detail::try_reserve_batch(
        ring_, std::span(sizes.data(), count), std::span(positions.data(), count), error);
    for (std::size_t i = 0; i < reserved; ++i) {
      const std::span<const std::byte> message = messages[sent + i];
      if (!message.empty()) {
        std::memcpy(detail::payload_at(ring_, positions[i]), message.data(), message.size());
      }
      detail::commit_quietly(ring_, positions[i]);
    }
    if (reserved != 0) detail::notify_committed(ring_);
    sent += reserved;
    if (error) {
      if (sent == 0) return error;
      break;
    }
  }
  return sent;
}

Result<Reservation> Endpoint::reserve(std::size_t size) const noexcept {
  return reserve_until(size, kForever);
}
Result<Reservation> Endpoint::reserve_until(std::size_t size,
                                            sync::Deadline deadline) const noexcept {
  return reserve_impl(size, &deadline);
}
Result<Reservation> Endpoint::try_reserve(std::size_t size) const noexcept {
  return reserve_impl(size, nullptr);
}
Result<Reservation> Endpoint::reserve_impl(std::size_t size,
                                           const sync::Deadline* deadline) const noexcept {
  if (ring_.header == nullptr) return errc_code(errc::invalid_argument);
  detail::ReserveOutcome outcome = reserve_wait(ring_, wait_policy_, size, deadline);
  if (outcome.error) return outcome.error;
  Reservation reservation;
  reservation.ring_ = ring_;
  reservation.position_ = outcome.position;
  reservation.data_ = {detail::payload_at(ring_, outcome.position), size};
  return reservation;
}

std::error_code Endpoint::commit(Reservation& reservation) const noexcept {
  if (!reservation.active() || reservation.ring_.header != ring_.header) {
    return errc_code(errc::invalid_argument);
  }
  detail::commit(reservation.ring_, reservation.position_);
  reservation.ring_.header = nullptr;
  return {};
}

// ---- receiving ----

namespace {
Result<std::size_t> receive_impl(const Ring& ring, const WaitPolicy& policy,
                                 std::span<std::byte> buffer, const sync::Deadline* deadline,
                                 std::size_t* needed = nullptr) noexcept {
  if (ring.header == nullptr) return errc_code(errc::invalid_argument);
  detail::ClaimOutcome outcome = claim_wait(ring, policy, buffer.size(), deadline);
  if (outcome.error) {
    if (needed != nullptr && is(outcome.error, errc::message_too_large)) *needed = outcome.size;
    return outcome.error;
  }
  if (outcome.size != 0) {
    std::memcpy(buffer.data(), detail::payload_at(ring, outcome.position), outcome.size);
  }
  detail::release(ring, outcome.position);
  return std::size_t{outcome.size};
}
}  // namespace

Result<std::size_t> Endpoint::receive(std::span<std::byte> buffer) const noexcept {
  return receive_impl(ring_, wait_policy_, buffer, &kForever);
}
Result<std::size_t> Endpoint::try_receive(std::span<std::byte> buffer) const noexcept {
  return receive_impl(ring_, wait_policy_, buffer, nullptr);
}
Result<std::size_t> Endpoint::receive_until(std::span<std::byte> buffer,
                                            sync::Deadline deadline) const noexcept {
  return receive_impl(ring_, wait_policy_, buffer, &deadline);
}

Result<std::size_t> Endpoint::receive_sized(std::span<std::byte> buffer,
                                            const sync::Deadline* deadline,
                                            std::size_t* needed) const noexcept {
  return receive_impl(ring_, wait_policy_, buffer, deadline, needed);
}

template <class Container>
std::error_code Endpoint::receive_container(Container& out, const sync::Deadline* deadline,
                                            bool wait) const {
  if (ring_.header == nullptr) return errc_code(errc::invalid_argument);
  detail::ClaimOutcome outcome =
      claim_wait(ring_, wait_policy_, ~std::uint64_t{0}, wait ? deadline : nullptr);
  if (outcome.error) return outcome.error;
  try {
    out.resize(outcome.size);
  } catch (...) {
    detail::unclaim(ring_, outcome.position);  // back in the queue: nothing lost
    throw;
  }
  if (outcome.size != 0) {
    std::memcpy(out.data(), detail::payload_at(ring_, outcome.position), outcome.size);
  }
  detail::release(ring_, outcome.position);
  return {};
}

std::error_code Endpoint::receive(std::vector<std::byte>& out) const {
  return receive_container(out, &kForever, true);
}
std::error_code Endpoint::try_receive(std::vector<std::byte>& out) const {
  return receive_container(out, nullptr, false);
}
std::error_code Endpoint::receive_until(std::vector<std::byte>& out,
                                        sync::Deadline deadline) const {
  return receive_container(out, &deadline, true);
}
std::error_code Endpoint::receive_until(std::string& out, sync::Deadline deadline) const {
  return receive_container(out, &deadline, true);
}
std::error_code Endpoint::try_receive(std::string& out) const {
  return receive_container(out, nullptr, false);
}

Result<std::size_t> Endpoint::try_receive_batch(std::span<std::vector<std::byte>> out) const {
  if (ring_.header == nullptr) return errc_code(errc::invalid_argument);
  detail::register_role(ring_, detail::Role::consumer);
  std::size_t received = 0;
  while (received < out.size()) {
    // One claim-lock acquisition per chunk; copies and releases happen after it is released.
    const std::size_t count = std::min(kBatchChunk, out.size() - received);
    std::array<detail::ClaimOutcome, kBatchChunk> claims;
    std::error_code error;
    const std::size_t claimed =
        detail::try_claim_batch(ring_, std::span(claims.data(), count), error);
    for (std::size_t i = 0; i < claimed; ++i) {
      std::vector<std::byte>& message = out[received + i];
      try {
        message.resize(claims[i].size);
      } catch (...) {
        // This one and the rest go back in the queue: nothing lost.
        for (std::size_t j = i; j < claimed; ++j) detail::unclaim(ring_, claims[j].position);
        throw;
      }
      if (claims[i].size != 0) {
        std::memcpy(message.data(), detail::payload_at(ring_, claims[i].position), claims[i].size);
      }
      detail::release(ring_, claims[i].position);
    }
    received += claimed;
    if (error) {
      if (received == 0) return error;
      break;
    }
  }
  return received;
}

Result<Message> Endpoint::peek_impl(const sync::Deadline* deadline) const noexcept {
  if (ring_.header == nullptr) return errc_code(errc::invalid_argument);
  detail::ClaimOutcome outcome = claim_wait(ring_, wait_policy_, ~std::uint64_t{0}, deadline);
  if (outcome.error) return outcome.error;
  Message message;
  message.ring_ = ring_;
  message.position_ = outcome.position;
  message.data_ = {detail::payload_at(ring_, outcome.position), outcome.size};
  return message;
}

Result<Message> Endpoint::peek() const noexcept {
  return peek_impl(&kForever);
}
Result<Message> Endpoint::try_peek() const noexcept {
  return peek_impl(nullptr);
}
Result<Message> Endpoint::peek_until(sync::Deadline deadline) const noexcept {
  return peek_impl(&deadline);
}

std::error_code Endpoint::release(Message& message) const noexcept {
  if (!message.active() || message.ring_.header != ring_.header) {
    return errc_code(errc::invalid_argument);
  }
  detail::release(message.ring_, message.position_);
  message.ring_.header = nullptr;
  return {};
}

std::error_code Endpoint::recover() const noexcept {
  if (ring_.header == nullptr) return errc_code(errc::invalid_argument);
  return detail::sweep(ring_, true);
}

std::uint64_t Endpoint::reclaim_position() const noexcept {
  if (ring_.header == nullptr) return 0;
  // acquire: pairs with the sweep's CAS that advanced it; the states of the records behind it
  // (consumed, aborted, padding) were final before it moved.
  return ring_.header->reclaim.reclaim.load(std::memory_order_acquire);
}

void Endpoint::declare_producer() const noexcept {
  if (ring_.header != nullptr) detail::register_role(ring_, detail::Role::producer);
}
void Endpoint::declare_consumer() const noexcept {
  if (ring_.header != nullptr) detail::register_role(ring_, detail::Role::consumer);
}

PeerState Endpoint::producers() const noexcept {
  return detail::peer_state(ring_, detail::Role::producer);
}
PeerState Endpoint::consumers() const noexcept {
  return detail::peer_state(ring_, detail::Role::consumer);
}
bool Endpoint::producers_gone() const noexcept {
  return ring_.header != nullptr && detail::side_ended(ring_, detail::Role::producer);
}
bool Endpoint::consumers_gone() const noexcept {
  return ring_.header != nullptr && detail::side_ended(ring_, detail::Role::consumer);
}

Statistics Endpoint::statistics() const noexcept {
  Statistics s;
  if (ring_.header == nullptr) return s;
  const detail::ChannelHeader& h = *ring_.header;
  // relaxed: a snapshot for diagnostics; fields may be mutually inconsistent by a few records.
  const std::uint64_t tail = h.producer.tail.load(std::memory_order_relaxed);
  const std::uint64_t head = h.consumer.head.load(std::memory_order_relaxed);
  const std::uint64_t reclaim = h.reclaim.reclaim.load(std::memory_order_relaxed);
  s.reserved_total = h.producer.reserve_count.load(std::memory_order_relaxed);
  s.claimed_total = h.consumer.claim_count.load(std::memory_order_relaxed);
  s.abandoned = h.counters.abandoned.load(std::memory_order_relaxed);
  s.producer_died = h.counters.producer_died.load(std::memory_order_relaxed);
  s.consumer_died = h.counters.consumer_died.load(std::memory_order_relaxed);
  s.redelivered = h.counters.redelivered.load(std::memory_order_relaxed);
  s.lock_takeovers = h.counters.lock_takeovers.load(std::memory_order_relaxed);
  const std::uint64_t done = s.claimed_total - s.redelivered + s.abandoned + s.producer_died;
  s.depth_messages = s.reserved_total > done ? s.reserved_total - done : 0;
  s.depth_bytes = tail - head <= ring_.capacity ? tail - head : 0;
  s.claimed_bytes = head - reclaim <= ring_.capacity ? head - reclaim : 0;
  s.senders_waiting = h.not_full.event.waiters();
  s.receivers_waiting = h.not_empty.event.waiters();
  return s;
}

}  // namespace xproc::channel
