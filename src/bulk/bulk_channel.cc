// BulkChannel (bulk_channel.h): the segment layout (transfer table, header, channel, pool), the
// path choice, the send and receive steps and the pull's completion with its pool fallback.
// The transfer-table half lives in bulk_channel_pull.cc (see bulk_channel_internal.h).
#include "xproc/bulk/bulk_channel.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <new>
#include <sstream>
#include <type_traits>
#include <utility>

#include "bulk_channel_internal.h"
#include "bulk_channel_state.h"
#include "bulk_stream.h"
#include "loan_reclaim.h"
#include "xproc/bulk/pool.h"
#include "xproc/sys/cross_memory.h"
#include "xproc/sys/error.h"

namespace xproc::bulk {

using detail::claim_ring;
using detail::code;
using detail::is;
using detail::kDescriptorRecord;
using detail::kMinStreamChunk;
using detail::kStreamHeader;
using detail::kStreamKind;
using detail::receive_stream;
using detail::reclaim_hook;
using detail::RecordHeader;
using detail::reserve_record;
using detail::RingClaim;
using detail::send_stream;
using detail::StreamRecord;

namespace {

constexpr std::uint32_t kMagic = 0x43425058;  // "XPBC" in memory order
constexpr std::uint32_t kLayoutVersion = 3;   // 2: stream pacing fields; 3: ring streams
constexpr std::uint64_t kHeaderBytes = 64;

// After the transfer table (at round_up_64(its total size) in the body). Written by create()
// before the segment is published, never changed; the magic last (release).
struct BulkHeader {
  std::atomic<std::uint32_t> magic;  // +0  kMagic
  std::uint32_t version;             // +4  kLayoutVersion
  std::uint32_t signature;           // +8  kSignature
  std::uint32_t inline_max;          // +12 0..kMaxInline
  std::uint64_t max_payload;         // +16 <= the pool's largest buffer
  std::uint64_t pull_min;            // +24 kPullNever or >= 1
  std::uint64_t channel_offset;      // +32 from the body's start: header offset + 64
  std::uint64_t channel_size;        // +40 channel::region_size_for(the channel config)
  std::uint64_t pool_offset;         // +48 channel_offset + channel_size, rounded up to 64
  std::uint64_t pool_size;           // +56 region_size_for(the pool config)
};
static_assert(std::is_standard_layout_v<BulkHeader>);
static_assert(sizeof(BulkHeader) == kHeaderBytes);
static_assert(offsetof(BulkHeader, pool_size) == 56);

static_assert(sizeof(Descriptor) == sizeof(detail::PullWire));

constexpr std::uint32_t kSignature = static_cast<std::uint32_t>(sizeof(BulkHeader)) << 16 ^
                                     static_cast<std::uint32_t>(sizeof(RecordHeader)) << 8 ^
                                     static_cast<std::uint32_t>(sizeof(Descriptor)) ^ 0xb0000000u;

constexpr std::uint64_t round_up_64(std::uint64_t value) noexcept {
  return (value + 63) / 64 * 64;
}

std::uint32_t max_message_for(std::uint32_t inline_max) noexcept {
  return static_cast<std::uint32_t>(sizeof(RecordHeader)) +
         std::max<std::uint32_t>(inline_max, sizeof(Descriptor));
}

// The pool of a config: 64 KiB, 1 MiB, 16 MiB, 256 MiB classes below max_payload, then
// max_payload (each + 64 bytes for a stream header); each pool_buffers buffers.
PoolConfig pool_config_for(const BulkChannelConfig& config) {
  PoolConfig pool;
  // Every buffer has room for a stream header in front of the payload.
  const std::uint64_t top = std::max<std::uint64_t>(config.max_payload, 64);
  for (std::uint64_t size = std::uint64_t{64} << 10; size < top; size *= 16) {
    pool.classes.push_back({static_cast<std::uint32_t>(size + kStreamHeader), config.pool_buffers});
  }
  pool.classes.push_back({static_cast<std::uint32_t>(top + kStreamHeader), config.pool_buffers});
  return pool;
}

struct Sizes {
  channel::ChannelConfig channel;
  PoolConfig pool;
  std::uint64_t table_size = 0;
  std::uint64_t header_offset = 0;
  std::uint64_t channel_offset = 0;
  std::uint64_t channel_size = 0;
  std::uint64_t pool_offset = 0;
  std::uint64_t pool_size = 0;
  std::uint64_t total = 0;
};

Sizes sizes_for(const BulkChannelConfig& config, const shm::SegmentOptions& options) {
  if (config.max_payload > kMaxBufferSize - kStreamHeader || config.inline_max > kMaxInline ||
      config.pull_min == 0 || config.pool_buffers == 0 || config.pool_buffers > 1024 ||
      config.transfer_slots == 0) {
    return Sizes{};
  }
  Sizes sizes;
  sizes.channel.capacity_bytes = config.channel_bytes;
  sizes.channel.max_message = max_message_for(config.inline_max);
  sizes.channel.redelivery = true;
  sizes.channel.role_slots = options.participant_capacity;
  sizes.pool = pool_config_for(config);
  sizes.table_size = detail::pull_table_size(config.transfer_slots, options.participant_capacity);
  sizes.channel_size = channel::region_size_for(sizes.channel);
  sizes.pool_size = region_size_for(sizes.pool);
  if (sizes.table_size == 0 || sizes.channel_size == 0 || sizes.pool_size == 0) return Sizes{};
  sizes.header_offset = round_up_64(sizes.table_size);
  sizes.channel_offset = sizes.header_offset + kHeaderBytes;
  sizes.pool_offset = round_up_64(sizes.channel_offset + sizes.channel_size);
  sizes.total = sizes.pool_offset + sizes.pool_size;
  return sizes;
}

std::error_code format_body(std::span<std::byte> body, const BulkChannelConfig& config,
                            const Sizes& sizes, std::uint32_t participant_capacity) {
  if (body.size() < sizes.total) return code(errc::invalid_argument);
  if (std::error_code error =
          detail::pull_table_format(body, config.transfer_slots, participant_capacity)) {
    return error;
  }
  if (std::error_code error =
          channel::format(body.subspan(static_cast<std::size_t>(sizes.channel_offset),
                                       static_cast<std::size_t>(sizes.channel_size)),
                          sizes.channel)) {
    return error;
  }
  if (std::error_code error = format(body.subspan(static_cast<std::size_t>(sizes.pool_offset),
                                                  static_cast<std::size_t>(sizes.pool_size)),
                                     sizes.pool)) {
    return error;
  }
  auto* header = new (body.data() + static_cast<std::size_t>(sizes.header_offset)) BulkHeader{};
  header->version = kLayoutVersion;
  header->signature = kSignature;
  header->inline_max = config.inline_max;
  header->max_payload = config.max_payload;
  header->pull_min = config.pull_min;
  header->channel_offset = sizes.channel_offset;
  header->channel_size = sizes.channel_size;
  header->pool_offset = sizes.pool_offset;
  header->pool_size = sizes.pool_size;
  // release: publishes the fields above and the formatted regions; pairs with wrap()'s acquire.
  header->magic.store(kMagic, std::memory_order_release);
  return {};
}

}  // namespace

std::string_view path_name(BulkPath path) noexcept {
  switch (path) {
    case BulkPath::inline_record:
      return "inline";
    case BulkPath::pool_copy:
      return "pool_copy";
    case BulkPath::pull:
      return "pull";
  }
  return "unknown";
}

std::string PathReport::to_string() const {
  std::ostringstream out;
  out << "inline <= " << inline_max << " B; ";
  if (pull_enabled) {
    out << "pool_copy above, up to " << (pull_min - 1) << " B; pull from " << pull_min
        << " B up to " << max_payload << " B";
  } else {
    out << "pool_copy above, up to " << max_payload << " B; pull off: " << pull_reason
        << "; using pool_copy";
  }
  out << " (sent: " << sent_inline << " inline, " << sent_pool << " pool_copy, " << sent_pull
      << " pull, " << pull_fallbacks << " pull fallbacks; " << sent_ring << " of the pool_copy "
      << "through a ring, " << ring_restarts << " ring restarts)";
  return out.str();
}

namespace detail {

Result<channel::Reservation> reserve_record(const channel::Endpoint& endpoint, std::size_t size,
                                            const sync::Deadline* deadline) noexcept {
  if (deadline == nullptr) return endpoint.try_reserve(size);
  if (*deadline == sync::Deadline::max()) return endpoint.reserve(size);
  return endpoint.reserve_until(size, *deadline);
}

std::error_code reclaim_hook(const void* context) noexcept {
  const auto& state = *static_cast<const BulkChannel::State*>(context);
  return reclaim_or_give_up(state.endpoint, state.pool);
}

}  // namespace detail

namespace {

// LoanChannel's reclaim pass (loan_reclaim.h) over this channel and pool.
Result<std::uint32_t> reclaim_pass(const BulkChannel::State& state) noexcept {
  return detail::reclaim_posted(state.endpoint, state.pool);
}

// Why this process may not be read by its consumers, or "" (the self-checks of the banner).
std::string pull_blocker(const BulkChannel::State& state, const BulkProcessOptions& process) {
  if (state.pull_min == kPullNever) {
    return "pull_min is never (the config's default: a copy through the pool measured faster)";
  }
  if (!process.allow_pull) return "disabled by this process's options";
  if (state.segment.info().creator_uid != geteuid()) {
    return "the segment's creator uid " + std::to_string(state.segment.info().creator_uid) +
           " differs from this process's euid " + std::to_string(geteuid()) +
           ": consumers of another uid cannot read this process";
  }
  if (!sys::dumpable()) {
    return "this process is not dumpable (PR_SET_DUMPABLE 0): only CAP_SYS_PTRACE could read it";
  }
  Result<int> scope = sys::yama_ptrace_scope();
  if (scope && *scope >= 2) {
    return "Yama ptrace_scope=" + std::to_string(*scope) + " (admin only or nobody may read)";
  }
  if (scope && *scope == 1 && !process.allow_any_reader) {
    return "Yama ptrace_scope=1 and no PR_SET_PTRACER (BulkProcessOptions::allow_any_reader off)";
  }
  return {};
}

}  // namespace

BulkChannel::BulkChannel() noexcept = default;
BulkChannel::BulkChannel(BulkChannel&&) noexcept = default;
BulkChannel& BulkChannel::operator=(BulkChannel&&) noexcept = default;
BulkChannel::~BulkChannel() = default;

const channel::Endpoint& BulkChannel::endpoint() const noexcept {
  return state_->endpoint;
}
shm::Segment& BulkChannel::segment() const noexcept {
  return state_->segment;
}

Result<BulkChannel> BulkChannel::wrap(Result<shm::Segment> segment,
                                      const BulkProcessOptions& process) {
  if (!segment) return segment.error();
  if (process.liveness_period <= std::chrono::milliseconds::zero() ||
      (process.stream_chunk != 0 && process.stream_chunk < kMinStreamChunk)) {
    return code(errc::invalid_argument);
  }
  BulkChannel result;
  result.state_ = std::make_unique<State>();
  State& state = *result.state_;
  state.segment = std::move(*segment);
  std::uint64_t table_size = 0;
  Result<detail::PullSidePtr> pull = detail::open_pull_side(state.segment, process, &table_size);
  if (!pull) return pull.error();
  state.pull = std::move(*pull);
  const std::span<std::byte> body = state.segment.body();
  const std::uint64_t header_offset = round_up_64(table_size);
  if (header_offset > body.size() || body.size() - header_offset < kHeaderBytes) {
    return code(errc::layout_mismatch);  // a transfer table alone, no BulkChannel after it
  }
  const auto* header =
      reinterpret_cast<const BulkHeader*>(body.data() + static_cast<std::size_t>(header_offset));
  // acquire: pairs with format_body()'s release store of the magic.
  if (header->magic.load(std::memory_order_acquire) != kMagic ||
      header->version != kLayoutVersion || header->signature != kSignature) {
    return code(errc::layout_mismatch);
  }
  // Untrusted values: each region inside the body, in order, without overlap; limits as create.
  const std::uint64_t channel_offset = header->channel_offset;
  const std::uint64_t channel_size = header->channel_size;
  const std::uint64_t pool_offset = header->pool_offset;
  const std::uint64_t pool_size = header->pool_size;
  if (channel_offset != header_offset + kHeaderBytes || channel_size > body.size() ||
      pool_offset != round_up_64(channel_offset + channel_size) || pool_offset > body.size() ||
      pool_size > body.size() - pool_offset || header->inline_max > kMaxInline ||
      header->max_payload > kMaxBufferSize - kStreamHeader || header->pull_min == 0) {
    return code(errc::corrupt_segment);
  }
  Result<channel::Endpoint> endpoint =
      channel::Endpoint::open(body.subspan(static_cast<std::size_t>(channel_offset),
                                           static_cast<std::size_t>(channel_size)),
                              &state.segment.self());
  if (!endpoint) return endpoint.error();
  Result<PoolView> pool = PoolView::open(
      body.subspan(static_cast<std::size_t>(pool_offset), static_cast<std::size_t>(pool_size)),
      &state.segment.self());
  if (!pool) return pool.error();
  if (endpoint->max_message() != max_message_for(header->inline_max) ||
      pool->max_loan() < header->max_payload + kStreamHeader) {
    return code(errc::corrupt_segment);
  }
  state.endpoint = *endpoint;
  state.pool = *pool;
  state.inline_max = header->inline_max;
  state.max_payload = header->max_payload;
  state.pull_min = header->pull_min;
  state.liveness_period = process.liveness_period;
  state.stream_chunk = process.stream_chunk;
  state.stream_window = process.stream_window;
  state.stream_ring_min = process.stream_ring_min;
  std::string blocker = pull_blocker(state, process);
  if (blocker.empty()) {
    // relaxed: before this object is returned; no other thread sees it yet.
    state.pull_on.store(true, std::memory_order_relaxed);
  } else {
    state.disable_pull(std::move(blocker));
  }
  return result;
}

Result<BulkChannel> BulkChannel::create(std::string_view name, const BulkChannelConfig& config,
                                        const shm::SegmentOptions& options,
                                        const BulkProcessOptions& process) {
  const Sizes sizes = sizes_for(config, options);
  if (sizes.total == 0) return code(errc::invalid_argument);
  return wrap(shm::Segment::create(
                  name, shm::SegmentKind::raw, static_cast<std::size_t>(sizes.total), options,
                  [&](std::span<std::byte> body) {
                    return format_body(body, config, sizes, options.participant_capacity);
                  }),
              process);
}

Result<BulkChannel> BulkChannel::open(std::string_view name, const shm::SegmentOptions& options,
                                      const BulkProcessOptions& process) {
  return wrap(shm::Segment::open(name, shm::SegmentKind::raw, options), process);
}

Result<BulkChannel> BulkChannel::create_anonymous(const BulkChannelConfig& config,
                                                  const shm::SegmentOptions& options,
                                                  const BulkProcessOptions& process) {
  const Sizes sizes = sizes_for(config, options);
  if (sizes.total == 0) return code(errc::invalid_argument);
  return wrap(shm::Segment::create_anonymous(
                  shm::SegmentKind::raw, static_cast<std::size_t>(sizes.total), options,
                  [&](std::span<std::byte> body) {
                    return format_body(body, config, sizes, options.participant_capacity);
                  }),
              process);
}

Result<BulkChannel> BulkChannel::adopt(sys::FileDescriptor fd, const shm::SegmentOptions& options,
                                       const BulkProcessOptions& process) {
  return wrap(shm::Segment::adopt(std::move(fd), shm::SegmentKind::raw, options), process);
}

// --- paths

BulkPath BulkChannel::path_for(std::size_t size) const noexcept {
  const State& state = *state_;
  if (size <= state.inline_max) return BulkPath::inline_record;
  // relaxed: a process-local flag; a send that races disable_pull() may pull once more, and the
  // run-time safety net covers it.
  if (size >= state.pull_min && state.pull_on.load(std::memory_order_relaxed)) {
    return BulkPath::pull;
  }
  return BulkPath::pool_copy;
}

PathReport BulkChannel::path_report() const {
  State& state = *state_;
  PathReport report;
  report.inline_max = state.inline_max;
  report.pull_min = state.pull_min;
  report.max_payload = state.max_payload;
  {
    std::lock_guard<std::mutex> lock(state.mutex);
    // relaxed: changed only under the mutex (disable_pull) or before the channel is shared.
    report.pull_enabled = state.pull_on.load(std::memory_order_relaxed);
    report.pull_reason = report.pull_enabled ? std::string() : state.pull_reason;
  }
  // relaxed (the six): counters of this process, a snapshot; nothing is published with them.
  report.sent_inline = state.sent_inline.load(std::memory_order_relaxed);
  report.sent_pool = state.sent_pool.load(std::memory_order_relaxed);
  report.sent_pull = state.sent_pull.load(std::memory_order_relaxed);
  report.pull_fallbacks = state.pull_fallbacks.load(std::memory_order_relaxed);
  report.sent_ring = state.sent_ring.load(std::memory_order_relaxed);
  report.ring_restarts = state.ring_restarts.load(std::memory_order_relaxed);
  return report;
}

void BulkChannel::disable_pull(std::string_view reason) const {
  state_->disable_pull(std::string(reason));
}

Result<std::uint32_t> BulkChannel::recover() const noexcept {
  return reclaim_pass(*state_);
}

BulkChannelStatistics BulkChannel::statistics() const noexcept {
  const PoolStatistics pool = state_->pool.statistics();
  BulkChannelStatistics stats;
  stats.channel = state_->endpoint.statistics();
  stats.pool_buffers = pool.total;
  stats.pool_free = pool.free;
  stats.pool_reclaimed_dead = pool.reclaimed_dead;
  stats.pool_reclaimed_posted = pool.reclaimed_posted;
  return stats;
}

// --- sending

namespace {

// Sends `payload` inline or through the pool (copy semantics).
std::error_code send_copy(BulkChannel::State& state, std::span<const std::byte> payload,
                          BulkPath path, const sync::Deadline* deadline) noexcept {
  RecordHeader header;
  header.kind = static_cast<std::uint32_t>(path);
  header.length = payload.size();
  if (path == BulkPath::inline_record) {
    Result<channel::Reservation> reservation =
        reserve_record(state.endpoint, sizeof header + payload.size(), deadline);
    if (!reservation) return reservation.error();
    std::byte* out = reservation->data().data();
    std::memcpy(out, &header, sizeof header);
    if (!payload.empty()) std::memcpy(out + sizeof header, payload.data(), payload.size());
    if (std::error_code error = state.endpoint.commit(*reservation)) return error;
    state.sent_inline.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  if (state.stream_chunk != 0 && payload.size() > state.stream_chunk) {
    return send_stream(state, payload, deadline);
  }
  // pool_copy: loan (waiting with the reclaim pass), copy in, then the record (as LoanChannel's
  // S1-S4, loan_channel.h: the record position goes into the buffer's word before `posted`).
  // The payload starts at +64 as in a stream: a consumer of an earlier stream of this buffer
  // (whose producer died or aborted) may still write its hints into the first 64 bytes.
  Result<Loan> loan =
      state.pool.loan_with(payload.size() + kStreamHeader, deadline, &reclaim_hook, &state);
  if (!loan) return loan.error();
  if (!payload.empty()) {
    std::memcpy(loan->data().data() + kStreamHeader, payload.data(), payload.size());
  }
  Result<channel::Reservation> reservation =
      reserve_record(state.endpoint, kDescriptorRecord, deadline);
  if (!reservation) return reservation.error();  // the loan goes back with its destructor
  Result<Descriptor> descriptor = state.pool.post_at(std::move(*loan), reservation->position());
  if (!descriptor) return descriptor.error();  // the reservation is abandoned by its destructor
  header.kind = static_cast<std::uint32_t>(BulkPath::pool_copy);
  std::byte* out = reservation->data().data();
  std::memcpy(out, &header, sizeof header);
  std::memcpy(out + sizeof header, &*descriptor, sizeof(Descriptor));
  if (std::error_code error = state.endpoint.commit(*reservation)) return error;
  state.sent_pool.fetch_add(1, std::memory_order_relaxed);
  return {};
}

}  // namespace

std::error_code BulkChannel::send_impl(std::span<const std::byte> payload,
                                       const sync::Deadline* deadline,
                                       Completion* posted) const noexcept {
  if (!state_) return code(errc::invalid_argument);
  State& state = *state_;
  if (payload.size() > state.max_payload) return code(errc::message_too_large);
  BulkPath path = path_for(payload.size());
  // Only send() and post() pull (a pull's completion is not bounded by a deadline).
  const bool may_pull = deadline != nullptr && *deadline == sync::Deadline::max();
  if (path == BulkPath::pull && !may_pull) path = BulkPath::pool_copy;
  if (path == BulkPath::pull && !sys::dumpable()) {
    state.disable_pull(
        "this process became non-dumpable (PR_SET_DUMPABLE 0) after open: only CAP_SYS_PTRACE "
        "could read it");
    path = BulkPath::pool_copy;
  }
  if (path == BulkPath::pull) {
    detail::PullWire wire{};
    Result<detail::PendingPullPtr> pending = detail::register_pull(*state.pull, payload, wire);
    if (pending) {
      Result<channel::Reservation> reservation =
          reserve_record(state.endpoint, kDescriptorRecord, deadline);
      // On failure the pending transfer is withdrawn by its destructor (nobody saw it).
      if (!reservation) return reservation.error();
      RecordHeader header;
      header.kind = static_cast<std::uint32_t>(BulkPath::pull);
      header.length = payload.size();
      std::byte* out = reservation->data().data();
      std::memcpy(out, &header, sizeof header);
      std::memcpy(out + sizeof header, wire.data(), wire.size());
      if (std::error_code error = state.endpoint.commit(*reservation)) return error;
      state.sent_pull.fetch_add(1, std::memory_order_relaxed);
      Completion completion;
      completion.state_ = &state;
      completion.payload_ = payload;
      completion.path_ = BulkPath::pull;
      completion.pending_ = std::move(*pending);
      if (posted != nullptr) {
        *posted = std::move(completion);
        return {};
      }
      return completion.wait();
    }
    // Every transfer slot busy (limit_reached) or a registration refused: this payload goes
    // through the pool; pull stays on for the next.
    path = BulkPath::pool_copy;
  }
  if (std::error_code error = send_copy(state, payload, path, deadline)) return error;
  if (posted != nullptr) {
    *posted = Completion{};
    posted->path_ = path;
  }
  return {};
}

std::error_code BulkChannel::send(std::span<const std::byte> payload) const noexcept {
  const sync::Deadline forever = sync::Deadline::max();
  return send_impl(payload, &forever, nullptr);
}

std::error_code BulkChannel::try_send(std::span<const std::byte> payload) const noexcept {
  return send_impl(payload, nullptr, nullptr);
}

std::error_code BulkChannel::send_until(std::span<const std::byte> payload,
                                        sync::Deadline deadline) const noexcept {
  return send_impl(payload, &deadline, nullptr);
}

Result<Completion> BulkChannel::post(std::span<const std::byte> payload) const noexcept {
  const sync::Deadline forever = sync::Deadline::max();
  Completion completion;
  if (std::error_code error = send_impl(payload, &forever, &completion)) return error;
  return completion;
}

// --- completion

std::error_code Completion::step(sync::Deadline deadline) noexcept {
  if (pending_ == nullptr) return {};
  BulkChannel::State& state = *state_;
  const auto period = std::chrono::duration_cast<sync::Clock::duration>(
      std::max(state.liveness_period,
               std::chrono::duration_cast<std::chrono::milliseconds>(channel::kPeerCheckPeriod)));
  for (;;) {
    const sync::Clock::time_point now = sync::Clock::now();
    const sync::Deadline wake = deadline - now > period ? now + period : deadline;
    std::error_code result = detail::wait_pull(*pending_, wake);
    if (!result) {
      pending_.reset();
      return {};
    }
    if (is(result, errc::timed_out)) {
      // Nobody finished it yet. A dead consumer's claimed record goes back to the queue with the
      // sweep; when no live participant could still receive, nobody ever will: withdraw.
      (void)state.endpoint.recover();
      if (state.endpoint.consumers_gone() && detail::withdraw_pull(*pending_)) {
        pending_.reset();
        return code(errc::peer_dead);
      }
      if (sync::Clock::now() >= deadline) return code(errc::timed_out);
      continue;
    }
    if (is(result, errc::permission_denied) || is(result, errc::peer_dead)) {
      // The run-time safety net: the consumer could not read us, or died mid-copy (it returned
      // the payload to nobody). Re-send through the pool; with permission_denied stop pulling.
      if (is(result, errc::permission_denied)) {
        state.disable_pull("a consumer's process_vm_readv of this process was refused (" +
                           sys::describe_ptrace_permission(getpid()) + ")");
      }
      pending_.reset();
      state.pull_fallbacks.fetch_add(1, std::memory_order_relaxed);
      path_ = BulkPath::pool_copy;
      const sync::Deadline forever = sync::Deadline::max();
      return send_copy(state, payload_, BulkPath::pool_copy, &forever);
    }
    pending_.reset();
    return result;  // bad_descriptor, corrupt_segment, invalid_argument: no re-send cures these
  }
}

std::error_code Completion::poll() noexcept {
  const std::error_code result = step(sync::Clock::now());
  return is(result, errc::timed_out) ? code(errc::would_block) : result;
}

std::error_code Completion::wait_until(sync::Deadline deadline) noexcept {
  return step(deadline);
}

// --- receiving

namespace {

// Where receive_impl copies a payload: the caller's span, or a vector resized to it.
struct SpanSink {
  std::span<std::byte> into;
  std::size_t* needed = nullptr;
  std::error_code prepare(std::uint64_t length, std::span<std::byte>& out) const noexcept {
    if (length > into.size()) {
      if (needed != nullptr) *needed = static_cast<std::size_t>(length);
      return code(errc::message_too_large);
    }
    out = into.first(static_cast<std::size_t>(length));
    return {};
  }
};

struct VectorSink {
  std::vector<std::byte>& out_vector;
  std::error_code prepare(std::uint64_t length, std::span<std::byte>& out) const {
    out_vector.resize(static_cast<std::size_t>(length));  // may throw: the caller keeps the record
    out = out_vector;
    return {};
  }
};

}  // namespace

template <class Sink>
Result<std::size_t> BulkChannel::receive_impl(const sync::Deadline* deadline, Sink& sink) const {
  if (!state_) return code(errc::invalid_argument);
  State& state = *state_;
  for (;;) {
    channel::Message message;
    {
      std::lock_guard<std::mutex> lock(state.mutex);
      if (state.stash) {
        message = std::move(*state.stash);
        state.stash.reset();
      }
    }
    if (!message.active()) {
      Result<channel::Message> claimed = deadline == nullptr ? state.endpoint.try_peek()
                                         : *deadline == sync::Deadline::max()
                                             ? state.endpoint.peek()
                                             : state.endpoint.peek_until(*deadline);
      if (!claimed) return claimed.error();
      message = std::move(*claimed);
    }
    // The record is untrusted: its kind, length and size must agree before anything is used.
    const std::span<const std::byte> record = message.data();
    RecordHeader header;
    bool valid = record.size() >= sizeof header;
    if (valid) {
      std::memcpy(&header, record.data(), sizeof header);
      const auto kind = static_cast<BulkPath>(header.kind);
      valid =
          header.reserved == 0 && header.length <= state.max_payload &&
          ((kind == BulkPath::inline_record && header.length <= state.inline_max &&
            record.size() == sizeof header + header.length) ||
           ((kind == BulkPath::pool_copy || kind == BulkPath::pull || header.kind == kStreamKind) &&
            record.size() == kDescriptorRecord));
    }
    if (!valid) {
      if (std::error_code error = state.endpoint.release(message)) return error;
      return code(errc::bad_descriptor);
    }
    std::span<std::byte> into;
    std::error_code prepared;
    try {
      prepared = sink.prepare(header.length, into);
    } catch (...) {
      std::lock_guard<std::mutex> lock(state.mutex);
      state.stash = std::move(message);  // kept for the next receive: nothing lost
      throw;
    }
    if (prepared) {
      std::lock_guard<std::mutex> lock(state.mutex);
      state.stash = std::move(message);
      return prepared;
    }
    const std::byte* body = record.data() + sizeof header;
    if (header.kind == kStreamKind) {
      StreamRecord stream;
      std::memcpy(&stream, body, sizeof stream);
      // Copied before the record is released (as pool_copy): a consumer that dies mid-stream
      // leaves the record claimed, and the next consumer starts the stream over.
      RingClaim ring;
      const std::error_code streamed =
          receive_stream(state, message.position(), stream, header.length, into, &ring);
      if (std::error_code error = state.endpoint.release(message)) return error;
      if (!streamed) {
        // A ring is ours only if its verdict is: lost, the producer gave up on it (its deadline
        // or a claimer it saw dead) and sends it again, or it was delivered and not to us.
        if (ring.buffer != nullptr && !claim_ring(ring)) {
          continue;
        }
        return into.size();
      }
      if (is(streamed, errc::peer_dead)) continue;  // skipped: never a torn payload
      return streamed;
    }
    switch (static_cast<BulkPath>(header.kind)) {
      case BulkPath::inline_record: {
        if (!into.empty()) std::memcpy(into.data(), body, into.size());
        if (std::error_code error = state.endpoint.release(message)) return error;
        return into.size();
      }
      case BulkPath::pool_copy: {
        Descriptor descriptor;
        std::memcpy(&descriptor, body, sizeof descriptor);
        // The payload is at +64 of the buffer (send_copy).
        Result<Held> held = descriptor.length == header.length + kStreamHeader
                                ? state.pool.accept_redelivered(descriptor)
                                : Result<Held>(code(errc::bad_descriptor));
        // The buffer is ours (accepted) before the record is released (LoanChannel's K2, K3),
        // and copied out before too: a consumer that dies mid-copy leaves the record claimed,
        // so it is redelivered and the next consumer takes the buffer over.
        if (held && held->size() == into.size() + kStreamHeader && !into.empty()) {
          std::memcpy(into.data(), held->data().data() + kStreamHeader, into.size());
        }
        if (std::error_code error = state.endpoint.release(message)) return error;
        if (!held) {
          // already_returned: a redelivered record whose buffer was freed after its first
          // consumer died holding it: that payload went with the dead consumer. Skip it.
          if (is(held.error(), errc::already_returned)) continue;
          return held.error();
        }
        if (held->size() != into.size() + kStreamHeader) return code(errc::bad_descriptor);
        (void)held->give_back();  // already_returned: a detached view; the bytes are copied
        return into.size();
      }
      case BulkPath::pull: {
        detail::PullWire wire;
        std::memcpy(wire.data(), body, wire.size());
        if (detail::pull_length(wire) != header.length) {
          if (std::error_code error = state.endpoint.release(message)) return error;
          return code(errc::bad_descriptor);
        }
        Result<std::size_t> pulled = into.empty() ? Result<std::size_t>(std::size_t{0})
                                                  : detail::pull_into(*state.pull, wire, into);
        if (std::error_code error = state.endpoint.release(message)) return error;
        if (pulled) {
          if (*pulled != into.size()) return code(errc::bad_descriptor);
          return into.size();
        }
        // Skipped, never returned: already_returned (a redelivered record whose pull finished or
        // failed), not_found (the producer withdrew it), peer_dead (the producer died: its bytes
        // are discarded), permission_denied (the producer re-sends it through the pool),
        // bad_descriptor with this table's tag (a generation that is gone: a redelivered or
        // withdrawn transfer whose slot was reused). Another tag: a forged record, reported.
        if (is(pulled.error(), errc::already_returned) || is(pulled.error(), errc::not_found) ||
            is(pulled.error(), errc::peer_dead) || is(pulled.error(), errc::permission_denied) ||
            (is(pulled.error(), errc::bad_descriptor) &&
             detail::pull_same_table(*state.pull, wire))) {
          continue;
        }
        return pulled.error();
      }
    }
    return code(errc::bad_descriptor);  // unreachable: the kind was validated above
  }
}

Result<std::size_t> BulkChannel::receive_sized(std::span<std::byte> into,
                                               const sync::Deadline* deadline,
                                               std::size_t* needed) const noexcept {
  SpanSink sink{into, needed};
  return receive_impl(deadline, sink);
}

Result<std::size_t> BulkChannel::receive(std::span<std::byte> into) const noexcept {
  const sync::Deadline forever = sync::Deadline::max();
  return receive_sized(into, &forever, nullptr);
}

Result<std::size_t> BulkChannel::try_receive(std::span<std::byte> into) const noexcept {
  return receive_sized(into, nullptr, nullptr);
}

Result<std::size_t> BulkChannel::receive_until(std::span<std::byte> into,
                                               sync::Deadline deadline) const noexcept {
  return receive_sized(into, &deadline, nullptr);
}

std::error_code BulkChannel::receive(std::vector<std::byte>& out) const {
  const sync::Deadline forever = sync::Deadline::max();
  return receive_until(out, forever);
}

std::error_code BulkChannel::try_receive(std::vector<std::byte>& out) const {
  VectorSink sink{out};
  Result<std::size_t> received = receive_impl(nullptr, sink);
  return received ? std::error_code{} : received.error();
}

std::error_code BulkChannel::receive_until(std::vector<std::byte>& out,
                                           sync::Deadline deadline) const {
  VectorSink sink{out};
  Result<std::size_t> received = receive_impl(&deadline, sink);
  return received ? std::error_code{} : received.error();
}

}  // namespace xproc::bulk
