// Large rpc bodies through the bulk layer (ServerConfig::bulk_threshold, decision 0055), in one
// process: byte-exact bodies both ways around the threshold and up to 16 MiB, concurrent large
// calls, an async_call whose caller frees its buffer at once, call_many, forged and oversized
// bulk frames in both directions (rejected, counted, the call gets a named error), a bulk
// request withdrawn by a client that timed out, config validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "child_process.h"
#include "eventually.h"
#include "rpc_test_support.h"
#include "xproc/bulk/transfer.h"
#include "xproc/c/rpc.h"
#include "xproc/channel/endpoint.h"
#include "xproc/rpc/layout.h"
#include "xproc/sys/error.h"

namespace xproc::rpc {
namespace {

using test::in;
using test::kLong;
using xproc::test::eventually;

constexpr std::uint32_t kInline = 4096;     // max_request_body = max_response_body
constexpr std::uint32_t kThreshold = 1024;  // bulk above this
constexpr std::uint32_t kMaxBulk = 32u << 20;

ServerOptions bulk_options(std::uint32_t max_clients = 4) {
  ServerOptions options = test::small_options(max_clients);
  options.config.request_capacity = 1u << 16;
  options.config.response_capacity = 1u << 15;
  options.config.max_request_body = kInline;
  options.config.max_response_body = kInline;
  options.config.bulk_threshold = kThreshold;
  options.config.max_bulk_body = kMaxBulk;
  return options;
}

std::vector<std::byte> pattern(std::size_t size, unsigned seed) {
  std::vector<std::byte> bytes(size);
  std::uint32_t x = seed * 2654435761u + 1;
  for (std::byte& b : bytes) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::byte>(x >> 24);
  }
  return bytes;
}

// Responds with the request's body, reversed (so a response is never the request by accident).
void reverse_echo(const Request& request, Responder responder) {
  std::vector<std::byte> reply(request.body.rbegin(), request.body.rend());
  (void)responder.respond(reply, request.method);
}

std::vector<std::byte> reversed(const std::vector<std::byte>& bytes) {
  return {bytes.rbegin(), bytes.rend()};
}

// Raw access to a segment's channels and slots, to forge frames as a hostile peer would.
struct Raw {
  std::unique_ptr<shm::Segment> segment;
  detail::Layout layout;
  channel::Endpoint requests;

  explicit Raw(const std::string& name) {
    Result<shm::Segment> opened = shm::Segment::open(name, shm::SegmentKind::rpc);
    EXPECT_TRUE(opened);
    segment = std::make_unique<shm::Segment>(std::move(*opened));
    layout = detail::layout_for(bulk_options().config);
    Result<channel::Endpoint> endpoint = channel::Endpoint::open(
        segment->body().subspan(layout.request_offset, layout.request_size), &segment->self());
    EXPECT_TRUE(endpoint);
    requests = *endpoint;
  }
  std::uint32_t generation(std::uint32_t slot) const {
    const auto* slots =
        reinterpret_cast<const detail::ClientSlot*>(segment->body().data() + layout.slots_offset);
    return slots[slot].generation.load();
  }
  channel::Endpoint responses(std::uint32_t slot) const {
    Result<channel::Endpoint> endpoint = channel::Endpoint::open(
        segment->body().subspan(layout.response_offset + slot * layout.response_stride,
                                layout.response_size),
        &segment->self());
    EXPECT_TRUE(endpoint);
    return *endpoint;
  }
  void send_request(std::uint32_t slot, std::uint64_t correlation,
                    std::span<const std::byte> body) const {
    detail::RequestFrame frame{};
    frame.version = detail::kFrameVersion;
    frame.flags = detail::kFlagBulk;
    frame.client_slot = slot;
    frame.generation = generation(slot);
    frame.method = 7;
    frame.correlation = correlation;
    frame.body_length = static_cast<std::uint32_t>(body.size());
    std::array<std::byte, 256> message{};  // the forged bodies are a few dozen bytes
    ASSERT_LE(sizeof frame + body.size(), message.size());
    std::memcpy(message.data(), &frame, sizeof frame);
    std::copy(body.begin(), body.end(), message.begin() + sizeof frame);
    EXPECT_FALSE(requests.try_send(std::span(message).first(sizeof frame + body.size())));
  }
  void send_response(std::uint32_t slot, std::uint64_t correlation,
                     std::span<const std::byte> body) const {
    detail::ResponseFrame frame{};
    frame.version = detail::kFrameVersion;
    frame.flags = detail::kResponseBulk;
    frame.correlation = correlation;
    frame.generation = generation(slot);
    frame.body_length = static_cast<std::uint32_t>(body.size());
    std::array<std::byte, 256> message{};
    ASSERT_LE(sizeof frame + body.size(), message.size());
    std::memcpy(message.data(), &frame, sizeof frame);
    std::copy(body.begin(), body.end(), message.begin() + sizeof frame);
    EXPECT_FALSE(responses(slot).try_send(std::span(message).first(sizeof frame + body.size())));
  }
};

std::vector<std::byte> descriptor_bytes(const bulk::TransferDescriptor& descriptor) {
  std::vector<std::byte> bytes(sizeof descriptor);
  std::memcpy(bytes.data(), &descriptor, sizeof descriptor);
  return bytes;
}

TEST(RpcBulk, BodiesAreByteExactBothWaysAroundTheThresholdAndUpTo16MiB) {
  const std::string name = test::unique_name("bulk-exact");
  Result<Server> server = Server::create(name, bulk_options());
  ASSERT_TRUE(server) << server.error().message();
  ASSERT_FALSE(server->serve(reverse_echo, 2));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client) << client.error().message();
  EXPECT_EQ(client->config().bulk_threshold, kThreshold);
  EXPECT_EQ(client->config().max_bulk_body, kMaxBulk);
  const std::size_t sizes[] = {kThreshold - 1, kThreshold, kThreshold + 1, kInline,
                               kInline + 1,    1u << 20,   16u << 20};
  std::uint64_t large = 0;
  unsigned seed = 1;
  for (const std::size_t size : sizes) {
    const std::vector<std::byte> body = pattern(size, seed++);
    Result<Response> response = client->call(3, body, in(kLong));
    ASSERT_TRUE(response) << size << ": " << response.error().message();
    EXPECT_EQ(response->status, 3u);
    EXPECT_TRUE(response->body == reversed(body)) << size;
    if (size > kThreshold) ++large;
  }
  EXPECT_EQ(client->statistics().bulk_requests, large);
  EXPECT_EQ(client->statistics().bulk_responses, large);
  EXPECT_EQ(client->statistics().bulk_fallbacks, 0u);
  EXPECT_EQ(server->statistics().bulk_requests, large);
  EXPECT_TRUE(eventually([&] { return server->statistics().bulk_responses == large; }));
  EXPECT_EQ(server->statistics().bulk_rejected, 0u);
  // Above max_bulk_body: refused before anything is sent, on both sides.
  const std::vector<std::byte> too_large(kMaxBulk + 1);
  EXPECT_EQ(client->call(1, too_large, in(kLong)).error(), errc::message_too_large);
}

TEST(RpcBulk, ConcurrentLargeCallsFromSeveralThreadsEachGetTheirOwnBody) {
  const std::string name = test::unique_name("bulk-threads");
  Result<Server> server = Server::create(name, bulk_options());
  ASSERT_TRUE(server);
  ASSERT_FALSE(server->serve(reverse_echo, 3));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  constexpr int kThreads = 4;
  const long calls = xproc::test::scaled(16);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (long i = 0; i < calls; ++i) {
        const std::size_t size =
            (64u << 10) + static_cast<std::size_t>(t) * 4099 + static_cast<std::size_t>(i);
        const std::vector<std::byte> body = pattern(size, static_cast<unsigned>(t * 1000 + i));
        Result<Response> response = client->call(static_cast<std::uint32_t>(t), body, in(kLong));
        if (!response || response->body != reversed(body)) failures.fetch_add(1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(client->statistics().bulk_requests, static_cast<std::uint64_t>(kThreads * calls));
  // The server counts a response once it sees the client's pull complete (just after the call).
  EXPECT_TRUE(eventually([&] {
    return server->statistics().bulk_responses == static_cast<std::uint64_t>(kThreads * calls);
  }));
}

TEST(RpcBulk, AsyncCallOwnsItsBodySoTheCallerMayFreeItsBufferAtOnce) {
  const std::string name = test::unique_name("bulk-async");
  Result<Server> server = Server::create(name, bulk_options());
  ASSERT_TRUE(server);
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  const std::vector<std::byte> expected = pattern(1u << 20, 9);
  std::vector<PendingCall> calls;
  for (int i = 0; i < 3; ++i) {
    auto buffer = std::make_unique<std::vector<std::byte>>(expected);
    calls.push_back(client->async_call(5, *buffer, in(kLong)));
    std::fill(buffer->begin(), buffer->end(), std::byte{0x5a});  // scribble, then free
    buffer.reset();
  }
  // The server reads only now, long after the buffers went.
  ASSERT_FALSE(server->serve(reverse_echo, 2));
  for (PendingCall& call : calls) {
    Result<Response> response = call.wait();
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_TRUE(response->body == reversed(expected));
  }
  EXPECT_EQ(server->statistics().bulk_requests, 3u);
}

TEST(RpcBulk, CallManyMixesInlineAndBulkBodies) {
  const std::string name = test::unique_name("bulk-many");
  Result<Server> server = Server::create(name, bulk_options());
  ASSERT_TRUE(server);
  ASSERT_FALSE(server->serve(reverse_echo, 2));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  std::vector<std::vector<std::byte>> bodies;
  for (unsigned i = 0; i < 8; ++i) bodies.push_back(pattern(i % 2 == 0 ? 100 : 300000 + i, i));
  std::vector<CallSpec> specs;
  for (unsigned i = 0; i < bodies.size(); ++i) specs.push_back({i, bodies[i]});
  std::vector<int> seen(bodies.size(), 0);
  client->call_many(specs, in(kLong), [&](std::size_t index, Result<Response> outcome) {
    ASSERT_TRUE(outcome) << outcome.error().message();
    EXPECT_TRUE(outcome->body == reversed(bodies[index]));
    ++seen[index];
  });
  for (const int count : seen) EXPECT_EQ(count, 1);
  EXPECT_EQ(client->statistics().bulk_requests, 4u);
}

TEST(RpcBulk, ResponderRefusesBodiesAboveMaxBulkBodyAndStaysActive) {
  const std::string name = test::unique_name("bulk-respond-large");
  Result<Server> server = Server::create(name, bulk_options());
  ASSERT_TRUE(server);
  ASSERT_FALSE(server->serve(
      [](const Request&, Responder responder) {
        const std::vector<std::byte> huge(kMaxBulk + 1);
        EXPECT_EQ(responder.respond(huge), errc::message_too_large);
        EXPECT_TRUE(responder.active());
        EXPECT_FALSE(responder.respond(pattern(kThreshold + 1, 3)));
      },
      1));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  Result<Response> response = client->call(1, test::bytes("x"), in(kLong));
  ASSERT_TRUE(response);
  EXPECT_TRUE(response->body == pattern(kThreshold + 1, 3));
}

// Bulk request frames a hostile client writes with a valid slot and generation: each is
// rejected and counted, answered with an error frame (the client counts it unknown), and never
// reaches the handler; a forged descriptor carrying a real call's correlation id fails that call
// with bad_descriptor; another member's real transfer is not claimed.
TEST(RpcBulk, ForgedAndOversizedBulkRequestFramesAreRejectedAndCounted) {
  const std::string name = test::unique_name("bulk-forged-request");
  Result<Server> server = Server::create(name, bulk_options());
  ASSERT_TRUE(server);
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  const Raw raw(name);
  const std::uint32_t slot = client->slot();
  std::atomic<int> handled{0};
  const Server::Handler handler = [&handled](const Request& request, Responder responder) {
    handled.fetch_add(1);
    reverse_echo(request, std::move(responder));
  };
  // A real registration of ours gives a descriptor of this table to forge from.
  Result<shm::Segment> bulk_segment =
      shm::Segment::open(name + detail::kBulkSuffix, shm::SegmentKind::raw);
  ASSERT_TRUE(bulk_segment);
  Result<bulk::TransferEndpoint> endpoint = bulk::TransferEndpoint::open(*bulk_segment);
  ASSERT_TRUE(endpoint);
  const std::vector<std::byte> source = pattern(kThreshold + 100, 4);
  Result<bulk::Transfer> transfer = endpoint->register_source(source);
  ASSERT_TRUE(transfer);

  // 1. A body of the wrong size for a descriptor.
  raw.send_request(slot, 1001, std::vector<std::byte>(31));
  // 2. A length above max_bulk_body.
  bulk::TransferDescriptor descriptor = transfer->descriptor();
  descriptor.total_length = std::uint64_t{kMaxBulk} + 1;
  raw.send_request(slot, 1002, descriptor_bytes(descriptor));
  // 3. A length at the threshold (it would have gone inline).
  descriptor.total_length = kThreshold;
  raw.send_request(slot, 1003, descriptor_bytes(descriptor));
  // 4. Another table's tag, with the correlation id the client's next call will get (1).
  descriptor = transfer->descriptor();
  descriptor.table_tag ^= 0x5a5a5a5au;
  raw.send_request(slot, 1, descriptor_bytes(descriptor));
  // 5. A real, open transfer of another member (not the requesting client's): refused without
  // claiming it.
  raw.send_request(slot, 1004, descriptor_bytes(transfer->descriptor()));
  PendingCall victim = client->async_call(2, pattern(kThreshold + 1, 5), in(kLong));
  for (int i = 0; i < 5; ++i) {
    Result<bool> took = server->poll_one(handler);
    ASSERT_TRUE(took);
  }
  EXPECT_EQ(handled.load(), 1);  // only the victim's own request, after its call failed
  EXPECT_EQ(victim.wait().error(), errc::bad_descriptor);
  const ServerStatistics stats = server->statistics();
  EXPECT_EQ(stats.bulk_rejected, 5u);
  EXPECT_EQ(stats.bulk_requests, 1u);
  EXPECT_EQ(stats.requests, 1u);
  // Four error frames for ids the client never issued; the victim's real response came late.
  EXPECT_TRUE(eventually([&] {
    return client->statistics().unknown_responses == 4 && client->statistics().late_responses == 1;
  }));
  // The forged-from registration was never claimed by anyone.
  EXPECT_EQ(transfer->poll(), errc::would_block);
}

// Bulk response frames a hostile peer writes for a real call: wrong size, length out of range,
// forged descriptor, another member's real transfer: each fails that call with a named error
// and is counted; the real transfer is never claimed.
TEST(RpcBulk, ForgedBulkResponseFramesFailTheCallWithANamedError) {
  const std::string name = test::unique_name("bulk-forged-response");
  Result<Server> server = Server::create(name, bulk_options());
  ASSERT_TRUE(server);
  const Raw raw(name);
  Result<shm::Segment> bulk_segment =
      shm::Segment::open(name + detail::kBulkSuffix, shm::SegmentKind::raw);
  ASSERT_TRUE(bulk_segment);
  Result<bulk::TransferEndpoint> endpoint = bulk::TransferEndpoint::open(*bulk_segment);
  ASSERT_TRUE(endpoint);
  const std::vector<std::byte> source = pattern(kThreshold + 100, 6);
  Result<bulk::Transfer> transfer = endpoint->register_source(source);
  ASSERT_TRUE(transfer);
  std::atomic<int> forgery{0};
  std::vector<Responder> parked;
  std::mutex mutex;
  ASSERT_FALSE(server->serve(
      [&](const Request& request, Responder responder) {
        bulk::TransferDescriptor descriptor = transfer->descriptor();
        std::vector<std::byte> body;
        switch (forgery.fetch_add(1)) {
          case 0:
            body.resize(40);  // not a descriptor's size
            break;
          case 1:
            descriptor.total_length = std::uint64_t{kMaxBulk} + 1;
            body = descriptor_bytes(descriptor);
            break;
          case 2:
            descriptor.generation ^= 1;  // another generation of the slot: forged
            body = descriptor_bytes(descriptor);
            break;
          default:
            body = descriptor_bytes(descriptor);  // real and open, but not the server's
            break;
        }
        raw.send_response(request.client_slot, request.correlation_id, body);
        const std::lock_guard lock(mutex);
        parked.push_back(std::move(responder));  // its abandon later comes late
      },
      1));
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  EXPECT_EQ(client->call(1, test::bytes("a"), in(kLong)).error(), errc::bad_descriptor);
  EXPECT_EQ(client->call(1, test::bytes("b"), in(kLong)).error(), errc::message_too_large);
  EXPECT_EQ(client->call(1, test::bytes("c"), in(kLong)).error(), errc::bad_descriptor);
  EXPECT_EQ(client->call(1, test::bytes("d"), in(kLong)).error(), errc::bad_descriptor);
  EXPECT_EQ(client->statistics().bulk_rejected, 4u);
  EXPECT_EQ(client->statistics().bulk_responses, 0u);
  EXPECT_EQ(transfer->poll(), errc::would_block);  // nobody claimed the real registration
  server->stop();
}

// A client whose call timed out before the server read its bulk request withdraws the
// transfer; the server's later pull finds it gone (not_found): dropped, counted, answered late.
TEST(RpcBulk, ABulkRequestWithdrawnByAClientThatGaveUpIsDroppedAndCounted) {
  const std::string name = test::unique_name("bulk-withdrawn");
  Result<Server> server = Server::create(name, bulk_options());
  ASSERT_TRUE(server);
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  const std::vector<std::byte> body = pattern(kThreshold + 1, 7);
  EXPECT_EQ(client->call(1, body, in(std::chrono::milliseconds(5))).error(), errc::timed_out);
  std::atomic<int> handled{0};
  Result<bool> took =
      server->poll_one([&handled](const Request&, Responder) { handled.fetch_add(1); });
  ASSERT_TRUE(took);
  EXPECT_FALSE(*took);  // the one request was dropped on the way
  EXPECT_EQ(handled.load(), 0);
  EXPECT_EQ(server->statistics().bulk_rejected, 1u);
  EXPECT_TRUE(eventually([&] { return client->statistics().late_responses == 1; }));
  // The client goes on.
  ASSERT_FALSE(server->serve(reverse_echo, 1));
  Result<Response> response = client->call(1, body, in(kLong));
  ASSERT_TRUE(response);
  EXPECT_TRUE(response->body == reversed(body));
}

// The C API works unchanged with bulk bodies: a blocking call and an async call whose caller
// frees its buffer at once, 1 MiB each way; above max_bulk_body: EMSGSIZE.
TEST(RpcBulk, TheCApiCarriesBulkBodiesUnchanged) {
  const std::string name = test::unique_name("bulk-c");
  Result<Server> server = Server::create(name, bulk_options());
  ASSERT_TRUE(server);
  ASSERT_FALSE(server->serve(reverse_echo, 2));
  xproc_rpc_client_t* client = nullptr;
  ASSERT_EQ(xproc_rpc_connect(name.c_str(), &client), 0);
  const std::vector<std::byte> body = pattern(1u << 20, 11);
  xproc_rpc_response_t response;
  ASSERT_EQ(xproc_rpc_call(client, 4, body.data(), body.size(), nullptr, &response), 0);
  EXPECT_EQ(response.status, 4u);
  ASSERT_EQ(response.size, body.size());
  const std::vector<std::byte> expected = reversed(body);
  EXPECT_EQ(std::memcmp(response.body, expected.data(), expected.size()), 0);
  xproc_rpc_response_free(&response);
  auto buffer = std::make_unique<std::vector<std::byte>>(body);
  xproc_rpc_call_t* call = nullptr;
  ASSERT_EQ(xproc_rpc_call_async(client, 5, buffer->data(), buffer->size(), nullptr, &call), 0);
  std::fill(buffer->begin(), buffer->end(), std::byte{0});
  buffer.reset();
  ASSERT_EQ(xproc_rpc_call_wait(call, nullptr, &response), 0);
  ASSERT_EQ(response.size, body.size());
  EXPECT_EQ(std::memcmp(response.body, expected.data(), expected.size()), 0);
  xproc_rpc_response_free(&response);
  xproc_rpc_call_free(call);
  const std::vector<std::byte> too_large(kMaxBulk + 1);
  EXPECT_EQ(xproc_rpc_call(client, 1, too_large.data(), too_large.size(), nullptr, &response),
            EMSGSIZE);
  EXPECT_EQ(xproc_rpc_close(client), 0);
}

TEST(RpcBulk, BulkConfigIsValidated) {
  const auto refused = [](auto change) {
    ServerOptions options = bulk_options();
    change(options.config);
    return Server::create(test::unique_name("bulk-config"), options).error() ==
           errc::invalid_argument;
  };
  EXPECT_TRUE(refused([](ServerConfig& c) { c.bulk_threshold = 16; }));  // below a descriptor
  EXPECT_TRUE(refused([](ServerConfig& c) { c.bulk_threshold = kInline + 1; }));
  EXPECT_TRUE(refused([](ServerConfig& c) { c.max_bulk_body = kInline - 1; }));
  EXPECT_TRUE(refused([](ServerConfig& c) { c.max_bulk_body = kMaxBulkBody + 1; }));
  EXPECT_TRUE(refused([](ServerConfig& c) {
    c.bulk_threshold = 0;  // off, but a maximum given
  }));
  // Off: a bulk-flagged frame is malformed (bad_flags) and no companion segment exists.
  const std::string name = test::unique_name("bulk-off");
  ServerOptions options = bulk_options();
  options.config.bulk_threshold = 0;
  options.config.max_bulk_body = 0;
  Result<Server> server = Server::create(name, options);
  ASSERT_TRUE(server);
  EXPECT_EQ(shm::Segment::open(name + detail::kBulkSuffix, shm::SegmentKind::raw).error(),
            errc::not_found);
  Result<Client> client = Client::connect(name);
  ASSERT_TRUE(client);
  const Raw raw(name);
  raw.send_request(client->slot(), 1, std::vector<std::byte>(32));
  Result<bool> took = server->poll_one([](const Request&, Responder) {});
  ASSERT_TRUE(took);
  EXPECT_FALSE(*took);
  EXPECT_EQ(server->statistics().bad_flags, 1u);
  EXPECT_EQ(client->call(1, std::vector<std::byte>(kInline + 1), in(kLong)).error(),
            errc::message_too_large);
}

}  // namespace
}  // namespace xproc::rpc
