// xproc-inspect: gathering a segment's state (model.h).
#include "model.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "xproc/channel/layout.h"
#include "xproc/sys/error.h"

namespace xproc::inspect {
namespace {

LockOwner::State owner_state(const shm::Segment& segment, std::uint32_t word) {
  if (word == 0) return LockOwner::State::free;
  if (word == channel::detail::kLocalOwner) return LockOwner::State::local;
  Result<bool> alive = shm::participant_alive(segment, sync::ParticipantId::unpack(word));
  if (!alive) return LockOwner::State::invalid;
  return *alive ? LockOwner::State::alive : LockOwner::State::dead;
}

// Counts the live and dead ids of one role's entries (layout.h, the role table).
RoleCount count_role(const shm::Segment& segment, const std::atomic<std::uint32_t>* entries,
                     std::uint32_t slots) {
  RoleCount count;
  for (std::uint32_t slot = 0; slot < slots; ++slot) {
    // relaxed: a snapshot of who took the role; liveness comes from the kernel's lock state.
    const std::uint32_t id = entries[slot].load(std::memory_order_relaxed);
    if (id == 0) continue;
    if (owner_state(segment, id) == LockOwner::State::alive) {
      ++count.alive;
    } else {
      ++count.dead;
    }
  }
  return count;
}

ChannelView read_channel(const shm::Segment& segment) {
  ChannelView view;
  // The channel starts at body offset 0 (channel::Channel's placement). Opened without a
  // Participant: statistics() only loads, and nothing here declares anybody dead or writes.
  Result<channel::Endpoint> endpoint = channel::Endpoint::open(segment.body(), nullptr);
  if (!endpoint) {
    view.error = endpoint.error();
    return view;
  }
  view.capacity = endpoint->capacity();
  view.max_message = endpoint->max_message();
  view.statistics = endpoint->statistics();
  // Endpoint::open validated the header (magic read with acquire, so the identity written
  // before it is visible); flags never change after format.
  const auto& header =
      *reinterpret_cast<const channel::detail::ChannelHeader*>(segment.body().data());
  view.flags = header.identity.flags;
  // relaxed: a snapshot of who holds each lock; liveness comes from the kernel's lock state.
  const std::uint32_t reserve = header.producer.lock.load(std::memory_order_relaxed);
  const std::uint32_t claim = header.consumer.lock.load(std::memory_order_relaxed);
  const std::uint32_t sweep = header.reclaim.lock.load(std::memory_order_relaxed);
  view.locks = {LockOwner{"reserve", reserve, owner_state(segment, reserve)},
                LockOwner{"claim", claim, owner_state(segment, claim)},
                LockOwner{"sweep", sweep, owner_state(segment, sweep)}};
  // Endpoint::open checked role_slots (at most 4096) and that the region holds the table.
  const std::uint32_t slots = header.identity.role_slots;
  if (slots != 0) {
    view.roles_tracked = true;
    const auto* entries = reinterpret_cast<const std::atomic<std::uint32_t>*>(
        segment.body().data() + channel::detail::kDataOffset + view.capacity);
    view.producers = count_role(segment, entries, slots);
    view.consumers = count_role(segment, entries + slots, slots);
  }
  return view;
}

}  // namespace

SegmentEntry gather(std::string_view name) {
  SegmentEntry entry;
  entry.name = std::string(name);
  // Another user's segment: the file's permission bits decide (root sees everything), not the
  // owner check open() makes for its callers by default.
  shm::SegmentOptions options;
  options.allow_other_owner = true;
  Result<shm::InspectedSegment> view = shm::inspect_mapped(name, options);
  if (!view) {
    entry.error = view.error();
    return entry;
  }
  entry.view = std::move(*view);
  const shm::Segment& segment = entry.view.segment;
  Result<bool> creator_alive = shm::participant_alive(segment, segment.info().creator);
  if (creator_alive) entry.creator_alive = *creator_alive;
  if (segment.kind() == shm::SegmentKind::channel) entry.channel = read_channel(segment);
  return entry;
}

std::string error_name(std::error_code error) {
  if (error.category() == xproc::error_category()) {
    if (const char* name = errc_name(static_cast<errc>(error.value()))) return name;
    return "xproc_error_" + std::to_string(error.value());
  }
  if (error.category() == std::generic_category() || error.category() == std::system_category()) {
    if (error.value() == EACCES || error.value() == EPERM) return "permission_denied";
    if (error.value() == ENOENT) return "not_found";
    if (const char* name = strerrorname_np(error.value())) return name;
  }
  return std::string(error.category().name()) + "_" + std::to_string(error.value());
}

std::string_view kind_name(shm::SegmentKind kind) {
  switch (kind) {
    case shm::SegmentKind::raw:
      return "raw";
    case shm::SegmentKind::channel:
      return "channel";
    case shm::SegmentKind::pool:
      return "pool";
    case shm::SegmentKind::rpc:
      return "rpc";
  }
  return "unknown";
}

std::string_view lock_state_name(LockOwner::State state) {
  switch (state) {
    case LockOwner::State::free:
      return "free";
    case LockOwner::State::alive:
      return "alive";
    case LockOwner::State::dead:
      return "dead";
    case LockOwner::State::local:
      return "local";
    case LockOwner::State::invalid:
      return "invalid";
  }
  return "invalid";
}

}  // namespace xproc::inspect
