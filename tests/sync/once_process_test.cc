// Process-level tests of xproc::sync::Once on MAP_SHARED memory: f runs exactly once across
// processes and its effects are visible to all.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/once.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

struct Shared {
  Once once{Scope::process, 0};
  std::atomic<int> runs{0};
  std::atomic<int> ready{0};
  long value = 0;  // written by f, published by the Once
};

TEST(OnceProcess, FRunsExactlyOnceAcrossProcesses) {
  const int rounds = static_cast<int>(test::scaled(20));
  for (int round = 0; round < rounds; ++round) {
    test::SharedObject<Shared> shared;
    constexpr int kProcesses = 4;
    auto body = [&] {
      shared->ready.fetch_add(1);
      while (shared->ready.load() < kProcesses) std::this_thread::yield();  // start together
      const std::error_code error = shared->once.call_for(
          [&] {
            shared->runs.fetch_add(1);
            std::this_thread::yield();
            shared->value = 7;
          },
          20s);
      return error ? 1 : shared->value == 7 ? 0 : 2;
    };
    std::vector<test::Child> children;
    for (int c = 1; c < kProcesses; ++c) children.push_back(test::Child::start(body));
    EXPECT_EQ(body(), 0);
    for (auto& child : children) EXPECT_TRUE(child.wait(30s).ok());
    ASSERT_EQ(shared->runs.load(), 1);
  }
}

}  // namespace
}  // namespace xproc::sync
