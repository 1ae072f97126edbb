// The rpc client C API (include/xproc/c/rpc.h) called from C++ against an in-process
// xproc::rpc::Server: calls, async calls (poll, wait with its own deadline, cancel, free),
// the call's deadline, the error codes it documents, a server that goes away.
#include "xproc/c/rpc.h"

#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "c_test_support.h"
#include "child_process.h"
#include "eventually.h"
#include "shared_object.h"
#include "xproc/rpc/server.h"

namespace {

using namespace std::chrono_literals;
using xproc::test::bad_timespec;
using xproc::test::monotonic_in;

std::string unique_name(const char* what) {
  static std::atomic<int> counter{0};
  return std::string("capi-rpc-") + what + "-" + std::to_string(getpid()) + "-" +
         std::to_string(counter.fetch_add(1));
}

constexpr std::uint32_t kHold = 7;  // method: the handler keeps the Responder until release()

// A server whose handler echoes the body with the method as status, except kHold requests,
// whose Responders are kept until release() answers them.
class Service {
 public:
  explicit Service(const std::string& name) {
    xproc::rpc::ServerOptions options;
    options.config.max_clients = 4;
    options.segment.participant_capacity = 12;
    auto server = xproc::rpc::Server::create(name, options);
    EXPECT_TRUE(server.has_value());
    server_ = std::move(*server);
    EXPECT_FALSE(server_.serve(
        [this](const xproc::rpc::Request& request, xproc::rpc::Responder responder) {
          if (request.method == kHold) {
            const std::lock_guard lock(mutex_);
            held_.push_back(std::move(responder));
            bodies_.emplace_back(request.body.begin(), request.body.end());
            return;
          }
          (void)responder.respond(request.body, request.method);
        },
        1));
  }
  ~Service() {
    server_.stop();
    release();
  }
  std::size_t held() {
    const std::lock_guard lock(mutex_);
    return held_.size();
  }
  void release() {
    const std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < held_.size(); ++i) (void)held_[i].respond(bodies_[i], kHold);
    held_.clear();
    bodies_.clear();
  }
  xproc::rpc::Server& server() { return server_; }

 private:
  xproc::rpc::Server server_;
  std::mutex mutex_;
  std::vector<xproc::rpc::Responder> held_;
  std::vector<std::vector<std::byte>> bodies_;
};

void wait_held(Service& service, std::size_t count) {
  for (int i = 0; i < 10000 && service.held() < count; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(service.held(), count);
}

std::string body_text(const xproc_rpc_response_t& response) {
  return {static_cast<const char*>(response.body), response.size};
}

TEST(RpcCApi, ConnectErrors) {
  xproc_rpc_client_t* client = reinterpret_cast<xproc_rpc_client_t*>(1);
  EXPECT_EQ(xproc_rpc_connect(unique_name("missing").c_str(), &client), ENOENT);
  EXPECT_EQ(client, nullptr);
  EXPECT_EQ(xproc_rpc_connect(nullptr, &client), EINVAL);
  EXPECT_EQ(xproc_rpc_connect("x", nullptr), EINVAL);
  EXPECT_EQ(xproc_rpc_close(nullptr), 0);
}

TEST(RpcCApi, CallEchoesAndFreesTheBody) {
  const std::string name = unique_name("call");
  Service service(name);
  xproc_rpc_client_t* client = nullptr;
  ASSERT_EQ(xproc_rpc_connect(name.c_str(), &client), 0);
  const struct timespec deadline = monotonic_in(30s);
  xproc_rpc_response_t response;
  ASSERT_EQ(xproc_rpc_call(client, 3, "hello", 5, &deadline, &response), 0);
  EXPECT_EQ(response.status, 3u);
  EXPECT_EQ(body_text(response), "hello");
  xproc_rpc_response_free(&response);
  EXPECT_EQ(response.body, nullptr);
  EXPECT_EQ(response.size, 0u);
  // No deadline, an empty body.
  ASSERT_EQ(xproc_rpc_call(client, 4, nullptr, 0, nullptr, &response), 0);
  EXPECT_EQ(response.status, 4u);
  EXPECT_EQ(response.body, nullptr);
  EXPECT_EQ(response.size, 0u);
  xproc_rpc_response_free(nullptr);
  EXPECT_EQ(xproc_rpc_close(client), 0);
}

TEST(RpcCApi, ArgumentErrors) {
  const std::string name = unique_name("args");
  Service service(name);
  xproc_rpc_client_t* client = nullptr;
  ASSERT_EQ(xproc_rpc_connect(name.c_str(), &client), 0);
  xproc_rpc_response_t response;
  const struct timespec bad = bad_timespec();
  EXPECT_EQ(xproc_rpc_call(nullptr, 1, "a", 1, nullptr, &response), EINVAL);
  EXPECT_EQ(xproc_rpc_call(client, 1, "a", 1, nullptr, nullptr), EINVAL);
  EXPECT_EQ(xproc_rpc_call(client, 1, nullptr, 1, nullptr, &response), EINVAL);
  EXPECT_EQ(xproc_rpc_call(client, 1, "a", 1, &bad, &response), EINVAL);
  xproc_rpc_call_t* call = nullptr;
  EXPECT_EQ(xproc_rpc_call_async(client, 1, "a", 1, &bad, &call), EINVAL);
  EXPECT_EQ(call, nullptr);
  EXPECT_EQ(xproc_rpc_call_async(client, 1, "a", 1, nullptr, nullptr), EINVAL);
  EXPECT_EQ(xproc_rpc_call_wait(nullptr, nullptr, &response), EINVAL);
  EXPECT_EQ(xproc_rpc_call_poll(nullptr), 0);
  EXPECT_EQ(xproc_rpc_call_cancel(nullptr), EINVAL);
  xproc_rpc_call_free(nullptr);
  // A body above the server's max_request_body (16 KiB by default).
  std::vector<char> large(64 << 10, 'x');
  EXPECT_EQ(xproc_rpc_call(client, 1, large.data(), large.size(), nullptr, &response), EMSGSIZE);
  EXPECT_EQ(xproc_rpc_close(client), 0);
}

TEST(RpcCApi, AsyncCallPollWaitAndWaitDeadline) {
  const std::string name = unique_name("async");
  Service service(name);
  xproc_rpc_client_t* client = nullptr;
  ASSERT_EQ(xproc_rpc_connect(name.c_str(), &client), 0);
  xproc_rpc_call_t* call = nullptr;
  ASSERT_EQ(xproc_rpc_call_async(client, kHold, "held", 4, nullptr, &call), 0);
  wait_held(service, 1);
  EXPECT_EQ(xproc_rpc_call_poll(call), 0);
  // The wait's own deadline passes; the call goes on.
  const struct timespec soon = monotonic_in(5ms);
  xproc_rpc_response_t response;
  EXPECT_EQ(xproc_rpc_call_wait(call, &soon, &response), ETIMEDOUT);
  service.release();
  ASSERT_EQ(xproc_rpc_call_wait(call, nullptr, &response), 0);
  EXPECT_EQ(response.status, kHold);
  EXPECT_EQ(body_text(response), "held");
  xproc_rpc_response_free(&response);
  EXPECT_EQ(xproc_rpc_call_poll(call), 1);
  EXPECT_EQ(xproc_rpc_call_wait(call, nullptr, &response), EALREADY);
  xproc_rpc_call_free(call);
  EXPECT_EQ(xproc_rpc_close(client), 0);
}

TEST(RpcCApi, CancelAndTheCallsDeadline) {
  const std::string name = unique_name("cancel");
  Service service(name);
  xproc_rpc_client_t* client = nullptr;
  ASSERT_EQ(xproc_rpc_connect(name.c_str(), &client), 0);
  xproc_rpc_call_t* call = nullptr;
  ASSERT_EQ(xproc_rpc_call_async(client, kHold, "c", 1, nullptr, &call), 0);
  wait_held(service, 1);
  EXPECT_EQ(xproc_rpc_call_cancel(call), 0);
  EXPECT_EQ(xproc_rpc_call_poll(call), 1);
  xproc_rpc_response_t response;
  EXPECT_EQ(xproc_rpc_call_wait(call, nullptr, &response), ECANCELED);
  EXPECT_EQ(xproc_rpc_call_wait(call, nullptr, &response), EALREADY);
  xproc_rpc_call_free(call);
  // The call's own deadline: ETIMEDOUT from a blocking call and from an async wait.
  const struct timespec short_deadline = monotonic_in(20ms);
  EXPECT_EQ(xproc_rpc_call(client, kHold, "t", 1, &short_deadline, &response), ETIMEDOUT);
  const struct timespec async_deadline = monotonic_in(20ms);
  ASSERT_EQ(xproc_rpc_call_async(client, kHold, "u", 1, &async_deadline, &call), 0);
  EXPECT_EQ(xproc_rpc_call_wait(call, nullptr, &response), ETIMEDOUT);
  EXPECT_EQ(xproc_rpc_call_wait(call, nullptr, &response), EALREADY);
  xproc_rpc_call_free(call);
  // Freeing a call in flight cancels it.
  ASSERT_EQ(xproc_rpc_call_async(client, kHold, "f", 1, nullptr, &call), 0);
  xproc_rpc_call_free(call);
  service.release();  // late responses: dropped by the client
  EXPECT_EQ(xproc_rpc_close(client), 0);
}

TEST(RpcCApi, CloseCancelsCallsInFlightAndServerGoneIsOwnerDead) {
  const std::string name = unique_name("close");
  auto service = std::make_unique<Service>(name);
  xproc_rpc_client_t* client = nullptr;
  ASSERT_EQ(xproc_rpc_connect(name.c_str(), &client), 0);
  xproc_rpc_call_t* call = nullptr;
  ASSERT_EQ(xproc_rpc_call_async(client, kHold, "x", 1, nullptr, &call), 0);
  wait_held(*service, 1);
  EXPECT_EQ(xproc_rpc_close(client), 0);
  xproc_rpc_response_t response;
  EXPECT_EQ(xproc_rpc_call_wait(call, nullptr, &response), ECANCELED);
  xproc_rpc_call_free(call);

  ASSERT_EQ(xproc_rpc_connect(name.c_str(), &client), 0);
  service.reset();  // the server withdraws
  EXPECT_EQ(xproc_rpc_call(client, 1, "a", 1, nullptr, &response), EOWNERDEAD);
  EXPECT_EQ(xproc_rpc_close(client), 0);
}

// A server in another process, killed (SIGKILL) while it holds a request: the call waiting
// without a deadline ends with EOWNERDEAD, and so does the next call. The fork happens while
// this process runs no other thread (earlier tests joined theirs; ctest runs each test in a
// process of its own).
TEST(RpcCApi, ServerKilledMidRequestIsOwnerDead) {
  const std::string name = unique_name("killed");
  struct Flags {
    std::atomic<int> ready{0};
    std::atomic<int> entered{0};
  };
  xproc::test::SharedObject<Flags> flags;
  xproc::test::Child server = xproc::test::Child::start([&name, &flags] {
    xproc::rpc::ServerOptions options;
    options.config.max_clients = 4;
    options.segment.participant_capacity = 12;
    auto created = xproc::rpc::Server::create(name, options);
    if (!created) return 20;
    std::mutex mutex;
    std::vector<xproc::rpc::Responder> parked;
    const std::error_code error = created->serve(
        [&](const xproc::rpc::Request&, xproc::rpc::Responder responder) {
          {
            const std::lock_guard lock(mutex);
            parked.push_back(std::move(responder));  // never answered
          }
          flags->entered.fetch_add(1);
        },
        1);
    if (error) return 21;
    flags->ready.store(1);
    for (;;) std::this_thread::sleep_for(1s);  // until killed
  });
  ASSERT_TRUE(xproc::test::eventually([&] { return flags->ready.load() == 1; }));
  xproc_rpc_client_t* client = nullptr;
  ASSERT_EQ(xproc_rpc_connect(name.c_str(), &client), 0);
  xproc_rpc_call_t* call = nullptr;
  ASSERT_EQ(xproc_rpc_call_async(client, 1, "stuck", 5, nullptr, &call), 0);
  ASSERT_TRUE(xproc::test::eventually([&] { return flags->entered.load() == 1; }));
  server.kill(SIGKILL);
  EXPECT_TRUE(server.wait().signaled);
  xproc_rpc_response_t response;
  EXPECT_EQ(xproc_rpc_call_wait(call, nullptr, &response), EOWNERDEAD);  // no deadline
  xproc_rpc_call_free(call);
  EXPECT_EQ(xproc_rpc_call(client, 2, "a", 1, nullptr, &response), EOWNERDEAD);
  EXPECT_EQ(xproc_rpc_close(client), 0);
}

}  // namespace
