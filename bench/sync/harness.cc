#include "harness.h"

#include <cstdio>

namespace xproc::bench {
namespace {

std::string ratio_text(const Row& row) {
  if (row.reference == nullptr || row.reference == &row) return "ref";
  double ours = row.median(), theirs = row.reference->median();
  if (ours <= 0 || theirs <= 0) return "-";
  // Ratio > 1 always means "this row is better than its reference".
  double ratio = row.higher_is_better ? ours / theirs : theirs / ours;
  char text[32];
  std::snprintf(text, sizeof text, "%.2fx", ratio);
  return text;
}

}  // namespace

void print_table(const std::vector<Row*>& rows, int repetitions) {
  std::printf("\n%-42s %-38s %14s %23s %8s %10s\n", "benchmark", "implementation", "median",
              "spread (min..max)", "vs ref", "csw/op");
  std::string group;
  for (const Row* row : rows) {
    if (row->group != group) {
      group = row->group;
      std::printf("%s\n", std::string(140, '-').c_str());
    }
    char median[32], spread[48];
    std::snprintf(median, sizeof median, "%.2f %s", row->median(), row->unit.c_str());
    std::snprintf(spread, sizeof spread, "%.2f..%.2f", row->min(), row->max());
    std::printf("%-42s %-38s %14s %23s %8s %10.3f\n", row->group.c_str(), row->name.c_str(), median,
                spread, ratio_text(*row).c_str(), row->median_switches());
  }
  std::printf("(%d repetitions per row; 'vs ref' > 1 means better than the glibc reference row)\n",
              repetitions);
}

void write_markdown(const std::vector<Row*>& rows, int repetitions, const std::string& path) {
  FILE* out = std::fopen(path.c_str(), "w");
  if (out == nullptr) {
    std::perror(path.c_str());
    return;
  }
  std::fprintf(out,
               "| benchmark | implementation | median | spread (min..max) | vs glibc | "
               "context switches/op |\n| --- | --- | --- | --- | --- | --- |\n");
  for (const Row* row : rows) {
    std::fprintf(out, "| %s | %s | %.2f %s | %.2f..%.2f | %s | %.3f |\n", row->group.c_str(),
                 row->name.c_str(), row->median(), row->unit.c_str(), row->min(), row->max(),
                 ratio_text(*row).c_str(), row->median_switches());
  }
  std::fprintf(out, "\n%d repetitions per row.\n", repetitions);
  std::fclose(out);
}

}  // namespace xproc::bench
