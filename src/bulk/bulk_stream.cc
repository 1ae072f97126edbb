// BulkChannel's streamed pool copies (bulk_stream.h): the stream header, pacing, whole-buffer
// and ring streams, both sides.
#include "bulk_stream.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <thread>

#include "xproc/sync/detail/spin.h"
#include "xproc/sys/error.h"
#include "xproc/sys/futex.h"

namespace xproc::bulk::detail {

namespace {

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
static_assert(sizeof(StreamHeader) == kStreamHeader);
static_assert(sizeof(Descriptor) == sizeof(std::uint64_t) * 4);
constexpr std::uint32_t kStreamAborted = ~std::uint32_t{0};

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

// --- sending

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

// send_whole's pacing, before it copies chunk `published`: waits while it is stream_window
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
std::error_code send_whole(BulkChannel::State& state, std::span<const std::byte> payload,
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

// Whether send_stream streams `size` bytes through a ring (BulkProcessOptions::stream_ring_min):
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
  // relaxed (eight): published by the commit below (release; the claimer acquires it). The
  // fence orders them before this stream's first bytes for a consumer of an earlier stream of
  // this buffer, which re-checks stream_id after an acquire fence (receive_stream).
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
    // any byte of chunk k then sees started >= k + 1 after its acquire fence (receive_stream).
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

// send_stream's ring: loans a window-sized buffer and sends the payload through it, again
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

// --- receiving

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

}  // namespace

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
    *ring = RingClaim{buffer, position};
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

bool claim_ring(const RingClaim& ring) noexcept {
  return decide_ring(*reinterpret_cast<StreamHeader*>(ring.buffer), ring.position,
                     kVerdictDelivered);
}

std::error_code send_stream(BulkChannel::State& state, std::span<const std::byte> payload,
                            const sync::Deadline* deadline) noexcept {
  if (uses_ring(state, payload.size(), deadline)) return send_ring(state, payload, *deadline);
  return send_whole(state, payload, deadline);
}

}  // namespace xproc::bulk::detail
