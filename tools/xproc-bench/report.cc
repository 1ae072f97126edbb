#include "report.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "bulk_runner.h"

namespace xproc::bench {
namespace {

double p50(const RunResult& r) {
  return r.p50_us;
}
double p99(const RunResult& r) {
  return r.p99_us;
}
double p999(const RunResult& r) {
  return r.p999_us;
}
double rate(const RunResult& r) {
  return r.messages_per_second;
}
double switches(const RunResult& r) {
  return r.switches_per_message;
}

// rpc rows with one client thread compare round trips, with several their calls/s.
bool higher_is_better(const Row& row) {
  if (row.mode == Mode::rpc_fanout) return false;  // microseconds until the others completed
  return row.mode == Mode::rpc ? row.producers > 1 : row.mode != Mode::latency;
}
double figure(const Row& row) {
  return row.median(higher_is_better(row) ? rate : p50);
}

// The bulk mode always compares with its memcpy row (1 -> 1, the same payload size).
constexpr const char* kBulkBaseline = "memcpy";
// The rpc mode compares with the same exchange over a Unix stream socket.
constexpr const char* kRpcBaseline = "rpc-unix";
// The fan-out experiment compares with the ordered protocol.
constexpr const char* kFanoutBaseline = "fanout-ordered";
std::string baseline_name(const Row& row, const std::string& name) {
  if (row.mode == Mode::rpc_fanout) return kFanoutBaseline;
  return row.mode == Mode::bulk ? kBulkBaseline : row.mode == Mode::rpc ? kRpcBaseline : name;
}

const Row* baseline_of(const Row& row, const std::vector<Row>& rows, const std::string& name) {
  const bool bulk = row.mode == Mode::bulk;
  for (const Row& other : rows)
    if (other.transport == baseline_name(row, name) && other.mode == row.mode &&
        other.message_size == row.message_size &&
        (bulk || (other.producers == row.producers && other.consumers == row.consumers)) &&
        other.ok())
      return &other;
  return nullptr;
}

// > 1: better than the baseline. 0: no ratio.
double ratio(const Row& row, const std::vector<Row>& rows, const std::string& baseline) {
  const Row* base = baseline_of(row, rows, baseline);
  if (base == nullptr || !row.ok()) return 0;
  double ours = figure(row), theirs = figure(*base);
  if (ours <= 0 || theirs <= 0) return 0;
  return higher_is_better(row) ? ours / theirs : theirs / ours;
}

std::string human_rate(double value) {
  char text[32];
  if (value >= 1e6)
    std::snprintf(text, sizeof text, "%.2f M", value / 1e6);
  else if (value >= 1e3)
    std::snprintf(text, sizeof text, "%.1f k", value / 1e3);
  else
    std::snprintf(text, sizeof text, "%.0f", value);
  return text;
}

std::string size_text(std::size_t size) {
  if (size >= 1024 && size % 1024 == 0) return std::to_string(size / 1024) + " KiB";
  return std::to_string(size) + " B";
}

std::string shape_text(const Row& row) {
  if (row.mode == Mode::latency) return "1<->1";
  if (row.mode == Mode::rpc) return std::to_string(row.producers) + "<->1";
  return std::to_string(row.producers) + "->" + std::to_string(row.consumers);
}

std::string status_text(const Row& row) {
  if (!row.skipped.empty()) return "skipped: " + row.skipped;
  if (!row.failure.empty()) return "FAILED: " + row.failure;
  return "ok";
}

std::string ratio_text(const Row& row, const std::vector<Row>& rows, const std::string& baseline) {
  if (row.transport == baseline_name(row, baseline)) return "ref";
  double r = ratio(row, rows, baseline);
  if (r <= 0) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.2fx", r);
  return text;
}

std::string json_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char code[8];
      std::snprintf(code, sizeof code, "\\u%04x", static_cast<unsigned>(c));
      out += code;
    } else {
      out += c;
    }
  }
  return out;
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

double Row::median(const std::function<double(const RunResult&)>& get) const {
  std::vector<double> values;
  for (const auto& s : samples) values.push_back(get(s));
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double Row::min(const std::function<double(const RunResult&)>& get) const {
  double m = 0;
  for (std::size_t i = 0; i < samples.size(); ++i)
    m = i == 0 ? get(samples[i]) : std::min(m, get(samples[i]));
  return m;
}

double Row::max(const std::function<double(const RunResult&)>& get) const {
  double m = 0;
  for (const auto& s : samples) m = std::max(m, get(s));
  return m;
}

void print_tables(const std::vector<Row>& rows, const ReportContext& context) {
  std::printf("xproc-bench: %s\n", context.machine.c_str());
  for (Mode mode :
       {Mode::latency, Mode::stream, Mode::mpmc, Mode::bulk, Mode::rpc, Mode::rpc_fanout}) {
    bool any = false;
    for (const Row& row : rows) any = any || row.mode == mode;
    if (!any) continue;
    if (mode == Mode::bulk) {
      std::printf(
          "\n== bulk: payloads produced and consumed, 1 producer -> C consumers (median of %d; "
          "csw/msg = context switches per payload, all processes; ratio = this / %s) ==\n",
          context.repetitions, kBulkBaseline);
      std::printf("%-16s %8s %6s %8s %17s %10s %9s %8s\n", "transport", "size", "P->C", "GB/s",
                  "GB/s spread", "payload/s", "csw/msg", "ratio");
    } else if (mode == Mode::rpc_fanout) {
      std::printf(
          "\n== rpc fan-out: 100 requests of 64 B at once, the server answers request #1 2 ms "
          "late; us from the first send until the other 99 / all 100 completed (median of %d "
          "runs of each run's median round; csw/round = context switches per round, both "
          "processes; ratio = %s / this, others) ==\n",
          context.repetitions, kFanoutBaseline);
      std::printf("%-16s %12s %12s %12s %10s %9s\n", "transport", "others us", "all us",
                  "others max", "csw/round", "ratio");
    } else if (mode == Mode::rpc) {
      std::printf(
          "\n== rpc: request/response round trip in us, 64 B each way, T client threads <-> a "
          "server process (median of %d; calls/s over all threads; csw/call = context "
          "switches per call, both processes; ratio = %s p50 / this p50 with T = 1, this "
          "calls/s / %s calls/s with T > 1) ==\n",
          context.repetitions, kRpcBaseline, kRpcBaseline);
      std::printf("%-12s %7s %6s %9s %9s %9s %19s %10s %8s %9s\n", "transport", "size", "T<->S",
                  "p50", "p99", "p99.9", "p50 spread", "calls/s", "csw/call", "ratio");
    } else if (mode == Mode::latency) {
      std::printf(
          "\n== latency: ping-pong round trip in us (median of %d; csw/rt = context switches "
          "per round trip, both processes; ratio = %s p50 / this p50) ==\n",
          context.repetitions, context.baseline.c_str());
      std::printf("%-12s %7s %9s %9s %9s %19s %8s %9s\n", "transport", "size", "p50", "p99",
                  "p99.9", "p50 spread", "csw/rt", "ratio");
    } else {
      std::printf(
          "\n== %s: one-way throughput (median of %d; csw/msg = context switches per message, "
          "all processes; ratio = this / %s) ==\n",
          mode == Mode::stream ? "stream" : "mpmc", context.repetitions, context.baseline.c_str());
      std::printf("%-12s %7s %6s %10s %8s %21s %8s %9s\n", "transport", "size", "P->C", "msg/s",
                  "GB/s", "msg/s spread", "csw/msg", "ratio");
    }
    for (const Row& row : rows) {
      if (row.mode != mode) continue;
      std::string size =
          mode == Mode::bulk ? bulk_size_label(row.message_size) : size_text(row.message_size);
      if (!row.ok()) {
        if (mode == Mode::rpc_fanout)
          std::printf("%-16s %s\n", row.transport.c_str(), status_text(row).c_str());
        else if (mode == Mode::bulk)
          std::printf("%-16s %8s %6s %s\n", row.transport.c_str(), size.c_str(),
                      shape_text(row).c_str(), status_text(row).c_str());
        else
          std::printf("%-12s %7s %s\n", row.transport.c_str(), size.c_str(),
                      status_text(row).c_str());
        continue;
      }
      std::string r = ratio_text(row, rows, context.baseline);
      if (mode == Mode::bulk) {
        auto bytes = static_cast<double>(row.message_size) / 1e9;
        char spread[48];
        std::snprintf(spread, sizeof spread, "%.2f..%.2f", row.min(rate) * bytes,
                      row.max(rate) * bytes);
        std::printf("%-16s %8s %6s %8.2f %17s %10s %9.3f %8s\n", row.transport.c_str(),
                    size.c_str(), shape_text(row).c_str(), row.median(rate) * bytes, spread,
                    human_rate(row.median(rate)).c_str(), row.median(switches), r.c_str());
      } else if (mode == Mode::rpc_fanout) {
        std::printf("%-16s %12.1f %12.1f %12.1f %10.1f %9s\n", row.transport.c_str(),
                    row.median(p50), row.median(p99), row.max(p999), row.median(switches),
                    r.c_str());
      } else if (mode == Mode::rpc) {
        char spread[48];
        std::snprintf(spread, sizeof spread, "%.2f..%.2f", row.min(p50), row.max(p50));
        std::printf("%-12s %7s %6s %9.2f %9.2f %9.2f %19s %10s %8.2f %9s\n", row.transport.c_str(),
                    size.c_str(), shape_text(row).c_str(), row.median(p50), row.median(p99),
                    row.median(p999), spread, human_rate(row.median(rate)).c_str(),
                    row.median(switches), r.c_str());
      } else if (mode == Mode::latency) {
        char spread[48];
        std::snprintf(spread, sizeof spread, "%.2f..%.2f", row.min(p50), row.max(p50));
        std::printf("%-12s %7s %9.2f %9.2f %9.2f %19s %8.2f %9s\n", row.transport.c_str(),
                    size.c_str(), row.median(p50), row.median(p99), row.median(p999), spread,
                    row.median(switches), r.c_str());
      } else {
        double messages = row.median(rate);
        double gigabytes = messages * static_cast<double>(row.message_size) / 1e9;
        std::string spread = human_rate(row.min(rate)) + ".." + human_rate(row.max(rate));
        std::printf("%-12s %7s %6s %10s %8.3f %21s %8.3f %9s\n", row.transport.c_str(),
                    size.c_str(), shape_text(row).c_str(), human_rate(messages).c_str(), gigabytes,
                    spread.c_str(), row.median(switches), r.c_str());
      }
    }
  }
  std::fflush(stdout);
}

std::string write_csv(const std::vector<Row>& rows, const ReportContext& context,
                      const std::string& path) {
  FILE* out = std::fopen(path.c_str(), "w");
  if (out == nullptr) return "cannot open " + path;
  std::fprintf(out,
               "mode,transport,size_bytes,producers,consumers,repetitions,status,p50_us,p99_us,"
               "p999_us,msgs_per_s,gb_per_s,csw_per_msg,ratio_vs_baseline,baseline\n");
  for (const Row& row : rows) {
    double messages = row.median(rate);
    std::fprintf(out, "%s,%s,%zu,%d,%d,%zu,%s,%.3f,%.3f,%.3f,%.0f,%.4f,%.4f,%.3f,%s\n",
                 mode_name(row.mode), row.transport.c_str(), row.message_size, row.producers,
                 row.consumers, row.samples.size(), csv_field(status_text(row)).c_str(),
                 row.median(p50), row.median(p99), row.median(p999), messages,
                 messages * static_cast<double>(row.message_size) / 1e9, row.median(switches),
                 ratio(row, rows, context.baseline), baseline_name(row, context.baseline).c_str());
  }
  return std::fclose(out) == 0 ? "" : "write error on " + path;
}

std::string write_json(const std::vector<Row>& rows, const ReportContext& context,
                       const std::string& path) {
  FILE* out = std::fopen(path.c_str(), "w");
  if (out == nullptr) return "cannot open " + path;
  std::fprintf(out, "{\n  \"machine\": \"%s\",\n  \"command\": \"%s\",\n",
               json_escape(context.machine).c_str(), json_escape(context.command).c_str());
  std::fprintf(out, "  \"repetitions\": %d,\n  \"baseline\": \"%s\",\n  \"rows\": [",
               context.repetitions, json_escape(context.baseline).c_str());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    double messages = row.median(rate);
    std::fprintf(out,
                 "%s\n    {\"mode\": \"%s\", \"transport\": \"%s\", \"size_bytes\": %zu, "
                 "\"producers\": %d, \"consumers\": %d, \"status\": \"%s\", \"samples\": %zu, "
                 "\"p50_us\": %.3f, \"p99_us\": %.3f, \"p999_us\": %.3f, \"msgs_per_s\": %.0f, "
                 "\"gb_per_s\": %.4f, \"csw_per_msg\": %.4f, \"ratio_vs_baseline\": %.3f, "
                 "\"baseline\": \"%s\", \"msgs_per_s_all\": [",
                 i == 0 ? "" : ",", mode_name(row.mode), json_escape(row.transport).c_str(),
                 row.message_size, row.producers, row.consumers,
                 json_escape(status_text(row)).c_str(), row.samples.size(), row.median(p50),
                 row.median(p99), row.median(p999), messages,
                 messages * static_cast<double>(row.message_size) / 1e9, row.median(switches),
                 ratio(row, rows, context.baseline),
                 json_escape(baseline_name(row, context.baseline)).c_str());
    for (std::size_t s = 0; s < row.samples.size(); ++s)
      std::fprintf(out, "%s%.0f", s == 0 ? "" : ", ", row.samples[s].messages_per_second);
    std::fprintf(out, "]}");
  }
  std::fprintf(out, "\n  ]\n}\n");
  return std::fclose(out) == 0 ? "" : "write error on " + path;
}

std::string write_png(const std::vector<Row>& rows, const ReportContext& context,
                      const std::string& path) {
  if (system("command -v gnuplot >/dev/null 2>&1") != 0)
    return "gnuplot is not installed (apt-get install gnuplot-nox); no chart written";
  char directory[] = "/tmp/xproc-bench-plot-XXXXXX";
  if (mkdtemp(directory) == nullptr) return "mkdtemp failed";
  std::string dir = directory;
  // One panel per mode with data; one line per transport (figure against message size).
  std::vector<Mode> modes;
  for (Mode mode : {Mode::latency, Mode::stream, Mode::mpmc, Mode::bulk, Mode::rpc})
    for (const Row& row : rows)
      if (row.mode == mode && row.ok()) {
        modes.push_back(mode);
        break;
      }
  if (modes.empty()) return "no successful rows to plot";
  std::string script = dir + "/plot.gp";
  FILE* gp = std::fopen(script.c_str(), "w");
  if (gp == nullptr) return "cannot write " + script;
  std::fprintf(gp,
               "set terminal pngcairo size %zu,520 noenhanced font 'sans,10'\nset output '%s'\n"
               "set multiplot layout 1,%zu title 'xproc-bench: %s'\nset logscale xy\nset grid\n"
               "set key top left font 'sans,8'\nset xlabel 'message size (bytes)'\n",
               560 * modes.size(), path.c_str(), modes.size(), context.machine.c_str());
  int file_number = 0;
  // One colour and point type per transport, the same in every panel.
  std::map<std::string, int> style;
  for (const Row& row : rows) style.emplace(row.transport, static_cast<int>(style.size()) + 1);
  for (Mode mode : modes) {
    std::fprintf(gp, "set title '%s'\nset ylabel '%s'\nplot ",
                 mode == Mode::latency  ? "ping-pong round trip p50"
                 : mode == Mode::stream ? "stream 1->1"
                 : mode == Mode::bulk   ? "bulk payloads"
                 : mode == Mode::rpc    ? "rpc round trip p50"
                                        : "mpmc",
                 mode == Mode::latency || mode == Mode::rpc ? "microseconds (lower is better)"
                 : mode == Mode::bulk                       ? "GB/s (higher is better)"
                                      : "messages per second (higher is better)");
    std::set<std::string> seen;
    bool first = true;
    for (const Row& row : rows) {
      const bool bulk = mode == Mode::bulk;  // one line per transport and shape, in GB/s
      if (row.mode != mode || !row.ok() ||
          !seen.insert(row.transport + (bulk ? shape_text(row) : "")).second)
        continue;
      std::string data = dir + "/" + std::to_string(file_number++) + ".dat";
      FILE* out = std::fopen(data.c_str(), "w");
      if (out == nullptr) continue;
      for (const Row& point : rows)
        if (point.mode == mode && point.transport == row.transport && point.ok() &&
            (!bulk || point.consumers == row.consumers))
          std::fprintf(
              out, "%zu %g\n", point.message_size,
              bulk ? figure(point) * static_cast<double>(point.message_size) / 1e9 : figure(point));
      std::fclose(out);
      std::string title = row.transport;
      if (mode == Mode::mpmc || bulk) {
        title += ' ';
        title += shape_text(row);
      }
      std::fprintf(gp, "%s'%s' using 1:2 with linespoints lc %d pt %d title '%s'",
                   first ? "" : ", ", data.c_str(), style[row.transport], style[row.transport],
                   title.c_str());
      first = false;
    }
    std::fprintf(gp, "\n");
  }
  std::fprintf(gp, "unset multiplot\n");
  std::fclose(gp);
  std::string command = "gnuplot '" + script + "' 2>" + dir + "/gnuplot.err";
  int status = system(command.c_str());
  std::string error;
  if (status != 0)
    error = "gnuplot failed (see " + dir + "/gnuplot.err)";
  else
    (void)system(("rm -rf '" + dir + "'").c_str());
  return error;
}

}  // namespace xproc::bench
