// LoanChannel between threads of one process: round trip in place, empty/full behaviour (the
// loan stays with the caller on a send error), forged records, foreign loans, layout checks,
// and a multi-producer multi-consumer stress where every payload arrives once and intact.
#include "xproc/bulk/loan_channel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "child_process.h"
#include "pool_test_support.h"
#include "xproc/sys/error.h"

namespace xproc::bulk {
namespace {

using namespace std::chrono_literals;

std::error_code code(errc e) {
  return make_error_code(e);
}

LoanChannelConfig small_config(std::uint32_t capacity = 4096) {
  LoanChannelConfig config;
  config.channel.capacity_bytes = capacity;
  config.pool = test::small_pool(4);
  return config;
}

TEST(LoanChannel, SentPayloadIsReceivedInPlaceAndTheBufferComesBack) {
  LoanChannel channel = LoanChannel::create_anonymous(small_config()).value();
  Loan loan = channel.loan(3000).value();
  test::write_payload(loan.data(), 1, 2);
  const std::byte* where = loan.data().data();
  ASSERT_FALSE(channel.send(std::move(loan)));
  EXPECT_FALSE(loan.active());  // NOLINT(bugprone-use-after-move): consumed by send
  {
    Held held = channel.receive().value();
    EXPECT_EQ(held.data().data(), where);
    EXPECT_EQ(held.size(), 3000u);
    EXPECT_TRUE(test::payload_is(held.data(), 1, 2));
    EXPECT_EQ(channel.statistics().pool.held, 1u);
  }
  LoanChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool.free, stats.pool.total);
  EXPECT_EQ(stats.channel.depth_messages, 0u);
}

TEST(LoanChannel, EmptyChannelTryReceiveWouldBlockAndTimedReceiveTimesOut) {
  LoanChannel channel = LoanChannel::create_anonymous(small_config()).value();
  EXPECT_EQ(channel.try_receive().error(), code(errc::would_block));
  EXPECT_EQ(channel.receive_for(10ms).error(), code(errc::timed_out));
}

TEST(LoanChannel, SendOnAFullChannelFailsAndLeavesTheLoanWithTheCaller) {
  LoanChannelConfig config = small_config(256);  // 5 records of 48 bytes and the free marker
  config.pool.classes = {{64, 16}};
  LoanChannel channel = LoanChannel::create_anonymous(config).value();
  int sent = 0;
  for (;;) {
    Loan loan = channel.try_loan(8).value();
    std::error_code error = channel.try_send(std::move(loan));
    if (error) {
      EXPECT_EQ(error, code(errc::would_block));
      EXPECT_TRUE(loan.active());  // NOLINT(bugprone-use-after-move): refused, still ours
      EXPECT_EQ(channel.send_for(std::move(loan), 5ms), code(errc::timed_out));
      EXPECT_TRUE(loan.active());  // NOLINT(bugprone-use-after-move)
      break;
    }
    ++sent;
  }
  EXPECT_EQ(sent, 5);
  EXPECT_EQ(channel.statistics().pool.posted, 5u);
  EXPECT_EQ(channel.statistics().pool.free, 11u);  // the refused loan went back at scope end
  for (int i = 0; i < sent; ++i) EXPECT_TRUE(channel.try_receive());
  EXPECT_EQ(channel.statistics().pool.free, 16u);
}

TEST(LoanChannel, ExhaustedPoolTryLoanWouldBlockAndTimedLoanTimesOut) {
  LoanChannelConfig config = small_config();
  config.pool.classes = {{64, 2}};
  LoanChannel channel = LoanChannel::create_anonymous(config).value();
  ASSERT_FALSE(channel.send(channel.try_loan(1).value()));
  Loan kept = channel.try_loan(1).value();
  EXPECT_EQ(channel.try_loan(1).error(), code(errc::would_block));
  EXPECT_EQ(channel.loan_for(1, 10ms).error(), code(errc::timed_out));
  EXPECT_EQ(channel.try_loan(65).error(), code(errc::message_too_large));
  EXPECT_TRUE(channel.try_receive());  // gives the posted buffer back
  EXPECT_TRUE(channel.try_loan(1));
}

TEST(LoanChannel, ForgedRecordsAreRefusedAndTheNextMessageStillArrives) {
  LoanChannel channel = LoanChannel::create_anonymous(small_config()).value();
  std::byte junk[32];
  std::memset(junk, 0x5a, sizeof junk);
  ASSERT_FALSE(channel.endpoint().send(junk));
  ASSERT_FALSE(channel.endpoint().send(std::span<const std::byte>(junk, 7)));
  ASSERT_FALSE(test::send_payload(channel, 10, 0, 5));
  EXPECT_EQ(channel.try_receive().error(), code(errc::bad_descriptor));
  EXPECT_EQ(channel.try_receive().error(), code(errc::bad_descriptor));
  Held held = channel.try_receive().value();
  EXPECT_TRUE(test::payload_is(held.data(), 0, 5));
}

TEST(LoanChannel, ALoanOfAnotherPoolIsRefusedAndStaysWithTheCaller) {
  LoanChannel a = LoanChannel::create_anonymous(small_config()).value();
  LoanChannel b = LoanChannel::create_anonymous(small_config()).value();
  Loan loan = a.loan(10).value();
  EXPECT_EQ(b.send(std::move(loan)), code(errc::invalid_argument));
  EXPECT_TRUE(loan.active());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(b.statistics().channel.depth_messages, 0u);
  EXPECT_FALSE(a.send(std::move(loan)));
}

TEST(LoanChannel, AdoptedSegmentSharesPoolAndChannel) {
  LoanChannel a = LoanChannel::create_anonymous(small_config()).value();
  LoanChannel b = LoanChannel::adopt(sys::reopen(a.segment().fd()).value()).value();
  ASSERT_FALSE(test::send_payload(a, 100, 4, 4));
  Held held = b.receive_for(5s).value();
  EXPECT_TRUE(test::payload_is(held.data(), 4, 4));
}

TEST(LoanChannel, CreateRejectsBadConfigs) {
  LoanChannelConfig config = small_config();
  config.pool.classes.clear();
  EXPECT_EQ(LoanChannel::create_anonymous(config).error(), code(errc::invalid_argument));
  config = small_config(1000);  // not a power of two
  EXPECT_EQ(LoanChannel::create_anonymous(config).error(), code(errc::invalid_argument));
}

TEST(LoanChannelStress, ThreadsDeliverEveryPayloadExactlyOnce) {
  LoanChannelConfig config;
  config.channel.capacity_bytes = 1024;
  config.pool.classes = {{256, 4}, {8192, 4}, {65536, 2}};
  LoanChannel channel = LoanChannel::create_anonymous(config).value();
  constexpr std::uint32_t kProducers = 2;
  constexpr std::uint32_t kConsumers = 2;
  const auto per_producer = static_cast<std::uint32_t>(xproc::test::scaled(2000));
  const std::uint32_t total = kProducers * per_producer;
  std::vector<std::atomic<std::uint32_t>> seen(total);
  std::atomic<std::uint32_t> received{0};
  std::atomic<std::uint32_t> bad{0};
  std::vector<std::thread> threads;
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (std::uint32_t s = 0; s < per_producer; ++s) {
        const std::size_t size = 12 + (s * 7919u + p * 104729u) % (65536u - 11u);
        if (test::send_payload(channel, size, p, s)) bad.fetch_add(1);
      }
    });
  }
  for (std::uint32_t c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&] {
      while (received.load() < total) {
        Result<Held> held = channel.receive_for(20ms);
        if (!held) continue;
        test::count_delivery(held->data(), kProducers, per_producer, seen, bad);
        received.fetch_add(1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(bad.load(), 0u);
  for (std::uint32_t i = 0; i < total; ++i) ASSERT_EQ(seen[i].load(), 1u) << i;
  LoanChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool.free, stats.pool.total);
  EXPECT_EQ(stats.channel.depth_messages, 0u);
}

}  // namespace
}  // namespace xproc::bulk
