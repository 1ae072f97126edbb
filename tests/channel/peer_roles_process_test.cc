// The channel's role table: a blocked sender learns that no live participant can receive any
// more, a blocked receiver that none can send (end of stream); neither is told so while a peer
// on the other side lives, while a live participant has not chosen a side yet, or before anyone
// ever took that side.
#include <signal.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "channel_test_support.h"
#include "child_process.h"
#include "eventually.h"
#include "shared_object.h"
#include "xproc/channel/channel.h"
#include "xproc/sys/error.h"

namespace xproc::channel {
namespace {

using namespace std::chrono_literals;

std::error_code code(errc e) {
  return make_error_code(e);
}

Channel adopted_copy(const Channel& channel) {
  return Channel::adopt(sys::reopen(channel.segment().fd()).value()).value();
}

// Sends until the ring is full; the count sent.
int fill(const Channel& channel) {
  int sent = 0;
  while (!channel->try_send(test::as_bytes("filler"))) ++sent;
  return sent;
}

TEST(PeerRoles, BlockedSendReturnsPeerDeadOnceEveryConsumerDied) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  ASSERT_FALSE(channel->send(test::as_bytes("hello")));
  xproc::test::Child consumer = xproc::test::Child::start([&]() -> int {
    Channel mine = adopted_copy(channel);
    std::string text;
    if (mine->receive_until(text, sync::Clock::now() + 10s) || text != "hello") return 1;
    raise(SIGKILL);  // a consumer that has received, then dies
    return 2;
  });
  ASSERT_TRUE(consumer.wait(10s).signaled);
  EXPECT_EQ(channel->consumers(), PeerState::all_dead);
  EXPECT_EQ(channel->producers(), PeerState::alive);  // this process has sent
  EXPECT_TRUE(channel->consumers_gone());
  EXPECT_FALSE(channel->producers_gone());
  EXPECT_GT(fill(channel), 0);  // room is still used: queued for later
  // No deadline at all: the death, not a timeout, ends the wait (a hang fails the test's limit).
  EXPECT_EQ(channel->send(test::as_bytes("more")), code(errc::peer_dead));
  EXPECT_EQ(channel->send_for(test::as_bytes("more"), 10s), code(errc::peer_dead));
  Result<Reservation> reservation = channel->reserve(8);
  EXPECT_EQ(reservation.error(), code(errc::peer_dead));
  EXPECT_EQ(channel->try_send(test::as_bytes("more")), code(errc::would_block));
}

TEST(PeerRoles, BlockedSendWaitsWhileNoConsumerHasReceivedYet) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  EXPECT_EQ(channel->consumers(), PeerState::none_yet);
  fill(channel);
  EXPECT_EQ(channel->send_for(test::as_bytes("more"), 20ms), code(errc::timed_out));
  // A consumer that arrives later drains it.
  xproc::test::Child consumer = xproc::test::Child::start([&]() -> int {
    Channel mine = adopted_copy(channel);
    std::string text;
    return mine->receive_until(text, sync::Clock::now() + 10s) ? 1 : 0;
  });
  EXPECT_FALSE(channel->send_for(test::as_bytes("more"), 10s));
  EXPECT_TRUE(consumer.wait(10s).ok());
}

TEST(PeerRoles, BlockedSendKeepsWaitingWhileOneOfTwoConsumersLives) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  xproc::test::SharedObject<std::atomic<std::uint32_t>> go;
  ASSERT_FALSE(channel->send(test::as_bytes("a")));
  ASSERT_FALSE(channel->send(test::as_bytes("b")));
  xproc::test::Child dying = xproc::test::Child::start([&]() -> int {
    Channel mine = adopted_copy(channel);
    std::string text;
    if (mine->receive_until(text, sync::Clock::now() + 10s)) return 1;
    raise(SIGKILL);
    return 2;
  });
  ASSERT_TRUE(dying.wait(10s).signaled);
  xproc::test::Child living = xproc::test::Child::start([&]() -> int {
    Channel mine = adopted_copy(channel);
    std::string text;
    if (mine->receive_until(text, sync::Clock::now() + 10s)) return 1;
    // Alive and registered, but receiving nothing more until the parent says so.
    if (!xproc::test::eventually([&] { return go->load() != 0; }, 10s)) return 2;
    while (!mine->receive_until(text, sync::Clock::now() + 10s)) {
      if (text == "stop") return 0;
    }
    return 3;
  });
  ASSERT_TRUE(xproc::test::eventually([&] { return channel->statistics().depth_messages == 0; }));
  fill(channel);
  EXPECT_EQ(channel->consumers(), PeerState::alive);
  EXPECT_EQ(channel->send_for(test::as_bytes("more"), 30ms), code(errc::timed_out));
  go->store(1);
  EXPECT_FALSE(channel->send_for(test::as_bytes("stop"), 10s));
  EXPECT_TRUE(living.wait(10s).ok());
}

TEST(PeerRoles, ReceiveDrainsThenReturnsPeerDeadAfterTheLastProducerExited) {
  Channel channel = Channel::create_anonymous(test::small_config(1u << 16, 512)).value();
  constexpr std::uint32_t kMessages = 500;
  xproc::test::Child producer = xproc::test::Child::start([&]() -> int {
    Channel mine = adopted_copy(channel);
    for (std::uint32_t s = 0; s < kMessages; ++s) {
      if (mine->send_for(test::make_message(0, s, test::message_size(0, s, 512)), 10s)) return 1;
    }
    return 0;  // exits: detaching is dying, as far as the channel can tell
  });
  std::vector<std::byte> out;
  for (std::uint32_t s = 0; s < kMessages; ++s) {
    ASSERT_FALSE(channel->receive(out)) << s;  // every committed message before the end
    test::Decoded d = test::check_message(out);
    ASSERT_TRUE(d.ok);
    ASSERT_EQ(d.sequence, s);
  }
  ASSERT_TRUE(producer.wait(10s).ok());
  EXPECT_EQ(channel->receive(out), code(errc::peer_dead));
  EXPECT_EQ(channel->receive_until(out, sync::Clock::now() + 10s), code(errc::peer_dead));
  EXPECT_EQ(channel->peek().error(), code(errc::peer_dead));
  EXPECT_EQ(channel->try_receive(out), code(errc::would_block));
  EXPECT_EQ(channel->producers(), PeerState::all_dead);
}

TEST(PeerRoles, ParkedReceiverWakesWithPeerDeadWhenTheProducerIsKilled) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  xproc::test::Child producer = xproc::test::Child::start([&]() -> int {
    Channel mine = adopted_copy(channel);
    if (mine->send(test::as_bytes("first"))) return 1;
    for (;;) pause();  // alive and idle until killed
  });
  std::string text;
  ASSERT_FALSE(channel->receive_until(text, sync::Clock::now() + 10s));
  EXPECT_EQ(channel->receive_until(text, sync::Clock::now() + 50ms), code(errc::timed_out));
  producer.kill(SIGKILL);
  EXPECT_EQ(channel->receive_until(text, sync::Clock::now() + 10s), code(errc::peer_dead));
  EXPECT_TRUE(producer.wait(10s).signaled);
}

TEST(PeerRoles, ADeclaredProducerKeepsTheStreamOpenBeforeItsFirstSend) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  xproc::test::SharedObject<std::atomic<std::uint32_t>> declared;
  xproc::test::Child early = xproc::test::Child::start([&]() -> int {
    Channel mine = adopted_copy(channel);
    return mine->send(test::as_bytes("early")) ? 1 : 0;  // sends, then exits
  });
  xproc::test::Child late = xproc::test::Child::start([&]() -> int {
    Channel mine = adopted_copy(channel);
    mine->declare_producer();
    declared->store(1);
    for (;;) pause();  // declared, alive, never sends
  });
  ASSERT_TRUE(early.wait(10s).ok());
  ASSERT_TRUE(xproc::test::eventually([&] { return declared->load() != 0; }));
  std::string text;
  ASSERT_FALSE(channel->receive_until(text, sync::Clock::now() + 10s));
  EXPECT_EQ(channel->producers(), PeerState::alive);
  EXPECT_EQ(channel->receive_until(text, sync::Clock::now() + 50ms), code(errc::timed_out));
  late.kill(SIGKILL);
  EXPECT_EQ(channel->receive_until(text, sync::Clock::now() + 10s), code(errc::peer_dead));
  EXPECT_TRUE(late.wait(10s).signaled);
}

TEST(PeerRoles, ALiveParticipantThatHasNotSentYetKeepsTheStreamOpen) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  xproc::test::SharedObject<std::atomic<std::uint32_t>> attached;
  xproc::test::Child first = xproc::test::Child::start([&]() -> int {
    Channel mine = adopted_copy(channel);
    return mine->send(test::as_bytes("first")) ? 1 : 0;  // sends, then exits
  });
  xproc::test::Child starting = xproc::test::Child::start([&]() -> int {
    Channel mine = adopted_copy(channel);  // attached, has not sent yet (a producer starting up)
    attached->store(1);
    for (;;) pause();
  });
  ASSERT_TRUE(first.wait(10s).ok());
  ASSERT_TRUE(xproc::test::eventually([&] { return attached->load() != 0; }));
  std::string text;
  ASSERT_FALSE(channel->receive_until(text, sync::Clock::now() + 10s));
  EXPECT_EQ(channel->producers(), PeerState::all_dead);  // those that sent are gone ...
  EXPECT_EQ(channel->receive_until(text, sync::Clock::now() + 50ms), code(errc::timed_out));
  starting.kill(SIGKILL);  // ... and now the one that could still send too
  EXPECT_EQ(channel->receive_until(text, sync::Clock::now() + 10s), code(errc::peer_dead));
  EXPECT_TRUE(starting.wait(10s).signaled);
}

TEST(PeerRoles, ALiveParticipantThatHasNotReceivedYetKeepsAFullSenderWaiting) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  xproc::test::SharedObject<std::atomic<std::uint32_t>> attached;
  ASSERT_FALSE(channel->send(test::as_bytes("one")));
  xproc::test::Child consumer = xproc::test::Child::start([&]() -> int {
    Channel mine = adopted_copy(channel);
    std::string text;
    if (mine->receive_until(text, sync::Clock::now() + 10s)) return 1;
    raise(SIGKILL);
    return 2;
  });
  ASSERT_TRUE(consumer.wait(10s).signaled);
  xproc::test::Child starting = xproc::test::Child::start([&]() -> int {
    Channel mine = adopted_copy(channel);  // a consumer starting up
    attached->store(1);
    for (;;) pause();
  });
  ASSERT_TRUE(xproc::test::eventually([&] { return attached->load() != 0; }));
  fill(channel);
  EXPECT_EQ(channel->consumers(), PeerState::all_dead);  // those that received are gone ...
  EXPECT_FALSE(channel->consumers_gone());               // ... but one could still receive
  EXPECT_EQ(channel->send_for(test::as_bytes("more"), 30ms), code(errc::timed_out));
  starting.kill(SIGKILL);
  EXPECT_TRUE(starting.wait(10s).signaled);
  EXPECT_EQ(channel->send_for(test::as_bytes("more"), 10s), code(errc::peer_dead));
}

TEST(PeerRoles, ReceiveWithNoProducerEverSleepsToItsDeadline) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  std::string text;
  EXPECT_EQ(channel->receive_until(text, sync::Clock::now() + 20ms), code(errc::timed_out));
  EXPECT_EQ(channel->producers(), PeerState::none_yet);
  EXPECT_EQ(channel->consumers(), PeerState::alive);  // this process has received (tried to)
}

TEST(PeerRoles, ChannelWithoutRoleTableIsUntracked) {
  test::Registry registry;
  test::SharedRegion region(test::small_config());  // role_slots 0
  sync::Participant self = registry.attach().value();
  Endpoint endpoint = Endpoint::open(region.bytes(), &self).value();
  ASSERT_FALSE(endpoint.send(test::as_bytes("x")));
  EXPECT_EQ(endpoint.producers(), PeerState::untracked);
  EXPECT_EQ(endpoint.consumers(), PeerState::untracked);
}

TEST(PeerRoles, OpenRefusesAParticipantTheRoleTableCannotHold) {
  test::Registry registry(4);
  ChannelConfig config = test::small_config();
  config.role_slots = 1;
  test::SharedRegion region(config);
  sync::Participant first = registry.attach().value();
  sync::Participant second = registry.attach().value();
  ASSERT_EQ(first.id().slot, 0u);
  ASSERT_EQ(second.id().slot, 1u);
  EXPECT_TRUE(Endpoint::open(region.bytes(), &first));
  EXPECT_EQ(Endpoint::open(region.bytes(), &second).error(), code(errc::invalid_argument));
}

TEST(PeerRoles, OpenRefusesARoleTableLargerThanAnyParticipantTable) {
  ChannelConfig config = test::small_config();
  config.role_slots = sync::ParticipantTable::kMaxCapacity + 1;
  EXPECT_EQ(region_size_for(config), 0u);
}

}  // namespace
}  // namespace xproc::channel
