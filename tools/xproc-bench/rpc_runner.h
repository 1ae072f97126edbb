#pragma once
// The rpc mode of xproc-bench (`--mode rpc`, never part of `--mode all`): request/response round
// trips between a client process and a server process, 64-byte requests echoed as 64-byte
// responses; p50/p99/p99.9 per call and context switches per call (both processes). See
// docs/decisions/0051-rpc-bench.md.
//
// Rows:
//   rpc-spin     xproc::rpc, one server worker, default WaitPolicy on both sides (the worker and
//                the client's waits spin, then yield, then park)
//   rpc-spin-ny  the same with WaitPolicy{128, 0} (spin, no yields, then park)
//   rpc-sleep    the same with WaitPolicy{0, 0} on both sides (park at once)
//   rpc-unix     a Unix stream socketpair: a 4-byte length prefix and the body each way, the
//                server echoing (blocking send/recv)
//   rpc-tcp      the same over TCP loopback (TCP_NODELAY on both ends)
//   rpc-grpc     gRPC's synchronous unary API over a Unix domain socket: an echo service
//                (grpc_echo.proto, bytes in, the same bytes out), one channel per client thread;
//                "skipped" when gRPC was not found at build time or in sanitizer builds
//                (grpc_echo.h; docs/decisions/0057-grpc-bench-row.md)
// With several client threads (--rpc-threads 1,4,16): the xproc rows share one Client among
// them and the server runs min(threads, 4) workers; the socket rows open one connection per
// thread and the server serves each on its own thread (rpc-grpc: one channel, i.e. connection,
// per thread; gRPC's synchronous server runs its own threads). Rows show calls/s over all
// threads too.
// Fan-out experiment (table "rpc fan-out", Mode::rpc_fanout), 5 rounds (--quick) or 50 per run:
//   fanout-xproc    call_many of 100 requests; the server (one worker, WaitPolicy{0,0} on both
//                   sides) hands request #1's Responder to a thread that answers 2 ms later and
//                   answers the others at once
//   fanout-ordered  the same 100 requests pipelined on a Unix stream socket to a server that
//                   answers in request order (HTTP/1.1-pipelining-like): #1's 2 ms hold back the
//                   rest
// Each round reports the time from the first send until the other 99 completed and until all
// 100 did; the row shows the median round of each run (median over runs).
// Every response is checked against its request (the call's sequence number in the first and
// last 8 bytes). Processes are pinned as in the other modes (client on the first CPU, server on
// the second); every run is bounded by the timeout (children killed, row FAILED).

#include <string>
#include <vector>

#include "report.h"
#include "runner.h"

namespace xproc::bench {

struct RpcOptions {
  std::vector<std::string> transports;  // empty: every rpc row
  int repetitions = 5;
  double duration = 0.25;  // target seconds per measured repetition
  double timeout = 30;
  bool quick = false;
  std::vector<int> cpus;        // empty: no pinning
  std::vector<int> threads{1};  // client threads of each row (1..16; Row::producers)
};

std::vector<std::string> rpc_row_names();
std::vector<std::string> rpc_row_descriptions();  // "name  (rpc) description" lines

// Runs every chosen rpc row; appends the rows (mode rpc, 64 B) to `rows`.
void run_rpc_rows(const RpcOptions& options, std::vector<Row>& rows);

}  // namespace xproc::bench
