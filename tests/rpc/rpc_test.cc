// Server and Client in one process: matching, asynchronous handlers, deadlines, cancellation,
// call_many's completion order, malformed frames both ways, restart by name.
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "child_process.h"
#include "eventually.h"
#include "rpc_test_support.h"
#include "xproc/channel/endpoint.h"
#include "xproc/rpc/layout.h"

namespace xproc::rpc {
namespace {

using test::bytes;
using test::echo;
using test::in;
using test::kLong;
using test::small_options;
using test::text;
using xproc::test::eventually;

// Responders parked by a handler until the test lets them go.
struct Parked {
  std::mutex mutex;
  std::vector<std::pair<Request, Responder>> held;
  std::vector<std::string> bodies;

  void park(const Request& request, Responder responder) {
    const std::lock_guard lock(mutex);
    held.emplace_back(request, std::move(responder));
    bodies.push_back(text(request.body));
  }
  std::size_t count() {
    const std::lock_guard lock(mutex);
    return held.size();
  }
  // Responds to the parked request at `index` with its own body.
  std::error_code release(std::size_t index) {
    const std::lock_guard lock(mutex);
    return held.at(index).second.respond(bytes(bodies.at(index)));
  }
  // A handler that parks every request here.
  auto parks_all() {
    return [this](const Request& request, Responder responder) {
      park(request, std::move(responder));
    };
  }
  // A handler that parks the requests of `method` here and echoes the others.
  auto parks_method(std::uint32_t method) {
    return [this, method](const Request& request, Responder responder) {
      if (request.method == method) {
        park(request, std::move(responder));
      } else {
        echo(request, std::move(responder));
      }
    };
  }
};

TEST(Rpc, CallReturnsTheHandlersResponse) {
  const std::string name = test::unique_name("basic");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server) << server.error().message();
  ASSERT_FALSE(server->serve(echo, 2));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client) << client.error().message();
  Result<Response> response = client->call(7, bytes("hello"), in(kLong));
  ASSERT_TRUE(response) << response.error().message();
  EXPECT_EQ(response->status, 0u);
  EXPECT_EQ(text(response->body), "7:hello");
  EXPECT_EQ(client->statistics().responses, 1u);
  EXPECT_EQ(server->statistics().requests, 1u);
}

TEST(Rpc, ConnectToAMissingNameIsNotFound) {
  EXPECT_EQ(Client::connect(test::unique_name("missing")).error(), errc::not_found);
}

TEST(Rpc, SecondLiveServerOfANameIsRefused) {
  const std::string name = test::unique_name("twice");
  Result<Server> first = Server::create(name, small_options());
  ASSERT_TRUE(first);
  EXPECT_EQ(Server::create(name, small_options()).error(), errc::already_exists);
}

TEST(Rpc, CallerLoopServesWithPollOneAndServeOne) {
  const std::string name = test::unique_name("loop");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  EXPECT_EQ(server->poll_one(echo).value(), false);
  EXPECT_EQ(server->serve_one(echo, in(std::chrono::milliseconds(1))), errc::timed_out);
  PendingCall first = client->async_call(1, bytes("a"), in(kLong));
  PendingCall second = client->async_call(2, bytes("b"), in(kLong));
  EXPECT_FALSE(server->serve_one(echo, in(kLong)));
  ASSERT_TRUE(eventually([&] { return server->poll_one(echo).value(); }));
  EXPECT_EQ(text(first.wait().value().body), "1:a");
  EXPECT_EQ(text(second.wait().value().body), "2:b");
  EXPECT_EQ(second.wait().error(), errc::invalid_argument);  // handed over once
}

TEST(Rpc, DroppedResponderAnswersAbandoned) {
  const std::string name = test::unique_name("abandon");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  ASSERT_FALSE(server->serve([](const Request&, Responder) {}, 1));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  Result<Response> response = client->call(1, bytes("x"), in(kLong));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, kStatusAbandoned);
  EXPECT_EQ(server->statistics().abandoned, 1u);
  server->stop();  // joins the workers before the test's locals they use go away
}

TEST(Rpc, OversizedBodiesAreRefusedBothWays) {
  const std::string name = test::unique_name("large");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  std::error_code answered;
  ASSERT_FALSE(server->serve(
      [&answered](const Request&, Responder responder) {
        const std::vector<std::byte> big(2048);
        answered = responder.respond(big);  // above max_response_body: responder stays active
        (void)responder.respond(bytes("small"), 3);
      },
      1));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  const std::vector<std::byte> big(1025);
  EXPECT_EQ(client->call(1, big, in(kLong)).error(), errc::message_too_large);
  Result<Response> response = client->call(1, bytes("x"), in(kLong));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 3u);
  EXPECT_EQ(answered, errc::message_too_large);
  server->stop();  // joins the workers before the test's locals they use go away
}

// Many threads of one client, handlers completing in random order after random delays on a
// pool of completer threads: every call gets exactly its own response.
TEST(Rpc, ConcurrentCallsMatchTheirResponsesWithRandomCompletionOrder) {
  const std::string name = test::unique_name("match");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  std::mutex mutex;
  std::condition_variable ready;
  std::vector<std::pair<std::string, Responder>> queue;
  bool done = false;
  ASSERT_FALSE(server->serve(
      [&](const Request& request, Responder responder) {
        {
          const std::lock_guard lock(mutex);
          queue.emplace_back(text(request.body) + "/" + std::to_string(request.method),
                             std::move(responder));
        }
        ready.notify_one();
      },
      2));
  std::vector<std::thread> completers;
  for (int c = 0; c < 3; ++c) {
    completers.emplace_back([&, c] {
      std::minstd_rand random(static_cast<unsigned>(c + 1));
      std::unique_lock lock(mutex);
      for (;;) {
        ready.wait(lock, [&] { return done || !queue.empty(); });
        if (queue.empty()) return;
        const std::size_t pick = random() % queue.size();
        auto item = std::move(queue[pick]);
        queue.erase(queue.begin() + static_cast<std::ptrdiff_t>(pick));
        lock.unlock();
        std::this_thread::sleep_for(std::chrono::microseconds(random() % 200));
        EXPECT_FALSE(item.second.respond(bytes(item.first)));
        lock.lock();
      }
    });
  }
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  const long calls = xproc::test::scaled(200);
  std::vector<std::thread> callers;
  std::atomic<long> matched{0};
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      std::vector<PendingCall> window;
      std::vector<std::string> expected;
      for (long i = 0; i < calls; ++i) {
        const std::string body = std::to_string(t) + "." + std::to_string(i);
        const auto method = static_cast<std::uint32_t>(i % 5);
        window.push_back(client->async_call(method, bytes(body), in(kLong)));
        expected.push_back(body + "/" + std::to_string(method));
        if (window.size() == 8 || i + 1 == calls) {
          for (std::size_t k = 0; k < window.size(); ++k) {
            Result<Response> response = window[k].wait();
            ASSERT_TRUE(response) << response.error().message();
            EXPECT_EQ(text(response->body), expected[k]);
            matched.fetch_add(1);
          }
          window.clear();
          expected.clear();
        }
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  {
    const std::lock_guard lock(mutex);
    done = true;
  }
  ready.notify_all();
  for (std::thread& completer : completers) completer.join();
  EXPECT_EQ(matched.load(), 4 * calls);
  const ClientStatistics stats = client->statistics();
  EXPECT_EQ(stats.responses, static_cast<std::uint64_t>(4 * calls));
  EXPECT_EQ(stats.late_responses + stats.unknown_responses + stats.stale_responses, 0u);
  server->stop();  // joins the workers before the test's locals they use go away
}

// Leadership (decision 0054): a caller blocked in call() receives for every call while it waits,
// and hands the channel back to the receiver thread when it returns with calls still pending.
TEST(Rpc, CallsNobodyWaitsForCompleteWhileAndAfterAnotherCallerLeads) {
  const std::string name = test::unique_name("lead");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  Parked parked;
  ASSERT_FALSE(server->serve(parked.parks_method(1), 2));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  // A caller leads while its request is parked; an async call answered meanwhile completes.
  std::thread leader([&] {
    Result<Response> response = client->call(1, bytes("slow"), in(kLong));
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(text(response->body), "slow");
  });
  ASSERT_TRUE(eventually([&] { return parked.count() == 1; }));
  PendingCall during = client->async_call(2, bytes("fast"), in(kLong));
  EXPECT_TRUE(eventually([&] { return during.poll(); }));
  // A second request parked, then the leader answered and gone: the receiver takes over.
  PendingCall after = client->async_call(1, bytes("later"), in(kLong));
  ASSERT_TRUE(eventually([&] { return parked.count() == 2; }));
  EXPECT_FALSE(parked.release(0));
  leader.join();
  EXPECT_FALSE(parked.release(1));
  EXPECT_TRUE(eventually([&] { return after.poll(); }));
  Result<Response> fast = during.wait();
  ASSERT_TRUE(fast);
  EXPECT_EQ(text(fast->body), "2:fast");
  Result<Response> later = after.wait();
  ASSERT_TRUE(later);
  EXPECT_EQ(text(later->body), "later");
  EXPECT_EQ(client->statistics().responses, 3u);
  server->stop();  // joins the workers before the test's locals they use go away
}

TEST(Rpc, LateResponseIsDroppedAndCountedNeverDeliveredToALaterCall) {
  const std::string name = test::unique_name("late");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  Parked parked;
  ASSERT_FALSE(server->serve(parked.parks_method(1), 1));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  EXPECT_EQ(client->call(1, bytes("slow"), in(std::chrono::milliseconds(20))).error(),
            errc::timed_out);
  ASSERT_TRUE(eventually([&] { return parked.count() == 1; }));
  PendingCall later = client->async_call(2, bytes("fresh"), in(kLong));
  EXPECT_FALSE(parked.release(0));  // the late response reaches the client
  Result<Response> response = later.wait();
  ASSERT_TRUE(response);
  EXPECT_EQ(text(response->body), "2:fresh");
  ASSERT_TRUE(eventually([&] { return client->statistics().late_responses == 1; }));
  EXPECT_EQ(client->statistics().timed_out, 1u);
  server->stop();  // joins the workers before the test's locals they use go away
}

TEST(Rpc, CancelledCallCompletesAtOnceAndItsResponseIsDropped) {
  const std::string name = test::unique_name("cancel");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  Parked parked;
  ASSERT_FALSE(server->serve(parked.parks_all(), 1));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  PendingCall call = client->async_call(1, bytes("x"), in(kLong));
  EXPECT_EQ(call.wait_until(in(std::chrono::milliseconds(1))).error(), errc::timed_out);
  EXPECT_FALSE(call.poll());
  ASSERT_TRUE(eventually([&] { return parked.count() == 1; }));
  call.cancel();
  EXPECT_TRUE(call.poll());
  EXPECT_EQ(call.wait().error(), errc::cancelled);
  EXPECT_FALSE(parked.release(0));
  ASSERT_TRUE(eventually([&] { return client->statistics().late_responses == 1; }));
  EXPECT_EQ(client->statistics().cancelled, 1u);
  EXPECT_EQ(client->statistics().cancel_notices, 1u);
  // The server does not track cancellation here: the notice is counted and dropped.
  ASSERT_TRUE(eventually([&] { return server->statistics().cancels_ignored == 1; }));
  server->stop();  // joins the workers before the test's locals they use go away
}

TEST(Rpc, CancelNoticeReachesTheHandlerWhenTheServerTracksCancellation) {
  const std::string name = test::unique_name("cancel-notice");
  ServerOptions options = small_options();
  options.track_cancellation = true;
  Result<Server> server = Server::create(name, options);
  ASSERT_TRUE(server);
  Parked parked;
  ASSERT_FALSE(server->serve(
      [&parked](const Request& request, Responder responder) {
        EXPECT_FALSE(responder.cancelled());
        parked.park(request, std::move(responder));
      },
      1));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  PendingCall kept = client->async_call(1, bytes("kept"), in(kLong));
  PendingCall dropped = client->async_call(2, bytes("dropped"), in(kLong));
  ASSERT_TRUE(eventually([&] { return parked.count() == 2; }));
  dropped.cancel();
  EXPECT_EQ(dropped.wait().error(), errc::cancelled);
  ASSERT_TRUE(eventually([&] {
    const std::lock_guard lock(parked.mutex);
    return parked.held[1].second.cancelled();
  }));
  {
    const std::lock_guard lock(parked.mutex);
    EXPECT_FALSE(parked.held[0].second.cancelled());
  }
  EXPECT_EQ(server->statistics().cancels, 1u);
  EXPECT_FALSE(parked.release(0));
  EXPECT_EQ(text(kept.wait().value().body), "kept");
  kept.cancel();  // a completed call: nothing happens, no notice is sent
  EXPECT_EQ(client->statistics().cancel_notices, 1u);
  server->stop();  // joins the workers before the test's locals they use go away
}

// A handler holds the first request until every other one completed: call_many hands the
// others over first, each tagged with its index, and the held one last.
TEST(Rpc, CallManyHandsBackResponsesInCompletionOrder) {
  const std::string name = test::unique_name("many");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  Parked parked;
  ASSERT_FALSE(server->serve(
      [&parked](const Request& request, Responder responder) {
        if (text(request.body) == "0") {
          parked.park(request, std::move(responder));
        } else {
          echo(request, std::move(responder));
        }
      },
      2));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  constexpr std::size_t kCalls = 100;
  std::vector<std::string> bodies;
  for (std::size_t i = 0; i < kCalls; ++i) bodies.push_back(std::to_string(i));
  std::vector<CallSpec> specs;
  for (std::size_t i = 0; i < kCalls; ++i) specs.push_back({9, bytes(bodies[i])});
  std::vector<std::size_t> order;
  client->call_many(specs, in(kLong), [&](std::size_t index, Result<Response> outcome) {
    ASSERT_TRUE(outcome) << outcome.error().message();
    EXPECT_EQ(text(outcome->body), index == 0 ? "0" : "9:" + bodies[index]);
    order.push_back(index);
    if (order.size() == kCalls - 1) {
      ASSERT_EQ(parked.count(), 1u);
      EXPECT_FALSE(parked.release(0));
    }
  });
  ASSERT_EQ(order.size(), kCalls);
  EXPECT_EQ(order.back(), 0u);
  server->stop();  // joins the workers before the test's locals they use go away
}

TEST(Rpc, CallManyTimesOutWhatIsStillInFlight) {
  const std::string name = test::unique_name("many-late");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  Parked parked;
  ASSERT_FALSE(server->serve(parked.parks_method(1), 1));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  const std::vector<CallSpec> specs{{1, bytes("held")}, {2, bytes("quick")}};
  std::vector<std::pair<std::size_t, std::error_code>> seen;
  client->call_many(specs, in(std::chrono::milliseconds(50)),
                    [&](std::size_t index, Result<Response> outcome) {
                      seen.emplace_back(index, outcome.error());
                    });
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], std::make_pair(std::size_t{1}, std::error_code()));
  EXPECT_EQ(seen[1], std::make_pair(std::size_t{0}, std::error_code(errc::timed_out)));
  server->stop();  // joins the workers before the test's locals they use go away
}

// Raw frames written into the request channel (as a buggy or hostile client would) are dropped
// and counted by name; the server goes on serving.
TEST(Rpc, MalformedRequestFramesAreRejectedAndCounted) {
  const std::string name = test::unique_name("bad-requests");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  shm::Segment& segment = server->segment();
  const detail::Layout layout = detail::layout_for(server->config());
  Result<channel::Endpoint> raw = channel::Endpoint::open(
      segment.body().subspan(layout.request_offset, layout.request_size), &segment.self());
  ASSERT_TRUE(raw);
  const auto* slot =
      reinterpret_cast<const detail::ClientSlot*>(segment.body().data() + layout.slots_offset);
  const std::uint32_t generation = slot[client->slot()].generation.load();
  const auto send = [&](detail::RequestFrame frame, std::size_t extra, std::size_t cut = 0) {
    std::vector<std::byte> message(sizeof frame + extra);
    std::memcpy(message.data(), &frame, sizeof frame);
    message.resize(message.size() - cut);
    ASSERT_FALSE(raw->try_send(message));
  };
  detail::RequestFrame good{};
  good.version = detail::kFrameVersion;
  good.client_slot = client->slot();
  good.generation = generation;
  good.method = 1;
  good.correlation = 12345;
  good.body_length = 4;
  send(good, 4, sizeof good);  // shorter than a header: bad_length
  detail::RequestFrame frame = good;
  frame.version = 2;
  send(frame, 4);  // bad_version
  frame = good;
  frame.body_length = 5;
  send(frame, 4);  // bad_length
  frame = good;
  frame.flags = 1;
  send(frame, 4);  // bad_flags
  frame = good;
  frame.correlation = 0;
  send(frame, 4);  // bad_flags (correlation 0 is never issued)
  frame = good;
  frame.client_slot = 1000;
  send(frame, 4);  // bad_slot
  frame = good;
  frame.generation = generation + 1;
  send(frame, 4);  // stale
  frame = good;
  frame.client_slot = (client->slot() + 1) % 8;  // a free slot
  send(frame, 4);                                // stale
  int handled = 0;
  const auto count = [&handled](const Request&, Responder) { ++handled; };
  EXPECT_EQ(server->poll_one(count).value(), false);
  EXPECT_EQ(handled, 0);
  const ServerStatistics stats = server->statistics();
  EXPECT_EQ(stats.bad_length, 2u);
  EXPECT_EQ(stats.bad_version, 1u);
  EXPECT_EQ(stats.bad_flags, 2u);
  EXPECT_EQ(stats.bad_slot, 1u);
  EXPECT_EQ(stats.stale_requests, 2u);
  EXPECT_EQ(stats.requests, 0u);
  // A well-formed raw frame is served (its response, for a correlation id the client never
  // issued, is counted as unknown by the client).
  send(good, 4);
  EXPECT_EQ(server->poll_one(echo).value(), true);
  ASSERT_TRUE(eventually([&] { return client->statistics().unknown_responses == 1; }));
  PendingCall call = client->async_call(3, bytes("ok"), in(kLong));
  EXPECT_FALSE(server->serve_one(echo, in(kLong)));
  EXPECT_EQ(text(call.wait().value().body), "3:ok");
}

TEST(Rpc, MalformedResponseFramesAreRejectedAndCounted) {
  const std::string name = test::unique_name("bad-responses");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  shm::Segment& segment = server->segment();
  const detail::Layout layout = detail::layout_for(server->config());
  Result<channel::Endpoint> raw = channel::Endpoint::open(
      segment.body().subspan(layout.response_offset + client->slot() * layout.response_stride,
                             layout.response_size),
      &segment.self());
  ASSERT_TRUE(raw);
  const auto* slot =
      reinterpret_cast<const detail::ClientSlot*>(segment.body().data() + layout.slots_offset);
  detail::ResponseFrame good{};
  good.version = detail::kFrameVersion;
  good.correlation = 1;  // the call below
  good.generation = slot[client->slot()].generation.load();
  good.body_length = 0;
  PendingCall call = client->async_call(1, bytes("x"), in(kLong));  // correlation id 1
  const auto send = [&](detail::ResponseFrame frame, std::size_t extra) {
    std::vector<std::byte> message(sizeof frame + extra);
    std::memcpy(message.data(), &frame, sizeof frame);
    ASSERT_FALSE(raw->try_send(message));
  };
  ASSERT_FALSE(raw->try_send(std::vector<std::byte>(3)));  // short
  detail::ResponseFrame frame = good;
  frame.version = 9;
  send(frame, 0);  // bad version
  frame = good;
  frame.body_length = 7;
  send(frame, 0);  // bad length
  frame = good;
  frame.generation += 1;
  send(frame, 0);  // another generation
  frame = good;
  frame.correlation = 999;
  send(frame, 0);  // never issued
  ASSERT_TRUE(eventually([&] {
    const ClientStatistics stats = client->statistics();
    return stats.malformed_responses == 3 && stats.stale_responses == 1 &&
           stats.unknown_responses == 1;
  }));
  EXPECT_FALSE(call.poll());  // none of them completed the call
  EXPECT_FALSE(server->serve_one(echo, in(kLong)));
  EXPECT_EQ(text(call.wait().value().body), "1:x");
}

// Random bytes, some with a plausible header, into both directions: every message is either
// served (a well-formed request) or counted under one drop reason; nothing else happens.
TEST(Rpc, RandomFramesAreEachServedOrCountedOnce) {
  const std::string name = test::unique_name("random");
  Result<Server> server = Server::create(name, small_options());
  ASSERT_TRUE(server);
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  shm::Segment& segment = server->segment();
  const detail::Layout layout = detail::layout_for(server->config());
  Result<channel::Endpoint> requests = channel::Endpoint::open(
      segment.body().subspan(layout.request_offset, layout.request_size), &segment.self());
  Result<channel::Endpoint> responses = channel::Endpoint::open(
      segment.body().subspan(layout.response_offset + client->slot() * layout.response_stride,
                             layout.response_size),
      &segment.self());
  ASSERT_TRUE(requests);
  ASSERT_TRUE(responses);
  const auto* slots =
      reinterpret_cast<const detail::ClientSlot*>(segment.body().data() + layout.slots_offset);
  const std::uint32_t generation = slots[client->slot()].generation.load();
  std::minstd_rand random(7);
  const auto random_message = [&random, generation, &client](bool request) {
    std::vector<std::byte> message(1 + random() % 64);
    for (std::byte& b : message) b = static_cast<std::byte>(random());
    if (random() % 4 != 0 && message.size() >= 32) {  // a plausible header, fields often right
      const std::uint16_t version = random() % 4 == 0 ? 2 : detail::kFrameVersion;
      std::memcpy(message.data(), &version, 2);
      if (random() % 4 != 0) std::memset(message.data() + 2, 0, 2);  // flags 0
      const std::uint32_t body =
          static_cast<std::uint32_t>(message.size() - (request ? sizeof(detail::RequestFrame)
                                                               : sizeof(detail::ResponseFrame)));
      if (request) {
        const std::uint32_t slot = random() % 4 != 0 ? client->slot() : random() % 16;
        std::memcpy(message.data() + 4, &slot, 4);
        if (random() % 4 != 0) std::memcpy(message.data() + 8, &generation, 4);
        if (random() % 4 != 0) std::memcpy(message.data() + 24, &body, 4);
        if (random() % 4 != 0) std::memset(message.data() + 28, 0, 4);
      } else {
        if (random() % 4 != 0) std::memcpy(message.data() + 16, &generation, 4);
        if (random() % 4 != 0) std::memcpy(message.data() + 20, &body, 4);
      }
    }
    return message;
  };
  const long rounds = xproc::test::scaled(400);
  long served = 0;
  for (long i = 0; i < rounds; ++i) {
    ASSERT_FALSE(requests->send(random_message(true)));
    Result<bool> handled = server->poll_one([&served](const Request&, Responder responder) {
      ++served;
      responder = Responder();  // answers kStatusAbandoned: an unknown id for the client
    });
    ASSERT_TRUE(handled);
    ASSERT_FALSE(responses->send(random_message(false)));
  }
  const ServerStatistics s = server->statistics();
  EXPECT_GT(served, 0);  // the generator makes well-formed requests too
  EXPECT_GT(s.bad_slot + s.stale_requests, 0u);
  EXPECT_EQ(s.requests, static_cast<std::uint64_t>(served));
  EXPECT_EQ(s.requests + s.bad_version + s.bad_length + s.bad_flags + s.bad_slot +
                s.stale_requests + s.cancels + s.cancels_ignored,
            static_cast<std::uint64_t>(rounds));
  ASSERT_TRUE(eventually([&] {
    const ClientStatistics c = client->statistics();
    return c.malformed_responses + c.stale_responses + c.unknown_responses + c.late_responses ==
           static_cast<std::uint64_t>(rounds + served);
  }));
  EXPECT_EQ(client->statistics().responses, 0u);
  PendingCall call = client->async_call(3, bytes("still"), in(kLong));
  EXPECT_FALSE(server->serve_one(echo, in(kLong)));
  EXPECT_EQ(text(call.wait().value().body), "3:still");
}

TEST(Rpc, CallsFailWithPeerDeadWhenTheServerLeavesAndSucceedAfterARestart) {
  const std::string name = test::unique_name("restart");
  std::optional<Server> server;
  {
    Result<Server> created = Server::create(name, small_options());
    ASSERT_TRUE(created);
    server.emplace(std::move(*created));
  }
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  Parked parked;
  ASSERT_FALSE(server->serve(parked.parks_all(), 1));
  PendingCall in_flight = client->async_call(1, bytes("x"), in(kLong));
  ASSERT_TRUE(eventually([&] { return parked.count() == 1; }));
  server.reset();  // withdraws the server word: no server
  EXPECT_EQ(in_flight.wait().error(), errc::peer_dead);
  EXPECT_EQ(client->call(1, bytes("y"), in(kLong)).error(), errc::peer_dead);
  Result<Server> restarted = Server::create(name, small_options());
  ASSERT_TRUE(restarted) << restarted.error().message();
  EXPECT_EQ(restarted->epoch(), 2u);
  ASSERT_FALSE(restarted->serve(echo, 1));
  Result<Response> response = client->call(2, bytes("z"), in(kLong));
  ASSERT_TRUE(response) << response.error().message();
  EXPECT_EQ(text(response->body), "2:z");
  parked.held.clear();  // the old server's responders: their responses are dropped as late
}

TEST(Rpc, CallManyEndsWithPeerDeadWhenTheServerGoes) {
  const std::string name = test::unique_name("many-dead");
  Parked parked;
  std::optional<Server> server;
  server.emplace(std::move(Server::create(name, small_options()).value()));
  ASSERT_FALSE(server->serve(parked.parks_all(), 1));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  const std::vector<CallSpec> specs{{1, bytes("a")}, {2, bytes("b")}, {3, bytes("c")}};
  std::thread shutdown([&] {
    ASSERT_TRUE(eventually([&] { return parked.count() == specs.size(); }));
    server.reset();  // joins the worker, withdraws the server word
  });
  std::vector<std::error_code> seen;
  client->call_many(specs, sync::Deadline::max(), [&](std::size_t, Result<Response> outcome) {
    seen.push_back(outcome.error());
  });
  shutdown.join();
  EXPECT_EQ(seen, std::vector<std::error_code>(specs.size(), make_error_code(errc::peer_dead)));
}

TEST(Rpc, EverySlotTakenIsLimitReachedUntilAClientLeaves) {
  const std::string name = test::unique_name("slots");
  Result<Server> server = Server::create(name, small_options(2));
  ASSERT_TRUE(server);
  ASSERT_FALSE(server->serve(echo, 1));
  std::optional<Client> first;
  first.emplace(std::move(Client::connect(name).value()));
  Result<Client> second = Client::connect(name);
  ASSERT_TRUE(second);
  EXPECT_EQ(Client::connect(name).error(), errc::limit_reached);
  const std::uint32_t freed = first->slot();
  first.reset();
  Result<Client> third = Client::connect(name);
  ASSERT_TRUE(third);
  EXPECT_EQ(third->slot(), freed);
  EXPECT_EQ(text(third->call(4, bytes("again"), in(kLong)).value().body), "4:again");
}

TEST(RpcLayout, ConfigsOutOfRangeAreRefused) {
  ServerConfig config;
  EXPECT_TRUE(detail::layout_for(config).valid);
  config.max_clients = 0;
  EXPECT_FALSE(detail::layout_for(config).valid);
  config = {};
  config.request_capacity = 1000;  // not a power of two
  EXPECT_FALSE(detail::layout_for(config).valid);
  config = {};
  config.max_response_body = config.response_capacity;  // a response cannot fit the ring
  EXPECT_FALSE(detail::layout_for(config).valid);
  EXPECT_EQ(Server::create(test::unique_name("bad"), ServerOptions{config, {}, {}, {}}).error(),
            errc::invalid_argument);
}

}  // namespace
}  // namespace xproc::rpc
