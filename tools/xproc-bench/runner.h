#pragma once
// One measured run of one transport: forks the participating processes, pins them, starts them
// together, bounds them by a timeout, verifies what they received and collects their figures.
//
// Modes:
// - latency: a ping process sends a message, a pong process receives it and sends it back;
//   round-trip times per message (p50/p99/p99.9) from the ping side.
// - stream / mpmc: P producer processes send N messages each as fast as the transport takes
//   them, C consumer processes receive them; messages per second over the whole transfer.
//   The last producer to finish sends one end marker per consumer.
// Verification, in every mode: each message carries (producer, sequence) in its first and last
// 8 bytes; a receiver checks both copies, the producer index, the order (exactly the next
// sequence with one consumer, strictly increasing per producer with several), and, with
// several consumers, marks each message in its own bitmap; the parent then checks that the
// bitmaps are disjoint and together cover every message (exactly once), and the total count.
// Context switches: each process reports getrusage(RUSAGE_SELF) voluntary+involuntary switches
// over its measured window; the row shows their sum per message (per round trip in latency).
// A process that fails (an exception, a verification error) ends the run at once: the parent
// kills the others. A run that outlives its timeout is killed and reported, never a hang.

#include <string>
#include <vector>

#include "transport.h"

namespace xproc::bench {

// bulk: large payloads, 1 producer -> C consumers, GB/s (bulk_runner.h; its own transports).
// rpc: request/response round trips, client and server processes (rpc_runner.h; its own rows).
// rpc_fanout: the rpc mode's fan-out experiment (rpc_runner.h).
enum class Mode { latency, stream, mpmc, bulk, rpc, rpc_fanout };
const char* mode_name(Mode mode);

struct RunConfig {
  Mode mode = Mode::stream;
  std::size_t message_size = 64;
  int producers = 1;  // latency: ignored (one ping, one pong)
  int consumers = 1;
  long messages = 1000;  // per producer; latency: measured round trips
  long warmup = 0;       // latency only: round trips before the measured ones
  double timeout_seconds = 30;
  std::vector<int> cpus;  // CPUs to pin to; empty = no pinning
};

struct RunResult {
  bool ok = false;
  std::string error;   // why !ok
  double seconds = 0;  // stream/mpmc: first send .. last receive
  double messages_per_second = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0;  // latency
  double switches_per_message = 0;             // latency: per round trip
};

RunResult run_once(Transport& transport, const RunConfig& config);

}  // namespace xproc::bench
