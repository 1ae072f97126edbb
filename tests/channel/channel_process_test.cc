// Channel in a named or anonymous shm::Segment: create/open across processes, kind and name
// errors, and recovery from a dead producer through the segment's own participant table.
#include "xproc/channel/channel.h"

#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "channel_test_support.h"
#include "child_process.h"
#include "xproc/sys/error.h"

namespace xproc::channel {
namespace {

using namespace std::chrono_literals;

std::string unique_name(const char* what) {
  return std::string("chtest-") + what + "-" + std::to_string(getpid());
}

TEST(ChannelSegment, CreatedChannelIsOpenedByNameInAnotherProcess) {
  const std::string name = unique_name("named");
  Channel channel = Channel::create(name, test::small_config(8192, 256)).value();
  constexpr std::uint32_t kMessages = 2000;
  xproc::test::Child producer = xproc::test::Child::start([&]() -> int {
    Result<Channel> opened = Channel::open(name);
    if (!opened) return 1;
    for (std::uint32_t s = 0; s < kMessages; ++s) {
      if ((*opened)->send_for(test::make_message(0, s, test::message_size(0, s, 256)), 10s)) {
        return 2;
      }
    }
    return 0;
  });
  std::vector<std::byte> out;
  for (std::uint32_t s = 0; s < kMessages; ++s) {
    ASSERT_FALSE(channel->receive_until(out, sync::Clock::now() + 10s));
    test::Decoded d = test::check_message(out);
    ASSERT_TRUE(d.ok);
    ASSERT_EQ(d.sequence, s);
  }
  EXPECT_TRUE(producer.wait(10s).ok());
  EXPECT_FALSE(channel.segment().unlink());
}

TEST(ChannelSegment, NameErrorsAreNamed) {
  const std::string name = unique_name("errors");
  Channel channel = Channel::create(name, test::small_config()).value();
  EXPECT_EQ(Channel::create(name, test::small_config()).error(),
            make_error_code(errc::already_exists));
  EXPECT_EQ(Channel::open(unique_name("missing")).error(), make_error_code(errc::not_found));
  ChannelConfig bad = test::small_config();
  bad.capacity_bytes = 1000;
  EXPECT_EQ(Channel::create(unique_name("bad"), bad).error(),
            make_error_code(errc::invalid_argument));
  const std::string raw_name = unique_name("raw");
  shm::Segment raw = shm::Segment::create(raw_name, shm::SegmentKind::raw, 4096).value();
  EXPECT_EQ(Channel::open(raw_name).error(), make_error_code(errc::wrong_kind));
  EXPECT_FALSE(raw.unlink());
  EXPECT_FALSE(channel.segment().unlink());
}

TEST(ChannelSegment, AnonymousChannelRecoversFromAProducerKilledBeforeCommit) {
  Channel channel = Channel::create_anonymous(test::small_config()).value();
  xproc::test::Child producer = xproc::test::Child::start([&]() -> int {
    Result<Channel> adopted = Channel::adopt(sys::reopen(channel.segment().fd()).value());
    if (!adopted) return 1;
    if ((*adopted)->send(test::as_bytes("before"))) return 2;
    Result<Reservation> torn = (*adopted)->reserve(100);
    if (!torn) return 3;
    raise(SIGKILL);
    return 4;
  });
  EXPECT_TRUE(producer.wait(10s).signaled);
  std::string text;
  ASSERT_FALSE(channel->receive_until(text, sync::Clock::now() + 5s));
  EXPECT_EQ(text, "before");
  // The only producer is dead and its torn record is skipped: end of stream.
  EXPECT_EQ(channel->receive_until(text, sync::Clock::now() + 5s),
            make_error_code(errc::peer_dead));
  EXPECT_EQ(channel->producers(), PeerState::all_dead);
  EXPECT_EQ(channel->statistics().producer_died, 1u);
  ASSERT_FALSE(channel->send(test::as_bytes("after")));  // a new producer revives the stream
  ASSERT_FALSE(channel->receive_until(text, sync::Clock::now() + 5s));
  EXPECT_EQ(text, "after");
}

}  // namespace
}  // namespace xproc::channel
