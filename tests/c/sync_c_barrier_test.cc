// xproc_barrier_* and xproc_barrierattr_*: one serial thread per round, process sharing.

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <thread>
#include <vector>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/c/sync.h"

namespace xproc::test {
namespace {

TEST(CBarrier, AttributesRoundTrip) {
  xproc_barrierattr_t attr;
  ASSERT_EQ(xproc_barrierattr_init(&attr), 0);
  int pshared = -1;
  EXPECT_EQ(xproc_barrierattr_getpshared(&attr, &pshared), 0);
  EXPECT_EQ(pshared, XPROC_PROCESS_PRIVATE);
  EXPECT_EQ(xproc_barrierattr_setpshared(&attr, XPROC_PROCESS_SHARED), 0);
  EXPECT_EQ(xproc_barrierattr_getpshared(&attr, &pshared), 0);
  EXPECT_EQ(pshared, XPROC_PROCESS_SHARED);
  EXPECT_EQ(xproc_barrierattr_setpshared(&attr, 3), EINVAL);
  EXPECT_EQ(xproc_barrierattr_destroy(&attr), 0);
  EXPECT_EQ(xproc_barrierattr_getpshared(&attr, &pshared), EINVAL);
}

TEST(CBarrier, InitRefusesACountOfZero) {
  xproc_barrier_t barrier;
  EXPECT_EQ(xproc_barrier_init(&barrier, nullptr, 0), EINVAL);
  EXPECT_EQ(xproc_barrier_init(&barrier, nullptr, 1), 0);
  EXPECT_EQ(xproc_barrier_wait(&barrier), XPROC_BARRIER_SERIAL_THREAD);  // alone: serial
  EXPECT_EQ(xproc_barrier_destroy(&barrier), 0);
}

// The serial thread destroys and re-initializes the barrier while the others are still leaving
// it (allowed by POSIX; glibc's tst-barrier4). Two barriers alternate, so nobody re-enters the
// one being re-initialized.
TEST(CBarrier, TheSerialThreadMayDestroyAndReinitializeWhileOthersLeave) {
  constexpr int kThreads = 4;
  const long rounds = scaled(200);
  xproc_barrier_t barriers[2];
  for (auto& barrier : barriers) ASSERT_EQ(xproc_barrier_init(&barrier, nullptr, kThreads), 0);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      for (long round = 0; round < 2 * rounds; ++round) {
        xproc_barrier_t* barrier = &barriers[round % 2];
        const int result = xproc_barrier_wait(barrier);
        if (result == XPROC_BARRIER_SERIAL_THREAD) {
          if (xproc_barrier_destroy(barrier) != 0) failures.fetch_add(1);
          if (xproc_barrier_init(barrier, nullptr, kThreads) != 0) failures.fetch_add(1);
        } else if (result != 0) {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  for (auto& barrier : barriers) EXPECT_EQ(xproc_barrier_destroy(&barrier), 0);
}

TEST(CBarrier, ExactlyOneThreadPerRoundIsTheSerialThread) {
  constexpr int kThreads = 4;
  const long rounds = scaled(50);
  xproc_barrier_t barrier;
  ASSERT_EQ(xproc_barrier_init(&barrier, nullptr, kThreads), 0);
  std::atomic<long> serial{0};
  std::atomic<long> other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      for (long round = 0; round < rounds; ++round) {
        const int result = xproc_barrier_wait(&barrier);
        if (result == XPROC_BARRIER_SERIAL_THREAD) {
          serial.fetch_add(1, std::memory_order_relaxed);
        } else {
          EXPECT_EQ(result, 0);
          other.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(serial.load(), rounds);
  EXPECT_EQ(other.load(), rounds * (kThreads - 1));
  EXPECT_EQ(xproc_barrier_destroy(&barrier), 0);
}

struct SharedBarrier {
  xproc_barrier_t barrier;
  std::atomic<long> serial;
  std::atomic<long> arrived;
};

TEST(CBarrier, ProcessSharedBarrierSynchronizesTwoProcesses) {
  SharedObject<SharedBarrier> shared;
  xproc_barrierattr_t attr;
  ASSERT_EQ(xproc_barrierattr_init(&attr), 0);
  ASSERT_EQ(xproc_barrierattr_setpshared(&attr, XPROC_PROCESS_SHARED), 0);
  ASSERT_EQ(xproc_barrier_init(&shared->barrier, &attr, 2), 0);
  const long rounds = scaled(100);
  auto work = [&] {
    for (long round = 0; round < rounds; ++round) {
      shared->arrived.fetch_add(1, std::memory_order_relaxed);
      const int result = xproc_barrier_wait(&shared->barrier);
      if (result == XPROC_BARRIER_SERIAL_THREAD) {
        // Both arrived for this round before either left.
        if (shared->arrived.load(std::memory_order_relaxed) < 2 * (round + 1)) return 2;
        shared->serial.fetch_add(1, std::memory_order_relaxed);
      } else if (result != 0) {
        return 1;
      }
    }
    return 0;
  };
  const ParentAndChild both = run_in_parent_and_child(work);
  EXPECT_EQ(both.parent, 0);
  EXPECT_TRUE(both.child.ok());
  EXPECT_EQ(shared->serial.load(), rounds);
}

}  // namespace
}  // namespace xproc::test
