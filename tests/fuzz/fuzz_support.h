#pragma once
// What the region fuzz targets share: the harness's own participant, and an exactly sized,
// aligned copy of the input (so ASan sees any access past its end).

#include <cstddef>
#include <cstdlib>
#include <new>
#include <utility>

#include "xproc/shm/segment.h"
#include "xproc/sync/participant_table.h"

namespace xproc::fuzz {

// The harness's own attachment: the creator's slot of a private anonymous segment with 8 slots.
// Ids read from the input name slots of this table that nobody holds (dead peers) or ids no table
// issues. Created once, never destroyed (libFuzzer runs inputs until the process exits).
inline const sync::Participant* harness_participant() {
  static shm::Segment* segment = [] {
    shm::SegmentOptions options;
    options.participant_capacity = 8;
    auto created = shm::Segment::create_anonymous(shm::SegmentKind::raw, 64, options);
    if (!created) std::abort();
    return new shm::Segment(std::move(*created));
  }();
  return &segment->self();
}

// `bytes` of heap memory aligned to `Alignment` (a channel region needs 64; a pool region a
// page, as a mapping gives it: buffers of 4 KiB classes are page-aligned).
template <std::size_t Alignment>
struct AlignedBuffer {
  explicit AlignedBuffer(std::size_t bytes)
      : data(static_cast<std::byte*>(
            ::operator new (bytes == 0 ? 1 : bytes, std::align_val_t{Alignment}))),
        size(bytes) {}
  ~AlignedBuffer() { ::operator delete (data, std::align_val_t{Alignment}); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  std::byte* data;
  std::size_t size;
};

}  // namespace xproc::fuzz
