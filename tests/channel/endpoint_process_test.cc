// Channel between processes (fork on MAP_SHARED memory, a participant table on a memfd):
// P producer and C consumer processes, some with several threads; every message is checked
// (per-producer sequence, payload checksum) and delivered exactly once.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "channel_test_support.h"
#include "child_process.h"
#include "shared_object.h"
#include "xproc/channel/endpoint.h"
#include "xproc/sys/error.h"

namespace xproc::channel {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kMaxProducers = 8;
constexpr std::uint32_t kMaxPerProducer = 40000;

struct Shared {
  std::array<std::array<std::atomic<std::uint8_t>, kMaxPerProducer>, kMaxProducers> seen;
  std::atomic<std::uint64_t> received;
  std::atomic<std::uint32_t> bad;
};

// `producer_processes` x `threads` producers, `consumer_processes` x `threads` consumers.
void run(const ChannelConfig& config, std::uint32_t producer_processes,
         std::uint32_t consumer_processes, std::uint32_t threads) {
  test::Registry registry;
  test::SharedRegion region(config);
  xproc::test::SharedObject<Shared> shared;
  const std::uint32_t producers = producer_processes * threads;
  ASSERT_LE(producers, kMaxProducers);
  const auto per_producer = static_cast<std::uint32_t>(
      std::min<long>(kMaxPerProducer, xproc::test::scaled(kMaxPerProducer / 4)));
  const std::uint64_t expected = std::uint64_t{per_producer} * producers;
  std::vector<xproc::test::Child> children;
  for (std::uint32_t process = 0; process < producer_processes; ++process) {
    children.push_back(xproc::test::Child::start([&, process]() -> int {
      sync::Participant self = registry.attach().value();
      Endpoint endpoint = Endpoint::open(region.bytes(), &self).value();
      std::vector<std::thread> workers;
      std::atomic<int> failures{0};
      for (std::uint32_t t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
          const std::uint32_t producer = process * threads + t;
          for (std::uint32_t s = 0; s < per_producer; ++s) {
            std::vector<std::byte> m =
                test::make_message(producer, s, test::message_size(producer, s, 200));
            if (endpoint.send_for(m, 30s)) ++failures;
          }
        });
      }
      for (std::thread& w : workers) w.join();
      return failures.load() == 0 ? 0 : 1;
    }));
  }
  for (std::uint32_t process = 0; process < consumer_processes; ++process) {
    children.push_back(xproc::test::Child::start([&]() -> int {
      sync::Participant self = registry.attach().value();
      Endpoint endpoint = Endpoint::open(region.bytes(), &self).value();
      std::vector<std::thread> workers;
      for (std::uint32_t t = 0; t < threads; ++t) {
        workers.emplace_back([&] {
          std::array<std::uint32_t, kMaxProducers> next{};
          std::vector<std::byte> out;
          while (shared->received.load() < expected) {
            std::error_code error = endpoint.receive_until(out, sync::Clock::now() + 10ms);
            if (error == make_error_code(errc::timed_out)) continue;
            test::Decoded d = test::check_message(out);
            if (error || !d.ok || d.producer >= producers || d.sequence >= per_producer ||
                d.sequence < next[d.producer] ||
                shared->seen[d.producer][d.sequence].exchange(1) != 0) {
              shared->bad.fetch_add(1);
              continue;
            }
            next[d.producer] = d.sequence + 1;
            shared->received.fetch_add(1);
          }
        });
      }
      for (std::thread& w : workers) w.join();
      return 0;
    }));
  }
  for (xproc::test::Child& child : children) EXPECT_TRUE(child.wait(60s).ok());
  EXPECT_EQ(shared->bad.load(), 0u);
  EXPECT_EQ(shared->received.load(), expected);
  for (std::uint32_t p = 0; p < producers; ++p) {
    for (std::uint32_t s = 0; s < per_producer; ++s) {
      ASSERT_EQ(shared->seen[p][s].load(), 1u) << p << " " << s;
    }
  }
  Endpoint observer = Endpoint::open(region.bytes()).value();
  Statistics stats = observer.statistics();
  EXPECT_EQ(stats.reserved_total, expected);
  EXPECT_EQ(stats.claimed_total, expected);
  EXPECT_EQ(stats.depth_bytes, 0u);
  EXPECT_EQ(stats.producer_died + stats.consumer_died + stats.lock_takeovers, 0u);
}

TEST(ChannelProcess, TwoProducerAndTwoConsumerProcessesDeliverEachMessageExactlyOnce) {
  run(test::small_config(16384, 256), 2, 2, 1);
}

TEST(ChannelProcess, ThreadsInSeveralProcessesDeliverEachMessageExactlyOnce) {
  run(test::small_config(16384, 256), 2, 2, 2);
}

TEST(ChannelProcess, SpscAcrossProcessesDeliversEveryMessageInOrder) {
  ChannelConfig config = test::small_config(4096, 256);
  config.spsc = true;
  run(config, 1, 1, 1);
}

}  // namespace
}  // namespace xproc::channel
