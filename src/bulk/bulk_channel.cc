// BulkChannel (bulk_channel.h): the segment layout (transfer table, header, channel, pool), the
// path choice, the send and receive steps and the pull's completion with its pool fallback.
// The transfer-table half lives in bulk_channel_pull.cc (see bulk_channel_internal.h).
#include "xproc/bulk/bulk_channel.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <optional>
#include <sstream>
#include <thread>
#include <type_traits>
#include <utility>

#include "bulk_channel_internal.h"
#include "loan_reclaim.h"
#include "xproc/bulk/pool.h"
#include "xproc/sync/detail/spin.h"
#include "xproc/sys/cross_memory.h"
#include "xproc/sys/error.h"
#include "xproc/sys/futex.h"

namespace xproc::bulk {

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

// The record every payload sends through the channel: this header, then the inline payload
// (kind inline), a pool Descriptor (pool_copy) or a transfer Descriptor (pull), 32 bytes each.
struct RecordHeader {
  std::uint32_t kind = 0;      // +0 BulkPath
  std::uint32_t reserved = 0;  // +4 0
  std::uint64_t length = 0;    // +8 payload bytes
};
static_assert(sizeof(RecordHeader) == 16);
constexpr std::size_t kDescriptorRecord = sizeof(RecordHeader) + sizeof(Descriptor);
static_assert(sizeof(Descriptor) == sizeof(detail::PullWire));

// Record kind of a streamed pool_copy payload (BulkPath values are 1..3).
constexpr std::uint32_t kStreamKind = 4;

// The first 64 bytes of a streamed payload's pool buffer (the payload follows). Written by the
// producer, which holds the buffer's loan while it streams (nobody else may take the buffer);
// read by the consumer that claimed the stream's record. Every field is atomic: a consumer of an
// earlier stream of the same buffer (whose producer died) may still look at it.
struct StreamHeader {
  // Chunks published (futex word): 0..n while streaming, n + 1 once the buffer is posted and
  // `descriptor` holds its pool descriptor, kStreamAborted when the producer gave up.
  std::atomic<std::uint32_t> chunks;
  std::atomic<std::uint32_t> waiters;    // consumers about to park on `chunks` (a hint)
  std::atomic<std::uint64_t> stream_id;  // the record's channel position (unique)
  // Whole-buffer streams: the pool Descriptor, valid at chunks == n + 1. Ring streams (the
  // record's window != 0) post no buffer: [0] is the verdict, [1] the chunks started (below).
  std::atomic<std::uint64_t> descriptor[4];
  // Pacing (layout version 2): the claiming consumer's progress, which the producer waits on
  // while it is stream_window chunks ahead. Written by the consumer that holds the record; a
  // consumer of an earlier stream of this buffer may still write them once (a hint: the
  // claimer re-writes both after every chunk and before it parks).
  std::atomic<std::uint32_t> consumed;         // chunks copied by the claimer (futex word)
  std::atomic<std::uint32_t> consumer;         // the claimer's packed ParticipantId, 0: none
  std::atomic<std::uint32_t> producer_parked;  // 1: the producer is about to park on consumed
  std::uint32_t reserved;
};
static_assert(sizeof(StreamHeader) == 64);
static_assert(sizeof(Descriptor) == sizeof(std::uint64_t) * 4);
constexpr std::size_t kStreamHeader = sizeof(StreamHeader);
constexpr std::uint32_t kStreamAborted = ~std::uint32_t{0};
constexpr std::uint32_t kMinStreamChunk = 4096;

// A ring stream's verdict (docs/layout/bulk_channel.md, "Ring streams"): the stream id with its
// state in the low bits (channel positions are 16-aligned). Open until a compare-exchange
// decides it: the consumer's (delivered, or aborted when its copy was overwritten) or the
// producer's (aborted: deadline, every consumer gone, or its claimer died).
constexpr std::uint64_t kVerdictOpen = 1;
constexpr std::uint64_t kVerdictDelivered = 2;
constexpr std::uint64_t kVerdictAborted = 3;
std::atomic<std::uint64_t>& verdict(StreamHeader& stream) noexcept {
  return stream.descriptor[0];
}
// Chunks the producer began to write: chunk j overwrites slot j mod window once this is j + 1.
std::atomic<std::uint64_t>& started(StreamHeader& stream) noexcept {
  return stream.descriptor[1];
}

// The record body of a stream (after the RecordHeader; 32 bytes like the descriptors).
struct StreamRecord {
  std::uint32_t size_class = 0;  // the buffer's class
  std::uint32_t chunk = 0;       // chunk bytes (>= kMinStreamChunk)
  std::uint64_t offset = 0;      // the buffer's offset from the pool region's start
  std::uint32_t producer = 0;    // packed ParticipantId of the producer
  std::uint32_t window = 0;      // ring slots (layout version 3); 0: the whole payload's buffer
  std::uint64_t reserved2 = 0;   // 0
};
static_assert(sizeof(StreamRecord) == sizeof(Descriptor));

constexpr std::uint32_t kSignature = static_cast<std::uint32_t>(sizeof(BulkHeader)) << 16 ^
                                     static_cast<std::uint32_t>(sizeof(RecordHeader)) << 8 ^
                                     static_cast<std::uint32_t>(sizeof(Descriptor)) ^ 0xb0000000u;

constexpr std::uint64_t round_up_64(std::uint64_t value) noexcept {
  return (value + 63) / 64 * 64;
}

std::error_code code(errc e) noexcept {
  return make_error_code(e);
}

bool is(std::error_code error, errc e) noexcept {
  return error == make_error_code(e);
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

Result<channel::Reservation> reserve_record(const channel::Endpoint& endpoint, std::size_t size,
                                            const sync::Deadline* deadline) noexcept {
  if (deadline == nullptr) return endpoint.try_reserve(size);
  if (*deadline == sync::Deadline::max()) return endpoint.reserve(size);
  return endpoint.reserve_until(size, *deadline);
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

namespace {

// LoanChannel's reclaim pass (loan_reclaim.h) over this channel and pool.
Result<std::uint32_t> reclaim_pass(const BulkChannel::State& state) noexcept {
  return detail::reclaim_posted(state.endpoint, state.pool);
}

std::error_code reclaim_hook(const void* context) noexcept {
  const auto& state = *static_cast<const BulkChannel::State*>(context);
  return detail::reclaim_or_give_up(state.endpoint, state.pool);
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

// Wakes consumers parked on a stream's chunk counter, after a release store to it.
void wake_stream(StreamHeader& stream) noexcept {
  // seq_cst fence: the store-load "publish chunks, then look for parked consumers" against a
  // consumer's "announce in waiters, fence, re-check chunks" (wait_stream): either it sees our
  // store or we see its announcement.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // relaxed: ordered by the fence above; a hint (a stale count only costs a futex call).
  if (stream.waiters.load(std::memory_order_relaxed) != 0) {
    (void)sys::futex_wake(stream.chunks, std::numeric_limits<int>::max(),
                          sys::FutexScope::process_shared);
  }
}

// Spin rounds (spin_until: up to 64 pauses each, ~0.2 ms in all) a paced producer waits before
// it parks: in steady state the consumer is one chunk's copy (tens of microseconds) behind.
constexpr std::uint32_t kPaceSpinRounds = 64;
// A parked producer looks at its claimer every kPeerCheckPeriod, doubling up to this many.
constexpr int kPaceMaxPeriods = 8;

// Whether a producer that published `published` chunks may copy the next one: the claimer has
// copied more than published - window (a count above `published` is a stale writer's: go on).
bool within_window(std::uint32_t consumed, std::uint32_t published, std::uint32_t window) noexcept {
  return consumed >= published || published - consumed < window;
}

// What a producer waiting on its stream's claimer saw (await_claimer).
enum class Awaited { ready, dead_claimer, timed_out, peer_dead };

// A producer's wait on the consumer copying its stream (docs/layout/bulk_channel.md, "Pacing"):
// until ready() (which reads `consumed` or the verdict with acquire loads) it spins, then parks
// on `consumed` for kPeerCheckPeriod, doubling up to 8 x kPeerCheckPeriod while nothing changes
// (the claim, every chunk and a ring's verdict wake it when it announced the park). After each
// period without progress it runs the channel's sweep (a dead claimer's record is redelivered;
// the next claimer starts the stream over) and looks at the claimer: not alive (dead, or an id
// no table issued) and stop_at_dead_claimer: dead_claimer; not alive or none, and every consumer
// gone: peer_dead. timed_out at the deadline.
template <class Ready>
Awaited await_claimer(const BulkChannel::State& state, StreamHeader& stream, Ready ready,
                      sync::Deadline deadline, bool stop_at_dead_claimer) noexcept {
  if (sync::detail::spin_until(ready, kPaceSpinRounds)) return Awaited::ready;
  // The timed wakes only look at the claimer's liveness, so their period doubles while nothing
  // changes (a producer waiting for a busy consumer to claim costs few wakes).
  sync::Clock::duration period = channel::kPeerCheckPeriod;
  const sync::Clock::duration max_period = kPaceMaxPeriods * period;
  for (;;) {
    const sync::Clock::time_point now = sync::Clock::now();
    if (now >= deadline) return Awaited::timed_out;
    const sync::Deadline wake = deadline - now > period ? now + period : deadline;
    period = std::min(2 * period, max_period);
    // relaxed: ordered by the fence below.
    stream.producer_parked.store(1, std::memory_order_relaxed);
    // seq_cst fence: "announce the park, then re-check consumed" against publish_progress()'s
    // "store consumed, fence, look for the announcement": it wakes us or we see its progress.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // acquire: pairs with publish_progress()'s release store (a ring's verdict comes before it).
    const std::uint32_t seen = stream.consumed.load(std::memory_order_acquire);
    if (!ready()) {
      (void)sys::futex_wait(stream.consumed, seen, sys::FutexScope::process_shared, wake);
    }
    // relaxed: a hint; a stale 1 only costs the consumer a futex wake.
    stream.producer_parked.store(0, std::memory_order_relaxed);
    if (ready()) return Awaited::ready;
    // relaxed: a hint; the claimer re-writes it after every chunk and before it parks.
    const std::uint32_t claimer = stream.consumer.load(std::memory_order_relaxed);
    bool live_claimer = false;
    if (claimer != 0) {
      Result<bool> alive = state.segment.self().is_alive(sync::ParticipantId::unpack(claimer));
      live_claimer = alive && *alive;  // an id no table issued (a hostile writer): nobody
    }
    // The sweep puts a dead claimer's record back, even when a stale writer's live id hides the
    // dead claimer from the check above.
    (void)state.endpoint.recover();
    if (!live_claimer && claimer != 0 && stop_at_dead_claimer) return Awaited::dead_claimer;
    if (!live_claimer && state.endpoint.consumers_gone()) return Awaited::peer_dead;
  }
}

// send_stream's pacing, before it copies chunk `published`: waits while it is stream_window
// chunks ahead of the stream's claimer (or of nobody, before a claim); a dead claimer's record is
// redelivered and pacing restarts against the next claimer (await_claimer).
// {} go on; *unpaced set: go on without pacing for the rest of the stream (try_send, which never
// parks, after its spin); timed_out (the deadline passed) or peer_dead (every consumer is gone):
// the caller aborts the stream.
std::error_code pace(const BulkChannel::State& state, StreamHeader& stream, std::uint32_t published,
                     const sync::Deadline* deadline, bool* unpaced) noexcept {
  const std::uint32_t window = state.stream_window;
  // acquire: pairs with publish_progress()'s release store (nothing of the whole-buffer stream
  // depends on it: the producer never rewrites a chunk of a live stream).
  auto caught_up = [&] {
    return within_window(stream.consumed.load(std::memory_order_acquire), published, window);
  };
  if (deadline == nullptr) {
    if (!sync::detail::spin_until(caught_up, kPaceSpinRounds)) *unpaced = true;
    return {};
  }
  switch (await_claimer(state, stream, caught_up, *deadline, false)) {
    case Awaited::ready:
    case Awaited::dead_claimer:  // not asked for: await_claimer goes on waiting
      return {};
    case Awaited::timed_out:
      return code(errc::timed_out);
    case Awaited::peer_dead:
      return code(errc::peer_dead);
  }
  return {};
}

// The streamed pool copy (docs/layout/bulk_channel.md, "Streams"):
//   T1) loan a buffer of length + 64 (the loan is ours until T5: nobody else may take it);
//   T2) reserve the record (position p); write the stream header (chunks 0, stream_id p);
//   T3) commit the record (release: publishes the header to the consumer that claims it);
//   T4) copy chunk by chunk, each followed by a release store of the chunk count and a wake;
//       before each chunk, pace(): never more than stream_window chunks ahead of the claimer;
//   T5) post the buffer at p (loaned -> posted), write its descriptor into the header, store
//       chunks = n + 1 (release) and wake.
// Pacing gives up (timed_out: send_until's deadline; peer_dead: every consumer gone): chunks =
// aborted, the loan goes back; the consumer skips the record: the payload is not delivered.
// Death before T3: record aborted, loan reclaimed (as send_copy). Between T3 and T5: the loan is
// reclaimed; the consumer sees the producer dead (or the buffer's stream_id changed) and skips
// the record. After T5: a posted buffer at p, taken by the consumer that holds p (it releases p
// only after it saw n + 1, so p stays above the reclaim position while we write the header).
std::error_code send_stream(BulkChannel::State& state, std::span<const std::byte> payload,
                            const sync::Deadline* deadline) noexcept {
  Result<Loan> loan =
      state.pool.loan_with(payload.size() + kStreamHeader, deadline, &reclaim_hook, &state);
  if (!loan) return loan.error();
  Result<channel::Reservation> reservation =
      reserve_record(state.endpoint, kDescriptorRecord, deadline);
  if (!reservation) return reservation.error();  // the loan goes back with its destructor
  const std::uint64_t position = reservation->position();
  std::byte* const buffer = loan->data().data();
  auto& stream = *reinterpret_cast<StreamHeader*>(buffer);
  // relaxed (three): published by the commit below (release; the claimer acquires it). A
  // consumer of an earlier stream of this buffer acquires `chunks` of our later release stores
  // and then sees our stream_id: it skips.
  stream.chunks.store(0, std::memory_order_relaxed);
  stream.waiters.store(0, std::memory_order_relaxed);
  stream.stream_id.store(position, std::memory_order_relaxed);
  stream.consumed.store(0, std::memory_order_relaxed);
  stream.consumer.store(0, std::memory_order_relaxed);
  stream.producer_parked.store(0, std::memory_order_relaxed);
  RecordHeader header;
  header.kind = kStreamKind;
  header.length = payload.size();
  StreamRecord body;
  body.size_class = loan->size_class();
  body.chunk = state.stream_chunk;
  body.offset = static_cast<std::uint64_t>(buffer - state.pool.ref().base);
  body.producer = state.segment.self().id().pack();
  std::byte* out = reservation->data().data();
  std::memcpy(out, &header, sizeof header);
  std::memcpy(out + sizeof header, &body, sizeof body);
  if (std::error_code error = state.endpoint.commit(*reservation)) return error;
  std::byte* const data = buffer + kStreamHeader;
  const std::size_t chunk = state.stream_chunk;
  std::uint32_t published = 0;
  bool unpaced = state.stream_window == 0;
  for (std::size_t done = 0; done < payload.size(); done += chunk) {
    if (!unpaced && published >= state.stream_window) {
      if (std::error_code error = pace(state, stream, published, deadline, &unpaced)) {
        // release: the consumer stops waiting and skips the record; the loan goes back with its
        // destructor (a consumer still copying reads a reused buffer's bytes and discards them:
        // it sees the abort or the new stream id). The payload is not delivered.
        stream.chunks.store(kStreamAborted, std::memory_order_release);
        wake_stream(stream);
        return error;
      }
    }
    const std::size_t bytes = std::min(chunk, payload.size() - done);
    std::memcpy(data + done, payload.data() + done, bytes);
    // release: publishes the chunk's bytes; pairs with wait_stream()'s acquire load.
    stream.chunks.store(++published, std::memory_order_release);
    wake_stream(stream);
  }
  Result<Descriptor> descriptor = state.pool.post_at(std::move(*loan), position);
  if (!descriptor) {
    // release: the consumer stops waiting and skips the record (the loan went back or was never
    // ours: already_returned).
    stream.chunks.store(kStreamAborted, std::memory_order_release);
    wake_stream(stream);
    return descriptor.error();
  }
  std::uint64_t words[4];
  std::memcpy(words, &*descriptor, sizeof words);
  // relaxed (four): published by the release store of n + 1 below.
  for (std::size_t i = 0; i < 4; ++i)
    stream.descriptor[i].store(words[i], std::memory_order_relaxed);
  // release: publishes the descriptor; pairs with wait_stream()'s acquire load.
  stream.chunks.store(published + 1, std::memory_order_release);
  wake_stream(stream);
  state.sent_pool.fetch_add(1, std::memory_order_relaxed);
  return {};
}

// Whether send_copy streams `size` bytes through a ring (BulkProcessOptions::stream_ring_min):
// only a send that may wait (a ring's send returns once a consumer took the payload), and only
// a payload that spans more than the window.
bool uses_ring(const BulkChannel::State& state, std::size_t size,
               const sync::Deadline* deadline) noexcept {
  if (deadline == nullptr || state.stream_window == 0 || state.stream_chunk == 0 ||
      size < state.stream_ring_min) {
    return false;
  }
  const std::uint64_t chunks = (size + state.stream_chunk - 1) / state.stream_chunk;
  return chunks > state.stream_window;
}

// The outcome of one ring stream (send_ring).
enum class RingOutcome { delivered, restart, timed_out, peer_dead, failed };  // failed: *error

// Decides an open ring stream against the consumer: compare-exchange open -> aborted. Lost to a
// consumer's delivered: delivered; to a consumer's abort: restart; won: `won` (the consumers
// skip the record: chunks := aborted wakes the waiting ones).
RingOutcome abort_ring(StreamHeader& stream, std::uint64_t position, RingOutcome won) noexcept {
  std::uint64_t expected = position | kVerdictOpen;
  // acq_rel: release, the abort is seen by the consumer's compare-exchange (it then discards its
  // copy); acquire, a lost race reads the consumer's delivered, after whose release every read
  // of the ring was done (the loan may go back to the pool).
  if (!verdict(stream).compare_exchange_strong(expected, position | kVerdictAborted,
                                               std::memory_order_acq_rel,
                                               std::memory_order_acquire)) {
    return expected == (position | kVerdictDelivered) ? RingOutcome::delivered
                                                      : RingOutcome::restart;
  }
  // release: consumers waiting for a chunk stop and skip the record.
  stream.chunks.store(kStreamAborted, std::memory_order_release);
  wake_stream(stream);
  return won;
}

// One ring stream of `payload` through the loaned `buffer` (docs/layout/bulk_channel.md, "Ring
// streams"):
//   G1) reserve a record (position p); write the header: stream_id p first, chunks 0, consumed
//       0, consumer 0, verdict p|open, started 0; a release fence (a consumer of an earlier
//       stream of this buffer that copies our bytes sees our stream_id);
//   G2) commit the record (release: publishes the header to its claimer);
//   G3) per chunk k: once k >= window, wait until the claimer copied chunk k - window (consumed
//       > k - window; a verdict ends the wait); started := k + 1, release fence, copy into slot k
//       mod window, chunks := k + 1 (release), wake;
//   G4) wait for the verdict: the consumer's compare-exchange to delivered after it copied every
//       chunk and released the record.
// While waiting: the deadline, every consumer gone, or (once a slot was overwritten) a dead
// claimer make us decide the verdict ourselves (abort_ring). A consumer that found its copy
// overwritten aborts it itself. An aborted stream is sent again as a new record (restart) unless
// the deadline or the consumers' end stopped it.
RingOutcome ring_once(BulkChannel::State& state, std::span<const std::byte> payload,
                      std::byte* buffer, std::uint32_t size_class, sync::Deadline deadline,
                      std::error_code* error) noexcept {
  auto& stream = *reinterpret_cast<StreamHeader*>(buffer);
  std::byte* const slots = buffer + kStreamHeader;
  const std::uint32_t window = state.stream_window;
  const std::size_t chunk = state.stream_chunk;
  Result<channel::Reservation> reservation =
      reserve_record(state.endpoint, kDescriptorRecord, &deadline);
  if (!reservation) {
    *error = reservation.error();
    return RingOutcome::failed;
  }
  const std::uint64_t position = reservation->position();
  // relaxed (seven): published by the commit below (release; the claimer acquires it). The
  // fence orders them before this stream's first bytes for a consumer of an earlier stream of
  // this buffer, which re-checks stream_id after an acquire fence (receive_ring).
  stream.stream_id.store(position, std::memory_order_relaxed);
  stream.chunks.store(0, std::memory_order_relaxed);
  stream.waiters.store(0, std::memory_order_relaxed);
  stream.consumed.store(0, std::memory_order_relaxed);
  stream.consumer.store(0, std::memory_order_relaxed);
  stream.producer_parked.store(0, std::memory_order_relaxed);
  verdict(stream).store(position | kVerdictOpen, std::memory_order_relaxed);
  started(stream).store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  RecordHeader header;
  header.kind = kStreamKind;
  header.length = payload.size();
  StreamRecord body;
  body.size_class = size_class;
  body.chunk = static_cast<std::uint32_t>(chunk);
  body.offset = static_cast<std::uint64_t>(buffer - state.pool.ref().base);
  body.producer = state.segment.self().id().pack();
  body.window = window;
  std::byte* out = reservation->data().data();
  std::memcpy(out, &header, sizeof header);
  std::memcpy(out + sizeof header, &body, sizeof body);
  if (std::error_code failed = state.endpoint.commit(*reservation)) {
    *error = failed;
    return RingOutcome::failed;
  }
  // acquire (both): pair with the consumer's release compare-exchange and release store of
  // consumed: its reads of a slot happen before we overwrite it, or before the loan goes back.
  auto decided = [&] {
    return verdict(stream).load(std::memory_order_acquire) != (position | kVerdictOpen);
  };
  // The outcome once the wait below ended otherwise than with a free slot.
  auto settle = [&](Awaited awaited) {
    switch (awaited) {
      case Awaited::ready:  // decided by the consumer
        break;
      case Awaited::dead_claimer:
        return abort_ring(stream, position, RingOutcome::restart);
      case Awaited::timed_out:
        return abort_ring(stream, position, RingOutcome::timed_out);
      case Awaited::peer_dead:
        return abort_ring(stream, position, RingOutcome::peer_dead);
    }
    // acquire: as in decided().
    return verdict(stream).load(std::memory_order_acquire) == (position | kVerdictDelivered)
               ? RingOutcome::delivered
               : RingOutcome::restart;
  };
  const std::uint64_t chunks = (payload.size() + chunk - 1) / chunk;
  for (std::uint64_t k = 0; k < chunks; ++k) {
    if (k >= window) {
      auto slot_free = [&] {
        return decided() || stream.consumed.load(std::memory_order_acquire) > k - window;
      };
      // A dead claimer before any slot was overwritten (k == window): its record is
      // redelivered and the next claimer starts over; after (k > window) nobody can.
      const Awaited awaited = await_claimer(state, stream, slot_free, deadline, k > window);
      if (awaited != Awaited::ready || decided()) return settle(awaited);
    }
    // relaxed + release fence: a seqlock's write side. A reader of slot k mod window that copies
    // any byte of chunk k then sees started >= k + 1 after its acquire fence (receive_ring).
    started(stream).store(k + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    const std::size_t done = static_cast<std::size_t>(k) * chunk;
    const std::size_t bytes = std::min(chunk, payload.size() - done);
    std::memcpy(slots + static_cast<std::size_t>(k % window) * chunk, payload.data() + done, bytes);
    // release: publishes the chunk's bytes; pairs with wait_stream()'s acquire load.
    stream.chunks.store(static_cast<std::uint32_t>(k + 1), std::memory_order_release);
    wake_stream(stream);
  }
  return settle(await_claimer(state, stream, decided, deadline, true));
}

// send_copy's ring stream: loans a window-sized buffer and sends the payload through it, again
// as a new record each time a stream is aborted by a dead or overwritten claimer (ring_once).
std::error_code send_ring(BulkChannel::State& state, std::span<const std::byte> payload,
                          sync::Deadline deadline) noexcept {
  const std::size_t ring_bytes = std::size_t{state.stream_window} * state.stream_chunk;
  Result<Loan> loan =
      state.pool.loan_with(ring_bytes + kStreamHeader, &deadline, &reclaim_hook, &state);
  if (!loan) return loan.error();
  for (;;) {
    std::error_code error;
    const RingOutcome outcome =
        ring_once(state, payload, loan->data().data(), loan->size_class(), deadline, &error);
    switch (outcome) {
      case RingOutcome::delivered:
        state.sent_pool.fetch_add(1, std::memory_order_relaxed);
        state.sent_ring.fetch_add(1, std::memory_order_relaxed);
        return {};  // the loan goes back with its destructor: nobody reads the ring any more
      case RingOutcome::restart:
        state.ring_restarts.fetch_add(1, std::memory_order_relaxed);
        continue;
      case RingOutcome::timed_out:
        return code(errc::timed_out);
      case RingOutcome::peer_dead:
        return code(errc::peer_dead);
      case RingOutcome::failed:
        return error;
    }
  }
}

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
    if (uses_ring(state, payload.size(), deadline)) return send_ring(state, payload, *deadline);
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

namespace {

// The claimer's progress (receive_stream): after it claimed the stream (0), after each chunk it
// copied, and before it parks (so a stale writer's value never stalls the producer for long).
void publish_progress(StreamHeader& stream, std::uint32_t self, std::uint32_t copied) noexcept {
  // relaxed: a hint; ordered against the producer's park by the fence.
  stream.consumer.store(self, std::memory_order_relaxed);
  // release: our copies of the chunks before happen before the producer's acquire of consumed
  // (a ring's producer then overwrites their slots); ordered against its park by the fence.
  stream.consumed.store(copied, std::memory_order_release);
  // seq_cst fence: "store consumed, then look for a parked producer" against pace()'s "announce
  // producer_parked, fence, re-check consumed": either it sees our store or we see its flag.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // relaxed: ordered by the fence above.
  if (stream.producer_parked.load(std::memory_order_relaxed) != 0) {
    (void)sys::futex_wake(stream.consumed, 1, sys::FutexScope::process_shared);
  }
}

// Waits until a stream's chunk counter reaches `target` (send_stream): spins (yielding), then
// parks on the counter for at most channel::kPeerCheckPeriod at a time and checks that the
// producer lives. {} when reached; errc::peer_dead when the stream will never get there (the
// producer died or gave up, or the buffer now carries another stream): the caller skips it.
std::error_code wait_stream(const BulkChannel::State& state, StreamHeader& stream,
                            std::uint32_t target, std::uint64_t position,
                            sync::ParticipantId producer, std::uint32_t self) noexcept {
  constexpr int kSpinYields = 64;
  // relaxed: called after an acquire load of `chunks` that a later stream's release stores
  // would have published its stream_id with.
  auto same_stream = [&] { return stream.stream_id.load(std::memory_order_relaxed) == position; };
  for (int round = 0;; ++round) {
    // acquire: pairs with the producer's release stores of `chunks` (send_stream T4, T5).
    std::uint32_t seen = stream.chunks.load(std::memory_order_acquire);
    if (seen == kStreamAborted) return code(errc::peer_dead);
    if (seen >= target) return same_stream() ? std::error_code{} : code(errc::peer_dead);
    if (round < kSpinYields) {
      std::this_thread::yield();
      continue;
    }
    // Before parking: our progress again (target - 1 chunks copied), in case a stale writer
    // overwrote it while the producer paces on it.
    publish_progress(stream, self, target - 1);
    // relaxed: ordered by the fence below (wake_stream's pairing).
    stream.waiters.fetch_add(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // acquire: as above.
    seen = stream.chunks.load(std::memory_order_acquire);
    if (seen != kStreamAborted && seen < target) {
      (void)sys::futex_wait(stream.chunks, seen, sys::FutexScope::process_shared,
                            sync::Clock::now() + channel::kPeerCheckPeriod);
    }
    // relaxed: a hint; a count left behind by a consumer of an earlier stream (the producer
    // resets it) only costs the producer futex calls.
    stream.waiters.fetch_sub(1, std::memory_order_relaxed);
    if (!same_stream()) return code(errc::peer_dead);
    Result<bool> alive = state.segment.self().is_alive(producer);
    if (!alive) return code(errc::bad_descriptor);  // an id this segment cannot have issued
    if (!*alive) {
      // It may have finished just before it died: one more look.
      // acquire: as above.
      seen = stream.chunks.load(std::memory_order_acquire);
      if (seen != kStreamAborted && seen >= target && same_stream()) return {};
      return code(errc::peer_dead);
    }
  }
}

// A ring stream the consumer copied whole: it decides the verdict after it released the record
// (so a consumer that dies before the release leaves the verdict open and its producer sends
// the payload again; decide_ring).
struct RingClaim {
  StreamHeader* stream = nullptr;
  std::uint64_t position = 0;
};

// The consumer's compare-exchange of a ring's verdict from open to `to` (delivered, or aborted:
// its copy was overwritten), then the producer's wake. Nothing is written into the header
// after it: the producer may have given the buffer back and a new stream may use it. true when
// ours decided.
bool decide_ring(StreamHeader& stream, std::uint64_t position, std::uint64_t to) noexcept {
  std::uint64_t expected = position | kVerdictOpen;
  // seq_cst: the store-load "decide, then look for a parked producer" against await_claimer's
  // "announce the park, fence, re-check the verdict"; release within it: our reads of the ring
  // happen before the producer's acquire of the verdict (it then gives the buffer back).
  const bool decided = verdict(stream).compare_exchange_strong(
      expected, position | to, std::memory_order_seq_cst, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // relaxed: ordered by the fence; a hint (a wake of a buffer reused since is only spurious).
  if (stream.producer_parked.load(std::memory_order_relaxed) != 0) {
    (void)sys::futex_wake(stream.consumed, 1, sys::FutexScope::process_shared);
  }
  return decided;
}

// The consumer's side of a stream whose record (at `position`) it holds: copies each chunk into
// `into` (exactly `length` bytes) as it is published. A whole-buffer stream: then takes the
// posted buffer and gives it back. A ring: checks after each chunk that its slot was not
// overwritten while it copied, and fills *ring: the caller decides the verdict after it released
// the record (decide_ring). {} delivered (a ring: copied, to be decided); peer_dead: skip the
// record (the producer died or gave up mid-stream, or the ring was overwritten; the bytes in
// `into` are garbage); bad_descriptor: the record names no stream buffer of this pool.
std::error_code receive_stream(BulkChannel::State& state, std::uint64_t position,
                               const StreamRecord& body, std::uint64_t length,
                               std::span<std::byte> into, RingClaim* ring) noexcept {
  const detail::PoolRef& ref = state.pool.ref();
  if (body.size_class >= ref.class_count || body.chunk < kMinStreamChunk || body.reserved2 != 0) {
    return code(errc::bad_descriptor);
  }
  const std::uint64_t chunks = (length + body.chunk - 1) / body.chunk;
  // A ring holds `window` chunks and the payload spans more; a whole-buffer stream all of it.
  const std::uint64_t in_buffer =
      body.window == 0 ? length : std::uint64_t{body.window} * body.chunk;
  const detail::PoolRef::Class& entry = ref.classes[body.size_class];
  if (body.offset < entry.data_offset || (body.offset - entry.data_offset) % entry.stride != 0 ||
      (body.offset - entry.data_offset) / entry.stride >= entry.count ||
      in_buffer + kStreamHeader > entry.buffer_size ||
      (body.window != 0 && chunks <= body.window)) {
    return code(errc::bad_descriptor);
  }
  const sync::ParticipantId producer = sync::ParticipantId::unpack(body.producer);
  if (!producer.valid() || producer.slot >= state.segment.info().participant_capacity) {
    return code(errc::bad_descriptor);
  }
  std::byte* const buffer = ref.base + body.offset;
  auto& stream = *reinterpret_cast<StreamHeader*>(buffer);
  const std::byte* const data = buffer + kStreamHeader;
  // relaxed: the header was published by the record's commit (our claim acquired it); a buffer
  // now carrying another stream is skipped before we write into its header.
  if (stream.stream_id.load(std::memory_order_relaxed) != position) return code(errc::peer_dead);
  const std::uint32_t self = state.segment.self().id().pack();
  publish_progress(stream, self, 0);  // the claim: the producer paces against us from now on
  if (body.window != 0) {
    for (std::uint64_t i = 0; i < chunks; ++i) {
      if (std::error_code error = wait_stream(state, stream, static_cast<std::uint32_t>(i + 1),
                                              position, producer, self)) {
        return error;
      }
      const std::uint64_t offset = i * body.chunk;
      const std::uint64_t bytes = std::min<std::uint64_t>(body.chunk, length - offset);
      std::memcpy(into.data() + offset, data + (i % body.window) * body.chunk,
                  static_cast<std::size_t>(bytes));
      // acquire fence: a seqlock's read side (ring_once's G3): had the producer begun to
      // overwrite the slot (chunk i + window) before our copy ended, we see started > i + window
      // now; a later stream of this buffer, its stream_id.
      std::atomic_thread_fence(std::memory_order_acquire);
      // relaxed (two): ordered by the fence.
      if (stream.stream_id.load(std::memory_order_relaxed) != position) {
        return code(errc::peer_dead);
      }
      if (started(stream).load(std::memory_order_relaxed) > i + body.window) {
        // Overwritten: we are not this stream's first claimer (it died after the producer
        // wrapped), or a stale writer's hint let the producer run ahead. The copy is discarded;
        // the producer sends the payload again.
        decide_ring(stream, position, kVerdictAborted);
        return code(errc::peer_dead);
      }
      publish_progress(stream, self, static_cast<std::uint32_t>(i + 1));
    }
    *ring = RingClaim{&stream, position};
    return {};
  }
  for (std::uint64_t i = 0; i <= chunks; ++i) {
    // i == chunks: wait for the posted buffer's descriptor (n + 1).
    if (std::error_code error = wait_stream(state, stream, static_cast<std::uint32_t>(i + 1),
                                            position, producer, self)) {
      return error;
    }
    if (i < chunks) {
      const std::uint64_t offset = i * body.chunk;
      const std::uint64_t bytes = std::min<std::uint64_t>(body.chunk, length - offset);
      std::memcpy(into.data() + offset, data + offset, static_cast<std::size_t>(bytes));
      publish_progress(stream, self, static_cast<std::uint32_t>(i + 1));
    }
  }
  std::uint64_t words[4];
  // relaxed (four): ordered after wait_stream's acquire of n + 1, which published them.
  for (std::size_t i = 0; i < 4; ++i)
    words[i] = stream.descriptor[i].load(std::memory_order_relaxed);
  // acquire fence: keeps the loads above before the re-check below (a later stream of this buffer
  // changes stream_id before anything else).
  std::atomic_thread_fence(std::memory_order_acquire);
  // relaxed: ordered by the fence.
  if (stream.stream_id.load(std::memory_order_relaxed) != position) return code(errc::peer_dead);
  Descriptor descriptor;
  std::memcpy(&descriptor, words, sizeof descriptor);
  if (descriptor.length != length + kStreamHeader) return code(errc::bad_descriptor);
  Result<Held> held = state.pool.accept_redelivered(descriptor);
  if (!held) {
    // already_returned: a redelivered record whose buffer was freed after its first consumer
    // died holding it.
    return is(held.error(), errc::already_returned) ? code(errc::peer_dead) : held.error();
  }
  (void)held->give_back();  // already_returned: a detached view; the bytes are copied
  return {};
}

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
        if (ring.stream != nullptr &&
            !decide_ring(*ring.stream, ring.position, kVerdictDelivered)) {
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
