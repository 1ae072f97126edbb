// BulkChannel's pull half (bulk_channel_internal.h): the transfer table at offset 0 of the body,
// registration, completion and the consumer's pull. Only this file includes transfer.h.
#include <atomic>
#include <cstring>
#include <utility>

#include "bulk_channel_internal.h"
#include "xproc/bulk/transfer.h"
#include "xproc/bulk/transfer_layout.h"

namespace xproc::bulk::detail {

struct PullSide {
  const shm::Segment* segment = nullptr;
  TransferEndpoint endpoint;
  std::byte* slots = nullptr;  // the table's first TransferSlot (validated by open)
  std::uint32_t slot_count = 0;
};

struct PendingPull {
  PullSide* side = nullptr;
  Transfer transfer;
};

void PullSideDelete::operator()(PullSide* side) const noexcept {
  delete side;
}

void PendingPullDelete::operator()(PendingPull* pending) const noexcept {
  delete pending;  // ~Transfer: withdraws an unclaimed transfer or waits for the copy
}

namespace {

static_assert(sizeof(TransferDescriptor) == sizeof(PullWire));

TransferDescriptor to_descriptor(const PullWire& wire) noexcept {
  TransferDescriptor descriptor;
  std::memcpy(&descriptor, wire.data(), sizeof descriptor);
  return descriptor;
}

}  // namespace

std::size_t pull_table_size(std::uint32_t slots, std::uint32_t participant_capacity) noexcept {
  return transfer_table_size(TransferTableOptions{slots}, participant_capacity);
}

std::error_code pull_table_format(std::span<std::byte> body, std::uint32_t slots,
                                  std::uint32_t participant_capacity) {
  return transfer_table_init(TransferTableOptions{slots}, participant_capacity)(body);
}

Result<PullSidePtr> open_pull_side(const shm::Segment& segment, const BulkProcessOptions& options,
                                   std::uint64_t* extent) {
  TransferEndpointOptions endpoint_options;
  endpoint_options.allow_any_reader = options.allow_any_reader;
  endpoint_options.liveness_period = options.liveness_period;
  Result<TransferEndpoint> endpoint = TransferEndpoint::open(segment, endpoint_options);
  if (!endpoint) return endpoint.error();
  // open() validated the header (written before the segment's ready flag, never changed):
  // total_size and slots_offset lie inside the body.
  const auto* header = reinterpret_cast<const TableHeader*>(segment.body().data());
  PullSidePtr side(new PullSide);
  side->segment = &segment;
  side->endpoint = std::move(*endpoint);
  side->slots = segment.body().data() + header->slots_offset;
  side->slot_count = header->slot_count;
  *extent = header->total_size;
  return side;
}

Result<PendingPullPtr> register_pull(PullSide& side, std::span<const std::byte> payload,
                                     PullWire& wire) {
  Result<Transfer> transfer = side.endpoint.register_source(payload);
  if (!transfer) return transfer.error();
  std::memcpy(wire.data(), &transfer->descriptor(), sizeof(TransferDescriptor));
  PendingPullPtr pending(new PendingPull);
  pending->side = &side;
  pending->transfer = std::move(*transfer);
  return pending;
}

std::error_code wait_pull(PendingPull& pending, sync::Deadline deadline) noexcept {
  return pending.transfer.wait_until(deadline);
}

bool withdraw_pull(PendingPull& pending) noexcept {
  const TransferDescriptor& descriptor = pending.transfer.descriptor();
  if (descriptor.slot >= pending.side->slot_count) return false;
  auto& slot = reinterpret_cast<TransferSlot*>(pending.side->slots)[descriptor.slot];
  // acquire: pairs with a claimer's CAS; the word decides withdraw vs wait (as Transfer's
  // destructor decides: the same CAS race as a claim, exactly one of them wins).
  std::uint64_t word = slot.state.load(std::memory_order_acquire);
  if (!state_valid(word) || state_generation(word) != descriptor.generation ||
      state_of(word) != SlotState::open) {
    return false;
  }
  // release: our last use of the slot happens before its reuse (a registration's acquire CAS).
  if (!slot.state.compare_exchange_strong(
          word, make_state(descriptor.generation, SlotState::withdrawn, state_value(word)),
          std::memory_order_release, std::memory_order_acquire)) {
    return false;
  }
  // The handle now reads `withdrawn` (no state a live owner's handle expects): poll() finishes
  // it without touching the slot again, so its destructor neither waits nor retires anything.
  (void)pending.transfer.poll();
  return true;
}

std::uint64_t pull_length(const PullWire& wire) noexcept {
  return to_descriptor(wire).total_length;
}

bool pull_same_table(const PullSide& side, const PullWire& wire) noexcept {
  return to_descriptor(wire).table_tag == side.endpoint.table_tag();
}

Result<std::size_t> pull_into(PullSide& side, const PullWire& wire, std::span<std::byte> into) {
  return side.endpoint.pull(to_descriptor(wire), into);
}

}  // namespace xproc::bulk::detail
