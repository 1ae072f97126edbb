// LoanChannel: the segment layout (a small header, the channel region, the pool region), and the
// send / receive / reclaim steps of loan_channel.h's banner.
#include "xproc/bulk/loan_channel.h"

#include <atomic>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

#include "loan_reclaim.h"

namespace xproc::bulk {

namespace {

constexpr std::uint32_t kMagic = 0x434c5058;  // "XPLC" in memory order
constexpr std::uint32_t kLayoutVersion = 1;
constexpr std::uint64_t kChannelOffset = 64;

// Offset 0 of the segment body. Written by create() before the segment is published, never
// changed; the magic last (release).
struct LoanChannelHeader {
  std::atomic<std::uint32_t> magic;  // +0  kMagic
  std::uint32_t version;             // +4  kLayoutVersion
  std::uint32_t signature;           // +8  kSignature
  std::uint32_t flags;               // +12 0
  std::uint64_t channel_offset;      // +16 kChannelOffset
  std::uint64_t channel_size;        // +24 channel::region_size_for(the channel config)
  std::uint64_t pool_offset;         // +32 channel_offset + channel_size, rounded up to 64
  std::uint64_t pool_size;           // +40 region_size_for(the pool config)
  std::uint8_t padding[16];
};
static_assert(std::is_standard_layout_v<LoanChannelHeader>);
static_assert(sizeof(LoanChannelHeader) == kChannelOffset);
static_assert(offsetof(LoanChannelHeader, pool_size) == 40);

constexpr std::uint32_t kSignature = static_cast<std::uint32_t>(sizeof(LoanChannelHeader)) << 16 ^
                                     static_cast<std::uint32_t>(sizeof(Descriptor)) << 8 ^
                                     static_cast<std::uint32_t>(kChannelOffset);

constexpr std::uint64_t round_up_64(std::uint64_t value) noexcept {
  return (value + 63) / 64 * 64;
}

std::error_code code(errc e) noexcept {
  return make_error_code(e);
}

bool is(std::error_code error, errc e) noexcept {
  return error == make_error_code(e);
}

struct Sizes {
  channel::ChannelConfig channel;
  std::uint64_t channel_size = 0;
  std::uint64_t pool_offset = 0;
  std::uint64_t pool_size = 0;
  std::uint64_t total = 0;
};

Sizes sizes_for(const LoanChannelConfig& config, const shm::SegmentOptions& options) noexcept {
  Sizes sizes;
  sizes.channel = config.channel;
  sizes.channel.max_message = sizeof(Descriptor);
  sizes.channel.role_slots = options.participant_capacity;
  sizes.channel_size = channel::region_size_for(sizes.channel);
  sizes.pool_size = region_size_for(config.pool);
  if (sizes.channel_size == 0 || sizes.pool_size == 0) return Sizes{};
  sizes.pool_offset = round_up_64(kChannelOffset + sizes.channel_size);
  sizes.total = sizes.pool_offset + sizes.pool_size;
  return sizes;
}

std::error_code format_body(std::span<std::byte> body, const LoanChannelConfig& config,
                            const Sizes& sizes) {
  if (body.size() < sizes.total) return code(errc::invalid_argument);
  if (std::error_code error =
          channel::format(body.subspan(kChannelOffset, sizes.channel_size), sizes.channel)) {
    return error;
  }
  if (std::error_code error =
          format(body.subspan(sizes.pool_offset, sizes.pool_size), config.pool)) {
    return error;
  }
  auto* header = new (body.data()) LoanChannelHeader{};
  header->version = kLayoutVersion;
  header->signature = kSignature;
  header->flags = 0;
  header->channel_offset = kChannelOffset;
  header->channel_size = sizes.channel_size;
  header->pool_offset = sizes.pool_offset;
  header->pool_size = sizes.pool_size;
  // release: publishes the fields above (and both formatted regions); pairs with wrap()'s acquire.
  header->magic.store(kMagic, std::memory_order_release);
  return {};
}

}  // namespace

struct LoanChannel::State {
  shm::Segment segment;
  channel::Endpoint endpoint;
  PoolView pool;
};

LoanChannel::LoanChannel() noexcept = default;
LoanChannel::LoanChannel(LoanChannel&&) noexcept = default;
LoanChannel& LoanChannel::operator=(LoanChannel&&) noexcept = default;
LoanChannel::~LoanChannel() = default;

const PoolView& LoanChannel::pool() const noexcept {
  return state_->pool;
}
const channel::Endpoint& LoanChannel::endpoint() const noexcept {
  return state_->endpoint;
}
shm::Segment& LoanChannel::segment() const noexcept {
  return state_->segment;
}

Result<LoanChannel> LoanChannel::wrap(Result<shm::Segment> segment) {
  if (!segment) return segment.error();
  LoanChannel result;
  result.state_ = std::make_unique<State>();
  State& state = *result.state_;
  state.segment = std::move(*segment);
  const std::span<std::byte> body = state.segment.body();
  if (body.size() < sizeof(LoanChannelHeader)) return code(errc::corrupt_segment);
  const auto* header = reinterpret_cast<const LoanChannelHeader*>(body.data());
  // acquire: pairs with format_body()'s release store of the magic.
  if (header->magic.load(std::memory_order_acquire) != kMagic ||
      header->version != kLayoutVersion || header->signature != kSignature || header->flags != 0) {
    return code(errc::layout_mismatch);
  }
  // Untrusted sizes: each region must lie inside the body, in this order, without overlap.
  const std::uint64_t channel_size = header->channel_size;
  const std::uint64_t pool_offset = header->pool_offset;
  const std::uint64_t pool_size = header->pool_size;
  if (header->channel_offset != kChannelOffset || channel_size > body.size() ||
      pool_offset != round_up_64(kChannelOffset + channel_size) || pool_offset > body.size() ||
      pool_size > body.size() - pool_offset) {
    return code(errc::corrupt_segment);
  }
  Result<channel::Endpoint> endpoint = channel::Endpoint::open(
      body.subspan(kChannelOffset, static_cast<std::size_t>(channel_size)), &state.segment.self());
  if (!endpoint) return endpoint.error();
  if (endpoint->max_message() != sizeof(Descriptor)) return code(errc::corrupt_segment);
  Result<PoolView> pool = PoolView::open(
      body.subspan(static_cast<std::size_t>(pool_offset), static_cast<std::size_t>(pool_size)),
      &state.segment.self());
  if (!pool) return pool.error();
  state.endpoint = *endpoint;
  state.pool = *pool;
  return result;
}

Result<LoanChannel> LoanChannel::create(std::string_view name, const LoanChannelConfig& config,
                                        const shm::SegmentOptions& options) {
  const Sizes sizes = sizes_for(config, options);
  if (sizes.total == 0) return code(errc::invalid_argument);
  return wrap(shm::Segment::create(
      name, shm::SegmentKind::pool, static_cast<std::size_t>(sizes.total), options,
      [&](std::span<std::byte> body) { return format_body(body, config, sizes); }));
}

Result<LoanChannel> LoanChannel::open(std::string_view name, const shm::SegmentOptions& options) {
  return wrap(shm::Segment::open(name, shm::SegmentKind::pool, options));
}

Result<LoanChannel> LoanChannel::create_anonymous(const LoanChannelConfig& config,
                                                  const shm::SegmentOptions& options) {
  const Sizes sizes = sizes_for(config, options);
  if (sizes.total == 0) return code(errc::invalid_argument);
  return wrap(shm::Segment::create_anonymous(
      shm::SegmentKind::pool, static_cast<std::size_t>(sizes.total), options,
      [&](std::span<std::byte> body) { return format_body(body, config, sizes); }));
}

Result<LoanChannel> LoanChannel::adopt(sys::FileDescriptor fd, const shm::SegmentOptions& options) {
  return wrap(shm::Segment::adopt(std::move(fd), shm::SegmentKind::pool, options));
}

// --- the reclaim pass

namespace {

// The reclaim pass (loan_reclaim.h) over this channel and pool.
Result<std::uint32_t> reclaim_pass(const LoanChannel::State& state) noexcept {
  return detail::reclaim_posted(state.endpoint, state.pool);
}

std::error_code reclaim_hook(const void* context) noexcept {
  const auto& state = *static_cast<const LoanChannel::State*>(context);
  return detail::reclaim_or_give_up(state.endpoint, state.pool);
}

}  // namespace

Result<std::uint32_t> LoanChannel::recover() const noexcept {
  return reclaim_pass(*state_);
}

LoanChannelStatistics LoanChannel::statistics() const noexcept {
  return {state_->pool.statistics(), state_->endpoint.statistics()};
}

// --- loaning

Result<Loan> LoanChannel::loan_impl(std::size_t size,
                                    const sync::Deadline* deadline) const noexcept {
  return state_->pool.loan_with(size, deadline, &reclaim_hook, state_.get());
}

Result<Loan> LoanChannel::loan(std::size_t size) const noexcept {
  const sync::Deadline forever = sync::Deadline::max();
  return loan_impl(size, &forever);
}

Result<Loan> LoanChannel::try_loan(std::size_t size) const noexcept {
  return loan_impl(size, nullptr);
}

Result<Loan> LoanChannel::loan_until(std::size_t size, sync::Deadline deadline) const noexcept {
  return loan_impl(size, &deadline);
}

// --- sending

std::error_code LoanChannel::send_impl(Loan& loan, const sync::Deadline* deadline) const noexcept {
  const State& state = *state_;
  if (!loan.active()) return code(errc::invalid_argument);
  // S1: a record for the descriptor (waits while the channel is full).
  Result<channel::Reservation> reservation =
      deadline == nullptr ? state.endpoint.try_reserve(sizeof(Descriptor))
      : *deadline == sync::Deadline::max()
          ? state.endpoint.reserve(sizeof(Descriptor))
          : state.endpoint.reserve_until(sizeof(Descriptor), *deadline);
  if (!reservation) return reservation.error();
  // S3 (with S2 after it: the descriptor is only known once post_at() issued it; the record is
  // invisible to consumers until S4 either way): position word, then loaned -> posted.
  // On invalid_argument (a foreign loan) post_at() leaves the loan untouched, with the caller.
  Result<Descriptor> descriptor = state.pool.post_at(std::move(loan), reservation->position());
  if (!descriptor) return descriptor.error();  // the reservation is abandoned by its destructor
  // S2: write the descriptor into the record.
  std::memcpy(reservation->data().data(), &*descriptor, sizeof(Descriptor));
  // S4: publish the record.
  return state.endpoint.commit(*reservation);
}

std::error_code LoanChannel::send(Loan&& loan) const noexcept {
  const sync::Deadline forever = sync::Deadline::max();
  return send_impl(loan, &forever);
}

std::error_code LoanChannel::try_send(Loan&& loan) const noexcept {
  return send_impl(loan, nullptr);
}

std::error_code LoanChannel::send_until(Loan&& loan, sync::Deadline deadline) const noexcept {
  return send_impl(loan, &deadline);
}

// --- receiving

Result<Held> LoanChannel::receive_impl(const sync::Deadline* deadline) const noexcept {
  const State& state = *state_;
  for (;;) {
    // K1: claim the next record.
    Result<channel::Message> message = deadline == nullptr ? state.endpoint.try_peek()
                                       : *deadline == sync::Deadline::max()
                                           ? state.endpoint.peek()
                                           : state.endpoint.peek_until(*deadline);
    if (!message) return message.error();
    // K2: take the buffer (posted -> held by me) while the record is still claimed.
    Result<Held> held = make_error_code(errc::bad_descriptor);
    if (message->data().size() == sizeof(Descriptor)) {
      Descriptor descriptor;
      std::memcpy(&descriptor, message->data().data(), sizeof descriptor);
      held = state.pool.accept_redelivered(descriptor);
    }
    // K3: release the record (only now may a reclaim pass see its position below reclaim).
    if (std::error_code error = state.endpoint.release(*message)) return error;
    if (held) return held;
    // already_returned: a redelivered record whose buffer a survivor freed after its first
    // consumer died holding it; that payload is gone with the dead consumer. Skip it.
    if (!is(held.error(), errc::already_returned)) return held.error();
  }
}

Result<Held> LoanChannel::receive() const noexcept {
  const sync::Deadline forever = sync::Deadline::max();
  return receive_impl(&forever);
}

Result<Held> LoanChannel::try_receive() const noexcept {
  return receive_impl(nullptr);
}

Result<Held> LoanChannel::receive_until(sync::Deadline deadline) const noexcept {
  return receive_impl(&deadline);
}

}  // namespace xproc::bulk
