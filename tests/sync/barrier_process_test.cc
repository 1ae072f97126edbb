// Process-level tests of xproc::sync::Barrier on MAP_SHARED memory: 4 processes x N rounds,
// nobody passes early, one serial per generation.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/barrier.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kProcesses = 4;

struct Shared {
  Barrier barrier{Scope::process, kProcesses, 0};
  std::atomic<long> arrivals{0};
  std::atomic<long> serials{0};
};

TEST(BarrierProcess, FourProcessesNeverPassEarlyAndOneIsSerialPerGeneration) {
  test::SharedObject<Shared> shared;
  const long rounds = test::scaled(1000);
  auto participant = [&] {
    for (long r = 0; r < rounds; ++r) {
      shared->arrivals.fetch_add(1);
      const Result<Arrival> arrival = shared->barrier.arrive_and_wait_for(20s);
      if (!arrival) return 1;
      if (arrival.value() == Arrival::serial) shared->serials.fetch_add(1);
      const long seen = shared->arrivals.load();
      if (seen < (r + 1) * long{kProcesses}) return 2;      // passed early
      if (seen > (r + 2) * long{kProcesses} - 1) return 3;  // others passed the next one
    }
    return 0;
  };
  std::vector<test::Child> children;
  for (std::uint32_t c = 1; c < kProcesses; ++c)
    children.push_back(test::Child::start(participant));
  EXPECT_EQ(participant(), 0);
  for (auto& child : children) {
    const test::ChildStatus status = child.wait(60s);
    EXPECT_TRUE(status.ok()) << status.exit_code;
  }
  EXPECT_EQ(shared->serials.load(), rounds);
  EXPECT_EQ(shared->arrivals.load(), rounds * kProcesses);
  EXPECT_EQ(shared->barrier.arrived(), 0u);
}

}  // namespace
}  // namespace xproc::sync
