#pragma once
// The gRPC side of xproc-bench's rpc-grpc row (rpc_runner.cc;
// docs/decisions/0057-grpc-bench-row.md): a synchronous unary echo service (grpc_echo.proto:
// Echo.Call, bytes in, the same bytes out) and a client of it, both over a Unix domain socket
// ("unix:/path"). The gRPC headers stay in grpc_echo.cc, so nothing else of xproc-bench sees them.
//
// Built only when gRPC and protobuf were found at configure time and no sanitizer is on (the
// row is "skipped" otherwise: XPROC_BENCH_NO_GRPC holds the reason).
//
// Blocking: the server runs on gRPC's own threads (the synchronous server's thread manager);
// GrpcEchoClient::call blocks its caller for one round trip. Failures throw std::runtime_error
// with gRPC's status text. Deaths: a dead server fails the client's call (UNAVAILABLE, or the
// per-call deadline); the benchmark's supervisor kills whatever is left at its timeout.
// Each object belongs to one process: create them after fork(), never before.

#include <cstddef>
#include <memory>
#include <string>

namespace xproc::bench {

class GrpcEchoServer {
 public:
  // Builds and starts the server listening at `address` ("unix:/path"); throws when it cannot.
  explicit GrpcEchoServer(const std::string& address);
  // Shuts the server down (calls still in flight are cancelled) and waits for its threads.
  ~GrpcEchoServer();
  GrpcEchoServer(const GrpcEchoServer&) = delete;
  GrpcEchoServer& operator=(const GrpcEchoServer&) = delete;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// One channel with its own connection (a local subchannel pool: two clients in one process do
// not share one HTTP/2 connection) and its stub. One caller at a time.
class GrpcEchoClient {
 public:
  explicit GrpcEchoClient(const std::string& address);
  ~GrpcEchoClient();
  GrpcEchoClient(const GrpcEchoClient&) = delete;
  GrpcEchoClient& operator=(const GrpcEchoClient&) = delete;

  // Connects now (gRPC connects lazily), waiting at most `seconds`; throws when it could not.
  void connect(double seconds);
  // One unary call of `size` request bytes: copies the response's bytes into `response` and
  // returns how many there were. Throws on a failed call or a response above `capacity`.
  std::size_t call(const std::byte* request, std::size_t size, std::byte* response,
                   std::size_t capacity);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace xproc::bench
