// Pool loans: the state-word protocol (every step one CAS) and the waiting loop.
//
// Steps, and what a survivor sees after a death at each (docs/decisions/0040-pool.md):
//   L1) loan: find a free word (rotating hint), CAS free(g) -> loaned(g+1, me). Before: nothing
//       changed. After: loaned by a dead owner -> recover() frees it (CAS loaned -> free).
//   L2) write the payload in place (exclusive: nobody else writes a loaned buffer).
//   P1) post: (LoanChannel) store the record position; CAS loaned(g, me) -> posted(g, me),
//       release. Before: as L1. After: posted; only a descriptor (or LoanChannel's reclaim of a
//       lost record) leads back to it.
//   A1) accept: validate the descriptor; CAS posted(g) -> held(g, consumer), acquire. Before: still
//       posted. After: held by a dead owner -> recover() frees it.
//   G1) give back (Loan or Held destroyed): CAS loaned/held(g, me) -> free(g), release; then
//       notify `returned`. Dying between the CAS and the notify only delays a parked loaner until
//       its next periodic wake (kPeerCheckPeriod, growing to kMaxReclaimPeriod).
//   R1) recover: for a loaned/held word whose owner is dead (participant table), CAS it -> free(g)
//       (the CAS fails if the owner moved on: it was alive after all). LoanChannel's variant also
//       frees posted words whose record position is below the channel's reclaim position.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <utility>

#include "pool_internal.h"
#include "xproc/channel/endpoint.h"
#include "xproc/sync/detail/spin.h"

namespace xproc::bulk {
namespace {

using detail::BufferState;
using detail::PoolRef;

constexpr std::uint32_t kLoanSpinRounds = 12;  // a few microseconds before the reclaim and park
// Then yield a few times: with more runnable processes than CPUs the consumer that will give a
// buffer back may need this CPU (as the channel's waits do, src/channel/endpoint.cc).
constexpr std::uint32_t kLoanYieldRounds = 4;
// kMaxReclaimPeriod (pool.h): under the channel's 10 ms recovery goal for a dead holder, while
// a loaner that waits 50 ms for a live consumer (a 256 MiB payload being read) wakes 7 times
// instead of 25.
static_assert(kMaxReclaimPeriod >= channel::kPeerCheckPeriod);

std::error_code code(errc e) noexcept {
  return make_error_code(e);
}

// The owner this process writes into state words: its participant id, or kLocalOwner without
// one, and in a fork child whose copy of `self` is detached (the child must never be taken for
// its parent, who may die while the child still writes).
std::uint32_t current_owner(const PoolRef& ref) noexcept {
  return ref.self != nullptr && ref.self->attached() ? ref.self_owner : detail::kLocalOwner;
}

// Whether `owner` (a packed id from a state word) is known dead. Ids without a generation
// (kLocalOwner, no Participant) and unknown answers are alive: never reclaim a live holder.
class LivenessCache {
 public:
  explicit LivenessCache(const PoolRef& ref) noexcept : ref_(ref) {}

  bool dead(std::uint32_t owner) noexcept {
    if (ref_.self == nullptr || !ref_.self->attached() || owner == ref_.self_owner) return false;
    const sync::ParticipantId id = sync::ParticipantId::unpack(owner);
    if (!id.valid()) return false;
    for (std::uint32_t i = 0; i < used_; ++i) {
      if (owners_[i] == owner) return dead_[i];
    }
    Result<bool> alive = ref_.self->is_alive(id);
    const bool is_dead = alive.has_value() && !*alive;
    if (used_ < kEntries) {
      owners_[used_] = owner;
      dead_[used_] = is_dead;
      ++used_;
    }
    return is_dead;
  }

 private:
  static constexpr std::uint32_t kEntries = 32;
  const PoolRef& ref_;
  std::uint32_t owners_[kEntries] = {};
  bool dead_[kEntries] = {};
  std::uint32_t used_ = 0;
};

std::byte* buffer_address(const PoolRef& ref, std::uint32_t size_class,
                          std::uint32_t index) noexcept {
  const PoolRef::Class& entry = ref.classes[size_class];
  return ref.base + entry.data_offset + entry.stride * index;
}

// L1 over one class: one pass from the rotating hint. true: `loan` filled.
bool try_class(const PoolRef& ref, std::uint32_t size_class, detail::PoolHeader*& header_out,
               std::atomic<std::uint64_t>*& word_out, std::uint64_t& expected_out,
               std::uint32_t& index_out) noexcept {
  const PoolRef::Class& entry = ref.classes[size_class];
  const std::uint32_t owner = current_owner(ref);
  // Where to look first: the buffer this thread loaned last in this class (index + 1; 0: none
  // yet). In a stream the consumer gives a buffer back before the producer's next-but-one loan,
  // so a producer alternates between two buffers whose lines are still in the caches instead of
  // walking every buffer of the class (4 x 16 MiB by default: memory, not cache). A hint, shared
  // by every pool of the thread: any value is correct.
  thread_local std::array<std::uint32_t, kMaxClasses> last_loaned{};
  std::uint32_t start = last_loaned[size_class];
  if (start == 0 || start > entry.count) {
    // relaxed: the shared hint only spreads first loans over the class; any value is correct.
    start =
        ref.header->hints.hint[size_class].fetch_add(1, std::memory_order_relaxed) % entry.count;
  } else {
    start -= 1;
  }
  std::uint32_t index = start;
  for (std::uint32_t step = 0; step < entry.count; ++step) {
    std::atomic<std::uint64_t>& word = ref.states[entry.first + index];
    // relaxed: a probe; the CAS below decides (and acquires).
    std::uint64_t seen = word.load(std::memory_order_relaxed);
    while (detail::is_free(seen)) {
      const std::uint64_t mine =
          detail::make_word(BufferState::loaned, detail::word_generation(seen) + 1, owner);
      // acquire (L1): pairs with the release CAS of the last giver-back (G1) or reclaimer (R1):
      // their accesses to the buffer happen-before our writes.
      if (word.compare_exchange_weak(seen, mine, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
        header_out = ref.header;
        word_out = &word;
        expected_out = mine;
        index_out = index;
        last_loaned[size_class] = index + 1;
        return true;
      }
    }
    if (++index == entry.count) index = 0;
  }
  return false;
}

}  // namespace

// --- handles

detail::BufferClaim::BufferClaim(BufferClaim&& other) noexcept
    : header(std::exchange(other.header, nullptr)),
      word(std::exchange(other.word, nullptr)),
      expected(other.expected) {}

detail::BufferClaim& detail::BufferClaim::operator=(BufferClaim&& other) noexcept {
  if (this != &other) {
    (void)give_back();  // already_returned: the buffer is no longer ours; nothing to undo
    header = std::exchange(other.header, nullptr);
    word = std::exchange(other.word, nullptr);
    expected = other.expected;
  }
  return *this;
}

detail::BufferClaim::~BufferClaim() {
  (void)give_back();
}

std::error_code detail::BufferClaim::give_back() noexcept {
  if (word == nullptr) return code(errc::invalid_argument);
  std::atomic<std::uint64_t>* const mine = std::exchange(word, nullptr);
  const std::uint64_t free_word =
      detail::make_word(BufferState::free, detail::word_generation(expected), detail::kNoOwner);
  // release (G1): our reads and writes of the buffer happen-before the next loaner's acquire CAS
  // in L1. relaxed on failure: nothing is read through a word that is not ours.
  std::uint64_t seen = expected;
  if (!mine->compare_exchange_strong(seen, free_word, std::memory_order_release,
                                     std::memory_order_relaxed)) {
    return code(errc::already_returned);
  }
  header->wait.returned.notify_all();
  return {};
}

std::error_code Loan::resize(std::size_t size) noexcept {
  if (claim_.word == nullptr || size > capacity_) return code(errc::invalid_argument);
  size_ = size;
  return {};
}

// --- loaning

Result<Loan> PoolView::loan(std::size_t size) const noexcept {
  const sync::Deadline forever = sync::Deadline::max();
  return loan_with(size, &forever, nullptr, nullptr);
}

Result<Loan> PoolView::try_loan(std::size_t size) const noexcept {
  return loan_with(size, nullptr, nullptr, nullptr);
}

Result<Loan> PoolView::loan_until(std::size_t size, sync::Deadline deadline) const noexcept {
  return loan_with(size, &deadline, nullptr, nullptr);
}

Result<Loan> PoolView::loan_with(std::size_t size, const sync::Deadline* deadline,
                                 ReclaimHook reclaim, const void* context) const noexcept {
  if (ref_.header == nullptr) return code(errc::invalid_argument);
  std::uint32_t fitting = 0;
  while (fitting < ref_.class_count && ref_.classes[fitting].buffer_size < size) ++fitting;
  if (fitting == ref_.class_count) return code(errc::message_too_large);
  Loan loan;
  auto attempt = [&]() noexcept {
    for (std::uint32_t c = fitting; c < ref_.class_count; ++c) {
      std::uint32_t index = 0;
      if (try_class(ref_, c, loan.claim_.header, loan.claim_.word, loan.claim_.expected, index)) {
        loan.index_ = index;
        loan.class_ = c;
        return true;
      }
    }
    return false;
  };
  auto finish = [&]() noexcept -> Loan {
    loan.tag_ = ref_.tag;
    loan.data_ = buffer_address(ref_, loan.class_, loan.index_);
    loan.size_ = size;
    loan.capacity_ = ref_.classes[loan.class_].buffer_size;
    loan.position_ = &ref_.positions[ref_.classes[loan.class_].first + loan.index_];
    // relaxed: a statistic.
    ref_.header->counters.loans_total.fetch_add(1, std::memory_order_relaxed);
    return std::move(loan);
  };
  if (attempt()) return finish();
  if (deadline == nullptr) return code(errc::would_block);
  sync::EventCount& returned = ref_.header->wait.returned;
  sync::Deadline next_check{};  // the first wait reclaims at once
  sync::Clock::duration period = channel::kPeerCheckPeriod;
  bool spin = true;  // before the first park and after a notify; not after a timed-out park
  for (;;) {
    if (spin && (sync::detail::spin_until(attempt, kLoanSpinRounds) ||
                 sync::detail::yield_until(attempt, kLoanYieldRounds))) {
      return finish();
    }
    const sync::Deadline now = sync::Clock::now();
    if (now >= next_check) {
      // Never wait for the dead: free what dead participants hold (or, for LoanChannel, what
      // its channel lost) before parking, and again while parked, at intervals doubling from
      // kPeerCheckPeriod to kMaxReclaimPeriod (a long wait for a live consumer then costs a
      // few wakes, not one per kPeerCheckPeriod: docs/decisions/0045-bulk-performance.md).
      if (reclaim != nullptr) {
        if (std::error_code error = reclaim(context)) return error;
      } else {
        (void)recover();
      }
      next_check = now + period;
      period = std::min<sync::Clock::duration>(period * 2, kMaxReclaimPeriod);
      if (attempt()) return finish();
    }
    if (now >= *deadline) return code(errc::timed_out);
    const sync::EventCount::Key key = returned.prepare_wait();
    if (attempt()) {
      returned.cancel_wait();
      return finish();
    }
    spin = returned.wait_until(key, std::min(*deadline, next_check)) != errc::timed_out;
  }
}

// --- handing over

Result<Descriptor> PoolView::post(Loan&& loan) const noexcept {
  return post_impl(std::move(loan), nullptr);
}

Result<Descriptor> PoolView::post_at(Loan&& loan, std::uint64_t position) const noexcept {
  return post_impl(std::move(loan), &position);
}

Result<Descriptor> PoolView::post_impl(Loan&& loan, const std::uint64_t* position) const noexcept {
  if (loan.claim_.word == nullptr || loan.claim_.header != ref_.header || ref_.header == nullptr) {
    return code(errc::invalid_argument);
  }
  if (position != nullptr) {
    // relaxed: published by the release CAS below (P1); read after an acquire load of the word.
    loan.position_->store(*position, std::memory_order_relaxed);
  }
  const std::uint32_t generation = detail::word_generation(loan.claim_.expected);
  const std::uint64_t posted =
      detail::make_word(BufferState::posted, generation, detail::word_owner(loan.claim_.expected));
  std::atomic<std::uint64_t>* word = std::exchange(loan.claim_.word, nullptr);
  std::uint64_t seen = loan.claim_.expected;
  // release (P1): publishes the payload and the position word; pairs with the acquire CAS of
  // accept() (A1) and the acquire load of a LoanChannel reclaimer (R1).
  if (!word->compare_exchange_strong(seen, posted, std::memory_order_release,
                                     std::memory_order_relaxed)) {
    return code(errc::already_returned);  // reclaimed from a view that looked dead
  }
  Descriptor descriptor;
  descriptor.pool_tag = ref_.tag;
  descriptor.size_class = loan.class_;
  descriptor.index = loan.index_;
  descriptor.generation = generation;
  descriptor.length = loan.size_;
  descriptor.check = detail::descriptor_check(descriptor);
  return descriptor;
}

Result<Held> PoolView::accept(const Descriptor& descriptor) const noexcept {
  return accept_impl(descriptor, false);
}

Result<Held> PoolView::accept_redelivered(const Descriptor& descriptor) const noexcept {
  return accept_impl(descriptor, true);
}

Result<Held> PoolView::accept(std::span<const std::byte> bytes) const noexcept {
  if (bytes.size() != sizeof(Descriptor)) return code(errc::bad_descriptor);
  Descriptor descriptor;
  std::memcpy(&descriptor, bytes.data(), sizeof descriptor);
  return accept_impl(descriptor, false);
}

Result<Held> PoolView::accept_impl(const Descriptor& descriptor,
                                   bool take_over_dead) const noexcept {
  if (ref_.header == nullptr) return code(errc::invalid_argument);
  // Untrusted input: every field is checked against the validated local copy before use.
  if (descriptor.pool_tag != ref_.tag || descriptor.reserved != 0 ||
      descriptor.check != detail::descriptor_check(descriptor) ||
      descriptor.size_class >= ref_.class_count ||
      descriptor.index >= ref_.classes[descriptor.size_class].count ||
      descriptor.generation > detail::kGenerationMask ||
      descriptor.length > ref_.classes[descriptor.size_class].buffer_size) {
    return code(errc::bad_descriptor);
  }
  const PoolRef::Class& entry = ref_.classes[descriptor.size_class];
  std::atomic<std::uint64_t>& word = ref_.states[entry.first + descriptor.index];
  // relaxed: a probe; the CAS below acquires.
  std::uint64_t seen = word.load(std::memory_order_relaxed);
  for (;;) {
    if (!detail::word_valid(seen)) return code(errc::corrupt_segment);
    const std::uint32_t current = detail::word_generation(seen);
    if (current != descriptor.generation) {
      // Behind the buffer's generation (on the 24-bit ring): issued, and returned since.
      const std::uint32_t behind = (current - descriptor.generation) & detail::kGenerationMask;
      return code(behind < (1u << 23) ? errc::already_returned : errc::bad_descriptor);
    }
    const BufferState state = detail::word_state(seen);
    if (state == BufferState::free) return code(errc::already_returned);
    if (state == BufferState::loaned) return code(errc::bad_descriptor);  // not issued yet
    if (state == BufferState::held) {
      if (!take_over_dead) return code(errc::already_returned);
      LivenessCache liveness(ref_);
      if (!liveness.dead(detail::word_owner(seen))) return code(errc::already_returned);
    }
    const std::uint64_t mine =
        detail::make_word(BufferState::held, descriptor.generation, current_owner(ref_));
    // acquire (A1): pairs with the release CAS of post() (P1): the payload is visible.
    if (word.compare_exchange_weak(seen, mine, std::memory_order_acquire,
                                   std::memory_order_relaxed)) {
      Held held;
      held.claim_.header = ref_.header;
      held.claim_.word = &word;
      held.data_ = buffer_address(ref_, descriptor.size_class, descriptor.index);
      held.size_ = static_cast<std::size_t>(descriptor.length);
      held.claim_.expected = mine;
      return held;
    }
  }
}

// --- recovery

Result<std::uint32_t> PoolView::recover() const noexcept {
  return recover_impl(nullptr);
}

Result<std::uint32_t> PoolView::recover_posted_below(std::uint64_t limit) const noexcept {
  return recover_impl(&limit);
}

Result<std::uint32_t> PoolView::recover_impl(const std::uint64_t* posted_limit) const noexcept {
  if (ref_.header == nullptr) return code(errc::invalid_argument);
  LivenessCache liveness(ref_);
  std::uint32_t freed_dead = 0;
  std::uint32_t freed_posted = 0;
  bool corrupt = false;
  for (std::uint32_t i = 0; i < ref_.total; ++i) {
    std::atomic<std::uint64_t>& word = ref_.states[i];
    // acquire: pairs with post()'s release CAS (P1): the position word read below is the one
    // stored for this generation's record.
    const std::uint64_t seen = word.load(std::memory_order_acquire);
    if (!detail::word_valid(seen)) {
      corrupt = true;
      continue;
    }
    const BufferState state = detail::word_state(seen);
    bool reclaim = false;
    bool lost_record = false;
    if (state == BufferState::loaned || state == BufferState::held) {
      reclaim = liveness.dead(detail::word_owner(seen));
    } else if (state == BufferState::posted && posted_limit != nullptr) {
      // relaxed: ordered by the acquire load of the word above; a newer cycle's value fails
      // the CAS below (the generation moved).
      const std::uint64_t position = ref_.positions[i].load(std::memory_order_relaxed);
      reclaim = lost_record = position < *posted_limit;
    }
    if (!reclaim) continue;
    std::uint64_t expected = seen;
    const std::uint64_t free_word =
        detail::make_word(BufferState::free, detail::word_generation(seen), detail::kNoOwner);
    // acq_rel (R1): acquire orders the dead owner's accesses before the next loaner's; release
    // hands the buffer to it (its acquire CAS in L1). Fails if the word moved: nothing to do.
    if (word.compare_exchange_strong(expected, free_word, std::memory_order_acq_rel,
                                     std::memory_order_relaxed)) {
      ++(lost_record ? freed_posted : freed_dead);
    }
  }
  detail::CounterLine& counters = ref_.header->counters;
  // relaxed: statistics only.
  if (freed_dead != 0) counters.reclaimed_dead.fetch_add(freed_dead, std::memory_order_relaxed);
  if (freed_posted != 0) {
    counters.reclaimed_posted.fetch_add(freed_posted, std::memory_order_relaxed);
  }
  if (freed_dead + freed_posted != 0) ref_.header->wait.returned.notify_all();
  if (corrupt) return code(errc::corrupt_segment);
  return freed_dead + freed_posted;
}

}  // namespace xproc::bulk
