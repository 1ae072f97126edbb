#include "rpc_runner.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>
#include <utility>

#include "children.h"
#ifndef XPROC_BENCH_NO_GRPC
#include "grpc_echo.h"
#endif
#include "transport.h"
#include "xproc/rpc/client.h"
#include "xproc/rpc/server.h"
#include "xproc/sys/futex.h"

namespace xproc::bench {
namespace {

constexpr std::size_t kMessageSize = 64;
constexpr auto kShared = sys::FutexScope::process_shared;

enum class Kind {
  xproc_spin,
  xproc_spin_no_yield,
  xproc_sleep,
  unix_socket,
  tcp,
  grpc,
  fanout_xproc,
  fanout_ordered
};

struct RpcRowInfo {
  const char* name;
  Kind kind;
  const char* description;
};

constexpr RpcRowInfo kRows[] = {
    {"rpc-spin", Kind::xproc_spin,
     "xproc::rpc, 1 server worker, default WaitPolicy both sides (spin, yield, park)"},
    {"rpc-spin-ny", Kind::xproc_spin_no_yield,
     "xproc::rpc, 1 server worker, WaitPolicy{128,0} both sides (spin, no yields, park)"},
    {"rpc-sleep", Kind::xproc_sleep, "xproc::rpc, 1 server worker, WaitPolicy{0,0} both sides"},
    {"rpc-unix", Kind::unix_socket, "Unix stream socketpair, 4-byte length prefix each way, echo"},
    {"rpc-tcp", Kind::tcp, "TCP loopback (TCP_NODELAY), 4-byte length prefix each way, echo"},
    {"rpc-grpc", Kind::grpc,
     "gRPC sync unary echo (protobuf bytes) over a Unix socket, one channel per client thread"},
};

// The fan-out experiment: kFanout requests at once, the server delays request kSlowIndex.
constexpr std::size_t kFanout = 100;
constexpr std::size_t kSlowIndex = 1;
constexpr auto kSlowDelay = std::chrono::milliseconds(2);
constexpr std::size_t kSlowFlagByte = 8;  // request byte: 1 = delay this one
constexpr long kFanoutWarmupRounds = 2;

constexpr RpcRowInfo kFanoutRows[] = {
    {"fanout-xproc", Kind::fanout_xproc,
     "fan-out: call_many of 100, request #1 answered 2 ms late from another thread "
     "(xproc::rpc, WaitPolicy{0,0})"},
    {"fanout-ordered", Kind::fanout_ordered,
     "fan-out: 100 pipelined frames on a Unix stream socket, responses in request order "
     "(#1 answered 2 ms late)"},
};

struct RpcReport {
  double p50_us, p99_us, p999_us;
  double seconds;         // client: first .. last call of its window
  std::int64_t calls;     // client: measured calls, all threads
  std::int64_t switches;  // over the process's window
  char error[240];
};

struct RpcControl {
  std::atomic<std::uint32_t> ready;      // futex word: children set up
  std::atomic<std::uint32_t> go;         // futex word: 0 -> 1 starts them
  std::atomic<std::uint32_t> server_up;  // futex word: the server exists (xproc rows)
  std::atomic<std::uint32_t> done;       // futex word: the client finished its calls
  RpcReport reports[2];                  // 0: client, 1: server
};

constexpr int kMaxThreads = 16;

struct RpcRun {
  Kind kind = Kind::unix_socket;
  int threads = 1;  // client threads (xproc: one shared Client; sockets: one connection each)
  long warmup = 0;  // calls, all threads together
  long calls = 0;   // measured calls, all threads together (fan-out: measured rounds)
  double timeout_seconds = 30;
  std::vector<int> cpus;
};

void store_error(RpcReport& report, const char* text) {
  std::snprintf(report.error, sizeof report.error, "%s", text);
}

void set_word(std::atomic<std::uint32_t>& word) {
  // release: what the setter did before (the server created, the calls made) is visible to
  // whoever sees 1 (wait_word's acquire load).
  word.store(1, std::memory_order_release);
  (void)sys::futex_wake(word, INT_MAX, kShared);
}

void wait_word(std::atomic<std::uint32_t>& word) {
  // acquire: pairs with set_word's release store. The supervising parent bounds the wait (it
  // kills a run that outlives its timeout).
  while (word.load(std::memory_order_acquire) == 0) (void)sys::futex_wait(word, 0, kShared);
}

// ---- the request/response bodies --------------------------------------------------------

void fill_request(std::byte* body, std::uint64_t sequence) {
  std::memset(body, 0x5a, kMessageSize);
  std::memcpy(body, &sequence, sizeof sequence);
  std::memcpy(body + kMessageSize - sizeof sequence, &sequence, sizeof sequence);
}

void check_response(const std::byte* request, const std::byte* response, std::size_t size) {
  if (size != kMessageSize)
    throw std::runtime_error("response of " + std::to_string(size) + " bytes, expected 64");
  if (std::memcmp(request, response, kMessageSize) != 0)
    throw std::runtime_error("response does not echo its request");
}

// ---- socket framing ---------------------------------------------------------------------------

void send_all(int fd, const std::byte* data, std::size_t size) {
  while (size > 0) {
    ssize_t sent = ::send(fd, data, size, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      throw_errno("send");
    }
    data += sent;
    size -= static_cast<std::size_t>(sent);
  }
}

// False: the peer closed before the first byte.
bool receive_all(int fd, std::byte* data, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    ssize_t got = ::recv(fd, data + done, size - done, MSG_WAITALL);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_errno("recv");
    }
    if (got == 0) {
      if (done == 0) return false;
      throw std::runtime_error("recv: peer closed mid-frame");
    }
    done += static_cast<std::size_t>(got);
  }
  return true;
}

constexpr std::size_t kPrefix = sizeof(std::uint32_t);
constexpr std::size_t kMaxFrame = 16u << 10;

// One frame: the length (host order: both ends are on this machine), then the body.
void send_frame(int fd, const std::byte* body, std::size_t size) {
  std::byte frame[kPrefix + kMaxFrame];
  auto length = static_cast<std::uint32_t>(size);
  std::memcpy(frame, &length, kPrefix);
  std::memcpy(frame + kPrefix, body, size);
  send_all(fd, frame, kPrefix + size);
}

// The body's length, or -1 when the peer closed between frames.
long receive_frame(int fd, std::byte* body) {
  std::uint32_t length = 0;
  std::byte prefix[kPrefix];
  if (!receive_all(fd, prefix, kPrefix)) return -1;
  std::memcpy(&length, prefix, kPrefix);
  if (length > kMaxFrame) throw std::runtime_error("frame length above 16 KiB");
  if (!receive_all(fd, body, length)) throw std::runtime_error("recv: peer closed mid-frame");
  return static_cast<long>(length);
}

// ---- the client's measurement -------------------------------------------------------------

// run.threads threads each make their share of warmup + calls calls through
// make_call(thread)(request, response) -> response size (every response checked); the
// measured window opens when every thread finished its warm-up. Fills the client report.
template <typename MakeCall>
void measure_calls(const RpcRun& run, RpcReport& report, MakeCall&& make_call) {
  const auto threads = static_cast<std::size_t>(run.threads);
  const long warmup = std::max(1L, run.warmup / run.threads);
  const long calls = std::max(1L, run.calls / run.threads);
  std::vector<std::vector<std::int64_t>> times(threads);
  std::vector<std::string> errors(threads);
  std::atomic<std::uint32_t> warmed{0};  // threads past their warm-up
  std::atomic<std::uint32_t> start{0};   // 1: measure
  std::vector<std::thread> workers;
  for (std::size_t t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      // A failing thread still passes the barrier, so the others are not left waiting.
      bool counted = false;
      try {
        auto call = make_call(t);
        std::byte request[kMessageSize];
        std::byte response[kMaxFrame];
        std::uint64_t sequence = static_cast<std::uint64_t>(t) << 48;
        for (long i = 0; i < warmup; ++i) {
          fill_request(request, ++sequence);
          check_response(request, response, call(request, response));
        }
        // release: nothing to publish but the count; pairs with the acquire load below.
        warmed.fetch_add(1, std::memory_order_release);
        counted = true;
        // acquire: pairs with the release store that opens the window.
        while (start.load(std::memory_order_acquire) == 0) std::this_thread::yield();
        times[t].reserve(static_cast<std::size_t>(calls));
        for (long i = 0; i < calls; ++i) {
          fill_request(request, ++sequence);
          const std::int64_t before = now_ns();
          std::size_t size = call(request, response);
          times[t].push_back(now_ns() - before);
          check_response(request, response, size);
        }
      } catch (const std::exception& error) {
        errors[t] = error.what();
        if (!counted) warmed.fetch_add(1, std::memory_order_release);  // as above
      }
    });
  // acquire: pairs with each thread's release increment.
  while (warmed.load(std::memory_order_acquire) < threads) std::this_thread::yield();
  const std::int64_t switches = switches_now();
  const std::int64_t begin = now_ns();
  start.store(1, std::memory_order_release);  // release: pairs with the threads' acquire loads
  for (auto& worker : workers) worker.join();
  report.seconds = static_cast<double>(now_ns() - begin) / 1e9;
  report.switches = switches_now() - switches;
  for (const auto& error : errors)
    if (!error.empty()) throw std::runtime_error(error);
  std::vector<std::int64_t> all;
  for (const auto& part : times) all.insert(all.end(), part.begin(), part.end());
  std::sort(all.begin(), all.end());
  auto at = [&](double q) {
    auto index = static_cast<std::size_t>(q * static_cast<double>(all.size() - 1));
    return static_cast<double>(all[index]) / 1e3;
  };
  report.p50_us = at(0.50);
  report.p99_us = at(0.99);
  report.p999_us = at(0.999);
  report.calls = static_cast<std::int64_t>(all.size());
}

channel::WaitPolicy policy_of(Kind kind) {
  if (kind == Kind::xproc_sleep) return channel::WaitPolicy{0, 0};
  if (kind == Kind::xproc_spin_no_yield) return channel::WaitPolicy{128, 0};
  return channel::WaitPolicy{};
}

std::string segment_name(int run_number) {
  return "xproc-bench-rpc-" + std::to_string(getpid()) + "-" + std::to_string(run_number);
}

[[noreturn]] void throw_code(const char* what, std::error_code code) {
  throw std::runtime_error(std::string(what) + ": " + code.message());
}

// ---- the children ---------------------------------------------------------------------------

// Server workers: one per client thread, at most 4 (more only queue behind each other on the
// CPUs a benchmark machine has).
unsigned server_workers(const RpcRun& run) {
  return static_cast<unsigned>(std::min(run.threads, 4));
}

// The server process of a row whose server runs on its own threads: says it is up, waits for
// the start, and counts its context switches until the client says it is done.
void serve_until_done(RpcControl& control) {
  set_word(control.server_up);
  announce_ready_and_wait(control.ready, control.go);
  const std::int64_t switches = switches_now();
  wait_word(control.done);
  control.reports[1].switches = switches_now() - switches;
}

void xproc_server(const RpcRun& run, RpcControl& control, const std::string& name) {
  rpc::ServerOptions options;
  options.config.max_clients = 4;
  options.wait_policy = policy_of(run.kind);
  auto server = rpc::Server::create(name, options);
  if (!server) throw_code("rpc::Server::create", server.error());
  std::error_code served = server->serve(
      [](const rpc::Request& request, rpc::Responder responder) {
        (void)responder.respond(request.body);  // a failed echo fails the client's check
      },
      server_workers(run));
  if (served) throw_code("rpc::Server::serve", served);
  serve_until_done(control);
}

void xproc_client(const RpcRun& run, RpcControl& control, const std::string& name) {
  wait_word(control.server_up);
  rpc::ClientOptions options;
  options.wait_policy = policy_of(run.kind);
  auto client = rpc::Client::connect(name, options);
  if (!client) throw_code("rpc::Client::connect", client.error());
  announce_ready_and_wait(control.ready, control.go);
  measure_calls(run, control.reports[0], [&](std::size_t) {
    return [&](const std::byte* request, std::byte* response) {
      auto outcome = client->call(0, std::span<const std::byte>(request, kMessageSize),
                                  sync::Clock::now() + std::chrono::seconds(10));
      if (!outcome) throw_code("rpc::Client::call", outcome.error());
      if (outcome->status != 0) throw std::runtime_error("response status not 0");
      std::memcpy(response, outcome->body.data(), std::min(outcome->body.size(), kMaxFrame));
      return outcome->body.size();
    };
  });
  set_word(control.done);
}

// ---- the fan-out experiment -------------------------------------------------------------------

std::vector<std::vector<std::byte>> fanout_requests(std::uint64_t round) {
  std::vector<std::vector<std::byte>> requests(kFanout, std::vector<std::byte>(kMessageSize));
  for (std::size_t i = 0; i < kFanout; ++i) {
    fill_request(requests[i].data(), (round << 16) | i);
    requests[i][kSlowFlagByte] = std::byte{i == kSlowIndex ? std::uint8_t{1} : std::uint8_t{0}};
  }
  return requests;
}

bool is_slow(std::span<const std::byte> body) {
  return body.size() > kSlowFlagByte && body[kSlowFlagByte] == std::byte{1};
}

// Per round: the time until the other kFanout - 1 completed and until all did (ns).
struct FanoutTimes {
  std::vector<std::int64_t> others, all;
};

// Makes kFanoutWarmupRounds + run.calls rounds through round(requests, t0) -> {others, all}.
template <typename Round>
void measure_fanout(const RpcRun& run, RpcReport& report, Round&& one_round) {
  FanoutTimes times;
  std::int64_t switches = 0, begin = 0;
  for (long r = 0; r < kFanoutWarmupRounds + run.calls; ++r) {
    if (r == kFanoutWarmupRounds) {
      switches = switches_now();
      begin = now_ns();
    }
    auto requests = fanout_requests(static_cast<std::uint64_t>(r));
    auto [others, all] = one_round(requests, now_ns());
    if (r >= kFanoutWarmupRounds) {
      times.others.push_back(others);
      times.all.push_back(all);
    }
  }
  report.seconds = static_cast<double>(now_ns() - begin) / 1e9;
  report.switches = switches_now() - switches;
  std::sort(times.others.begin(), times.others.end());
  std::sort(times.all.begin(), times.all.end());
  report.p50_us = static_cast<double>(times.others[times.others.size() / 2]) / 1e3;
  report.p99_us = static_cast<double>(times.all[times.all.size() / 2]) / 1e3;
  report.p999_us = static_cast<double>(times.others.back()) / 1e3;
  report.calls = run.calls;
}

void fanout_xproc_server(RpcControl& control, const std::string& name) {
  rpc::ServerOptions options;
  options.config.max_clients = 4;
  options.wait_policy = channel::WaitPolicy{0, 0};
  auto server = rpc::Server::create(name, options);
  if (!server) throw_code("rpc::Server::create", server.error());
  std::mutex mutex;
  std::vector<std::thread> delayed;  // the slow requests' responders, under `mutex`
  std::error_code served = server->serve(
      [&](const rpc::Request& request, rpc::Responder responder) {
        if (!is_slow(request.body)) {
          (void)responder.respond(request.body);
          return;
        }
        // An asynchronous handler: the worker goes on with the next requests.
        std::vector<std::byte> body(request.body.begin(), request.body.end());
        std::lock_guard lock(mutex);
        delayed.emplace_back([r = std::move(responder), body = std::move(body)]() mutable {
          std::this_thread::sleep_for(kSlowDelay);
          (void)r.respond(body);
        });
      },
      1);
  if (served) throw_code("rpc::Server::serve", served);
  serve_until_done(control);
  server->stop();
  for (auto& thread : delayed) thread.join();
}

void fanout_xproc_client(const RpcRun& run, RpcControl& control, const std::string& name) {
  wait_word(control.server_up);
  rpc::ClientOptions options;
  options.wait_policy = channel::WaitPolicy{0, 0};
  auto client = rpc::Client::connect(name, options);
  if (!client) throw_code("rpc::Client::connect", client.error());
  announce_ready_and_wait(control.ready, control.go);
  measure_fanout(run, control.reports[0], [&](const auto& requests, std::int64_t start) {
    std::vector<rpc::CallSpec> specs;
    for (const auto& request : requests) specs.push_back({0, std::span(request)});
    std::int64_t others = 0;
    std::size_t others_done = 0;
    std::string error;
    client->call_many(
        specs, sync::Clock::now() + std::chrono::seconds(10),
        [&](std::size_t index, Result<rpc::Response> outcome) {
          if (!outcome) {
            error = "call_many: " + outcome.error().message();
            return;
          }
          if (outcome->body.size() != kMessageSize ||
              std::memcmp(outcome->body.data(), requests[index].data(), kMessageSize) != 0)
            error = "response does not echo its request";
          if (index != kSlowIndex && ++others_done == kFanout - 1) others = now_ns() - start;
        });
    const std::int64_t all = now_ns() - start;
    if (!error.empty()) throw std::runtime_error(error);
    return std::pair{others, all};
  });
  set_word(control.done);
}

// An ordered protocol: responses leave in request order, so the slow one holds back the rest.
void fanout_ordered_server(int fd, RpcControl& control) {
  announce_ready_and_wait(control.ready, control.go);
  const std::int64_t switches = switches_now();
  std::byte body[kMaxFrame];
  for (;;) {
    long size = receive_frame(fd, body);
    if (size < 0) break;  // the client closed: the run is over
    if (is_slow(std::span<const std::byte>(body, static_cast<std::size_t>(size))))
      std::this_thread::sleep_for(kSlowDelay);
    send_frame(fd, body, static_cast<std::size_t>(size));
  }
  control.reports[1].switches = switches_now() - switches;
}

void fanout_ordered_client(const RpcRun& run, RpcControl& control, int fd) {
  announce_ready_and_wait(control.ready, control.go);
  measure_fanout(run, control.reports[0], [&](const auto& requests, std::int64_t start) {
    for (const auto& request : requests) send_frame(fd, request.data(), kMessageSize);
    std::int64_t others = 0;
    std::size_t others_done = 0;
    std::byte response[kMaxFrame];
    for (std::size_t i = 0; i < kFanout; ++i) {
      long size = receive_frame(fd, response);
      if (size < 0) throw std::runtime_error("server closed the connection");
      check_response(requests[i].data(), response, static_cast<std::size_t>(size));
      if (i != kSlowIndex && ++others_done == kFanout - 1) others = now_ns() - start;
    }
    return std::pair{others, now_ns() - start};
  });
  close(fd);
}

// One thread per connection, each echoing until its client closes.
void socket_server(const std::vector<int>& fds, RpcControl& control) {
  announce_ready_and_wait(control.ready, control.go);
  const std::int64_t switches = switches_now();
  std::vector<std::string> errors(fds.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < fds.size(); ++i)
    threads.emplace_back([&, i] {
      try {
        std::byte body[kMaxFrame];
        for (;;) {
          long size = receive_frame(fds[i], body);
          if (size < 0) break;  // the client closed: the run is over
          send_frame(fds[i], body, static_cast<std::size_t>(size));
        }
      } catch (const std::exception& error) {
        errors[i] = error.what();
      }
    });
  for (auto& thread : threads) thread.join();
  control.reports[1].switches = switches_now() - switches;
  for (const auto& error : errors)
    if (!error.empty()) throw std::runtime_error(error);
}

// fds[t]: client thread t's connection.
void socket_client(const RpcRun& run, RpcControl& control, const std::vector<int>& fds) {
  announce_ready_and_wait(control.ready, control.go);
  measure_calls(run, control.reports[0], [&](std::size_t t) {
    const int fd = fds[t];
    return [fd](const std::byte* request, std::byte* response) {
      send_frame(fd, request, kMessageSize);
      long size = receive_frame(fd, response);
      if (size < 0) throw std::runtime_error("server closed the connection");
      return static_cast<std::size_t>(size);
    };
  });
  for (int fd : fds) close(fd);  // the server's receives end
}

#ifndef XPROC_BENCH_NO_GRPC
// The gRPC rows (grpc_echo.h): the server process starts a synchronous gRPC server at
// `address` before the start and stops it once the client is done; the client opens one channel
// (its own connection) per thread and connects each before the start, as the socket rows do.
void grpc_server(RpcControl& control, const std::string& address) {
  GrpcEchoServer server(address);
  serve_until_done(control);
}

void grpc_client(const RpcRun& run, RpcControl& control, const std::string& address) {
  wait_word(control.server_up);
  std::vector<std::unique_ptr<GrpcEchoClient>> clients;
  for (int t = 0; t < run.threads; ++t) {
    clients.push_back(std::make_unique<GrpcEchoClient>(address));
    clients.back()->connect(run.timeout_seconds);
  }
  announce_ready_and_wait(control.ready, control.go);
  measure_calls(run, control.reports[0], [&](std::size_t t) {
    GrpcEchoClient* client = clients[t].get();
    return [client](const std::byte* request, std::byte* response) {
      return client->call(request, kMessageSize, response, kMaxFrame);
    };
  });
  set_word(control.done);
}

// The gRPC row's socket: a path in the temporary directory, unique to this process and run.
std::filesystem::path grpc_socket_path(int run_number) {
  return std::filesystem::temp_directory_path() / (segment_name(run_number) + ".sock");
}
#endif

void set_nodelay(int fd) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) throw_errno("TCP_NODELAY");
}

// Fork `body` as a child pinned to `cpu`; its exceptions become its report's error and exit 1.
template <typename Body>
pid_t fork_child(int cpu, RpcReport& report, Body&& body) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  int status = 0;
  try {
    pin_to(cpu);
    body();
  } catch (const std::exception& error) {
    store_error(report, error.what());
    status = 1;
  } catch (...) {
    store_error(report, "unknown exception");
    status = 1;
  }
  std::fflush(nullptr);
  _exit(status);
}

// The parent's descriptors of one run (socket pairs, the listener).
struct FdPair {
  std::vector<int> fds;
  ~FdPair() { close_all(); }
  void close_all() {
    for (int& fd : fds)
      if (fd >= 0) close(std::exchange(fd, -1));
  }
};

RunResult run_rpc_once(const RpcRun& run) {
  static int run_number = 0;
  ++run_number;
  RunResult result;
  void* memory =
      mmap(nullptr, sizeof(RpcControl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    result.error = "mmap of the control block failed";
    return result;
  }
  auto* control = new (memory) RpcControl{};
  const int client_cpu = run.cpus.size() >= 2 ? run.cpus[0] : -1;
  const int server_cpu = run.cpus.size() >= 2 ? run.cpus[1] : -1;
  std::string failure;
  Supervision supervision;
  supervision.ready = &control->ready;
  supervision.go = &control->go;
  supervision.timeout_seconds = run.timeout_seconds;
  supervision.name_of = [](std::size_t i) { return std::string(i == 0 ? "client" : "server"); };
  supervision.error_of = [&](std::size_t i) { return std::string(control->reports[i].error); };
  FdPair pair;
  std::filesystem::path socket_path;  // the gRPC row's, removed after the run
  try {
    if (run.kind == Kind::xproc_spin || run.kind == Kind::xproc_spin_no_yield ||
        run.kind == Kind::xproc_sleep) {
      const std::string name = segment_name(run_number);
      supervision.pids.push_back(
          fork_child(client_cpu, control->reports[0], [&] { xproc_client(run, *control, name); }));
      supervision.pids.push_back(
          fork_child(server_cpu, control->reports[1], [&] { xproc_server(run, *control, name); }));
    } else if (run.kind == Kind::fanout_xproc) {
      const std::string name = segment_name(run_number);
      supervision.pids.push_back(fork_child(client_cpu, control->reports[0],
                                            [&] { fanout_xproc_client(run, *control, name); }));
      supervision.pids.push_back(fork_child(server_cpu, control->reports[1],
                                            [&] { fanout_xproc_server(*control, name); }));
    } else if (run.kind == Kind::fanout_ordered) {
      int ends[2];
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) throw_errno("socketpair");
      pair.fds = {ends[0], ends[1]};
      supervision.pids.push_back(fork_child(client_cpu, control->reports[0], [&] {
        close(ends[1]);
        fanout_ordered_client(run, *control, ends[0]);
      }));
      supervision.pids.push_back(fork_child(server_cpu, control->reports[1], [&] {
        close(ends[0]);
        fanout_ordered_server(ends[1], *control);
      }));
    } else if (run.kind == Kind::grpc) {
#ifdef XPROC_BENCH_NO_GRPC
      throw std::runtime_error(XPROC_BENCH_NO_GRPC);
#else
      socket_path = grpc_socket_path(run_number);
      std::error_code ignored;
      std::filesystem::remove(socket_path, ignored);  // a stale one from a killed run
      const std::string address = "unix:" + socket_path.string();
      supervision.pids.push_back(fork_child(client_cpu, control->reports[0],
                                            [&] { grpc_client(run, *control, address); }));
      supervision.pids.push_back(
          fork_child(server_cpu, control->reports[1], [&] { grpc_server(*control, address); }));
#endif
    } else if (run.kind == Kind::unix_socket) {
      // One pair per client thread: the client's end and the server's.
      std::vector<int> client_ends, server_ends;
      for (int t = 0; t < run.threads; ++t) {
        int ends[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0)
          throw_errno("socketpair");
        pair.fds.push_back(ends[0]);
        pair.fds.push_back(ends[1]);
        client_ends.push_back(ends[0]);
        server_ends.push_back(ends[1]);
      }
      supervision.pids.push_back(fork_child(client_cpu, control->reports[0], [&] {
        for (int fd : server_ends) close(fd);
        socket_client(run, *control, client_ends);
      }));
      supervision.pids.push_back(fork_child(server_cpu, control->reports[1], [&] {
        for (int fd : client_ends) close(fd);
        socket_server(server_ends, *control);
      }));
    } else {
      // The parent listens on an ephemeral loopback port; the server child accepts, the client
      // child connects (the backlog takes the connection before accept()).
      pair.fds.push_back(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (pair.fds[0] < 0) throw_errno("socket");
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t length = sizeof address;
      if (bind(pair.fds[0], reinterpret_cast<sockaddr*>(&address), length) != 0 ||
          listen(pair.fds[0], kMaxThreads) != 0 ||
          getsockname(pair.fds[0], reinterpret_cast<sockaddr*>(&address), &length) != 0)
        throw_errno("loopback listen");
      const int listener = pair.fds[0];
      supervision.pids.push_back(fork_child(client_cpu, control->reports[0], [&] {
        close(listener);
        std::vector<int> fds;
        for (int t = 0; t < run.threads; ++t) {
          int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          if (fd < 0) throw_errno("socket");
          if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
            throw_errno("connect");
          set_nodelay(fd);
          fds.push_back(fd);
        }
        socket_client(run, *control, fds);
      }));
      supervision.pids.push_back(fork_child(server_cpu, control->reports[1], [&] {
        std::vector<int> fds;
        for (int t = 0; t < run.threads; ++t) {
          int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
          if (fd < 0) throw_errno("accept");
          set_nodelay(fd);
          fds.push_back(fd);
        }
        close(listener);
        socket_server(fds, *control);
        for (int fd : fds) close(fd);
      }));
    }
    for (pid_t pid : supervision.pids)
      if (pid < 0) failure = "fork failed";
  } catch (const std::exception& error) {
    failure = error.what();
  }
  // The children hold their ends: the parent's copies go, so the client's close ends the
  // server's receive loop.
  pair.close_all();
  std::erase_if(supervision.pids, [](pid_t pid) { return pid < 0; });
  failure = supervise(supervision, failure);
  if (!socket_path.empty()) {
    std::error_code ignored;
    std::filesystem::remove(socket_path, ignored);  // best effort: a leftover file harms nothing
  }
  if (failure.empty()) {
    const RpcReport& client = control->reports[0];
    const RpcReport& server = control->reports[1];
    result.ok = true;
    result.seconds = client.seconds;
    result.messages_per_second =
        client.seconds > 0 ? static_cast<double>(client.calls) / client.seconds : 0;
    result.p50_us = client.p50_us;
    result.p99_us = client.p99_us;
    result.p999_us = client.p999_us;
    result.switches_per_message = static_cast<double>(client.switches + server.switches) /
                                  static_cast<double>(std::max<std::int64_t>(client.calls, 1));
  } else {
    result.error = failure;
  }
  munmap(memory, sizeof(RpcControl));
  return result;
}

}  // namespace

std::vector<std::string> rpc_row_names() {
  std::vector<std::string> names;
  for (const auto& row : kRows) names.emplace_back(row.name);
  for (const auto& row : kFanoutRows) names.emplace_back(row.name);
  return names;
}

std::vector<std::string> rpc_row_descriptions() {
  std::vector<std::string> lines;
  for (const auto& row : kFanoutRows) {
    char line[512];
    std::snprintf(line, sizeof line, "%-16s (rpc) %s", row.name, row.description);
    lines.emplace_back(line);
  }
  for (const auto& row : kRows) {
    char line[512];
    std::snprintf(line, sizeof line, "%-16s (rpc) %s", row.name, row.description);
    lines.emplace_back(line);
#ifdef XPROC_BENCH_NO_GRPC
    if (row.kind == Kind::grpc)
      lines.back() += std::string(" [not built: ") + XPROC_BENCH_NO_GRPC + "]";
#endif
  }
  return lines;
}

void run_rpc_rows(const RpcOptions& options, std::vector<Row>& rows) {
  for (int threads : options.threads)
    for (const auto& info : kRows) {
      if (!options.transports.empty() &&
          std::find(options.transports.begin(), options.transports.end(), info.name) ==
              options.transports.end())
        continue;
      Row row;
      row.transport = info.name;
      row.mode = Mode::rpc;
      row.message_size = kMessageSize;
      row.producers = threads;
#ifdef XPROC_BENCH_NO_GRPC
      if (info.kind == Kind::grpc) {
        row.skipped = XPROC_BENCH_NO_GRPC;
        rows.push_back(row);
        continue;
      }
#endif
      RpcRun run;
      run.kind = info.kind;
      run.threads = std::clamp(threads, 1, kMaxThreads);
      run.timeout_seconds = options.timeout;
      run.cpus = options.cpus;
      // Calibration: a short run (which also warms up) sizes the measured ones to about
      // --duration each.
      run.calls = (options.quick ? 200 : 1000) * run.threads;
      run.warmup = 50L * run.threads;
      RunResult trial = run_rpc_once(run);
      if (!trial.ok) {
        row.failure = trial.error;
        rows.push_back(row);
        continue;
      }
      const double wanted = options.duration * trial.messages_per_second;
      run.calls = std::clamp(static_cast<long>(wanted),
                             (options.quick ? 200L : 2000L) * run.threads, 20'000'000L);
      run.warmup = std::max(std::min(run.calls / 10, 10'000L), 10L * run.threads);
      for (int r = 0; r < options.repetitions; ++r) {
        RunResult result = run_rpc_once(run);
        if (!result.ok) {
          row.failure = result.error;
          break;
        }
        row.samples.push_back(result);
      }
      if (!options.quick)
        std::fprintf(stderr, "xproc-bench: rpc %s x%d done\n", info.name, run.threads);
      rows.push_back(row);
    }
  for (const auto& info : kFanoutRows) {
    if (!options.transports.empty() &&
        std::find(options.transports.begin(), options.transports.end(), info.name) ==
            options.transports.end())
      continue;
    Row row;
    row.transport = info.name;
    row.mode = Mode::rpc_fanout;
    row.message_size = kMessageSize;
    row.producers = static_cast<int>(kFanout);
    RpcRun run;
    run.kind = info.kind;
    run.timeout_seconds = options.timeout;
    run.cpus = options.cpus;
    run.calls = options.quick ? 5 : 50;  // measured rounds
    for (int r = 0; r < options.repetitions; ++r) {
      RunResult result = run_rpc_once(run);
      if (!result.ok) {
        row.failure = result.error;
        break;
      }
      row.samples.push_back(result);
    }
    if (!options.quick) std::fprintf(stderr, "xproc-bench: rpc %s done\n", info.name);
    rows.push_back(row);
  }
}

}  // namespace xproc::bench
