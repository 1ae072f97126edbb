#pragma once
// BulkChannel's streamed pool copies (docs/layout/bulk_channel.md, "Streams", "Pacing", "Ring
// streams"; decisions 0042, 0048, 0058): the producer commits the record first and copies the
// payload chunk by chunk, paced by the consumer that copies each chunk out as soon as it is in.
// A whole-buffer stream writes the payload into a pool buffer as large as the payload; a ring
// into stream_window slots, with a verdict that makes delivery exact and a restart when its
// consumer dies. bulk_channel.cc sends through send_stream() and receives through
// receive_stream() + claim_ring().

#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>

#include "bulk_channel_state.h"
#include "xproc/bulk/pool.h"
#include "xproc/sync/scope.h"

namespace xproc::bulk::detail {

// Record kind of a streamed pool_copy payload (BulkPath values are 1..3).
inline constexpr std::uint32_t kStreamKind = 4;
// The stream header in front of the payload in every pool buffer (non-streamed payloads start
// there too: a stale consumer of an earlier stream may still write into those bytes).
inline constexpr std::size_t kStreamHeader = 64;
inline constexpr std::uint32_t kMinStreamChunk = 4096;

// The record body of a stream (after the RecordHeader; 32 bytes like the descriptors).
struct StreamRecord {
  std::uint32_t size_class = 0;  // the buffer's class
  std::uint32_t chunk = 0;       // chunk bytes (>= kMinStreamChunk)
  std::uint64_t offset = 0;      // the buffer's offset from the pool region's start
  std::uint32_t producer = 0;    // packed ParticipantId of the producer
  std::uint32_t window = 0;      // ring slots (layout version 3); 0: the whole payload's buffer
  std::uint64_t reserved2 = 0;   // 0
};
static_assert(sizeof(StreamRecord) == sizeof(Descriptor));

// Streams `payload` (above state.stream_chunk bytes) through the pool: a ring from
// stream_ring_min when the caller may wait (deadline != nullptr), else a whole buffer.
// {} sent (a ring: delivered); the send errors of bulk_channel.h (timed_out, peer_dead: not
// delivered).
std::error_code send_stream(BulkChannel::State& state, std::span<const std::byte> payload,
                            const sync::Deadline* deadline) noexcept;

// A ring stream the consumer copied whole: it decides the verdict after it released the record
// (claim_ring), so a consumer that dies before the release leaves the verdict open and its
// producer sends the payload again.
struct RingClaim {
  std::byte* buffer = nullptr;  // the ring's pool buffer (its stream header)
  std::uint64_t position = 0;   // the stream id
};

// The consumer's side of a stream whose record (at `position`) it holds: copies each chunk into
// `into` (exactly `length` bytes) as it is published. A whole-buffer stream: then takes the
// posted buffer and gives it back. A ring: checks after each chunk that its slot was not
// overwritten while it copied, and fills *ring: the caller decides the verdict after it released
// the record (claim_ring). {} delivered (a ring: copied, to be decided); peer_dead: skip the
// record (the producer died or gave up mid-stream, or the ring was overwritten; the bytes in
// `into` are garbage); bad_descriptor: the record names no stream buffer of this pool.
std::error_code receive_stream(BulkChannel::State& state, std::uint64_t position,
                               const StreamRecord& body, std::uint64_t length,
                               std::span<std::byte> into, RingClaim* ring) noexcept;

// The consumer's verdict on a ring it copied whole, after it released the record: true when
// the payload is its to return; false when the producer gave up on the ring first (it sends the
// payload again): skip it.
bool claim_ring(const RingClaim& ring) noexcept;

}  // namespace xproc::bulk::detail
