// The process-local view of an rpc segment (rpc_internal.h).
#include "rpc_internal.h"

#include "xproc/sys/error.h"

namespace xproc::rpc::detail {

std::error_code open_view(const shm::Segment& segment, SegmentView& view) {
  const std::span<std::byte> body = segment.body();
  if (std::error_code error = validate(body, view.config)) return error;
  const Layout layout = layout_for(view.config);  // validated equal to the header's offsets
  view.header = reinterpret_cast<ServerHeader*>(body.data());
  view.slots = reinterpret_cast<ClientSlot*>(body.data() + layout.slots_offset);
  Result<channel::Endpoint> requests = channel::Endpoint::open(
      body.subspan(layout.request_offset, layout.request_size), &segment.self());
  if (!requests) return requests.error();
  view.requests = *requests;
  view.responses.clear();
  view.responses.reserve(view.config.max_clients);
  for (std::uint32_t slot = 0; slot < view.config.max_clients; ++slot) {
    Result<channel::Endpoint> responses = channel::Endpoint::open(
        body.subspan(layout.response_offset + slot * layout.response_stride, layout.response_size),
        &segment.self());
    if (!responses) return responses.error();
    view.responses.push_back(*responses);
  }
  return {};
}

bool packed_alive(const sync::Participant& self, std::uint32_t packed) noexcept {
  if (packed == 0) return false;
  const Result<bool> alive = self.is_alive(sync::ParticipantId::unpack(packed));
  // An id the table cannot have issued (invalid_argument) or an impossible slot word
  // (corrupt_state) names nobody alive.
  return alive.has_value() && *alive;
}

bool free_slot(ClientSlot& slot, std::uint32_t owner) noexcept {
  std::uint32_t expected = owner;
  // acq_rel: acquire orders this after the liveness check's view of the owner; release
  // publishes the free slot to the next claimer's acquire load/CAS of owner.
  return slot.owner.compare_exchange_strong(expected, 0, std::memory_order_acq_rel,
                                            std::memory_order_relaxed);
}

}  // namespace xproc::rpc::detail
