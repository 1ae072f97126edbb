// The channel protocol. Positions are 64-bit and only grow; all comparisons are differences, so
// they stay right across 2^64 (the ring offset is position & mask, capacity a power of two).
//
// Invariants: reclaim <= head <= tail (as differences, each gap <= capacity); every position in
// [reclaim, tail) starts a valid record; the control word at `tail` is the free marker (0) or a
// header just published for `tail`; bytes in [tail, reclaim + capacity) belong to nobody.
//
// Reserve (producer; MPMC steps R1 and R8 only):
//   R1) lock: CAS producer.lock 0 -> own id (acquire). Waiting for it: spin, yield, and check the
//       holder's liveness; a dead holder's lock is taken over by CAS (then R1' repair).
//   R2) read tail p; compute padding (record would cross the end) and the end e.
//   R3) space: e + 16 <= reclaim + capacity (16: the next free marker); else sweep, else
//       unlock and report full.
//   Rj) journal: pending_end = e, then pending_count = reserve_count + 1.
//   R4) if padding: free marker at p + pad, then publish the padding header at p (release).
//   R5) free marker (0) at e.
//   R6) header at p: size, producer, then control = reserved(self) (release).
//   R7) tail = e; reserve_count = pending_count.
//   R8) unlock (release).
//   R1' repair after a takeover: while tail != pending_end and the control at tail is a header
//       for tail (the dead holder published it in R4/R6 but died before R7), advance tail over
//       it; a `reserved` one is marked aborted (its producer is dead) and counted in
//       producer_died. Then, if tail == pending_end (the reservation reached R6, or R7 was cut
//       between its two stores), reserve_count = pending_count. Assignments, not increments: a
//       repair is exact whichever step the holder died after (a padding alone is no
//       reservation), and idempotent when the holder had finished.
//   A death in R2-R5 leaves nothing visible: free markers written in free space are harmless.
// Commit: C1) payload written; C2) control = committed (release; pairs with K2's acquire);
//   C3) notify not_empty. A death before C2 leaves `reserved(dead)`: the consumer that reaches it
//   checks liveness and marks it aborted (skipped, counted). After C2 the message is delivered.
// Claim (consumer; MPMC steps K1 and K5 only):
//   K1) lock: CAS consumer.lock 0 -> own id (takeover as in R1; no repair needed: each state
//       below is consistent).
//   K2) h = head; read the control at h (acquire). free -> empty. reserved -> pending (or, when
//       checking liveness and the producer is dead: CAS to aborted, counted, skip). claimed /
//       consumed / padding / aborted -> head = h + length, continue.
//   K3) committed: if larger than the caller's buffer -> message_too_large, not claimed.
//       else journal (Kj: pending_head = h + length, then pending_claims = claim_count + 1),
//       then control = claimed(self).
//   K4) head = pending_head; claim_count = pending_claims.
//   K5) unlock (release).
//   K1' repair after a takeover (by every taker: claims and put_back): if the record at head is
//       claimed by the dead holder and ends at pending_head (it died between K3 and K4), head =
//       pending_head; then, if head == pending_head, claim_count = pending_claims. Each other
//       state is consistent as it is.
//   A death after K3 holding the record: `claimed(dead)`; see Release.
// Batches (try_reserve_batch, try_claim_batch): R1 once, R2-R7 per record, R8 once; K1 once,
//   K2-K4 per record, K5 once. Every step leaves the same states as one record at a time, so a
//   death inside a batch is recovered exactly as a death inside a single reserve or claim.
// Release: L1) control = consumed (release: the payload reads happen before a producer reuses
//   the bytes; pairs with the sweep's acquire). L2) sweep, lazily: when a producer is parked on
//   not_full or reclaim lags capacity/4 behind (producers short of space sweep themselves in R3,
//   consumers before parking). A death between K3 and L1 leaves the
//   record claimed by a dead consumer: a sweep with liveness checking (producers waiting for
//   space, waiters every kPeerCheckPeriod) marks it consumed (counted in consumer_died), or with
//   redelivery sets it committed again and moves head back to it under the claim lock.
// Sweep: S1) take the sweep lock (takeover as in R1; waiting sweepers only: a lazy release
//   skips the sweep when another one runs), r = reclaim, h = head; S2) while r != h and the
//   record at r is consumed, padding or aborted: reclaim = r + length (release); S3) unlock;
//   notify not_full on progress. The sweep never passes head, so a record a consumer has not
//   skipped yet is never reused; a death inside leaves reclaim at a record boundary.
#include <sys/types.h>

#include <cstring>
#include <thread>

#include "ring_internal.h"
#include "xproc/channel/detail/step_hook.h"
#include "xproc/sync/detail/spin.h"

namespace xproc::channel::detail {
namespace {

// Crash injection (step_hook.h). relaxed: installed before the threads that use it start.
std::atomic<StepHook> step_hook{nullptr};

void at(Step step) noexcept {
  if (const StepHook hook = step_hook.load(std::memory_order_relaxed); hook != nullptr) {
    [[unlikely]] hook(step);
  }
}

constexpr std::uint32_t kLockSpinRounds = 64;
constexpr std::uint32_t kYieldsBetweenLivenessChecks = 8;

// Difference a - b of two positions, as a signed distance (positions are within 2^63).
constexpr std::int64_t distance(std::uint64_t a, std::uint64_t b) noexcept {
  return static_cast<std::int64_t>(a - b);
}

// Takes a reserve/claim/sweep lock; the packed id of the dead holder it was taken over from, or
// 0 (taken from nobody).
std::uint32_t lock(const Ring& ring, std::atomic<std::uint32_t>& word) noexcept {
  std::uint32_t expected = 0;
  // acquire: pairs with the release store in unlock(): the previous holder's writes of the
  // protected words (tail/head, headers) are visible to us.
  if (word.compare_exchange_strong(expected, ring.self_id, std::memory_order_acquire,
                                   std::memory_order_relaxed)) {
    return 0;
  }
  std::uint32_t yields = 0;
  for (;;) {
    for (std::uint32_t round = 0; round < kLockSpinRounds; ++round) {
      // relaxed: only a hint to try the CAS again.
      if (word.load(std::memory_order_relaxed) == 0) {
        expected = 0;
        // acquire: as above.
        if (word.compare_exchange_weak(expected, ring.self_id, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
          return 0;
        }
      }
      sync::detail::cpu_relax();
    }
    std::this_thread::yield();
    if (++yields % kYieldsBetweenLivenessChecks != 0) continue;
    // relaxed: the holder's id; the takeover CAS below re-checks it.
    const std::uint32_t holder = word.load(std::memory_order_relaxed);
    if (holder != 0 && !owner_alive(ring, holder)) {
      expected = holder;
      // acquire: sees whatever the dead holder published before it died (repair reads it).
      if (word.compare_exchange_strong(expected, ring.self_id, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        // relaxed: statistics.
        ring.header->counters.lock_takeovers.fetch_add(1, std::memory_order_relaxed);
        return holder;
      }
    }
  }
}

bool try_lock(const Ring& ring, std::atomic<std::uint32_t>& word) noexcept {
  std::uint32_t expected = 0;
  // acquire: as in lock().
  return word.compare_exchange_strong(expected, ring.self_id, std::memory_order_acquire,
                                      std::memory_order_relaxed);
}

void unlock(std::atomic<std::uint32_t>& word) noexcept {
  // release: publishes tail/head and counters written under the lock; pairs with lock()'s acquire.
  word.store(0, std::memory_order_release);
}

// Record positions are multiples of 16, so a header never straddles the ring's end; a position
// read from the region that is not is corrupt (checked before any access through it).
constexpr bool aligned(std::uint64_t position) noexcept {
  return (position & (kRecordAlign - 1)) == 0;
}

// Length of the record at `position` with control `control`, or 0 when the header is invalid
// (a corrupt region). Checks: the size fits max_message (padding: exactly fills the ring's end)
// and the record does not cross the ring's end.
std::uint64_t checked_length(const Ring& ring, std::uint64_t position,
                             std::uint64_t control) noexcept {
  if (!aligned(position) || !control_valid_for(control, position)) return 0;
  // relaxed: written before the control word's release store, which our caller acquired.
  const std::uint64_t size = size_at(ring, position).load(std::memory_order_relaxed);
  const std::uint64_t offset = position & ring.mask;
  const std::uint64_t length = record_length(size);
  if (control_state(control) == RecordState::padding) {
    return offset + kRecordHeader + size == ring.capacity ? ring.capacity - offset : 0;
  }
  if (size > ring.max_message || offset + length > ring.capacity) return 0;
  return length;
}

// R1': after taking the reserve lock from a dead holder, moves tail over headers it published
// and completes its counting from the journal.
void repair_tail(const Ring& ring) noexcept {
  ProducerLine& producer = ring.header->producer;
  // relaxed (tail, journal): we hold the lock; the holder's writes all preceded its death, which
  // the takeover established (owner_alive's lock probe goes through the kernel).
  std::uint64_t tail = producer.tail.load(std::memory_order_relaxed);
  const std::uint64_t pending_end = producer.pending_end.load(std::memory_order_relaxed);
  for (std::uint32_t step = 0; step < 2 && tail != pending_end; ++step) {  // a padding, a record
    if (!aligned(tail)) return;  // corrupt: try_reserve reports it
    // acquire: pairs with the release stores of R4/R6.
    std::uint64_t control = control_at(ring, tail).load(std::memory_order_acquire);
    if (control == 0 || !control_valid_for(control, tail)) break;
    const std::uint64_t length = checked_length(ring, tail, control);
    if (length == 0 || distance(pending_end, tail + length) < 0) break;  // not the journal's
    if (control_state(control) == RecordState::reserved &&
        !owner_alive(ring, control_owner(control))) {
      // acq_rel CAS: nobody else writes a reserved(dead) record but a consumer aborting it too.
      if (control_at(ring, tail)
              .compare_exchange_strong(control,
                                       make_control(RecordState::aborted, tail, ring.self_id),
                                       std::memory_order_acq_rel, std::memory_order_acquire)) {
        ring.header->counters.producer_died.fetch_add(1, std::memory_order_relaxed);
      }
    }
    tail += length;
    // release: tail is read by statistics and the wait hints.
    producer.tail.store(tail, std::memory_order_release);
  }
  if (tail == pending_end) {
    // relaxed: under the lock (statistics read it relaxed).
    producer.reserve_count.store(producer.pending_count.load(std::memory_order_relaxed),
                                 std::memory_order_relaxed);
  }
}

// K1': after taking the claim lock from `dead_holder`, completes a claim it left between K3 and
// K4 and its counting, from the journal.
void repair_head(const Ring& ring, std::uint32_t dead_holder) noexcept {
  ConsumerLine& consumer = ring.header->consumer;
  // relaxed (head, journal): we hold the lock; as in repair_tail.
  std::uint64_t head = consumer.head.load(std::memory_order_relaxed);
  const std::uint64_t pending_head = consumer.pending_head.load(std::memory_order_relaxed);
  if (head != pending_head && aligned(head)) {
    // acquire: pairs with the release stores that published the record (R6, C2).
    const std::uint64_t control = control_at(ring, head).load(std::memory_order_acquire);
    if (control_valid_for(control, head) && control_state(control) == RecordState::claimed &&
        control_owner(control) == dead_holder &&
        head + checked_length(ring, head, control) == pending_head) {
      head = pending_head;
      // release: as K4.
      consumer.head.store(head, std::memory_order_release);
    }
  }
  if (head == pending_head) {
    // relaxed: under the lock (statistics read it relaxed).
    consumer.claim_count.store(consumer.pending_claims.load(std::memory_order_relaxed),
                               std::memory_order_relaxed);
  }
}

// R1 (and R1'): takes the reserve lock, repairing after a dead holder.
void lock_reserve(const Ring& ring) noexcept {
  if (lock(ring, ring.header->producer.lock) != 0) repair_tail(ring);
  at(Step::reserve_locked);
}

// K1 (and K1'): takes the claim lock, repairing after a dead holder.
void lock_claim(const Ring& ring) noexcept {
  if (const std::uint32_t dead = lock(ring, ring.header->consumer.lock); dead != 0) {
    repair_head(ring, dead);
  }
  at(Step::claim_locked);
}

// Sets a claimed record (control `control`) committed again and moves head back to it, under
// the claim lock; true when this call did it.
bool put_back(const Ring& ring, std::uint64_t position, std::uint64_t control) noexcept {
  ConsumerLine& consumer = ring.header->consumer;
  const bool spsc = ring.spsc();
  if (!spsc) lock_claim(ring);
  // relaxed: written with the record before its first commit.
  const std::uint32_t producer = producer_at(ring, position).load(std::memory_order_relaxed);
  // acq_rel: the record is committed again (consumers acquire it in K2); a racing recoverer
  // loses the CAS.
  const bool done = control_at(ring, position)
                        .compare_exchange_strong(
                            control, make_control(RecordState::committed, position, producer),
                            std::memory_order_acq_rel, std::memory_order_acquire);
  if (done) {
    // relaxed: under the claim lock (or the single consumer's own thread / it is dead: SPSC).
    const std::uint64_t head = consumer.head.load(std::memory_order_relaxed);
    // release: as K4.
    if (distance(head, position) > 0) consumer.head.store(position, std::memory_order_release);
  }
  if (!spsc) unlock(consumer.lock);
  ring.header->not_empty.event.notify_all();
  return done;
}

// Puts a record claimed by a dead consumer back (redelivery) or marks it consumed.
void recover_claimed(const Ring& ring, std::uint64_t position, std::uint64_t control) noexcept {
  CounterLine& counters = ring.header->counters;
  if ((ring.flags & kFlagRedelivery) == 0) {
    // acq_rel: only the dead consumer could have changed it, and it is dead; a racing recoverer
    // loses the CAS.
    if (control_at(ring, position)
            .compare_exchange_strong(control,
                                     make_control(RecordState::consumed, position, ring.self_id),
                                     std::memory_order_acq_rel, std::memory_order_acquire)) {
      counters.consumer_died.fetch_add(1, std::memory_order_relaxed);
    }
    return;
  }
  if (put_back(ring, position, control)) {
    counters.consumer_died.fetch_add(1, std::memory_order_relaxed);
    counters.redelivered.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace

void set_step_hook(StepHook hook) noexcept {
  // relaxed: see at().
  step_hook.store(hook, std::memory_order_relaxed);
}

bool owner_alive(const Ring& ring, std::uint32_t owner) noexcept {
  if (ring.self == nullptr || owner == ring.self_id || owner == kLocalOwner) return true;
  // A fork child's copy of the Participant is detached: it cannot establish anything.
  if (!ring.self->attached()) return true;
  const sync::ParticipantId id = sync::ParticipantId::unpack(owner);
  if (!id.valid()) return false;  // no table issues it: nobody alive can be waited for
  Result<bool> alive = ring.self->is_alive(id);
  if (!alive) return alive.error() != make_error_code(errc::invalid_argument);
  return *alive;
}

namespace {
// R2-R7, by the holder of the reserve lock (or the single producer).
ReserveOutcome reserve_locked(const Ring& ring, std::uint32_t size, bool check_liveness) noexcept {
  ProducerLine& producer = ring.header->producer;
  // R2 relaxed: tail is written only by the lock holder (or the single producer).
  std::uint64_t position = producer.tail.load(std::memory_order_relaxed);
  if (!aligned(position)) return {make_error_code(errc::corrupt_segment), 0};
  const std::uint64_t length = record_length(size);
  const std::uint64_t offset = position & ring.mask;
  const std::uint64_t pad = offset + length > ring.capacity ? ring.capacity - offset : 0;
  const std::uint64_t end = position + pad + length;
  // R3 relaxed: the cached value is a lower bound of reclaim, written under the lock.
  std::uint64_t reclaim = producer.reclaim_seen.load(std::memory_order_relaxed);
  const auto fits = [&] {
    return static_cast<std::uint64_t>(distance(end + kRecordHeader, reclaim)) <= ring.capacity;
  };
  if (!fits()) {
    // acquire: pairs with the sweep's CAS: the consumers' reads of the reclaimed bytes happen
    // before our writes.
    reclaim = ring.header->reclaim.reclaim.load(std::memory_order_acquire);
    if (!fits()) {
      std::error_code swept = sweep(ring, check_liveness);
      reclaim = ring.header->reclaim.reclaim.load(std::memory_order_acquire);
      if (!fits()) return {swept ? swept : make_error_code(errc::would_block), 0};
    }
    producer.reclaim_seen.store(reclaim, std::memory_order_relaxed);
  }
  // Rj relaxed: read only by a taker of the lock after our death (repair_tail); end first, so a
  // count is never taken for a reservation whose end was not journaled.
  const std::uint64_t count = producer.reserve_count.load(std::memory_order_relaxed) + 1;
  producer.pending_end.store(end, std::memory_order_relaxed);
  producer.pending_count.store(count, std::memory_order_relaxed);
  at(Step::reserve_journaled);
  // R4
  if (pad != 0) {
    // relaxed: ordered before the padding header's release store below.
    control_at(ring, position + pad).store(0, std::memory_order_relaxed);
    size_at(ring, position)
        .store(static_cast<std::uint32_t>(pad - kRecordHeader), std::memory_order_relaxed);
    producer_at(ring, position).store(ring.self_id, std::memory_order_relaxed);
    // release: publishes the padding (and the free marker after it) to consumers' K2 acquire.
    control_at(ring, position)
        .store(make_control(RecordState::padding, position, ring.self_id),
               std::memory_order_release);
    at(Step::reserve_padded);
    position += pad;
  }
  // R5 relaxed: ordered before R6's release store.
  control_at(ring, end).store(0, std::memory_order_relaxed);
  // R6
  size_at(ring, position).store(size, std::memory_order_relaxed);
  producer_at(ring, position).store(ring.self_id, std::memory_order_relaxed);
  // release: publishes size/producer and the free marker at `end`; pairs with K2's acquire.
  control_at(ring, position)
      .store(make_control(RecordState::reserved, position, ring.self_id),
             std::memory_order_release);
  at(Step::reserve_published);
  // R7 release: read without the lock by statistics and space_ready().
  producer.tail.store(end, std::memory_order_release);
  at(Step::reserve_tail_moved);
  // relaxed: statistics; only the lock holder writes it (the journal's value: see R1').
  producer.reserve_count.store(count, std::memory_order_relaxed);
  at(Step::reserve_counted);
  return {{}, position};
}
}  // namespace

ReserveOutcome try_reserve(const Ring& ring, std::uint32_t size, bool check_liveness) noexcept {
  const bool spsc = ring.spsc();
  // R1
  if (!spsc) lock_reserve(ring);
  const ReserveOutcome outcome = reserve_locked(ring, size, check_liveness);
  if (!spsc) unlock(ring.header->producer.lock);  // R8
  return outcome;
}

std::size_t try_reserve_batch(const Ring& ring, std::span<const std::uint32_t> sizes,
                              std::span<std::uint64_t> positions, std::error_code& error) noexcept {
  const bool spsc = ring.spsc();
  if (!spsc) lock_reserve(ring);  // R1, once
  std::size_t reserved = 0;
  error = {};
  for (; reserved < sizes.size() && reserved < positions.size(); ++reserved) {
    if (sizes[reserved] > ring.max_message) {
      error = make_error_code(errc::message_too_large);
      break;
    }
    const ReserveOutcome outcome = reserve_locked(ring, sizes[reserved], false);
    if (outcome.error) {
      error = outcome.error;
      break;
    }
    positions[reserved] = outcome.position;
  }
  if (!spsc) unlock(ring.header->producer.lock);  // R8, once
  return reserved;
}

void commit(const Ring& ring, std::uint64_t position) noexcept {
  commit_quietly(ring, position);
  // C3 notify_all, not notify_one: a wake-up is not tied to this record. A consumer woken for it
  // may find an earlier record still reserved at the head and park again, which would strand
  // this one with the other consumers asleep; a ReadinessFd waker must see every commit too.
  // EventCount makes it a fence and a load when nobody is parked.
  ring.header->not_empty.event.notify_all();
}

void commit_quietly(const Ring& ring, std::uint64_t position) noexcept {
  // C2 release: publishes the payload; pairs with the acquire load of the control in try_claim().
  control_at(ring, position)
      .store(make_control(RecordState::committed, position, ring.self_id),
             std::memory_order_release);
}

void notify_committed(const Ring& ring) noexcept {
  ring.header->not_empty.event.notify_all();  // as in commit()
}

void abandon(const Ring& ring, std::uint64_t position) noexcept {
  // release: pairs with K2's acquire (consumers skip it) and the sweep's acquire.
  control_at(ring, position)
      .store(make_control(RecordState::aborted, position, ring.self_id), std::memory_order_release);
  ring.header->counters.abandoned.fetch_add(1, std::memory_order_relaxed);
  ring.header->not_empty.event.notify_all();  // a consumer may wait on this record
}

namespace {
// K2-K4, by the holder of the claim lock (or the single consumer).
ClaimOutcome claim_locked(const Ring& ring, std::uint64_t limit, bool check_liveness) noexcept {
  ConsumerLine& consumer = ring.header->consumer;
  ClaimOutcome outcome;
  // relaxed: head is written only by the lock holder (or the single consumer).
  std::uint64_t head = consumer.head.load(std::memory_order_relaxed);
  // relaxed: a bound for validation only (reclaim <= head always).
  const std::uint64_t reclaim = ring.header->reclaim.reclaim.load(std::memory_order_relaxed);
  for (;;) {
    if (static_cast<std::uint64_t>(distance(head, reclaim)) > ring.capacity || !aligned(head)) {
      outcome.error = make_error_code(errc::corrupt_segment);
      break;
    }
    // K2 acquire: pairs with the release stores of R6 (size), C2 (payload), abandon, L1.
    std::uint64_t control = control_at(ring, head).load(std::memory_order_acquire);
    if (control == 0) {
      outcome.error = make_error_code(errc::would_block);
      break;
    }
    const std::uint64_t length = checked_length(ring, head, control);
    if (length == 0) {
      outcome.error = make_error_code(errc::corrupt_segment);
      break;
    }
    const RecordState state = control_state(control);
    if (state == RecordState::reserved) {
      const std::uint32_t owner = control_owner(control);
      if (check_liveness && !owner_alive(ring, owner)) {
        // acq_rel: races only with the tail repair of a producer taking over the lock.
        if (control_at(ring, head)
                .compare_exchange_strong(control,
                                         make_control(RecordState::aborted, head, ring.self_id),
                                         std::memory_order_acq_rel, std::memory_order_acquire)) {
          ring.header->counters.producer_died.fetch_add(1, std::memory_order_relaxed);
        }
        continue;  // re-read: aborted now
      }
      outcome.error = make_error_code(errc::would_block);
      outcome.pending_owner = owner;
      break;
    }
    if (state == RecordState::committed) {
      // relaxed: written before the control's release store that K2 acquired.
      const std::uint32_t size = size_at(ring, head).load(std::memory_order_relaxed);
      if (size > limit) {
        outcome.error = make_error_code(errc::message_too_large);
        outcome.size = size;
        break;
      }
      // Kj relaxed: read only by a taker of the lock after our death (repair_head).
      const std::uint64_t count = consumer.claim_count.load(std::memory_order_relaxed) + 1;
      consumer.pending_head.store(head + length, std::memory_order_relaxed);
      consumer.pending_claims.store(count, std::memory_order_relaxed);
      at(Step::claim_journaled);
      // K3 relaxed: the claim publishes nothing; the lock serializes claimers, and recoverers
      // only touch records whose owner is dead.
      control_at(ring, head)
          .store(make_control(RecordState::claimed, head, ring.self_id), std::memory_order_relaxed);
      at(Step::claim_marked);
      outcome.position = head;
      outcome.size = size;
      // K4 release: read without the lock by sweeps (their bound) and statistics.
      consumer.head.store(head + length, std::memory_order_release);
      at(Step::claim_head_moved);
      // relaxed: statistics; only the lock holder writes it (the journal's value: see K1').
      consumer.claim_count.store(count, std::memory_order_relaxed);
      at(Step::claim_counted);
      break;
    }
    // claimed (behind a redelivery), consumed, padding, aborted: skip.
    head += length;
    // release: as K4.
    consumer.head.store(head, std::memory_order_release);
  }
  return outcome;
}
}  // namespace

ClaimOutcome try_claim(const Ring& ring, std::uint64_t limit, bool check_liveness) noexcept {
  const bool spsc = ring.spsc();
  if (!spsc) lock_claim(ring);  // K1
  const ClaimOutcome outcome = claim_locked(ring, limit, check_liveness);
  if (!spsc) unlock(ring.header->consumer.lock);  // K5
  return outcome;
}

std::size_t try_claim_batch(const Ring& ring, std::span<ClaimOutcome> out,
                            std::error_code& error) noexcept {
  const bool spsc = ring.spsc();
  if (!spsc) lock_claim(ring);  // K1, once
  std::size_t claimed = 0;
  error = {};
  for (; claimed < out.size(); ++claimed) {
    out[claimed] = claim_locked(ring, ~std::uint64_t{0}, false);
    if (out[claimed].error) {
      error = out[claimed].error;
      break;
    }
  }
  if (!spsc) unlock(ring.header->consumer.lock);  // K5, once
  return claimed;
}

void unclaim(const Ring& ring, std::uint64_t position) noexcept {
  (void)put_back(ring, position, make_control(RecordState::claimed, position, ring.self_id));
}

void release(const Ring& ring, std::uint64_t position) noexcept {
  // L1 release: our reads of the payload happen before a producer reuses the bytes; pairs with
  // the sweep's acquire load.
  control_at(ring, position)
      .store(make_control(RecordState::consumed, position, ring.self_id),
             std::memory_order_release);
  // seq_cst fence: the store-load "mark consumed, then look for parked producers" against a
  // producer's "announce on not_full (prepare_wait's fence), then re-check by sweeping": either
  // we see its announcement below, or its sweep sees our L1.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // L2: sweep lazily (a CAS and a notify per message are the consumer's largest costs): when a
  // producer waits, or when reclaim lags a quarter ring behind. Producers short of space sweep
  // themselves (R3), and consumers sweep before they park.
  // relaxed: ordered by the fence above; a hint either way.
  const std::uint64_t reclaim = ring.header->reclaim.reclaim.load(std::memory_order_relaxed);
  if (ring.header->not_full.event.waiters() != 0 ||
      static_cast<std::uint64_t>(distance(position, reclaim)) >= ring.capacity / 4) {
    (void)sweep(ring, false, false);
  }
}

std::error_code sweep(const Ring& ring, bool check_liveness, bool wait) noexcept {
  ReclaimLine& line = ring.header->reclaim;
  // S1: only the lock holder moves reclaim, so the records at [reclaim, head) stay put while we
  // read them (a producer writes only below the reclaim it read + capacity).
  if (wait) {
    (void)lock(ring, line.lock);  // a dead sweeper's lock is taken over; no repair needed
  } else if (!try_lock(ring, line.lock)) {
    return {};
  }
  at(Step::sweep_locked);
  // relaxed: we are the only writer (the lock's acquire ordered the previous holder's store).
  std::uint64_t reclaim = line.reclaim.load(std::memory_order_relaxed);
  // acquire: pairs with K4's release: records before head were written before it.
  const std::uint64_t head = ring.header->consumer.head.load(std::memory_order_acquire);
  bool advanced = false;
  std::error_code error;
  for (std::uint32_t step = 0; distance(head, reclaim) > 0; ++step) {
    if (static_cast<std::uint64_t>(distance(head, reclaim)) > ring.capacity ||
        step > ring.capacity / kRecordHeader || !aligned(reclaim)) {
      error = make_error_code(errc::corrupt_segment);
      break;
    }
    // S2 acquire: pairs with L1 / abandon / R4 release stores.
    std::uint64_t control = control_at(ring, reclaim).load(std::memory_order_acquire);
    const std::uint64_t length = checked_length(ring, reclaim, control);
    if (length == 0) {
      error = make_error_code(errc::corrupt_segment);
      break;
    }
    const RecordState state = control_state(control);
    if (state == RecordState::consumed || state == RecordState::padding ||
        state == RecordState::aborted) {
      reclaim += length;
      // release: hands the space to producers (their acquire load of reclaim in R3): the
      // consumers' payload reads (L1, acquired above) happen before the producers' writes.
      line.reclaim.store(reclaim, std::memory_order_release);
      at(Step::sweep_advanced);
      advanced = true;
      continue;
    }
    if (state == RecordState::claimed && check_liveness &&
        !owner_alive(ring, control_owner(control))) {
      recover_claimed(ring, reclaim, control);
      continue;  // re-read: consumed or committed now
    }
    break;
  }
  unlock(line.lock);
  if (advanced) ring.header->not_full.event.notify_all();  // S3
  return error;
}

bool data_ready(const Ring& ring) noexcept {
  ConsumerLine& consumer = ring.header->consumer;
  const bool spsc = ring.spsc();
  // Under the claim lock head is exact and the record there cannot be reclaimed (reclaim <=
  // head), so reading its control word never races with a producer reusing the bytes.
  if (!spsc && !try_lock(ring, consumer.lock)) return true;  // busy: somebody claims; retry
  // relaxed: lock holder (or the single consumer).
  const std::uint64_t head = consumer.head.load(std::memory_order_relaxed);
  if (!aligned(head)) {  // corrupt: let try_claim report it
    if (!spsc) unlock(consumer.lock);
    return true;
  }
  // acquire: pairs with the release stores of R6/C2.
  const std::uint64_t control = control_at(ring, head).load(std::memory_order_acquire);
  if (!spsc) unlock(consumer.lock);
  return control != 0 && control_state(control) != RecordState::reserved;
}

std::uint32_t head_pending_owner(const Ring& ring, bool abort_dead) noexcept {
  ConsumerLine& consumer = ring.header->consumer;
  const bool spsc = ring.spsc();
  // Under the claim lock, as data_ready(): the head record cannot be reclaimed meanwhile.
  if (!spsc && !try_lock(ring, consumer.lock)) return 0;
  // relaxed: lock holder (or the single consumer).
  const std::uint64_t head = consumer.head.load(std::memory_order_relaxed);
  std::uint32_t owner = 0;
  if (aligned(head)) {
    // acquire: pairs with the release store of R6.
    std::uint64_t control = control_at(ring, head).load(std::memory_order_acquire);
    if (control_valid_for(control, head) && control_state(control) == RecordState::reserved) {
      owner = control_owner(control);
      if (abort_dead && !owner_alive(ring, owner)) {
        // acq_rel: as in try_claim: races only with a tail repair by a lock taker.
        if (control_at(ring, head)
                .compare_exchange_strong(control,
                                         make_control(RecordState::aborted, head, ring.self_id),
                                         std::memory_order_acq_rel, std::memory_order_acquire)) {
          ring.header->counters.producer_died.fetch_add(1, std::memory_order_relaxed);
        }
        owner = 0;
      }
    }
  }
  if (!spsc) unlock(consumer.lock);
  return owner;
}

bool space_ready(const Ring& ring, std::uint32_t size) noexcept {
  // relaxed/acquire: hints only; try_reserve decides under the lock.
  const std::uint64_t tail = ring.header->producer.tail.load(std::memory_order_relaxed);
  const std::uint64_t reclaim = ring.header->reclaim.reclaim.load(std::memory_order_acquire);
  const std::uint64_t length = record_length(size);
  const std::uint64_t offset = tail & ring.mask;
  const std::uint64_t pad = offset + length > ring.capacity ? ring.capacity - offset : 0;
  return static_cast<std::uint64_t>(distance(tail + pad + length + kRecordHeader, reclaim)) <=
         ring.capacity;
}

}  // namespace xproc::channel::detail
