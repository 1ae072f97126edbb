#pragma once
// What xproc-inspect knows about a segment: the shm registry's view (header facts, participants,
// lock bytes, staleness) plus, for a channel-kind segment, the channel's statistics and lock
// owners. gather() reads; the renderers (render.h) print.
//
// Reading never attaches to a segment (no participant slot is taken, nothing is written): the
// segment is opened through shm::inspect_mapped(). A channel is assumed to start at offset 0 of
// the segment body, as channel::Channel places it (src/channel/channel.cc).
// Errors are kept per segment (a foreign or corrupt file is an entry with an error, never a
// crash): every value read from shared memory is validated by shm/channel before it is used.
// A participant dying while we read changes only what we report (snapshot semantics).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "xproc/channel/endpoint.h"
#include "xproc/shm/segment_registry.h"

namespace xproc::inspect {

// The owner of one of a channel's lock words (reserve, claim, sweep).
struct LockOwner {
  enum class State {
    free,     // word 0
    alive,    // a live participant holds it
    dead,     // its holder died: the next waiter takes it over
    local,    // held by an Endpoint opened without a Participant (threads of one process)
    invalid,  // a word no participant of this segment can have written
  };
  std::string_view lock;  // "reserve", "claim", "sweep"
  std::uint32_t word = 0;
  State state = State::free;
};

// Entries of one role in a channel's role table (docs/decisions/0034-channel-roles.md).
struct RoleCount {
  std::uint32_t alive = 0;
  std::uint32_t dead = 0;  // dead or detached, or an id no participant of the segment has
};

struct ChannelView {
  std::error_code error;  // the channel layout's validation failed (layout_mismatch, ...)
  std::uint32_t capacity = 0;
  std::uint32_t max_message = 0;
  std::uint32_t flags = 0;  // channel::detail::kFlag*
  channel::Statistics statistics;
  std::vector<LockOwner> locks;
  bool roles_tracked = false;  // the channel has a role table
  RoleCount producers;         // processes that have sent (or declared themselves producers)
  RoleCount consumers;         // ... received (or declared themselves consumers)
};

struct SegmentEntry {
  std::string name;
  std::error_code error;       // the segment could not be read (then only `name` is meaningful)
  shm::InspectedSegment view;  // valid when !error
  std::optional<bool> creator_alive;   // empty when the creator's id cannot be asked about
  std::optional<ChannelView> channel;  // channel-kind segments
};

// Opens `name` for inspection (see the banner) and reads everything the renderers print.
SegmentEntry gather(std::string_view name);

// A stable name for an error: the xproc::errc enumerator ("corrupt_segment"), permission_denied
// and not_found for EACCES/EPERM and ENOENT, else the errno name ("ENOSPC").
std::string error_name(std::error_code error);

std::string_view kind_name(shm::SegmentKind kind);
std::string_view lock_state_name(LockOwner::State state);

}  // namespace xproc::inspect
