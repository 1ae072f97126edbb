#pragma once
// The bulk mode of xproc-bench: one producer process -> C consumer processes move payloads of
// 64 KiB .. 256 MiB through a BulkTransport (bulk_transport.h); GB/s, ratio to memcpy, context
// switches per payload. See docs/decisions/0032-xproc-bench.md ("Bulk mode").
//
// Work per payload, the same in every row: the producer writes every 8-byte word of it (word 0:
// the sequence number; word i: a pattern keyed by the sequence); each consumer reads every word
// (a wrapping sum) and checks the sum, the sequence (exactly the next one with one consumer,
// strictly increasing with several) and, with several consumers, marks it in its own bitmap: the
// parent checks every payload was consumed exactly once. With several consumers the producer
// ends with one end marker per consumer (word 0 = a marker value).
// Window: the producer first moves the link's warm-up payloads (every buffer touched once),
// then the measured ones: GB/s = measured bytes / (producer's first measured prepare .. last
// consumer's last measured release). Processes are pinned as the other modes pin them; every
// run is bounded by the timeout (children killed, row FAILED).

#include <string>
#include <vector>

#include "bulk_transport.h"
#include "report.h"
#include "runner.h"

namespace xproc::bench {

struct BulkOptions {
  std::vector<std::size_t> sizes;       // bytes, multiples of 8
  std::vector<int> consumer_counts;     // shapes 1 -> C
  std::vector<std::string> transports;  // empty: every bulk transport
  int repetitions = 5;
  double duration = 0.25;  // target seconds per measured repetition
  double timeout = 30;
  bool quick = false;
  std::vector<int> cpus;  // empty: no pinning
};

// Names of the registered bulk rows (for --transports and --list).
std::vector<std::string> bulk_transport_names();
std::vector<std::string> bulk_transport_descriptions();  // "name  description" lines

// "64 KiB", "256 MiB", "100 B".
std::string bulk_size_label(std::size_t size);

// Runs every (size, shape, transport) row; appends the rows (mode bulk) to `rows`.
void run_bulk_rows(const BulkOptions& options, std::vector<Row>& rows);

}  // namespace xproc::bench
