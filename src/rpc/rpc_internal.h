#pragma once
// Pieces shared by the rpc server and client: the process-local view of a validated segment.

#include <cstdint>
#include <span>
#include <system_error>
#include <vector>

#include "xproc/channel/endpoint.h"
#include "xproc/rpc/layout.h"
#include "xproc/shm/segment.h"
#include "xproc/sync/participant_table.h"

namespace xproc::rpc::detail {

// Pointers into a validated segment body and an Endpoint per channel.
struct SegmentView {
  ServerConfig config{};
  ServerHeader* header = nullptr;
  ClientSlot* slots = nullptr;
  channel::Endpoint requests;
  std::vector<channel::Endpoint> responses;  // one per slot
};

// Validates `segment`'s body (layout.h) and opens its channels with the segment's participant.
std::error_code open_view(const shm::Segment& segment, SegmentView& view);

// Liveness of the participant whose packed id a shared word holds: false for 0, for an id the
// table cannot have issued (a scribbled word) and for a dead one.
bool packed_alive(const sync::Participant& self, std::uint32_t packed) noexcept;

// Frees `slot` if `owner` (a dead participant's packed id) still holds it. True when this call
// freed it.
bool free_slot(ClientSlot& slot, std::uint32_t owner) noexcept;

}  // namespace xproc::rpc::detail
