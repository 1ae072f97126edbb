// ReadinessFd between threads of one process: readable when a message waits, never a lost
// readiness after draining and re-arming, no wake-ups while idle or while not re-armed, clean
// shutdown wherever the waker is parked.
#include "xproc/channel/readiness.h"

#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <thread>

#include "channel_test_support.h"
#include "child_process.h"
#include "xproc/channel/channel.h"

namespace xproc::channel {
namespace {

using namespace std::chrono_literals;

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN) != 0;
}

// Receives every message ready now; the count.
int drain(const Endpoint& endpoint) {
  std::array<std::byte, 512> buffer{};
  int count = 0;
  while (endpoint.try_receive(buffer)) ++count;
  return count;
}

// Waits (bounded) until the waker is parked on not_empty (counted as a waiting receiver), or
// (parked = false) until it is not.
bool waker_parked(const Endpoint& endpoint, bool parked = true) {
  const auto give_up = std::chrono::steady_clock::now() + 5s;
  while ((endpoint.statistics().receivers_waiting != 0) != parked) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

TEST(ReadinessFd, NotReadableWhileEmptyReadableOnceAMessageIsSent) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  auto readiness = ReadinessFd::create(channel.endpoint()).value();
  ASSERT_TRUE(waker_parked(channel.endpoint()));
  EXPECT_FALSE(readable(readiness->fd(), 0));
  ASSERT_FALSE(channel->send(test::as_bytes("hello")));
  ASSERT_TRUE(readable(readiness->fd(), 5000));
  EXPECT_EQ(drain(channel.endpoint()), 1);
  readiness->rearm();
  EXPECT_FALSE(readable(readiness->fd(), 0));
  EXPECT_EQ(readiness->counters().signals, 1u);
}

TEST(ReadinessFd, MessageSentRightAfterDrainingMakesTheFdReadableAgain) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  auto readiness = ReadinessFd::create(channel.endpoint()).value();
  const long rounds = xproc::test::scaled(2000);
  for (long round = 0; round < rounds; ++round) {
    ASSERT_FALSE(channel->send(test::as_bytes("x")));
    ASSERT_TRUE(readable(readiness->fd(), 5000)) << "round " << round;
    ASSERT_EQ(drain(channel.endpoint()), 1);
    readiness->rearm();  // drain, then re-arm: the documented order
  }
  // The other order (re-arm, then drain) is also never lost.
  for (long round = 0; round < rounds; ++round) {
    ASSERT_FALSE(channel->send(test::as_bytes("y")));
    ASSERT_TRUE(readable(readiness->fd(), 5000)) << "round " << round;
    readiness->rearm();
    ASSERT_EQ(drain(channel.endpoint()), 1);
  }
}

TEST(ReadinessFd, IdleWakerAndUnrearmedWakerMakeNoWakeups) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  auto readiness = ReadinessFd::create(channel.endpoint()).value();
  ASSERT_TRUE(waker_parked(channel.endpoint()));
  const ReadinessFd::Counters idle = readiness->counters();
  std::this_thread::sleep_for(100ms);  // measuring idleness, not ordering events
  EXPECT_EQ(readiness->counters().wakeups, idle.wakeups);
  EXPECT_EQ(readiness->counters().signals, 0u);

  // Signalled and not re-armed: further sends do not wake the waker (it sleeps in poll()).
  ASSERT_FALSE(channel->send(test::as_bytes("first")));
  ASSERT_TRUE(readable(readiness->fd(), 5000));
  ASSERT_TRUE(waker_parked(channel.endpoint(), false));
  const ReadinessFd::Counters signalled = readiness->counters();
  for (int i = 0; i < 10; ++i) ASSERT_FALSE(channel->send(test::as_bytes("more")));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(readiness->counters().wakeups, signalled.wakeups);
  EXPECT_EQ(readiness->counters().signals, 1u);
  EXPECT_EQ(drain(channel.endpoint()), 11);
}

TEST(ReadinessFd, EpollLoopReceivesEveryMessageOfAProducerThread) {
  Channel channel = Channel::create_anonymous(test::small_config(4096, 64)).value();
  auto readiness = ReadinessFd::create(channel.endpoint()).value();
  const long messages = xproc::test::scaled(20000);
  std::thread producer([&] {
    for (long i = 0; i < messages; ++i) {
      const auto value = static_cast<std::uint64_t>(i);
      if (channel->send_for(std::as_bytes(std::span(&value, 1)), 10s)) return;
      if (i % 64 == 0) std::this_thread::yield();  // let the consumer empty the ring sometimes
    }
  });
  const int epoll = ::epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(epoll, 0);
  epoll_event event{};
  event.events = EPOLLIN | EPOLLET;  // edge-triggered: the strictest consumer
  ASSERT_EQ(::epoll_ctl(epoll, EPOLL_CTL_ADD, readiness->fd(), &event), 0);
  long received = 0;
  while (received < messages) {
    epoll_event ready{};
    const int n = ::epoll_wait(epoll, &ready, 1, 5000);
    ASSERT_EQ(n, 1) << "no readiness with " << received << " of " << messages << " received";
    for (;;) {
      std::uint64_t value = 0;
      Result<std::size_t> got = channel->try_receive(std::as_writable_bytes(std::span(&value, 1)));
      if (!got) {
        ASSERT_EQ(got.error(), make_error_code(errc::would_block));
        break;
      }
      ASSERT_EQ(value, static_cast<std::uint64_t>(received));
      ++received;
    }
    readiness->rearm();
  }
  producer.join();
  ::close(epoll);
  EXPECT_EQ(received, messages);
  EXPECT_LE(readiness->counters().signals, static_cast<std::uint64_t>(messages));
}

TEST(ReadinessFd, DestroyingStopsTheWakerWhetherArmedOrSignalled) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  {
    auto armed = ReadinessFd::create(channel.endpoint()).value();
    ASSERT_TRUE(waker_parked(channel.endpoint()));
  }
  EXPECT_EQ(channel->statistics().receivers_waiting, 0u);
  ASSERT_FALSE(channel->send(test::as_bytes("m")));
  {
    auto signalled = ReadinessFd::create(channel.endpoint()).value();
    ASSERT_TRUE(readable(signalled->fd(), 5000));
  }
  EXPECT_EQ(drain(channel.endpoint()), 1);
}

TEST(ReadinessFd, RefusesAnEndpointThatIsNotOpen) {
  EXPECT_EQ(ReadinessFd::create(Endpoint{}).error(), make_error_code(errc::invalid_argument));
}

}  // namespace
}  // namespace xproc::channel
