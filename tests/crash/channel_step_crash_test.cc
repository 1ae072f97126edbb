// Channel crash injection at every protocol step: a producer or consumer process is SIGKILLed
// right after a chosen step of reserve, claim or sweep (detail::set_step_hook), which random
// kills reach only by chance. The survivor takes the dead one's lock over, and the channel comes
// out exact: every committed message is delivered once (or, with redelivery, again), the dead
// one's record is skipped or reclaimed, and the drained channel's counters balance to depth 0.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <tuple>
#include <vector>

#include "../channel/channel_test_support.h"
#include "child_process.h"
#include "xproc/channel/detail/step_hook.h"
#include "xproc/channel/endpoint.h"
#include "xproc/sys/error.h"

namespace xproc::channel {
namespace {

using namespace std::chrono_literals;
using detail::Step;
using test::as_bytes;
using test::Registry;
using test::SharedRegion;

// The step the forked child dies at (set in the child only, before it installs the hook).
Step g_fatal_step = Step::reserve_locked;

void die_at_fatal_step(Step step) noexcept {
  if (step == g_fatal_step) raise(SIGKILL);
}

void die_at(Step step) {
  g_fatal_step = step;
  detail::set_step_hook(&die_at_fatal_step);
}

std::string text_of(const std::vector<std::byte>& bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

const char* name_of(Step step) {
  switch (step) {
    case Step::reserve_locked:
      return "reserve_locked";
    case Step::reserve_journaled:
      return "reserve_journaled";
    case Step::reserve_padded:
      return "reserve_padded";
    case Step::reserve_published:
      return "reserve_published";
    case Step::reserve_tail_moved:
      return "reserve_tail_moved";
    case Step::reserve_counted:
      return "reserve_counted";
    case Step::claim_locked:
      return "claim_locked";
    case Step::claim_journaled:
      return "claim_journaled";
    case Step::claim_marked:
      return "claim_marked";
    case Step::claim_head_moved:
      return "claim_head_moved";
    case Step::claim_counted:
      return "claim_counted";
    case Step::sweep_locked:
      return "sweep_locked";
    case Step::sweep_advanced:
      return "sweep_advanced";
  }
  return "unknown";
}

// The drained channel: nothing queued or claimed, and the counters balance (every reservation
// was claimed once for good, or skipped because its producer died).
void expect_drained_and_balanced(const Endpoint& channel) {
  ASSERT_FALSE(channel.recover());  // reclaims what a dead consumer held
  const Statistics s = channel.statistics();
  EXPECT_EQ(s.depth_messages, 0u);
  EXPECT_EQ(s.depth_bytes, 0u);
  EXPECT_EQ(s.claimed_bytes, 0u);
  EXPECT_EQ(s.reserved_total, s.claimed_total - s.redelivered + s.abandoned + s.producer_died)
      << "reserved " << s.reserved_total << ", claimed " << s.claimed_total << ", redelivered "
      << s.redelivered << ", producer_died " << s.producer_died;
  EXPECT_EQ(s.lock_takeovers, 1u);
}

// A producer dies after a step of its second reservation (the first, "first", is committed).
// padded: the ring starts 64 bytes before its end, so the second record needs a padding first.
class ProducerStepCrash : public ::testing::TestWithParam<std::tuple<Step, bool>> {};

TEST_P(ProducerStepCrash, SurvivorTakesOverAndTheCountsStayExact) {
  // Not a structured binding: clang 14 cannot capture one in the lambdas below.
  const Step step = std::get<0>(GetParam());
  const bool padded = std::get<1>(GetParam());
  Registry registry;
  ChannelConfig config = test::small_config(1024, 200);
  config.start_position = padded ? 1024 - 64 : 0;
  SharedRegion region(config);
  sync::Participant me = registry.attach().value();
  Endpoint channel = Endpoint::open(region.bytes(), &me).value();
  xproc::test::Child producer = xproc::test::Child::start([&]() -> int {
    sync::Participant self = registry.attach().value();
    Endpoint endpoint = Endpoint::open(region.bytes(), &self).value();
    if (endpoint.send(as_bytes("first"))) return 1;
    die_at(step);
    (void)endpoint.send(std::vector<std::byte>(100, std::byte{'x'}));
    return 2;  // the step was never reached
  });
  const xproc::test::ChildStatus status = producer.wait(10s);
  ASSERT_TRUE(status.signaled) << "exit code " << status.exit_code;

  ASSERT_FALSE(channel.send_for(as_bytes("after"), 5s));  // takes the reserve lock over
  std::vector<std::byte> out;
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 5s));
  EXPECT_EQ(text_of(out), "first");
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 5s));  // skips the dead record
  EXPECT_EQ(text_of(out), "after");
  EXPECT_EQ(channel.try_receive(out), make_error_code(errc::would_block));
  expect_drained_and_balanced(channel);
  const bool published = step == Step::reserve_published || step == Step::reserve_tail_moved ||
                         step == Step::reserve_counted;
  EXPECT_EQ(channel.statistics().producer_died, published ? 1u : 0u);
}

INSTANTIATE_TEST_SUITE_P(EveryReserveStep, ProducerStepCrash,
                         ::testing::Values(std::tuple{Step::reserve_locked, false},
                                           std::tuple{Step::reserve_journaled, false},
                                           std::tuple{Step::reserve_published, false},
                                           std::tuple{Step::reserve_tail_moved, false},
                                           std::tuple{Step::reserve_counted, false},
                                           std::tuple{Step::reserve_locked, true},
                                           std::tuple{Step::reserve_journaled, true},
                                           std::tuple{Step::reserve_padded, true},
                                           std::tuple{Step::reserve_published, true},
                                           std::tuple{Step::reserve_tail_moved, true},
                                           std::tuple{Step::reserve_counted, true}),
                         [](const ::testing::TestParamInfo<std::tuple<Step, bool>>& param) {
                           return std::string(name_of(std::get<0>(param.param))) +
                                  (std::get<1>(param.param) ? "_padded" : "");
                         });

// A consumer dies after a step of its first claim (claim steps), or of the sweep that follows
// its first release (sweep steps). "one", "two", "three" are queued before it starts.
class ConsumerStepCrash : public ::testing::TestWithParam<std::tuple<Step, bool>> {};

TEST_P(ConsumerStepCrash, SurvivorTakesOverAndNothingIsLostTwiceOrCountedWrong) {
  const Step step = std::get<0>(GetParam());
  const bool redelivery = std::get<1>(GetParam());
  Registry registry;
  ChannelConfig config = test::small_config(1024, 200);
  config.redelivery = redelivery;
  SharedRegion region(config);
  sync::Participant me = registry.attach().value();
  Endpoint channel = Endpoint::open(region.bytes(), &me).value();
  for (const char* text : {"one", "two", "three"}) ASSERT_FALSE(channel.send(as_bytes(text)));
  const bool sweep_step = step == Step::sweep_locked || step == Step::sweep_advanced;
  xproc::test::Child consumer = xproc::test::Child::start([&]() -> int {
    sync::Participant self = registry.attach().value();
    Endpoint endpoint = Endpoint::open(region.bytes(), &self).value();
    die_at(step);
    std::vector<std::byte> message;
    if (endpoint.try_receive(message)) return 1;
    if (sweep_step) (void)endpoint.recover();
    return 2;  // the step was never reached
  });
  const xproc::test::ChildStatus status = consumer.wait(10s);
  ASSERT_TRUE(status.signaled) << "exit code " << status.exit_code;

  // What the survivor must get: all three when the dead one claimed nothing; without "one" when
  // it died holding it (reclaimed, lost with it) or after it released it (delivered to it);
  // with redelivery, a held "one" comes back.
  const bool held =
      step == Step::claim_marked || step == Step::claim_head_moved || step == Step::claim_counted;
  std::vector<std::string> expected = {"two", "three"};
  if (!held && !sweep_step) expected.insert(expected.begin(), "one");
  if (held && redelivery) expected.emplace_back("one");
  std::vector<std::string> received;
  std::vector<std::byte> out;
  while (received.size() < expected.size()) {
    std::error_code error = channel.receive_until(out, sync::Clock::now() + 5s);
    ASSERT_FALSE(error) << error.message() << " after " << received.size() << " messages";
    received.push_back(text_of(out));
  }
  if (held && redelivery) std::sort(received.begin(), received.end());
  if (held && redelivery) std::sort(expected.begin(), expected.end());
  EXPECT_EQ(received, expected);
  EXPECT_EQ(channel.try_receive(out), make_error_code(errc::would_block));
  if (sweep_step) {
    ASSERT_FALSE(channel.recover());  // takes the sweep lock over
  }
  expect_drained_and_balanced(channel);
  const Statistics s = channel.statistics();
  EXPECT_EQ(s.consumer_died, held ? 1u : 0u);
  EXPECT_EQ(s.redelivered, held && redelivery ? 1u : 0u);
  EXPECT_EQ(s.producer_died, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    EveryClaimAndSweepStep, ConsumerStepCrash,
    ::testing::Combine(::testing::Values(Step::claim_locked, Step::claim_journaled,
                                         Step::claim_marked, Step::claim_head_moved,
                                         Step::claim_counted, Step::sweep_locked,
                                         Step::sweep_advanced),
                       ::testing::Bool()),
    [](const ::testing::TestParamInfo<std::tuple<Step, bool>>& param) {
      return std::string(name_of(std::get<0>(param.param))) +
             (std::get<1>(param.param) ? "_redelivery" : "");
    });

}  // namespace
}  // namespace xproc::channel
