#pragma once
// BulkChannel's two halves: bulk_channel.cc (records, pool, paths) includes pool.h, and
// bulk_channel_pull.cc (the transfer table) includes transfer.h; this header is the seam between
// them, in terms of bytes and opaque handles only, so each half keeps one job and the records
// code never sees the transfer table's types.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <system_error>

#include "xproc/bulk/bulk_channel.h"
#include "xproc/shm/segment.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/result.h"

namespace xproc::bulk::detail {

// A TransferDescriptor (transfer.h) as the 32 bytes a record carries.
using PullWire = std::array<std::byte, 32>;

struct PullSide;  // owns the process's TransferEndpoint
struct PullSideDelete {
  void operator()(PullSide* side) const noexcept;
};
using PullSidePtr = std::unique_ptr<PullSide, PullSideDelete>;
using PendingPullPtr = std::unique_ptr<PendingPull, PendingPullDelete>;

// Bytes of the transfer table at offset 0 of the body, and the Init step that formats it.
std::size_t pull_table_size(std::uint32_t slots, std::uint32_t participant_capacity) noexcept;
[[nodiscard]] std::error_code pull_table_format(std::span<std::byte> body, std::uint32_t slots,
                                                std::uint32_t participant_capacity);
// Validates the table (TransferEndpoint::open) and publishes this process's probe record. On
// success *extent is the table's total size (validated against the body).
Result<PullSidePtr> open_pull_side(const shm::Segment& segment, const BulkProcessOptions& options,
                                   std::uint64_t* extent);

// Registers `payload` for a consumer to pull; `wire` receives the descriptor bytes.
// limit_reached when every slot is busy (the caller sends through the pool instead).
Result<PendingPullPtr> register_pull(PullSide& side, std::span<const std::byte> payload,
                                     PullWire& wire);
// Transfer::wait_until.
[[nodiscard]] std::error_code wait_pull(PendingPull& pending, sync::Deadline deadline) noexcept;
// Withdraws a transfer nobody claimed yet: true when withdrawn (no consumer will ever copy it),
// false when a consumer claimed it first (wait_pull then tells the outcome).
bool withdraw_pull(PendingPull& pending) noexcept;
// The payload length a descriptor names (untrusted: pull() validates it against the table).
std::uint64_t pull_length(const PullWire& wire) noexcept;
// Whether the descriptor carries this table's tag (a genuine descriptor, maybe of a generation
// that is gone: a redelivered record whose transfer finished and whose slot was reused).
bool pull_same_table(const PullSide& side, const PullWire& wire) noexcept;
// TransferEndpoint::pull into `into` (exactly the descriptor's length).
Result<std::size_t> pull_into(PullSide& side, const PullWire& wire, std::span<std::byte> into);

}  // namespace xproc::bulk::detail
