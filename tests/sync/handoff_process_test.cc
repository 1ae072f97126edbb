// The hand-off scenario (examples/handoff_scenario.h, the README demo) scaled down: a sender
// process with 30 threads and a receiver process move every value exactly once through a ring
// guarded by a process-shared Mutex and two CondVars.
#include <gtest/gtest.h>

#include <cstdio>

#include "../../examples/handoff_scenario.h"
#include "child_process.h"

namespace xproc::examples {
namespace {

void print(const char* what, const HandoffConfig& config, const HandoffResult& result) {
  std::printf(
      "%s: %d threads x %ld: %.3f s, %ld+%ld context switches, sender waits %llu, "
      "receiver waits %llu\n",
      what, config.threads, config.per_thread, result.seconds, result.voluntary_switches,
      result.involuntary_switches, static_cast<unsigned long long>(result.sender_waits),
      static_cast<unsigned long long>(result.receiver_waits));
}

TEST(HandoffProcess, ThirtySenderThreadsDeliverEveryValueExactlyOnceInOrder) {
  HandoffConfig config;
  config.threads = 30;
  config.per_thread = test::scaled(20000);
  config.timeout = std::chrono::seconds(60);
  const HandoffResult result = run_handoff(config);
  print("hand-off", config, result);
  EXPECT_TRUE(result.ok) << result.failure;
  EXPECT_EQ(result.received, static_cast<std::uint64_t>(config.threads) *
                                 static_cast<std::uint64_t>(config.per_thread));
}

TEST(HandoffProcess, MoreValuesThanTheRingHoldsFromOneThread) {
  HandoffConfig config;
  config.threads = 1;
  config.per_thread = 3 * static_cast<long>(detail::kRingSlots) + 17;
  config.timeout = std::chrono::seconds(60);
  const HandoffResult result = run_handoff(config);
  print("hand-off", config, result);
  EXPECT_TRUE(result.ok) << result.failure;
  EXPECT_EQ(result.received, static_cast<std::uint64_t>(config.per_thread));
}

TEST(HandoffProcess, ASenderKilledMidwayFailsTheRunPromptlyInsteadOfHanging) {
  HandoffConfig config;
  config.threads = 30;
  config.per_thread = 100'000'000;  // far more than can finish before the kill
  config.timeout = std::chrono::seconds(60);
  config.kill_sender_after = std::chrono::milliseconds(50);
  const HandoffResult result = run_handoff(config);
  print("hand-off, sender killed", config, result);
  std::printf("reported: %s\n", result.failure.c_str());
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.failure.find("sender process was killed by signal 9"), std::string::npos)
      << result.failure;
  EXPECT_LT(result.seconds, 10.0);  // the receiver was stopped at once, not at the deadline
}

TEST(HandoffProcess, InvalidConfigurationIsRefused) {
  HandoffConfig config;
  config.threads = 0;
  const HandoffResult result = run_handoff(config);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.failure, "invalid configuration");
}

}  // namespace
}  // namespace xproc::examples
