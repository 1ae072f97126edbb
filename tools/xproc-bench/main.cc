// xproc-bench: the usual IPC transports (and, once it lands, the xproc Channel) side by side in
// one run: same message sizes, same process placement, every message verified.
// See docs/decisions/0032-xproc-bench.md and `xproc-bench --help`.
#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bulk_runner.h"
#include "report.h"
#include "rpc_runner.h"
#include "runner.h"
#include "transport.h"

namespace xproc::bench {
namespace {

struct Options {
  std::vector<Mode> modes{Mode::latency, Mode::stream, Mode::mpmc};
  std::vector<std::string> transports;  // empty: all
  std::vector<std::size_t> sizes;       // empty: the default set
  std::vector<std::size_t> bulk_sizes;  // bulk mode: --sizes when given, else its defaults
  std::vector<int> bulk_consumers{1, 2};
  std::vector<int> rpc_threads{1};   // rpc mode: client threads of each row
  int producers = 2, consumers = 2;  // mpmc
  int repetitions = 5;
  double duration = 0.25;  // target seconds per measured repetition
  double timeout = 0;      // per run; 0: derived from duration
  bool timeout_given = false;
  bool quick = false, pin = true, list = false;
  std::string baseline = "pipe";
  std::string csv, json, png;
};

constexpr const char* kUsage = R"(usage: xproc-bench [options]
Runs IPC transports side by side between processes; every message is verified.
  --mode latency|stream|mpmc|bulk|rpc|all   what to measure (default all = latency,stream,
                                   mpmc; a comma list also works; bulk: large payloads, GB/s;
                                   rpc: 64 B request/response round trips and a fan-out
                                   experiment, only when named)
  --transports a,b,c               rows to run (default all; --list shows them)
  --sizes 8,64,1K,16K,64K          message sizes in bytes (K = 1024; default 8,64,1K,16K,64K;
                                   at most 1M except in bulk mode: M = 2^20, bulk default
                                   64K,1M,16M,256M, multiples of 8 up to 1024M)
  --bulk-consumers 1,2             bulk mode: consumer processes of each shape (default 1,2)
  --rpc-threads 1,4,16             rpc mode: client threads of each row (1..16; default 1)
  --producers P --consumers C      processes of the mpmc mode (default 2 and 2)
  --repetitions N                  runs per row, the table shows medians (default 5)
  --duration S                     target seconds per run (default 0.25)
  --timeout S                      kill a run's processes after S seconds (default 20x duration, >= 10;
                                   bulk mode: >= 120)
  --baseline NAME                  transport of the ratio column (default pipe)
  --quick                          CI-sized: 64 B only (bulk: 1M), 1 repetition, short runs
  --no-pin                         do not pin processes to CPUs
  --csv FILE  --json FILE  --png FILE   also write the results there (PNG needs gnuplot)
  --list                           list the transports and exit
Exit status: 0 all rows ran and verified, 1 a row failed or timed out, 2 usage error.
)";

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "xproc-bench: %s\n%s", message.c_str(), kUsage);
  std::exit(2);
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ','))
    if (!part.empty()) parts.push_back(part);
  return parts;
}

std::size_t parse_size(const std::string& text) {
  char* end = nullptr;
  unsigned long long value = std::strtoull(text.c_str(), &end, 10);
  std::string suffix = end;
  if (suffix == "K" || suffix == "k" || suffix == "KiB")
    value *= 1024;
  else if (suffix == "M" || suffix == "MiB")
    value *= 1024 * 1024;
  else if (!suffix.empty() && suffix != "B")
    usage_error("bad size '" + text + "'");
  if (value < 8 || value > (1u << 30)) usage_error("sizes must be 8 B .. 1 GiB: " + text);
  return static_cast<std::size_t>(value);
}

double parse_number(const std::string& text, const char* option) {
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (*end != 0 || !(value > 0)) usage_error(std::string("bad value for ") + option);
  return value;
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::printf("%s", kUsage);
      std::exit(0);
    } else if (arg == "--mode") {
      options.modes.clear();
      for (const auto& m : split(value())) {
        if (m == "all")
          options.modes = {Mode::latency, Mode::stream, Mode::mpmc};
        else if (m == "latency")
          options.modes.push_back(Mode::latency);
        else if (m == "stream")
          options.modes.push_back(Mode::stream);
        else if (m == "mpmc")
          options.modes.push_back(Mode::mpmc);
        else if (m == "bulk")
          options.modes.push_back(Mode::bulk);
        else if (m == "rpc")
          options.modes.push_back(Mode::rpc);  // with the fan-out experiment (rpc_runner.h)
        else
          usage_error("unknown mode '" + m + "'");
      }
    } else if (arg == "--transports") {
      options.transports = split(value());
    } else if (arg == "--sizes") {
      options.sizes.clear();
      for (const auto& s : split(value())) options.sizes.push_back(parse_size(s));
      options.bulk_sizes = options.sizes;
    } else if (arg == "--bulk-consumers") {
      options.bulk_consumers.clear();
      for (const auto& c : split(value()))
        options.bulk_consumers.push_back(static_cast<int>(parse_number(c, "--bulk-consumers")));
    } else if (arg == "--rpc-threads") {
      options.rpc_threads.clear();
      for (const auto& t : split(value())) {
        const double threads = parse_number(t, "--rpc-threads");
        if (threads > 16) usage_error("--rpc-threads: 16 at most");
        options.rpc_threads.push_back(static_cast<int>(threads));
      }
    } else if (arg == "--producers") {
      options.producers = static_cast<int>(parse_number(value(), "--producers"));
    } else if (arg == "--consumers") {
      options.consumers = static_cast<int>(parse_number(value(), "--consumers"));
    } else if (arg == "--repetitions") {
      options.repetitions = static_cast<int>(parse_number(value(), "--repetitions"));
    } else if (arg == "--duration") {
      options.duration = parse_number(value(), "--duration");
    } else if (arg == "--timeout") {
      options.timeout = parse_number(value(), "--timeout");
      options.timeout_given = true;
    } else if (arg == "--baseline") {
      options.baseline = value();
    } else if (arg == "--quick") {
      options.quick = true;
    } else if (arg == "--no-pin") {
      options.pin = false;
    } else if (arg == "--csv") {
      options.csv = value();
    } else if (arg == "--json") {
      options.json = value();
    } else if (arg == "--png") {
      options.png = value();
    } else if (arg == "--list") {
      options.list = true;
    } else {
      usage_error("unknown option '" + arg + "'");
    }
  }
  if (options.producers < 1 || options.consumers < 1 || options.producers + options.consumers > 64)
    usage_error("--producers and --consumers: 1 or more, 64 processes at most");
  if (options.quick) {
    // Explicit options win over the quick defaults, except the run length.
    bool explicit_repetitions = false;
    for (int i = 1; i < argc; ++i) explicit_repetitions |= std::string(argv[i]) == "--repetitions";
    if (!explicit_repetitions) options.repetitions = 1;
    options.duration = std::min(options.duration, 0.02);
    if (options.sizes.empty()) options.sizes = {64};
    if (options.bulk_sizes.empty()) options.bulk_sizes = {std::size_t{1} << 20};
  }
  if (options.sizes.empty()) options.sizes = {8, 64, 1024, 16384, 65536};
  if (options.bulk_sizes.empty())
    options.bulk_sizes = {std::size_t{64} << 10, std::size_t{1} << 20, std::size_t{16} << 20,
                          std::size_t{256} << 20};
  for (Mode mode : options.modes)
    for (std::size_t size : mode == Mode::bulk ? options.bulk_sizes : options.sizes) {
      if (mode != Mode::bulk && size > (1u << 20))
        usage_error("sizes above 1 MiB are for --mode bulk only");
      if (mode == Mode::bulk && size % 8 != 0)
        usage_error("bulk sizes must be multiples of 8 bytes");
    }
  if (options.timeout <= 0) options.timeout = std::max(10.0, 20 * options.duration);
  return options;
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (std::size_t cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &set)) cpus.push_back(static_cast<int>(cpu));
  return cpus;
}

std::string machine_line(std::size_t cpus, bool pinned) {
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  utsname name{};
  uname(&name);
  double load[1] = {0};
  getloadavg(load, 1);
  char text[512];
  std::snprintf(text, sizeof text, "%zu CPUs (%s), Linux %s, load %.2f, processes %s", cpus,
                model.c_str(), name.release, load[0], pinned ? "pinned" : "not pinned");
  return text;
}

class Progress {
 public:
  Progress(int total, bool quick)
      : total_(total), tty_(isatty(STDERR_FILENO) != 0), quick_(quick) {}
  void show(int row, const Row& what, const char* phase) {
    if (!tty_) return;
    std::fprintf(stderr, "\r\033[K[%d/%d] %s %s %zu B: %s", row, total_, mode_name(what.mode),
                 what.transport.c_str(), what.message_size, phase);
  }
  void done(int row, const Row& what) {
    if (tty_) return;
    if (quick_) return;
    std::fprintf(stderr, "xproc-bench: [%d/%d] %s %s %zu B done\n", row, total_,
                 mode_name(what.mode), what.transport.c_str(), what.message_size);
  }
  void finish() {
    if (tty_) std::fprintf(stderr, "\r\033[K");
  }

 private:
  int total_;
  bool tty_;
  bool quick_;
};

void measure(Transport& transport, const Options& options, const std::vector<int>& cpus, Row& row,
             Progress& progress, int row_number) {
  RunConfig config;
  config.mode = row.mode;
  config.message_size = row.message_size;
  config.producers = row.producers;
  config.consumers = row.consumers;
  config.timeout_seconds = options.timeout;
  config.cpus = options.pin && cpus.size() >= 2 ? cpus : std::vector<int>{};
  // Calibration: a short run sizes the measured ones to about --duration each (and warms up).
  bool latency = row.mode == Mode::latency;
  config.messages = options.quick ? (latency ? 100 : 500) : (latency ? 300 : 3000);
  config.warmup = latency ? 20 : 0;
  progress.show(row_number, row, "calibrating");
  RunResult trial = run_once(transport, config);
  // A trial much shorter than a run mostly measures start-up: lengthen it until it is not.
  double enough = std::min(0.05, options.duration / 4);
  while (trial.ok && trial.seconds < enough && config.messages < 5'000'000) {
    config.messages *= 10;
    trial = run_once(transport, config);
  }
  if (!trial.ok) {
    row.failure = trial.error;
    return;
  }
  double per_second = trial.messages_per_second;  // latency: messages (2 per round trip)
  double wanted = options.duration * per_second / (latency ? 2.0 : row.producers);
  long floor = options.quick ? (latency ? 200 : 1000) : 2000;
  config.messages = std::clamp(static_cast<long>(wanted), floor, 50'000'000L);
  config.warmup = latency ? std::min(config.messages / 10, 10'000L) : 0;
  for (int r = 0; r < options.repetitions; ++r) {
    char phase[48];
    std::snprintf(phase, sizeof phase, "repetition %d/%d", r + 1, options.repetitions);
    progress.show(row_number, row, phase);
    RunResult result = run_once(transport, config);
    if (!result.ok) {
      row.failure = result.error;
      return;
    }
    row.samples.push_back(result);
  }
}

int run(int argc, char** argv) {
  Options options = parse(argc, argv);
  auto all = make_registered_transports();
  if (options.list) {
    for (const auto& t : all)
      std::printf("%-12s %s\n", t->name().c_str(), t->description().c_str());
    for (const auto& line : bulk_transport_descriptions()) std::printf("%s\n", line.c_str());
    for (const auto& line : rpc_row_descriptions()) std::printf("%s\n", line.c_str());
    return 0;
  }
  std::vector<Transport*> chosen;
  if (options.transports.empty()) {
    for (const auto& t : all) chosen.push_back(t.get());
  } else {
    const std::vector<std::string> bulk_names = bulk_transport_names();
    const std::vector<std::string> rpc_names = rpc_row_names();
    for (const auto& name : options.transports) {
      auto it =
          std::find_if(all.begin(), all.end(), [&](const auto& t) { return t->name() == name; });
      bool bulk = std::find(bulk_names.begin(), bulk_names.end(), name) != bulk_names.end();
      bool rpc = std::find(rpc_names.begin(), rpc_names.end(), name) != rpc_names.end();
      if (it == all.end() && !bulk && !rpc)
        usage_error("unknown transport '" + name + "' (see --list)");
      if (it != all.end()) chosen.push_back(it->get());
    }
  }
  std::vector<int> cpus = allowed_cpus();
  bool pinned = options.pin && cpus.size() >= 2;
  if (options.pin && !pinned)
    std::fprintf(stderr, "xproc-bench: only %zu CPU allowed: processes are not pinned\n",
                 cpus.size());

  std::vector<Row> rows;
  for (Mode mode : options.modes)
    for (std::size_t size : options.sizes)
      for (Transport* t : chosen) {
        if (mode == Mode::bulk || mode == Mode::rpc) break;  // their own rows: see below
        Row row;
        row.transport = t->name();
        row.mode = mode;
        row.message_size = size;
        row.producers = mode == Mode::mpmc ? options.producers : 1;
        row.consumers = mode == Mode::mpmc ? options.consumers : 1;
        LinkShape shape{size, row.producers, row.consumers, 0};
        row.skipped = t->unsupported(shape);
        rows.push_back(row);
      }

  // Transports with a daemon start once, before their first row, and stop after their last.
  std::map<std::string, std::string> start_error;
  std::map<std::string, bool> started;
  Progress progress(static_cast<int>(rows.size()), options.quick);
  int number = 0;
  for (Row& row : rows) {
    ++number;
    if (!row.skipped.empty()) continue;
    Transport* t = *std::find_if(chosen.begin(), chosen.end(),
                                 [&](Transport* c) { return c->name() == row.transport; });
    if (!started[row.transport]) {
      started[row.transport] = true;
      start_error[row.transport] = t->start();
      if (!start_error[row.transport].empty())
        std::fprintf(stderr, "xproc-bench: %s cannot run: %s\n", row.transport.c_str(),
                     start_error[row.transport].c_str());
    }
    if (!start_error[row.transport].empty()) {
      row.skipped = start_error[row.transport];
      continue;
    }
    measure(*t, options, cpus, row, progress, number);
    progress.done(number, row);
  }
  progress.finish();
  for (Transport* t : chosen)
    if (started[t->name()] && start_error[t->name()].empty()) t->stop();

  if (std::find(options.modes.begin(), options.modes.end(), Mode::bulk) != options.modes.end()) {
    BulkOptions bulk;
    bulk.sizes = options.bulk_sizes;
    bulk.consumer_counts = options.bulk_consumers;
    bulk.transports = options.transports;
    bulk.repetitions = options.repetitions;
    bulk.duration = options.duration;
    // A run of a few 256 MiB payloads through a slow row on a loaded machine takes seconds:
    // unless --timeout was given, bulk runs get at least 120 s.
    bulk.timeout = options.timeout_given ? options.timeout : std::max(options.timeout, 120.0);
    bulk.quick = options.quick;
    bulk.cpus = pinned ? cpus : std::vector<int>{};
    run_bulk_rows(bulk, rows);
  }

  if (std::find(options.modes.begin(), options.modes.end(), Mode::rpc) != options.modes.end()) {
    RpcOptions rpc;
    rpc.transports = options.transports;
    rpc.repetitions = options.repetitions;
    rpc.duration = options.duration;
    rpc.timeout = options.timeout;
    rpc.quick = options.quick;
    rpc.cpus = pinned ? cpus : std::vector<int>{};
    rpc.threads = options.rpc_threads;
    run_rpc_rows(rpc, rows);
  }

  ReportContext context;
  context.baseline = options.baseline;
  context.repetitions = options.repetitions;
  context.machine = machine_line(cpus.size(), pinned);
  for (int i = 0; i < argc; ++i) {
    if (i != 0) context.command += ' ';
    context.command += argv[i];
  }
  print_tables(rows, context);

  int status = 0;
  for (const Row& row : rows)
    if (!row.failure.empty()) status = 1;
  auto report = [&](const std::string& path, const char* what, const std::string& error) {
    if (path.empty()) return;
    if (error.empty()) {
      std::printf("%s written to %s\n", what, path.c_str());
    } else {
      std::fprintf(stderr, "xproc-bench: %s %s: %s\n", what, path.c_str(), error.c_str());
      if (std::string(what) != "chart") status = 1;  // a missing gnuplot is not a failure
    }
  };
  if (!options.csv.empty()) report(options.csv, "CSV", write_csv(rows, context, options.csv));
  if (!options.json.empty()) report(options.json, "JSON", write_json(rows, context, options.json));
  if (!options.png.empty()) report(options.png, "chart", write_png(rows, context, options.png));
  return status;
}

}  // namespace
}  // namespace xproc::bench

int main(int argc, char** argv) {
  return xproc::bench::run(argc, argv);
}
