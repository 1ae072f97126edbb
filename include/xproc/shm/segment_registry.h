#pragma once
// The named segments of this host, for tools (xproc-inspect) and for cleanup: listing,
// inspection, stale detection and safe removal of stale segments.
//
// Thread- and process-safe. Nothing blocks on another process except inspect(), which opens the
// segment (bounded by options.ready_timeout; named segments are always ready).
// Stale: nobody holds any lock byte of the segment's file (no participant alive, nobody creating
// or attaching). That is decided by the kernel's OFD locks (one F_OFD_GETLK per byte range), so a
// SIGKILLed creator and attachers (zombies included) make a segment stale at once.
// Failures: invalid_argument (bad name), not_found, permission_denied, the open's errors
// (inspect: every Segment::open error, e.g. corrupt_segment for a damaged or foreign file).
// Deaths: a process dying inside remove_stale() leaves the segment as it was or unlinked; its
// exclusive gc lock goes with it.

#include <string>
#include <string_view>
#include <vector>

#include "xproc/shm/segment.h"
#include "xproc/sync/participant_table.h"
#include "xproc/sys/result.h"

namespace xproc::shm {

// Names (without the "xproc." prefix) of the files in /dev/shm that carry the prefix and a valid
// segment name, sorted. Says nothing about their contents.
Result<std::vector<std::string>> list_segments();

struct ParticipantState {
  sync::ParticipantId id;
  bool alive = false;
};

struct SegmentReport {
  std::string name;
  SegmentInfo info;
  std::vector<ParticipantState> participants;  // every slot ever used: its latest id, liveness
};

// Opens and validates the segment (any kind) WITHOUT attaching (no slot taken, no generation
// bumped: a dead participant's slot stays visible) and reports its header facts and
// participants. `options.ready_timeout` bounds the wait for an unready segment.
Result<SegmentReport> inspect(std::string_view name, const SegmentOptions& options = {});

// True when the segment is stale (see above). Does not attach and reads no contents.
Result<bool> is_stale(std::string_view name);

// Unlinks the segment's name if it is stale, safely against a concurrent open (the gc protocol
// in segment.h): true when removed; false when it is in use (a live participant, a creator, an
// opener in its attach window) or the name now refers to another file.
Result<bool> remove_stale(std::string_view name);

}  // namespace xproc::shm
