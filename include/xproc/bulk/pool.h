#pragma once
// xproc::bulk pool loans: a pool of fixed-size buffers in shared memory that producers loan,
// fill in place and hand over as a small Descriptor; consumers accept the descriptor, read the
// payload in place and give the buffer back. The payload never moves.
//
// format(region, config) lays a pool out in zero-filled shared memory (docs/layout/pool.md);
// PoolView::open(region, self) validates it and gives a process-local handle (a cheap value of
// validated sizes and pointers, copyable). Pool (below) is the convenience owner of a pool in a
// shm::Segment of kind `pool`. LoanChannel (loan_channel.h) puts a pool and a channel of
// descriptors in one segment and reclaims descriptors lost in the channel.
// Design and reasons: docs/decisions/0040-pool.md.
//
// Size classes: up to kMaxClasses classes, each `count` buffers of `buffer_size` bytes (strictly
// ascending sizes). Buffers are 64-byte aligned, page-aligned (4096) in classes of 4 KiB and up.
// loan(size) takes the smallest class whose buffer_size >= size that has a free buffer: when the
// fitting class is empty a LARGER class with a free buffer is used (never a smaller one); it
// waits only when every class that fits is empty. size > the largest buffer_size:
// errc::message_too_large.
//
// Buffer state: one 64-bit word per buffer, changed only by CAS (free -> loaned -> posted ->
// held -> free; loaned -> free; held -> free): every transition is one atomic step.
//
// Thread- and process-safety: every PoolView member may be called concurrently from any thread
// of any process that opened the region. A Loan or Held handle is a value owned by one thread at
// a time (move-only); it may be moved to another thread or destroyed there.
// Blocking: loan / loan_until / loan_for wait when every fitting class is empty: spin briefly,
// then park on the pool's `returned` EventCount (a giver-back makes a futex call only when
// somebody waits); a parked loaner wakes to reclaim buffers of dead participants (never waits
// for the dead) after channel::kPeerCheckPeriod, then at intervals doubling up to
// kMaxReclaimPeriod (below). Nothing else blocks.
// Failures: loan: message_too_large, would_block (try_loan), timed_out (loan_until); accept:
// bad_descriptor (wrong pool tag or check, class/index out of range, a generation never issued,
// length above the buffer size), already_returned (given back already, or a stale generation);
// open: layout_mismatch (magic, version, signature), corrupt_segment (sizes or offsets no
// format() writes), invalid_argument (region too small or misaligned). A state word holding a
// value no correct writer stores is never used: accept() returns corrupt_segment, loans skip
// it, recover() skips it and returns corrupt_segment after its pass, statistics() counts it;
// never UB. Descriptors are untrusted input: any
// bytes are safe to accept().
//
// Deaths (a participant SIGKILLed at any instant; liveness only from the participant table that
// `self` is attached to; an owner recorded without a Participant is never declared dead):
//   * dies in loan (before its CAS): nothing changed. After it: the buffer is `loaned` by a dead
//     owner: recover() (run by every loaner that would wait, then at least every
//     kMaxReclaimPeriod while it waits) frees it.
//   * dies holding a Loan (writing): the same, freed by recover().
//   * dies inside post(): before the CAS the buffer is loaned (freed as above); after it the
//     buffer is `posted` and the descriptor is the only way to it: a plain PoolView never frees a
//     posted buffer by itself (the descriptor may still be in flight); LoanChannel does (it knows
//     which descriptors its channel has lost, loan_channel.h).
//   * dies inside accept(): before the CAS the buffer stays posted (as above); after it the buffer
//     is `held` by a dead owner and recover() frees it.
//   * dies holding a Held (reading): freed by recover().
//   * dies giving back (before the CAS: held/loaned by a dead owner, freed by recover(); after
//     it: free). A death never leaves a word half-written.
// fork(): a view copied into a fork child refers to the same mapping but its `self` is detached
// in the child: loans and accepts made through it are recorded with no owner (never taken for
// the parent's, never reclaimed if the child dies) and it declares nobody dead. Open a new view
// with the child's own Participant.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "xproc/shm/segment.h"
#include "xproc/sync/event_count.h"
#include "xproc/sync/participant_table.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/error.h"
#include "xproc/sys/file.h"
#include "xproc/sys/result.h"

namespace xproc::bulk {

inline constexpr std::uint32_t kMaxClasses = 16;
inline constexpr std::uint32_t kMaxBufferSize = 1u << 30;  // 1 GiB per buffer
// The longest a parked loaner sleeps between reclaim passes (4 x channel::kPeerCheckPeriod):
// a buffer held by a participant that died is back in the pool within this long of the death,
// while a loaner waiting long for live consumers wakes a few times, not every 2 ms
// (docs/decisions/0045-bulk-performance.md).
inline constexpr std::chrono::milliseconds kMaxReclaimPeriod{8};
inline constexpr std::uint32_t kMaxBuffersPerClass = 1u << 20;
inline constexpr std::uint32_t kMaxBuffers = 1u << 22;  // all classes together

struct SizeClass {
  std::uint32_t buffer_size = 0;  // 1..kMaxBufferSize
  std::uint32_t count = 0;        // 1..kMaxBuffersPerClass
};

struct PoolConfig {
  std::vector<SizeClass> classes;  // 1..kMaxClasses, buffer_size strictly ascending
};

// Bytes of shared memory a pool with `config` needs (at any 64-byte aligned address); 0 for an
// invalid config.
std::size_t region_size_for(const PoolConfig& config) noexcept;

// Lays out a pool in `region` (shared memory, zero-filled, 64-byte aligned, at least
// region_size_for(config) bytes, used by nobody yet; every process must map it at the same
// offset from a page boundary, as mappings of one file do). Publishes the magic last (release).
// errc::invalid_argument: config out of range, region too small or misaligned.
[[nodiscard]] std::error_code format(std::span<std::byte> region, const PoolConfig& config);

// What travels through a channel: names one posted buffer. Trivially copyable, 32 bytes, native
// byte order (one host). Every field is validated by accept() against the pool's own values.
struct Descriptor {
  std::uint32_t pool_tag = 0;    // +0  the pool's random tag (format)
  std::uint32_t size_class = 0;  // +4  class index
  std::uint32_t index = 0;       // +8  buffer index within the class
  std::uint32_t generation = 0;  // +12 the buffer's generation when loaned (24 bits)
  std::uint64_t length = 0;      // +16 payload bytes, <= the class's buffer_size
  std::uint32_t check = 0;       // +24 a hash of the fields above and the tag
  std::uint32_t reserved = 0;    // +28 zero
};
static_assert(std::is_trivially_copyable_v<Descriptor>);
static_assert(std::is_standard_layout_v<Descriptor>);
static_assert(sizeof(Descriptor) == 32);
static_assert(offsetof(Descriptor, length) == 16);
static_assert(offsetof(Descriptor, check) == 24);

struct PoolStatistics {
  std::uint32_t total = 0;  // buffers in every class
  std::uint32_t free = 0;
  std::uint32_t loaned = 0;
  std::uint32_t posted = 0;
  std::uint32_t held = 0;
  std::uint32_t corrupt = 0;           // words holding an impossible value
  std::uint64_t loans_total = 0;       // loans ever
  std::uint64_t reclaimed_dead = 0;    // loaned/held buffers of dead owners freed
  std::uint64_t reclaimed_posted = 0;  // posted buffers whose descriptor was lost (LoanChannel)
  std::uint32_t waiters = 0;           // loaners announced on `returned` (may count dead ones)
};

namespace detail {
struct PoolHeader;  // src/bulk/pool_internal.h: the wire format (docs/layout/pool.md)
// The process-local view: validated values and pointers (copied into handles).
struct PoolRef {
  PoolHeader* header = nullptr;
  std::atomic<std::uint64_t>* states = nullptr;     // one per buffer
  std::atomic<std::uint64_t>* positions = nullptr;  // one per buffer (LoanChannel)
  std::byte* base = nullptr;                        // the region
  std::uint32_t tag = 0;
  std::uint32_t class_count = 0;
  std::uint32_t total = 0;
  std::uint32_t self_owner = 0;  // packed id written into state words
  const sync::Participant* self = nullptr;
  struct Class {
    std::uint32_t buffer_size = 0;
    std::uint32_t count = 0;
    std::uint32_t first = 0;  // global index of its first buffer
    std::uint64_t stride = 0;
    std::uint64_t data_offset = 0;
  };
  std::array<Class, kMaxClasses> classes{};
};

// The buffer a Loan or a Held owns: its state word and the value this handle wrote there. The
// buffer goes back to the pool once: give_back(), or when the claim is destroyed or assigned
// over; a move transfers it (the source then owns nothing). PoolView fills it.
struct BufferClaim {
  BufferClaim() noexcept = default;
  BufferClaim(BufferClaim&& other) noexcept;
  BufferClaim& operator=(BufferClaim&& other) noexcept;
  BufferClaim(const BufferClaim&) = delete;
  BufferClaim& operator=(const BufferClaim&) = delete;
  ~BufferClaim();

  // Frees the buffer and wakes loaners. errc::invalid_argument: nothing owned; already_returned:
  // the word no longer holds `expected` (a survivor reclaimed it believing this owner dead).
  std::error_code give_back() noexcept;

  PoolHeader* header = nullptr;
  std::atomic<std::uint64_t>* word = nullptr;  // nullptr: nothing owned
  std::uint64_t expected = 0;  // the state word this handle wrote (state, owner, generation)
};
}  // namespace detail

// A loaned buffer being written by its owner. data(): size() bytes (what post() hands over),
// capacity() the whole buffer. Destroyed without post(): the buffer goes back to the pool.
class Loan {
 public:
  Loan() noexcept = default;
  Loan(Loan&& other) noexcept = default;             // `other` owns nothing afterwards
  Loan& operator=(Loan&& other) noexcept = default;  // gives this loan's buffer back first
  Loan(const Loan&) = delete;
  Loan& operator=(const Loan&) = delete;
  ~Loan() = default;  // gives the buffer back (detail::BufferClaim)

  std::span<std::byte> data() const noexcept { return {data_, size_}; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  // Changes what post() hands over. errc::invalid_argument: size > capacity() or no loan.
  [[nodiscard]] std::error_code resize(std::size_t size) noexcept;
  bool active() const noexcept { return claim_.word != nullptr; }
  std::uint32_t size_class() const noexcept { return class_; }
  // Gives the buffer back now. errc::invalid_argument: no loan; already_returned: the buffer is
  // no longer this loan's (a survivor reclaimed it believing this owner dead: a detached view).
  [[nodiscard]] std::error_code give_back() noexcept { return claim_.give_back(); }

 private:
  friend class PoolView;
  detail::BufferClaim claim_;  // expected: loaned, owner, generation
  std::atomic<std::uint64_t>* position_ = nullptr;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  std::uint32_t tag_ = 0;
  std::uint32_t class_ = 0;
  std::uint32_t index_ = 0;
};

// An accepted buffer being read in place. Destroyed or give_back(): the buffer goes back.
class Held {
 public:
  Held() noexcept = default;
  Held(Held&& other) noexcept = default;             // as Loan's
  Held& operator=(Held&& other) noexcept = default;  // as Loan's
  Held(const Held&) = delete;
  Held& operator=(const Held&) = delete;
  ~Held() = default;  // gives the buffer back (detail::BufferClaim)

  std::span<const std::byte> data() const noexcept { return {data_, size_}; }
  std::size_t size() const noexcept { return size_; }
  bool active() const noexcept { return claim_.word != nullptr; }
  // errc::invalid_argument: nothing held; already_returned: no longer ours (see Loan).
  [[nodiscard]] std::error_code give_back() noexcept { return claim_.give_back(); }

 private:
  friend class PoolView;
  detail::BufferClaim claim_;  // expected: held, owner, generation
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

class PoolView {
 public:
  // Validates the pool in `region` (failures in the banner). `self`: this process's attachment
  // to the participant table every user of the pool attaches to (nullptr: threads of one
  // process; nobody is then ever considered dead). Keep `self` and the mapping alive while the
  // view and its handles are used.
  static Result<PoolView> open(std::span<std::byte> region,
                               const sync::Participant* self = nullptr) noexcept;

  PoolView() noexcept = default;

  std::uint32_t class_count() const noexcept { return ref_.class_count; }
  SizeClass size_class(std::uint32_t index) const noexcept;  // {} when out of range
  std::size_t max_loan() const noexcept;                     // the largest buffer_size
  std::uint32_t tag() const noexcept { return ref_.tag; }

  // --- loaning: a Loan of `size` bytes, or message_too_large / would_block / timed_out.
  Result<Loan> loan(std::size_t size) const noexcept;
  Result<Loan> try_loan(std::size_t size) const noexcept;
  Result<Loan> loan_until(std::size_t size, sync::Deadline deadline) const noexcept;
  template <class Rep, class Period>
  Result<Loan> loan_for(std::size_t size,
                        std::chrono::duration<Rep, Period> timeout) const noexcept {
    return loan_until(size, sync::Clock::now() + std::chrono::ceil<sync::Clock::duration>(timeout));
  }

  // --- handing over: post() turns the loan into a descriptor (the loan is consumed; the buffer
  // is `posted` until accepted). errc::invalid_argument: an inactive loan or one of another pool.
  Result<Descriptor> post(Loan&& loan) const noexcept;
  // Validates `descriptor` completely and takes the buffer (posted -> held by self).
  Result<Held> accept(const Descriptor& descriptor) const noexcept;
  // The same for raw bytes (a message): bad_descriptor unless exactly sizeof(Descriptor) bytes.
  Result<Held> accept(std::span<const std::byte> bytes) const noexcept;

  // Frees every loaned or held buffer whose owner is dead (one liveness query per distinct
  // owner); the number freed, or corrupt_segment. Waiting loaners call it themselves.
  Result<std::uint32_t> recover() const noexcept;

  // A scan of every state word (a snapshot, not atomic as a whole) and the counters.
  PoolStatistics statistics() const noexcept;

  // The internals LoanChannel builds on (not for applications).
  const detail::PoolRef& ref() const noexcept { return ref_; }
  // Waits for a buffer as loan_until (deadline nullptr: try once); `reclaim(context)` runs
  // before the first park and while parked (as the banner says), instead of recover(): it
  // returns {} to keep waiting or an error to return (LoanChannel: peer_dead).
  using ReclaimHook = std::error_code (*)(const void* context) noexcept;
  Result<Loan> loan_with(std::size_t size, const sync::Deadline* deadline, ReclaimHook reclaim,
                         const void* context) const noexcept;
  // LoanChannel's step "posted with a record position": as post(), and stores `position` in the
  // buffer's position word before the state CAS publishes `posted`.
  Result<Descriptor> post_at(Loan&& loan, std::uint64_t position) const noexcept;
  // Frees posted buffers whose position word is below `limit` (their record was released or
  // reclaimed for good: never accepted now), and dead owners' buffers as recover().
  Result<std::uint32_t> recover_posted_below(std::uint64_t limit) const noexcept;
  // accept() that also takes over a buffer `held` by a DEAD owner with the descriptor's
  // generation (a redelivered record whose first consumer died after accepting).
  Result<Held> accept_redelivered(const Descriptor& descriptor) const noexcept;

 private:
  Result<Held> accept_impl(const Descriptor& descriptor, bool take_over_dead) const noexcept;
  Result<Descriptor> post_impl(Loan&& loan, const std::uint64_t* position) const noexcept;
  Result<std::uint32_t> recover_impl(const std::uint64_t* posted_limit) const noexcept;

  detail::PoolRef ref_{};
};

// A pool in a shm::Segment of kind `pool` (named, or a memfd that travels as a descriptor). The
// segment's participant table is the pool's registry: every process that creates, opens or
// adopts it is attached, so dead holders are reclaimed. Operations: view() (PoolView).
// Failures: the segment's (segment.h), then the pool layout's (layout_mismatch, corrupt_segment).
// fork(): the child's copy is detached: open or adopt the pool again.
class Pool {
 public:
  static Result<Pool> create(std::string_view name, const PoolConfig& config,
                             const shm::SegmentOptions& options = {});
  static Result<Pool> open(std::string_view name, const shm::SegmentOptions& options = {});
  static Result<Pool> create_anonymous(const PoolConfig& config,
                                       const shm::SegmentOptions& options = {});
  static Result<Pool> adopt(sys::FileDescriptor fd, const shm::SegmentOptions& options = {});

  Pool() noexcept = default;

  const PoolView& view() const noexcept { return view_; }
  const PoolView* operator->() const noexcept { return &view_; }
  shm::Segment& segment() const noexcept { return *segment_; }
  bool valid() const noexcept { return segment_ != nullptr; }

 private:
  static Result<Pool> wrap(Result<shm::Segment> segment);

  std::unique_ptr<shm::Segment> segment_;
  PoolView view_;
};

}  // namespace xproc::bulk
