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

// The segment file's lock bytes other than the participants' (segment_header.h), as seen from a
// description that holds none of them: true when another open file description holds a lock.
struct LockBytes {
  bool gc_held = false;    // an opener in its attach window (shared) or an unlinker (exclusive)
  bool init_held = false;  // a creator that has not published ready (never for a listed name)
};

// A segment opened for inspection by inspect_mapped(): validated and mapped (read-write, as
// open() maps it), NOT attached (segment.self() is detached; no slot taken). For a kind's own
// inspector: e.g. channel::Endpoint::open(segment.body(), nullptr).statistics(). The lock bytes
// and staleness are read after the open's own gc lock is released, so they describe others.
struct InspectedSegment {
  SegmentReport report;
  LockBytes locks;
  bool stale = false;  // as is_stale(): no lock byte of the file held by anybody else
  Segment segment;
};

// inspect() plus the mapping, the lock bytes and staleness. Errors: as inspect().
Result<InspectedSegment> inspect_mapped(std::string_view name, const SegmentOptions& options = {});

// Liveness of `id` (e.g. a lock owner read from the body) in a segment from inspect_mapped(),
// asked through its descriptor, which holds no participant lock (for an attached Segment use
// self().is_alive()). errc::invalid_argument: an id this segment cannot have issued (slot beyond
// its capacity, generation 0); corrupt_segment: the slot word holds an impossible generation.
Result<bool> participant_alive(const Segment& segment, sync::ParticipantId id);

// True when the segment is stale (see above). Does not attach and reads no contents.
Result<bool> is_stale(std::string_view name);

// Unlinks the segment's name if it is stale, safely against a concurrent open (the gc protocol
// in segment.h): true when removed; false when it is in use (a live participant, a creator, an
// opener in its attach window) or the name now refers to another file.
Result<bool> remove_stale(std::string_view name);

}  // namespace xproc::shm
