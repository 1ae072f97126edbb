// LoanChannel across processes: several producer and consumer processes (fork; each adopts the
// memfd segment), payloads of 1 B up to 4 MiB checked byte for byte, each delivered exactly
// once; every buffer back in the pool at the end.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include "child_process.h"
#include "pool_test_support.h"
#include "shared_object.h"
#include "xproc/bulk/loan_channel.h"
#include "xproc/sys/error.h"

namespace xproc::bulk {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kMaxMessages = 4096;
constexpr std::size_t kLarge = 4u << 20;

struct Tally {
  std::atomic<std::uint32_t> seen[kMaxMessages];
  std::atomic<std::uint32_t> received;
  std::atomic<std::uint32_t> bad;
  std::atomic<std::uint32_t> producers_started;  // producers that have sent their first message
};

LoanChannelConfig mixed_config() {
  LoanChannelConfig config;
  config.channel.capacity_bytes = 2048;
  config.pool.classes = {{256, 8}, {65536, 8}, {kLarge, 3}};
  return config;
}

std::size_t size_for(std::uint32_t producer, std::uint32_t sequence) {
  if (sequence % 17 == 5) return kLarge - producer;  // a few MiB-sized payloads
  if (sequence % 5 == 1) return 12 + (sequence * 977u + producer) % 60000u;
  return 12 + (sequence * 31u + producer * 7u) % 244u;
}

LoanChannel adopt_in_child(const LoanChannel& parent) {
  return LoanChannel::adopt(sys::reopen(parent.segment().fd()).value()).value();
}

TEST(LoanChannelProcess, ProducersAndConsumersDeliverEveryPayloadOnceAndIntact) {
  LoanChannel channel = LoanChannel::create_anonymous(mixed_config()).value();
  xproc::test::SharedObject<Tally> tally;
  constexpr std::uint32_t kProducers = 3;
  constexpr std::uint32_t kConsumers = 2;
  const auto per_producer = static_cast<std::uint32_t>(
      std::min<long>(xproc::test::scaled(300), kMaxMessages / kProducers));
  const std::uint32_t total = kProducers * per_producer;
  std::vector<xproc::test::Child> children;
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    children.push_back(xproc::test::Child::start([&, p]() -> int {
      LoanChannel mine = adopt_in_child(channel);
      for (std::uint32_t s = 0; s < per_producer; ++s) {
        Result<Loan> loan = mine.loan_for(size_for(p, s), 20s);
        if (!loan) return 10;
        test::write_payload(loan->data(), p, s);
        if (mine.send_for(std::move(*loan), 20s)) return 11;
        if (s == 0) tally->producers_started.fetch_add(1);
      }
      return 0;
    }));
  }
  for (std::uint32_t c = 0; c < kConsumers; ++c) {
    children.push_back(xproc::test::Child::start([&]() -> int {
      LoanChannel mine = adopt_in_child(channel);
      while (tally->received.load() < total) {
        Result<Held> held = mine.receive_for(20ms);
        if (!held) {
          // peer_dead: every producer known to the channel exited and the channel is drained;
          // the end of the stream once every producer has started (a producer that has not
          // sent yet is not known to the channel).
          if (held.error() == make_error_code(errc::peer_dead)) {
            if (tally->producers_started.load() == kProducers) break;
            std::this_thread::yield();
            continue;
          }
          if (held.error() != make_error_code(errc::timed_out)) return 12;
          continue;
        }
        std::optional<std::uint32_t> i =
            test::payload_index(held->data(), kProducers, per_producer);
        if (i && held->size() == size_for(*i / per_producer, *i % per_producer)) {
          tally->seen[*i].fetch_add(1);
        } else {
          tally->bad.fetch_add(1);
        }
        tally->received.fetch_add(1);
      }
      return 0;
    }));
  }
  for (xproc::test::Child& child : children) {
    xproc::test::ChildStatus status = child.wait(60s);
    EXPECT_TRUE(status.ok()) << status.exit_code << " " << status.term_signal;
  }
  EXPECT_EQ(tally->bad.load(), 0u);
  EXPECT_EQ(tally->received.load(), total);
  for (std::uint32_t i = 0; i < total; ++i) ASSERT_EQ(tally->seen[i].load(), 1u) << i;
  LoanChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool.free, stats.pool.total);
  EXPECT_EQ(stats.channel.depth_messages, 0u);
}

TEST(LoanChannelProcess, TinyPayloadsFromZeroToElevenBytesArriveExactly) {
  LoanChannel channel = LoanChannel::create_anonymous(mixed_config()).value();
  xproc::test::Child producer = xproc::test::Child::start([&]() -> int {
    LoanChannel mine = adopt_in_child(channel);
    for (std::uint32_t size = 0; size < 12; ++size) {
      Loan loan = mine.loan(size).value();
      test::write_payload(loan.data(), 9, size);
      if (mine.send(std::move(loan))) return 1;
    }
    return 0;
  });
  for (std::uint32_t size = 0; size < 12; ++size) {
    Held held = channel.receive_for(10s).value();
    ASSERT_EQ(held.size(), size);
    EXPECT_TRUE(test::payload_is(held.data(), 9, size));
  }
  EXPECT_TRUE(producer.wait(10s).ok());
}

}  // namespace
}  // namespace xproc::bulk
