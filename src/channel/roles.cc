// The role table (layout.h): who has sent and who has received on a channel, so that a waiter
// can tell that the other side is gone (errc::peer_dead) with the participant table's liveness
// test, the one liveness mechanism.
#include "ring_internal.h"

namespace xproc::channel::detail {
namespace {

// The table: 32-bit words right after the ring (a 64-byte aligned offset: capacity >= 256).
std::atomic<std::uint32_t>* role_entries(const Ring& ring, Role role) noexcept {
  auto* table = reinterpret_cast<std::atomic<std::uint32_t>*>(ring.data + ring.capacity);
  return table + std::size_t{static_cast<std::uint32_t>(role)} * ring.role_slots;
}

std::atomic<std::uint32_t>& role_registrations(const Ring& ring, Role role) noexcept {
  CounterLine& counters = ring.header->counters;
  return role == Role::producer ? counters.producer_registrations : counters.consumer_registrations;
}

}  // namespace

void register_role(const Ring& ring, Role role) noexcept {
  // A fork child's copy of an Endpoint still carries its parent's id: it must not give the
  // parent a role the parent never took.
  if (ring.role_slots == 0 || ring.self == nullptr || !ring.self->attached()) return;
  // Endpoint::open checked self's slot < role_slots.
  std::atomic<std::uint32_t>& entry =
      role_entries(ring, role)[sync::ParticipantId::unpack(ring.self_id).slot];
  // relaxed: the common case, already registered; only this participant writes its entry.
  if (entry.load(std::memory_order_relaxed) == ring.self_id) return;
  // relaxed: the entry carries nothing but the id; a reader tests the id's liveness with the
  // kernel's lock, not with anything this store would publish. exchange: two threads of this
  // process may register at once; the registration is counted once.
  if (entry.exchange(ring.self_id, std::memory_order_relaxed) != ring.self_id) {
    // relaxed: a hint (roles_registered), statistics-like.
    role_registrations(ring, role).fetch_add(1, std::memory_order_relaxed);
  }
}

bool roles_registered(const Ring& ring, Role role) noexcept {
  // relaxed: a hint; a registration missed here is seen at the next wait.
  return ring.role_slots != 0 &&
         role_registrations(ring, role).load(std::memory_order_relaxed) != 0;
}

PeerState peer_state(const Ring& ring, Role role) noexcept {
  if (ring.role_slots == 0) return PeerState::untracked;
  const std::atomic<std::uint32_t>* entries = role_entries(ring, role);
  bool any = false;
  for (std::uint32_t slot = 0; slot < ring.role_slots; ++slot) {
    // relaxed: see register_role (the id is untrusted: owner_alive validates it, and an id no
    // table issues reads dead).
    const std::uint32_t id = entries[slot].load(std::memory_order_relaxed);
    if (id == 0) continue;
    any = true;
    if (owner_alive(ring, id)) return PeerState::alive;
  }
  return any ? PeerState::all_dead : PeerState::none_yet;
}

namespace {
// What side_ended() gathers while it visits the participant table (one pointer: the
// std::function it is passed through keeps it without allocating).
struct SideScan {
  const Ring* ring;
  const std::atomic<std::uint32_t>* role;   // entries of the role that could end
  const std::atomic<std::uint32_t>* other;  // entries of the other role
  bool possible = false;                    // a live participant could still take the role
};
}  // namespace

bool side_ended(const Ring& ring, Role role) noexcept {
  if (ring.role_slots == 0 || ring.self == nullptr || !ring.self->attached()) return false;
  if (!roles_registered(ring, role)) return false;  // nobody took it yet: wait for the first
  const Role other = role == Role::producer ? Role::consumer : Role::producer;
  SideScan scan{&ring, role_entries(ring, role), role_entries(ring, other)};
  SideScan* context = &scan;
  const std::error_code error =
      ring.self->for_each_participant([context](sync::ParticipantId id, bool alive) {
        if (!alive || context->possible) return;
        if (id.slot >= context->ring->role_slots) {  // no entry to tell: a possible peer
          context->possible = true;
          return;
        }
        const std::uint32_t packed = id.pack();
        // relaxed: as in peer_state; the ids are only compared.
        const bool has_role = context->role[id.slot].load(std::memory_order_relaxed) == packed;
        const bool has_other = context->other[id.slot].load(std::memory_order_relaxed) == packed;
        // It has the role, or it has not taken the other one (it may still take this one).
        if (has_role || !has_other) context->possible = true;
      });
  return !error && !scan.possible;  // an error: cannot tell, so not ended
}

}  // namespace xproc::channel::detail
