// Process-level tests of xproc::sync::Spinlock on MAP_SHARED memory: exclusion across processes
// with exact counts.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/spinlock.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

struct Shared {
  Spinlock lock{Scope::process};
  long counter = 0;  // protected by lock
};

TEST(SpinlockProcess, ProcessesIncrementASharedCounterExactly) {
  test::SharedObject<Shared> shared;
  constexpr int kChildren = 2;
  const long per_process = test::scaled(50000);
  auto body = [&] {
    for (long i = 0; i < per_process; ++i) {
      std::lock_guard guard(shared->lock);
      ++shared->counter;
    }
    return 0;
  };
  std::vector<test::Child> children;
  for (int c = 0; c < kChildren; ++c) children.push_back(test::Child::start(body));
  body();
  for (auto& child : children) EXPECT_TRUE(child.wait(60s).ok());
  EXPECT_EQ(shared->counter, (kChildren + 1) * per_process);
}

}  // namespace
}  // namespace xproc::sync
