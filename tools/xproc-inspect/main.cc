// xproc-inspect: the live state of this host's xproc segments (docs/tools/xproc-inspect.md).
//
//   xproc-inspect [--json] [--prefix P]           list segments
//   xproc-inspect [--json] NAME                   one segment in detail (channel statistics too)
//   xproc-inspect --gc [--dry-run] [--json] [--prefix P]   remove stale segments
//
// Never attaches to a segment and never writes one (the gc only unlinks names, through
// shm::remove_stale's protocol, safe against concurrent openers). Exit status: 0; 1 when the
// named segment cannot be read or /dev/shm cannot be listed; 2 for a usage error. A foreign or
// corrupt file in a listing is an entry with its error, not a failure.

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "model.h"
#include "render.h"

namespace xproc::inspect {
namespace {

constexpr std::string_view kUsage =
    "usage: xproc-inspect [--json] [--prefix PREFIX]\n"
    "       xproc-inspect [--json] NAME\n"
    "       xproc-inspect --gc [--dry-run] [--json] [--prefix PREFIX]\n"
    "Lists xproc shared-memory segments (/dev/shm/xproc.*), shows one in detail, or removes\n"
    "stale ones (creator and every attacher dead). --prefix limits a listing or --gc to names\n"
    "starting with PREFIX.\n";

struct Options {
  bool json = false;
  bool gc = false;
  bool dry_run = false;
  bool help = false;
  std::string prefix;
  std::string name;
};

void print_error(std::string_view what, std::string_view why) {
  std::fprintf(stderr, "xproc-inspect: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(why.size()), why.data());
}

std::string why(std::error_code error) {
  return error_name(error) + " (" + error.message() + ")";
}

bool parse(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--json") {
      options.json = true;
    } else if (arg == "--gc") {
      options.gc = true;
    } else if (arg == "--dry-run") {
      options.dry_run = true;
    } else if (arg == "--help" || arg == "-h") {
      options.help = true;
    } else if (arg == "--prefix" && i + 1 < argc) {
      options.prefix = argv[++i];
    } else if (arg.starts_with("--prefix=")) {
      options.prefix = std::string(arg.substr(9));
    } else if (!arg.starts_with("-") && options.name.empty()) {
      options.name = std::string(arg);
    } else {
      print_error(arg, "unknown or repeated argument");
      return false;
    }
  }
  if (options.dry_run && !options.gc) {
    print_error("--dry-run", "only with --gc");
    return false;
  }
  if (!options.name.empty() && (options.gc || !options.prefix.empty())) {
    print_error(options.name, "a NAME goes without --gc and --prefix");
    return false;
  }
  return true;
}

void write_out(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
}

Result<std::vector<std::string>> names_with_prefix(std::string_view prefix) {
  Result<std::vector<std::string>> names = shm::list_segments();
  if (!names) return names;
  std::vector<std::string> kept;
  for (std::string& name : *names) {
    if (name.starts_with(prefix)) kept.push_back(std::move(name));
  }
  return kept;
}

// Decides one name: only a segment that validates (this build's layout) and is stale is
// removed; foreign, corrupt or incompatible files are kept (they may belong to something else).
GcOutcome collect(const std::string& name, bool dry_run) {
  GcOutcome outcome{name, false, ""};
  {
    SegmentEntry entry = gather(name);
    if (entry.error) {
      outcome.reason = "unreadable, left alone: " + why(entry.error);
      return outcome;
    }
    if (!entry.view.stale) {
      std::size_t alive = 0;
      for (const shm::ParticipantState& p : entry.view.report.participants) alive += p.alive;
      outcome.reason = alive > 0 ? "in use: " + std::to_string(alive) + " live participant(s)"
                                 : "in use: an opener or creator holds a lock byte";
      return outcome;
    }
    if (dry_run) {
      outcome.removed = true;
      outcome.reason = "stale: creator and every attacher dead";
      return outcome;
    }
  }  // our mapping and descriptor are closed before the removal (they hold no lock anyway)
  Result<bool> removed = shm::remove_stale(name);
  if (!removed) {
    outcome.reason = "not removed: " + why(removed.error());
  } else if (!*removed) {
    outcome.reason = "in use again (somebody opened it meanwhile)";
  } else {
    outcome.removed = true;
    outcome.reason = "stale: creator and every attacher dead";
  }
  return outcome;
}

int run(const Options& options) {
  std::string out;
  if (!options.name.empty()) {
    SegmentEntry entry = gather(options.name);
    if (entry.error) {
      print_error(options.name, why(entry.error));
      if (options.json) {
        render_detail_json(entry, out);
        write_out(out);
      }
      return 1;
    }
    if (options.json) {
      render_detail_json(entry, out);
    } else {
      render_detail_text(entry, out);
    }
    write_out(out);
    return 0;
  }
  Result<std::vector<std::string>> names = names_with_prefix(options.prefix);
  if (!names) {
    print_error("listing /dev/shm", why(names.error()));
    return 1;
  }
  if (options.gc) {
    std::vector<GcOutcome> outcomes;
    for (const std::string& name : *names) outcomes.push_back(collect(name, options.dry_run));
    if (options.json) {
      render_gc_json(outcomes, options.dry_run, out);
    } else {
      render_gc_text(outcomes, options.dry_run, out);
    }
    write_out(out);
    return 0;
  }
  std::vector<SegmentEntry> entries;
  entries.reserve(names->size());
  for (const std::string& name : *names) entries.push_back(gather(name));
  if (options.json) {
    render_list_json(entries, out);
  } else {
    render_list_text(entries, out);
  }
  write_out(out);
  return 0;
}

}  // namespace
}  // namespace xproc::inspect

int main(int argc, char** argv) {
  xproc::inspect::Options options;
  if (!xproc::inspect::parse(argc, argv, options)) {
    std::fputs(xproc::inspect::kUsage.data(), stderr);
    return 2;
  }
  if (options.help) {
    std::fputs(xproc::inspect::kUsage.data(), stdout);
    return 0;
  }
  try {
    return xproc::inspect::run(options);
  } catch (const std::exception& error) {  // bad_alloc and the like: report, never crash
    xproc::inspect::print_error("internal error", error.what());
    return 1;
  }
}
