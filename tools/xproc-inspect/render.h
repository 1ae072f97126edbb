#pragma once
// xproc-inspect output: the human text and the --json forms of a segment list, of one segment,
// and of a --gc run. The JSON field names are stable (docs/tools/xproc-inspect.md).
// Pure functions of their arguments (no I/O besides appending to `out`).

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "model.h"

namespace xproc::inspect {

// What --gc did (or, with --dry-run, would do) with one name.
struct GcOutcome {
  std::string name;
  bool removed = false;  // unlinked (dry run: would be)
  std::string reason;    // why removed or kept, one line
};

void render_list_text(const std::vector<SegmentEntry>& entries, std::string& out);
void render_detail_text(const SegmentEntry& entry, std::string& out);
void render_gc_text(const std::vector<GcOutcome>& outcomes, bool dry_run, std::string& out);

void render_list_json(const std::vector<SegmentEntry>& entries, std::string& out);
void render_detail_json(const SegmentEntry& entry, std::string& out);
void render_gc_json(const std::vector<GcOutcome>& outcomes, bool dry_run, std::string& out);

// ISO 8601 UTC with milliseconds: "2026-11-23T15:40:00.123Z".
std::string format_time(std::chrono::system_clock::time_point when);

}  // namespace xproc::inspect
