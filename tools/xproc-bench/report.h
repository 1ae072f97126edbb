#pragma once
// Rows of an xproc-bench run and their output: the table on stdout, CSV, JSON, a PNG chart
// (gnuplot). Every figure is the median over the row's repetitions; the ratio column compares a
// row with the baseline transport's row of the same mode and size ("> 1" = better than it).

#include <functional>
#include <string>
#include <vector>

#include "runner.h"

namespace xproc::bench {

struct Row {
  std::string transport;
  Mode mode = Mode::stream;
  std::size_t message_size = 0;
  int producers = 1, consumers = 1;
  std::string skipped;             // non-empty: not run, and why (unsupported)
  std::string failure;             // non-empty: a run failed or timed out (the first error)
  std::vector<RunResult> samples;  // successful repetitions

  bool ok() const { return skipped.empty() && failure.empty() && !samples.empty(); }
  double median(const std::function<double(const RunResult&)>& get) const;
  double min(const std::function<double(const RunResult&)>& get) const;
  double max(const std::function<double(const RunResult&)>& get) const;
};

struct ReportContext {
  std::string baseline;  // transport name the ratio column compares with
  int repetitions = 0;
  std::string machine;  // one line: CPUs, kernel
  std::string command;  // the command line as run
};

void print_tables(const std::vector<Row>& rows, const ReportContext& context);
// Each returns an empty string on success, otherwise what went wrong.
std::string write_csv(const std::vector<Row>& rows, const ReportContext& context,
                      const std::string& path);
std::string write_json(const std::vector<Row>& rows, const ReportContext& context,
                       const std::string& path);
std::string write_png(const std::vector<Row>& rows, const ReportContext& context,
                      const std::string& path);

}  // namespace xproc::bench
