#pragma once
// The channel protocol's steps (reserve/commit, claim/release, sweep, recovery), used by
// endpoint.cc. Private to src/channel. The numbered crash protocol is in ring.cc.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>

#include "xproc/channel/endpoint.h"
#include "xproc/channel/layout.h"

namespace xproc::channel::detail {

inline std::atomic_ref<std::uint64_t> control_at(const Ring& ring, std::uint64_t position) {
  return std::atomic_ref<std::uint64_t>(
      *reinterpret_cast<std::uint64_t*>(ring.data + (position & ring.mask)));
}
inline std::atomic_ref<std::uint32_t> size_at(const Ring& ring, std::uint64_t position) {
  return std::atomic_ref<std::uint32_t>(
      *reinterpret_cast<std::uint32_t*>(ring.data + (position & ring.mask) + 8));
}
inline std::atomic_ref<std::uint32_t> producer_at(const Ring& ring, std::uint64_t position) {
  return std::atomic_ref<std::uint32_t>(
      *reinterpret_cast<std::uint32_t*>(ring.data + (position & ring.mask) + 12));
}
inline std::byte* payload_at(const Ring& ring, std::uint64_t position) {
  return ring.data + (position & ring.mask) + kRecordHeader;
}

// Liveness of a packed owner id: true for this process, for kLocalOwner, without a Participant,
// and when liveness cannot be established (never reports a live peer dead); false for a dead
// participant or an id no table issues.
bool owner_alive(const Ring& ring, std::uint32_t owner) noexcept;

// Outcome of a reservation attempt.
struct ReserveOutcome {
  std::error_code error;  // {} / would_block (full) / corrupt_segment
  std::uint64_t position = 0;
};
ReserveOutcome try_reserve(const Ring& ring, std::uint32_t size, bool check_liveness) noexcept;
// Reserves records of sizes[i] in order under one acquisition of the reserve lock, until one
// does not fit (error = would_block) or is too large (message_too_large); positions[i] receives
// each position. The count reserved.
std::size_t try_reserve_batch(const Ring& ring, std::span<const std::uint32_t> sizes,
                              std::span<std::uint64_t> positions, std::error_code& error) noexcept;
void commit(const Ring& ring, std::uint64_t position) noexcept;
// commit() without the notify (C2 only); notify_committed() is C3, once for a batch.
void commit_quietly(const Ring& ring, std::uint64_t position) noexcept;
void notify_committed(const Ring& ring) noexcept;
void abandon(const Ring& ring, std::uint64_t position) noexcept;

// Outcome of a claim attempt.
struct ClaimOutcome {
  std::error_code error;  // {} / would_block (empty or pending) / message_too_large / corrupt
  std::uint64_t position = 0;
  std::uint32_t size = 0;
  std::uint32_t pending_owner = 0;  // would_block with a reserved record at the head: its owner
};
// Claims the next committed record if its size <= limit. check_liveness: a reserved record at the
// head whose producer is dead is aborted and skipped (costs one F_OFD_GETLK).
ClaimOutcome try_claim(const Ring& ring, std::uint64_t limit, bool check_liveness) noexcept;
// Claims up to out.size() committed records in order under one acquisition of the claim lock;
// stops at the first that is not ready (error: its would_block / corrupt_segment). The count.
std::size_t try_claim_batch(const Ring& ring, std::span<ClaimOutcome> out,
                            std::error_code& error) noexcept;
// Puts a record this process claimed back in the queue (committed again, head moved back).
void unclaim(const Ring& ring, std::uint64_t position) noexcept;
// Marks a claimed record consumed, then sweeps.
void release(const Ring& ring, std::uint64_t position) noexcept;

// Advances reclaim over consumed/padding/aborted records (and, with check_liveness, over records
// claimed by dead consumers, or puts them back with redelivery). Notifies not_full on progress.
// wait: take the sweep lock even if another sweeper holds it (false: leave it to that one).
std::error_code sweep(const Ring& ring, bool check_liveness, bool wait = true) noexcept;

// Wait hints (no side effects): a committed (or skippable) record at the head, read under a
// try-lock of the claim lock (true when it is busy: somebody is claiming); free space for a
// record of `size` bytes (positions only).
bool data_ready(const Ring& ring) noexcept;
bool space_ready(const Ring& ring, std::uint32_t size) noexcept;

// For the readiness waker (readiness.cc): the packed id of the producer still writing the head
// record (a `reserved` record there), else 0 (also when the claim lock is busy). abort_dead: when
// that producer is dead, abort the record as try_claim(check_liveness) does (counted in
// producer_died; consumers then skip it) and return 0.
std::uint32_t head_pending_owner(const Ring& ring, bool abort_dead) noexcept;

// The role table (roles.cc). register_role: records this participant as a producer / consumer
// of the channel (a load when it is already; nothing without a role table). roles_registered:
// somebody ever registered in that role (a hint). peer_state: by the liveness of every entry.
void register_role(const Ring& ring, Role role) noexcept;
bool roles_registered(const Ring& ring, Role role) noexcept;
PeerState peer_state(const Ring& ring, Role role) noexcept;
// True when `role` has been taken by somebody and no live participant of the table could take
// it any more: every live one holds only the other role (errc::peer_dead for the other side's
// waits). False without a role table or a self, or when the table cannot be read.
bool side_ended(const Ring& ring, Role role) noexcept;

}  // namespace xproc::channel::detail
