// Server and clients in different processes: exactly-once matching across client processes,
// a server killed mid-request (peer_dead promptly, then found again by name after a restart), a
// client killed with requests in flight (its responses dropped, its slot freed and reused).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "child_process.h"
#include "eventually.h"
#include "rpc_test_support.h"
#include "shared_object.h"

namespace xproc::rpc {
namespace {

using test::bytes;
using test::echo;
using test::in;
using test::kLong;
using test::small_options;
using test::text;
using xproc::test::Child;
using xproc::test::eventually;
using xproc::test::SharedObject;

struct Flags {
  std::atomic<int> go{0};
  std::atomic<int> ready{0};
  std::atomic<int> entered{0};
};

// Responds "<body>/<method>" after a random delay, so workers finish in random order.
void delayed_echo(const Request& request, Responder responder) {
  thread_local std::minstd_rand random(
      static_cast<unsigned>(std::hash<std::thread::id>()(std::this_thread::get_id())));
  std::this_thread::sleep_for(std::chrono::microseconds(random() % 300));
  const std::string reply = text(request.body) + "/" + std::to_string(request.method);
  (void)responder.respond(bytes(reply));
}

// A child's work: `threads` threads, each `calls` calls in windows of 8 in flight; exit code 0
// when every response was exactly the one of its own request.
int call_and_check(const std::string& name, int process, int threads, long calls) {
  Result<Client> client = Client::connect(name);
  if (!client) return 10;
  std::atomic<int> failures{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < threads; ++t) {
    callers.emplace_back([&, t] {
      std::vector<PendingCall> window;
      std::vector<std::string> expected;
      for (long i = 0; i < calls; ++i) {
        const std::string body =
            std::to_string(process) + "." + std::to_string(t) + "." + std::to_string(i);
        const auto method = static_cast<std::uint32_t>(i % 7);
        window.push_back(client->async_call(method, bytes(body), in(kLong)));
        expected.push_back(body + "/" + std::to_string(method));
        if (window.size() == 8 || i + 1 == calls) {
          for (std::size_t k = 0; k < window.size(); ++k) {
            Result<Response> response = window[k].wait();
            if (!response || text(response->body) != expected[k]) failures.fetch_add(1);
          }
          window.clear();
          expected.clear();
        }
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  const ClientStatistics stats = client->statistics();
  if (stats.late_responses + stats.unknown_responses + stats.stale_responses != 0) return 11;
  if (stats.responses != static_cast<std::uint64_t>(threads * calls)) return 12;
  return failures.load() == 0 ? 0 : 13;
}

TEST(RpcProcess, EveryCallGetsExactlyItsResponseAcrossClientProcesses) {
  const std::string name = test::unique_name("procs");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  const long calls = xproc::test::scaled(150);
  std::vector<Child> children;
  for (int process = 0; process < 2; ++process) {
    children.push_back(
        Child::start([&name, process, calls] { return call_and_check(name, process, 3, calls); }));
  }
  // The workers start after the forks (every fork in these tests happens while the parent has
  // one thread: a child of a multi-threaded parent may inherit a lock held by another thread,
  // e.g. ASan's allocator's). The children's first requests wait in the ring meanwhile.
  ASSERT_FALSE(server->serve(delayed_echo, 4));
  for (Child& child : children) {
    const xproc::test::ChildStatus status = child.wait();
    EXPECT_TRUE(status.ok()) << "exit " << status.exit_code << " signal " << status.term_signal;
  }
  EXPECT_EQ(server->statistics().requests, static_cast<std::uint64_t>(2 * 3 * calls));
  EXPECT_EQ(server->statistics().responses, static_cast<std::uint64_t>(2 * 3 * calls));
}

// A server process that starts serving once flags.go reaches `go`, until killed: echo, or
// park every request unanswered (counted in flags.entered).
Child start_server(const std::string& name, Flags& flags, int go, bool park) {
  return Child::start([&name, &flags, go, park] {
    if (!eventually([&] { return flags.go.load() >= go; }, std::chrono::seconds(60))) return 22;
    Result<Server> server = Server::create(name, small_options());
    if (!server) return 20;
    std::mutex mutex;
    std::vector<Responder> parked;
    const std::error_code error = server->serve(
        [&](const Request& request, Responder responder) {
          if (!park) {
            echo(request, std::move(responder));
            return;
          }
          {
            const std::lock_guard lock(mutex);
            parked.push_back(std::move(responder));  // never answered
          }
          flags.entered.fetch_add(1);
        },
        2);
    if (error) return 21;
    flags.ready.fetch_add(1);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // until killed
  });
}

TEST(RpcProcess, ServerKilledMidRequestGivesPeerDeadThenARestartedServerIsFoundByName) {
  const std::string name = test::unique_name("killed-server");
  SharedObject<Flags> flags;
  // Both servers are forked now, while this process has one thread (see above); the second
  // starts when told.
  Child first = start_server(name, *flags, /*go=*/0, /*park=*/true);
  Child second = start_server(name, *flags, /*go=*/1, /*park=*/false);
  ASSERT_TRUE(eventually([&] { return flags->ready.load() == 1; }));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client) << client.error().message();
  PendingCall in_flight = client->async_call(1, bytes("stuck"), sync::Deadline::max());
  ASSERT_TRUE(eventually([&] { return flags->entered.load() == 1; }));
  first.kill(SIGKILL);
  EXPECT_TRUE(first.wait().signaled);
  // No deadline: only the server's death ends this wait.
  EXPECT_EQ(in_flight.wait().error(), errc::peer_dead);
  EXPECT_EQ(client->call(2, bytes("nobody"), sync::Deadline::max()).error(), errc::peer_dead);

  flags->go.store(1);
  ASSERT_TRUE(eventually([&] { return flags->ready.load() == 2; }));
  Result<Response> response = client->call(3, bytes("again"), in(kLong));
  ASSERT_TRUE(response) << response.error().message();
  EXPECT_EQ(text(response->body), "3:again");
  EXPECT_GE(client->statistics().peer_dead, 2u);
  second.kill(SIGKILL);
  EXPECT_TRUE(second.wait().signaled);
}

TEST(RpcProcess, ClientKilledWithRequestsInFlightLosesItsResponsesAndItsSlot) {
  const std::string name = test::unique_name("killed-client");
  Result<Server> server = Server::create(name, small_options(/*max_clients=*/1));
  ASSERT_TRUE(server);
  constexpr std::size_t kInFlight = 4;
  // Forked before the workers start (see above); its requests wait in the ring meanwhile.
  Child child = Child::start([&name] {
    Result<Client> client = Client::connect(name);
    if (!client) return 30;
    std::vector<PendingCall> calls;
    for (std::size_t i = 0; i < kInFlight; ++i) {
      calls.push_back(client->async_call(0, bytes("held"), sync::Deadline::max()));
    }
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // until killed
  });
  std::mutex mutex;
  std::vector<Responder> parked;
  ASSERT_FALSE(server->serve(
      [&](const Request& request, Responder responder) {
        if (request.method == 0) {
          const std::lock_guard lock(mutex);
          parked.push_back(std::move(responder));
        } else {
          echo(request, std::move(responder));
        }
      },
      2));
  const auto parked_count = [&] {
    const std::lock_guard lock(mutex);
    return parked.size();
  };
  ASSERT_TRUE(eventually([&] { return parked_count() == kInFlight; }));
  EXPECT_EQ(Client::connect(name).error(), errc::limit_reached);  // the one slot is held
  child.kill(SIGKILL);
  EXPECT_TRUE(child.wait().signaled);
  // The idle workers' sweep frees the dead client's slot.
  ASSERT_TRUE(eventually([&] { return server->statistics().slots_freed == 1; }));
  {
    const std::lock_guard lock(mutex);
    for (Responder& responder : parked)
      EXPECT_EQ(responder.respond(bytes("late")), errc::peer_dead);
  }
  EXPECT_EQ(server->statistics().responses_dead_client, kInFlight);
  Result<Client> successor = Client::connect(name);
  ASSERT_TRUE(successor) << successor.error().message();
  EXPECT_EQ(successor->slot(), 0u);
  Result<Response> response = successor->call(5, bytes("mine"), in(kLong));
  ASSERT_TRUE(response);
  EXPECT_EQ(text(response->body), "5:mine");
  EXPECT_EQ(successor->statistics().stale_responses, 0u);
}

// A client that stops reading (SIGSTOP: alive, not reading): once its response ring is full,
// each further response waits response_timeout, then is dropped and counted.
TEST(RpcProcess, ResponsesToAClientThatStopsReadingAreDroppedAfterTheResponseTimeout) {
  const std::string name = test::unique_name("stopped-client");
  ServerOptions options = small_options();
  options.response_timeout = std::chrono::milliseconds(20);
  Result<Server> server = Server::create(name, options);
  ASSERT_TRUE(server);
  // Each response takes about 1 KiB of the 16 KiB ring: 24 of them cannot all fit.
  constexpr std::size_t kCalls = 24;
  Child child = Child::start([&name] {  // forked before the workers start (see above)
    Result<Client> client = Client::connect(name);
    if (!client) return 40;
    std::vector<PendingCall> calls;
    for (std::size_t i = 0; i < kCalls; ++i) {
      calls.push_back(client->async_call(0, bytes("big"), sync::Deadline::max()));
    }
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // until killed
  });
  std::mutex mutex;
  std::vector<Responder> parked;
  ASSERT_FALSE(server->serve(
      [&](const Request&, Responder responder) {
        const std::lock_guard lock(mutex);
        parked.push_back(std::move(responder));
      },
      1));
  ASSERT_TRUE(eventually([&] {
    const std::lock_guard lock(mutex);
    return parked.size() == kCalls;
  }));
  child.kill(SIGSTOP);
  // Wait until it is stopped (not reaped: WUNTRACED reports the stop), so that none of the
  // responses below is read.
  int status = 0;
  ASSERT_EQ(::waitpid(child.pid(), &status, WUNTRACED), child.pid());
  ASSERT_TRUE(WIFSTOPPED(status));
  const std::vector<std::byte> body(1000);
  std::size_t sent = 0;
  std::size_t dropped = 0;
  {
    const std::lock_guard lock(mutex);
    for (Responder& responder : parked) {
      const std::error_code error = responder.respond(body);
      if (!error) {
        ++sent;
      } else {
        EXPECT_EQ(error, errc::timed_out);
        ++dropped;
      }
    }
  }
  EXPECT_EQ(sent + dropped, kCalls);
  EXPECT_GE(dropped, 1u);
  EXPECT_EQ(server->statistics().responses_timed_out, dropped);
  child.kill(SIGKILL);
  EXPECT_TRUE(child.wait().signaled);
}

}  // namespace
}  // namespace xproc::rpc
