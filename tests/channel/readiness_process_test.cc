// ReadinessFd with producers in other processes: an epoll loop receives every message of a
// producer process in order, and a producer killed in the middle of a reservation does not hide
// the messages queued behind its record from a consumer that only polls and try_receives, and
// with redelivery a dead receiver's message comes back to such a consumer.
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "channel_test_support.h"
#include "child_process.h"
#include "xproc/channel/channel.h"
#include "xproc/channel/readiness.h"

namespace xproc::channel {
namespace {

using namespace std::chrono_literals;

struct Epoll {
  explicit Epoll(int fd) : epoll(::epoll_create1(EPOLL_CLOEXEC)) {
    epoll_event event{};
    event.events = EPOLLIN | EPOLLET;
    if (epoll >= 0) ::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
  }
  ~Epoll() { ::close(epoll); }
  bool wait(int timeout_ms) const {
    epoll_event ready{};
    return ::epoll_wait(epoll, &ready, 1, timeout_ms) == 1;
  }
  int epoll;
};

TEST(ReadinessFdProcess, EpollLoopReceivesEveryMessageOfAProducerProcessInOrder) {
  Channel channel = Channel::create_anonymous(test::small_config(4096, 64)).value();
  auto readiness = ReadinessFd::create(channel.endpoint()).value();
  const long messages = xproc::test::scaled(20000);
  xproc::test::Child producer = xproc::test::Child::start([&]() -> int {
    Result<Channel> adopted = Channel::adopt(sys::reopen(channel.segment().fd()).value());
    if (!adopted) return 1;
    for (long i = 0; i < messages; ++i) {
      const auto value = static_cast<std::uint64_t>(i);
      if ((*adopted)->send_for(std::as_bytes(std::span(&value, 1)), 10s)) return 2;
      if (i % 128 == 0) usleep(50);  // let the consumer empty the ring and re-arm sometimes
    }
    return 0;
  });
  Epoll epoll(readiness->fd());
  ASSERT_GE(epoll.epoll, 0);
  long received = 0;
  while (received < messages) {
    ASSERT_TRUE(epoll.wait(5000)) << "no readiness with " << received << " received";
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
  EXPECT_TRUE(producer.wait(10s).ok());
  EXPECT_EQ(received, messages);
}

TEST(ReadinessFdProcess, ProducerKilledInsideAReservationDoesNotHideLaterMessages) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  auto readiness = ReadinessFd::create(channel.endpoint()).value();
  xproc::test::Child producer = xproc::test::Child::start([&]() -> int {
    Result<Channel> adopted = Channel::adopt(sys::reopen(channel.segment().fd()).value());
    if (!adopted) return 1;
    Result<Reservation> torn = (*adopted)->reserve(100);
    if (!torn) return 3;
    raise(SIGKILL);
    return 4;
  });
  ASSERT_TRUE(producer.wait(10s).signaled);
  ASSERT_FALSE(channel->send(test::as_bytes("after")));  // queued behind the dead record
  Epoll epoll(readiness->fd());
  std::string out;
  // The waker checks the dead producer within kPeerCheckPeriod, aborts its record, signals.
  for (int attempt = 0; attempt < 3 && out.empty(); ++attempt) {
    ASSERT_TRUE(epoll.wait(5000));
    while (!channel->try_receive(out)) {
    }
    readiness->rearm();
  }
  EXPECT_EQ(out, "after");
  EXPECT_EQ(channel->statistics().producer_died, 1u);
}

TEST(ReadinessFdProcess, WithRedeliveryADeadReceiversMessageBecomesReadableAgain) {
  ChannelConfig config = test::small_config();
  config.redelivery = true;
  Channel channel = Channel::create_anonymous(config).value();
  ASSERT_FALSE(channel->send(test::as_bytes("precious")));
  xproc::test::Child receiver = xproc::test::Child::start([&]() -> int {
    Result<Channel> adopted = Channel::adopt(sys::reopen(channel.segment().fd()).value());
    if (!adopted) return 1;
    Result<Message> peeked = (*adopted)->peek();
    if (!peeked) return 2;
    raise(SIGKILL);
    return 3;
  });
  ASSERT_TRUE(receiver.wait(10s).signaled);
  // A consumer that only polls and try_receives: the waker puts the message back.
  auto readiness = ReadinessFd::create(channel.endpoint()).value();
  Epoll epoll(readiness->fd());
  std::string out;
  for (int attempt = 0; attempt < 3 && out.empty(); ++attempt) {
    ASSERT_TRUE(epoll.wait(5000));
    while (!channel->try_receive(out)) {
    }
    readiness->rearm();
  }
  EXPECT_EQ(out, "precious");
  EXPECT_EQ(channel->statistics().redelivered, 1u);
}

}  // namespace
}  // namespace xproc::channel
